import asyncio
import os
import threading
import time
from contextlib import asynccontextmanager

import pytest

from app.batcher import Batcher, BatcherStopped, DeadlineExceeded, Lane, QueueFull
from app.workers import ThreadPolicy, WorkerContext


class Gate:
    """A predict function that records calls and blocks until the test opens the gate."""

    def __init__(self, fail_on=None):
        self.open = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list] = []
        self.fail_on = fail_on

    def __call__(self, items):
        self.calls.append(list(items))
        self.entered.set()
        self.open.wait(10)
        if self.fail_on in items:
            raise ValueError(f"poisoned item {self.fail_on}")
        return [x * 10 for x in items]


class OneLane:
    """A Batcher fed through one lane, so each test reads as the single-model case; attributes
    other than `submit` are the batcher's."""

    def __init__(self, predict, max_batch_size=8, max_batch_delay_s=0.005, max_queue=64,
                 key=lambda _: None, on_drop=None, workers=1):
        self.batcher = Batcher(ThreadPolicy(threads=workers, workers=workers), max_queue, on_drop)
        self.lane = Lane(lambda items, _context: predict(items), max_batch_size,
                         max_batch_delay_s, bucket=key)

    def submit(self, value, timeout_s):
        return self.batcher.submit(self.lane, value, timeout_s)

    def __getattr__(self, name):
        return getattr(self.batcher, name)


async def wait_for_thread(event: threading.Event):
    assert await asyncio.to_thread(event.wait, 10)


async def queued_at_least(batcher: Batcher, count: int):
    assert await asyncio.to_thread(batcher.wait_until_queued, count, 10)


@asynccontextmanager
async def busy_batcher(gate: Gate, **knobs):
    """A started Batcher whose worker is held inside predict([0]) until `gate.open` is set;
    yields the batcher and the task awaiting item 0, and stops the batcher afterwards."""
    batcher = OneLane(gate, **knobs)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit(0, 30))
        await wait_for_thread(gate.entered)
        yield batcher, first
    finally:
        batcher.stop()


@pytest.mark.parametrize("kwargs", [{"max_batch_size": 0}, {"max_batch_delay_s": -1},
                                    {"max_queue": 0}, {"workers": 0}])
