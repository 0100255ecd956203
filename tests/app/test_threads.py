"""Inference workers share the torch threads: all for a lone forward, an equal share when busy."""

import threading

import pytest
import torch

from app.service import threads_for


@pytest.mark.parametrize(("workers", "busy", "queued", "expected"), [
    (2, 1, 0, 8),  # computing alone, nothing waiting: every thread
    (2, 2, 0, 4),  # the other worker is busy: half
    (2, 1, 3, 4),  # alone now, but work waits for the other worker: half
    (1, 1, 5, 8),  # a single worker always uses every thread
    (16, 16, 0, 1),  # never below one
])
def test_threads_for_a_forward(workers, busy, queued, expected):
    assert threads_for(8, workers, busy, queued) == expected


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
