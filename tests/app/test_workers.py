"""The thread policy: which worker takes work, and its torch threads (all for a lone forward,
an equal share when busy)."""

import os
import sys
import threading

import pytest
import torch

from app.workers import (
    ThreadPolicy,
    WorkerContext,
    in_own_thread,
    lower_priority,
    use_threads,
)


@pytest.mark.parametrize(("workers", "busy", "queued", "worker", "expected"), [
    (2, 1, 0, 0, 8),  # worker 0 computing alone, nothing waiting: every thread
    (2, 2, 0, 0, 4),  # the other worker is busy: half
    (2, 1, 3, 0, 4),  # alone now, but work waits for the other worker: half
    (2, 1, 0, 1, 4),  # only worker 0 ever runs a full team, even when the others are alone
    (1, 1, 5, 0, 8),  # a single worker always uses every thread
    (16, 16, 0, 3, 1),  # never below one
])
def test_threads_for_a_forward(workers, busy, queued, worker, expected):
    policy = ThreadPolicy(threads=8, workers=workers)
    assert policy.context(worker, busy, queued) == WorkerContext(worker, expected)


def test_an_uneven_share_is_a_whole_number_of_threads():
    share = ThreadPolicy(threads=3, workers=2).context(1, 2, 0).threads
    assert share == 1 and type(share) is int


@pytest.mark.parametrize(("index", "busy", "may"), [(0, 0, True), (0, 1, True), (1, 0, False),
                                                    (1, 1, True), (3, 2, True)])
def test_only_worker_zero_takes_work_while_every_worker_is_idle(index, busy, may):
    assert ThreadPolicy(threads=2, workers=4).may_take(index, busy) is may


@pytest.mark.parametrize("knob", ["threads", "workers"])
def test_policy_refuses_zero(knob):
    with pytest.raises(ValueError, match=knob):
        ThreadPolicy(**({"threads": 2, "workers": 2} | {knob: 0}))


def test_in_own_thread_returns_the_result_and_reraises_failures():
    assert in_own_thread(torch.get_num_threads, 3, "probe") == 3
    with pytest.raises(ZeroDivisionError):
        in_own_thread(lambda: 1 / 0, 1, "failing")


def test_torch_thread_count_is_per_thread():
    """The premise of per-worker thread counts: setting it in one thread leaves the others."""
    before = torch.get_num_threads()
    seen = []

    def worker():
        torch.set_num_threads(3)
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [3] and torch.get_num_threads() == before


@pytest.mark.parametrize("knob", ["threads", "workers"])
def test_policy_takes_one_and_names_zero_in_its_refusal(knob):
    assert getattr(ThreadPolicy(**({"threads": 2, "workers": 2} | {knob: 1})), knob) == 1
    with pytest.raises(ValueError, match=f"^{knob} must be ≥ 1, got 0$"):
        ThreadPolicy(**({"threads": 2, "workers": 2} | {knob: 0}))


def test_use_threads_sets_this_threads_torch_threads():
    def probe():
        use_threads(2)
        first = torch.get_num_threads()
        use_threads(1)
        return first, torch.get_num_threads()

    assert in_own_thread(probe, 3, "probe") == (2, 1)


def test_in_own_thread_runs_in_a_named_thread_that_ends():
    seen = []
    in_own_thread(lambda: seen.append(threading.current_thread()), 1, "warm-up")
    assert seen[0].name == "warm-up" and seen[0] is not threading.current_thread()
    assert not seen[0].is_alive()


def test_use_threads_calls_torch_only_when_the_count_changes(monkeypatch):
    from app import workers
    calls = []
    monkeypatch.setattr(workers.torch, "set_num_threads", calls.append)

    def probe():
        for count in (2, 2, 1, 1, 2):
            use_threads(count)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert calls == [2, 1, 2]


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


@pytest.mark.parametrize("nice", [-1, 20])
def test_policy_refuses_a_nice_outside_0_to_19(nice):
    with pytest.raises(ValueError, match=f"^nice must be in 0..19, got {nice}$"):
        ThreadPolicy(threads=1, workers=1, nice=nice)


@pytest.mark.parametrize("nice", [0, 19])
def test_policy_takes_a_nice_at_either_end(nice):
    assert ThreadPolicy(threads=1, workers=1, nice=nice).nice == nice


@pytest.mark.skipif(sys.platform != "linux", reason="nice is per thread only on Linux")
def test_lower_priority_lowers_the_calling_thread_and_the_openmp_team_it_starts():
    main = _nice(threading.get_native_id())
    before = {int(t) for t in os.listdir("/proc/self/task")}
    seen = {}

    def worker():
        lower_priority(3)
        seen["self"] = _nice(threading.get_native_id())
        torch.set_num_threads(2)
        torch.ones(256, 256) @ torch.ones(256, 256)  # starts this thread's OpenMP team
        team = {int(t) for t in os.listdir("/proc/self/task")} - before
        seen["team"] = {_nice(t) for t in team - {threading.get_native_id()}}

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["self"] == min(19, main + 3)
    assert seen["team"] == {min(19, main + 3)}
    assert _nice(threading.get_native_id()) == main