def test_bad_knobs_are_rejected_at_construction(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        OneLane(lambda xs: xs, **kwargs)


async def test_lone_request_runs_without_waiting_for_the_batch_delay():
    batcher = OneLane(lambda xs: [x + 1 for x in xs], max_batch_delay_s=3600)
    batcher.start()
    try:
        result, queued, _ = await asyncio.wait_for(batcher.submit(1, timeout_s=60), 30)
    finally:
        batcher.stop()
    assert result == 2 and queued < 60


async def test_queued_requests_form_one_batch_of_the_same_key():
    gate = Gate()
    knobs = {"max_batch_size": 4, "max_batch_delay_s": 0.05, "max_queue": 16}
    async with busy_batcher(gate, **knobs) as (batcher, first):  # worker busy with item 0
        rest = [asyncio.create_task(batcher.submit(i, 30)) for i in (1, 2, 3)]
        await queued_at_least(batcher, 3)
        gate.open.set()
        results = [r[0] for r in await asyncio.gather(first, *rest)]
    assert results == [0, 10, 20, 30]
    assert gate.calls == [[0], [1, 2, 3]]


async def test_items_with_different_keys_are_not_batched_together():
    gate = Gate()
    gate.open.set()
    batcher = OneLane(gate, max_batch_size=8, max_batch_delay_s=0.01, key=lambda x: x % 2)
    batcher.start()
    try:
        await asyncio.gather(*(batcher.submit(i, 30) for i in range(6)))
    finally:
        batcher.stop()
    for call in gate.calls:
        assert len({x % 2 for x in call}) == 1


async def test_full_queue_refuses_at_once():
    gate = Gate()
    drops = []
    knobs = {"max_batch_size": 1, "max_queue": 2, "on_drop": drops.append}
    async with busy_batcher(gate, **knobs) as (batcher, busy):
        queued = [asyncio.create_task(batcher.submit(i, 30)) for i in (1, 2)]
        await queued_at_least(batcher, 2)
        with pytest.raises(QueueFull, match="^2 images are already queued$"):
            await batcher.submit(3, 30)
        gate.open.set()
        await asyncio.gather(busy, *queued)
    assert drops == ["queue_full"]


async def test_request_past_its_deadline_is_not_computed():
    gate = Gate()
    drops = []
    async with busy_batcher(gate, max_batch_size=1, on_drop=drops.append) as (batcher, busy):
        # the caller hears at its deadline, while the worker is still busy (not when the
        # worker gets round to the item: the outer bound is far shorter than Gate's 10 s)
        with pytest.raises(DeadlineExceeded, match=r"^not computed within 0\.05 s$"):
            await asyncio.wait_for(batcher.submit(7, timeout_s=0.05), 5)
        gate.open.set()
        await busy
        assert (await batcher.submit(8, 30))[0] == 80  # the worker moved on past item 7
    assert [7] not in gate.calls
    assert drops == ["deadline"]


async def test_cancelled_caller_is_dropped_before_compute():
    gate = Gate()
    drops = []
    async with busy_batcher(gate, max_batch_size=1, on_drop=drops.append) as (batcher, busy):
        gone = asyncio.create_task(batcher.submit(5, 30))
        await queued_at_least(batcher, 1)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        gate.open.set()
        await busy
        await batcher.submit(6, 30)
    assert [5] not in gate.calls and drops == ["disconnect"]


async def test_one_poisoned_item_fails_only_its_own_request():
    gate = Gate(fail_on=2)
    async with busy_batcher(gate, max_batch_size=4, max_batch_delay_s=0.05) as (batcher, first):
        rest = [asyncio.create_task(batcher.submit(i, 30)) for i in (1, 2, 3)]
        await queued_at_least(batcher, 3)
        gate.open.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert results[0][0] == 0 and results[1][0] == 10 and results[3][0] == 30
    assert isinstance(results[2], ValueError)


async def test_stop_finishes_queued_work():
    gate = Gate()
    batcher = OneLane(gate, max_batch_size=1)
    batcher.start()
    busy = asyncio.create_task(batcher.submit(0, 30))
    await wait_for_thread(gate.entered)
    queued = asyncio.create_task(batcher.submit(1, 30))
    await queued_at_least(batcher, 1)
    stopper = asyncio.create_task(asyncio.to_thread(batcher.stop, 30))
    gate.open.set()
    await stopper
    assert (await busy)[0] == 0 and (await queued)[0] == 10


async def test_batch_closes_at_max_size_and_the_rest_waits_for_the_next():
    gate = Gate()
    async with busy_batcher(gate, max_batch_size=3, max_batch_delay_s=0.05) as (batcher, first):
        rest = [asyncio.create_task(batcher.submit(i, 30)) for i in range(1, 6)]
        await queued_at_least(batcher, 5)
        gate.open.set()
        await asyncio.gather(first, *rest)
    assert gate.calls == [[0], [1, 2, 3], [4, 5]]


async def test_partial_batch_closes_after_the_max_delay():
    gate = Gate()
    async with busy_batcher(gate, max_batch_size=8, max_batch_delay_s=0.05) as (batcher, first):
        rest = [asyncio.create_task(batcher.submit(i, 30)) for i in (1, 2)]
        await queued_at_least(batcher, 2)
        gate.open.set()
        results = await asyncio.wait_for(asyncio.gather(first, *rest), 20)
    assert [r.value for r in results] == [0, 10, 20]
    assert gate.calls == [[0], [1, 2]]  # two of eight: closed by the delay, not by size


async def test_a_batch_with_room_waits_the_full_delay_before_it_closes():
    """Item 1 is taken while item 2 (another key, so never its companion) waits: a batch with
    room and others queued waits for companions until max_batch_delay after its first item
    arrived, and not a moment less."""
    delay = 0.3
    gate = Gate()
    async with busy_batcher(gate, max_batch_size=8, max_batch_delay_s=delay,
                            key=lambda x: x % 2) as (batcher, first):
        one = asyncio.create_task(batcher.submit(1, 30))
        two = asyncio.create_task(batcher.submit(2, 30))
        await queued_at_least(batcher, 2)
        gate.open.set()  # at once: without the wait, item 1 would start within milliseconds
        results = await asyncio.wait_for(asyncio.gather(first, one, two), 20)
    assert gate.calls == [[0], [1], [2]]
    assert results[1].queue_seconds >= delay


async def test_two_workers_compute_two_items_at_the_same_time():
    threads: set[str] = set()
    seen_busy: list[int] = []
    # The action runs once both workers are inside predict, before either may leave.
    both_inside = threading.Barrier(2, action=lambda: seen_busy.append(batcher.busy),
                                    timeout=10)

    def predict(items):
        threads.add(threading.current_thread().name)
        both_inside.wait()
        return [x * 10 for x in items]

    batcher = OneLane(predict, max_batch_size=1, workers=2)
    batcher.start()
    try:
        results = await asyncio.gather(batcher.submit(1, 30), batcher.submit(2, 30))
    finally:
        batcher.stop()
    assert [r.value for r in results] == [10, 20]
    assert len(threads) == 2 and seen_busy == [2]


async def test_one_dead_worker_makes_the_pool_not_alive():
    def predict(items):
        raise SystemExit("worker bug")  # not an Exception: escapes the per-item isolation

    batcher = OneLane(predict, workers=2)
    batcher.start()
    try:
        assert batcher.alive
        with pytest.raises(Exception, match="inference worker died"):
            await batcher.submit(1, 30)
        assert not batcher.alive
    finally:
        batcher.stop(timeout=1)


async def test_sequential_requests_all_run_on_the_first_worker():
    threads: list[str] = []

    def predict(items):
        threads.append(threading.current_thread().name)
        return items

    batcher = OneLane(predict, workers=3)
    batcher.start()
    try:
        for i in range(8):
            assert (await batcher.submit(i, 30)).value == i
    finally:
        batcher.stop()
    assert set(threads) == {"inference-worker-0"}


async def test_lanes_never_share_a_batch_and_keep_their_own_batch_size():
    calls: list[tuple[str, list]] = []
    gate, entered = threading.Event(), threading.Event()

    def lane_predict(name):
        def predict(items, _context):
            calls.append((name, list(items)))
            entered.set()
            assert gate.wait(10)
            return list(items)
        return predict

    batcher = Batcher(ThreadPolicy(threads=1, workers=1), max_queue=16)
    small = Lane(lane_predict("small"), max_batch_size=1, max_batch_delay_s=0.05)
    large = Lane(lane_predict("large"), max_batch_size=4, max_batch_delay_s=0.05)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit(small, 0, 30))
        await wait_for_thread(entered)  # the worker holds item 0; the rest queue behind it
        rest = [asyncio.create_task(batcher.submit(lane, i, 30))
                for i, lane in enumerate([large, small, large, small, large], start=1)]
        await queued_at_least(batcher, 5)
        gate.set()
        await asyncio.gather(first, *rest)
    finally:
        batcher.stop()
    assert calls == [("small", [0]), ("large", [1, 3, 5]), ("small", [2]), ("small", [4])]


