"""Inference workers share the torch threads: all for a lone forward, an equal share when busy."""

import threading

import pytest
import torch

from app.service import threads_for


@pytest.mark.parametrize(("workers", "busy", "queued", "worker", "expected"), [
    (2, 1, 0, 0, 8),  # worker 0 computing alone, nothing waiting: every thread
    (2, 2, 0, 0, 4),  # the other worker is busy: half
    (2, 1, 3, 0, 4),  # alone now, but work waits for the other worker: half
    (2, 1, 0, 1, 4),  # only worker 0 ever runs a full team, even when the others are alone
    (1, 1, 5, 0, 8),  # a single worker always uses every thread
    (16, 16, 0, 3, 1),  # never below one
])
def test_threads_for_a_forward(workers, busy, queued, worker, expected):
    assert threads_for(8, workers, busy, queued, worker) == expected


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