async def test_predict_gets_the_worker_context_from_the_policy():
    seen: list[WorkerContext] = []

    def predict(items, context):
        seen.append(context)
        return list(items)

    batcher = Batcher(ThreadPolicy(threads=4, workers=2), max_queue=64)
    batcher.start()
    try:
        await batcher.submit(Lane(predict, 8, 0.005), 1, 30)
    finally:
        batcher.stop()
    assert seen == [WorkerContext(index=0, threads=4)]  # worker 0 alone: every thread


async def test_an_item_cancelled_while_computing_is_answered_to_nobody_and_not_dropped():
    gate = Gate()
    drops = []
    async with busy_batcher(gate, max_batch_size=1, on_drop=drops.append) as (batcher, busy):
        busy.cancel()  # the worker already started it
        with pytest.raises(asyncio.CancelledError):
            await busy
        gate.open.set()
        assert (await batcher.submit(1, 30)).value == 10
    assert drops == [] and gate.calls == [[0], [1]]


async def test_worker_zero_runs_on_idle_once_after_work_goes_quiet():
    idled = threading.Event()
    calls: list[int] = []

    def on_idle():
        calls.append(1)
        idled.set()

    batcher = Batcher(ThreadPolicy(threads=1, workers=1), 64, on_idle=on_idle, idle_s=0.05)
    lane = Lane(lambda items, _context: list(items), 8, 0.005)
    batcher.start()
    try:
        assert (await batcher.submit(lane, 1, 30)).value == 1
        await wait_for_thread(idled)
        idled.clear()
        first = len(calls)
        assert (await batcher.submit(lane, 2, 30)).value == 2
        await wait_for_thread(idled)
    finally:
        batcher.stop()
    assert first == 1 and len(calls) == 2  # once per quiet spell, never without work between


def test_waiting_for_a_queue_that_never_fills_gives_up_after_the_timeout():
    batcher = OneLane(lambda items: items)
    assert batcher.wait_until_queued(0, 0.01) is True  # already true: no wait
    assert batcher.wait_until_queued(1, 0.01) is False


def test_the_smallest_knobs_are_accepted_and_the_refusals_name_the_value():
    smallest = OneLane(lambda xs: xs, max_batch_size=1, max_batch_delay_s=0, max_queue=1)
    assert (smallest.lane.max_batch_size, smallest.lane.max_batch_delay_s,
            smallest.max_queue) == (1, 0, 1)
    with pytest.raises(ValueError, match=r"^max_batch_size must be ≥ 1, got 0$"):
        OneLane(lambda xs: xs, max_batch_size=0)
    with pytest.raises(ValueError, match=r"^max_batch_delay_s must be ≥ 0, got -0\.001$"):
        OneLane(lambda xs: xs, max_batch_delay_s=-0.001)


async def test_a_draining_batcher_refuses_new_work_while_it_finishes_the_old():
    gate = Gate()
    async with busy_batcher(gate) as (batcher, busy):
        stopper = threading.Thread(target=batcher.stop)
        stopper.start()  # stops accepting at once, then waits for the busy worker
        while batcher._accepting:
            await asyncio.sleep(0)
        assert batcher.alive  # the worker still holds item 0
        with pytest.raises(BatcherStopped, match="^the inference workers are not accepting work$"):
            await batcher.submit(1, 30)
        gate.open.set()
        assert (await busy).value == 0
        stopper.join(10)


def answers():
    """A `done` callback that records what a worker answered."""
    got = []
    return got, lambda result, error: got.append((result, error))


def test_an_item_found_past_its_deadline_is_answered_and_counted_not_computed():
    from app.batcher import _Item
    drops = []
    batcher = OneLane(lambda xs: xs, on_drop=drops.append)
    calls = {}

    def item(value, seconds_left):
        calls[value], done = answers()
        return _Item(value, batcher.lane, None, done, time.monotonic() + seconds_left)

    late, gone, wanted = item(1, -1), item(2, 100), item(3, 100)
    gone.abandoned = True
    assert batcher._live([late, gone, wanted]) == [wanted]
    assert wanted.started > 0 and late.started == 0 and gone.started == 0
    [(result, error)] = calls[1]
    assert result is None and isinstance(error, DeadlineExceeded)
    assert str(error) == "deadline passed while queued"
    assert drops == ["deadline"] and calls[2] == [] and calls[3] == []


async def test_an_item_found_late_whose_timer_fires_too_is_dropped_once():
    from app.batcher import _Item
    drops = []
    batcher = OneLane(lambda xs: xs, on_drop=drops.append)
    future = asyncio.get_running_loop().create_future()
    _, done = answers()
    late = _Item(1, batcher.lane, None, done, time.monotonic() - 1)
    assert batcher._live([late]) == []
    batcher._expire(late, future, 0.05)  # before the worker's answer reaches the caller
    with pytest.raises(DeadlineExceeded):
        future.result()
    assert drops == ["deadline"]


async def test_an_item_enqueued_from_a_thread_is_answered_through_its_callback():
    batcher = Batcher(ThreadPolicy(threads=1, workers=1), max_queue=4)
    lane = Lane(lambda xs, ctx: [x * 10 for x in xs], 1, 0.0)
    batcher.start()
    try:
        answered = threading.Event()
        got = []

        def done(result, error):
            got.append((result, error))
            answered.set()

        worker = threading.Thread(target=lambda: batcher.enqueue(
            lane, 4, time.monotonic() + 30, done))
        worker.start()
        worker.join()
        assert await asyncio.to_thread(answered.wait, 10)
    finally:
        batcher.stop()
    [(result, error)] = got
    assert error is None and result.value == 40


async def run_lane(predict, *values, max_batch_size=4, on_batch=None):
    """Submit `values` together to a fresh one-worker batcher; the results (or exceptions)."""
    stats = on_batch or (lambda _: None)
    batcher = Batcher(ThreadPolicy(threads=1, workers=1), max_queue=64)
    lane = Lane(predict, max_batch_size, 0.05, on_batch=stats)
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(lane, v, 30) for v in values),
                                    return_exceptions=True)
    finally:
        batcher.stop()


async def test_a_single_failing_item_is_tried_once():
    calls = []

    def predict(items, _context):
        calls.append(list(items))
        raise ValueError("bad")

    (result,) = await run_lane(predict, 5)
    assert isinstance(result, ValueError) and calls == [[5]]


async def test_a_failed_batch_is_retried_item_by_item_with_the_same_context():
    contexts = []

    def predict(items, context):
        contexts.append(context)
        if len(items) > 1 or items[0] == 2:
            raise ValueError("bad")
        return [x * 10 for x in items]

    results = await run_lane(predict, 1, 2, 3)
    assert results[0].value == 10 and isinstance(results[1], ValueError)
    assert results[2].value == 30
    assert len(contexts) == 4 and all(isinstance(c, WorkerContext) for c in contexts)


async def test_predict_returning_the_wrong_number_of_results_fails_the_item():
    (result,) = await run_lane(lambda items, _context: [], 1)
    assert isinstance(result, RuntimeError)
    assert str(result) == "predict returned 0 results for 1"


async def test_reported_times_lie_within_the_time_the_callers_waited():
    batches = []
    t0 = time.monotonic()
    results = await run_lane(lambda items, _context: list(items), 1, 2, on_batch=batches.append)
    waited = time.monotonic() - t0
    for result in results:
        assert 0 <= result.queue_seconds <= waited and 0 <= result.compute_seconds <= waited
    assert all(0 <= q <= waited for stats in batches for q in stats.queue_seconds)
    assert all(0 <= stats.compute_seconds <= waited for stats in batches)


async def test_inference_workers_run_at_the_policys_nice_below_the_process():
    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = []

    def predict(items, _context):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return items

    batcher = Batcher(ThreadPolicy(threads=1, workers=2, nice=2), max_queue=4)
    lane = Lane(predict, 1, 0.0)
    batcher.start()
    try:
        await asyncio.wait_for(batcher.submit(lane, 1, 30), 30)
    finally:
        batcher.stop()
    assert seen == [min(19, main + 2)]
