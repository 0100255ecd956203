"""app.flight: decode → predict → encode across the threads, with one hand-back to the loop."""

import asyncio
import contextlib
import gc
import threading
import weakref

import numpy as np
import pytest

from app.batcher import Batcher, DeadlineExceeded, Lane
from app.errors import InvalidInput
from app.flight import Flight, PredictFailed
from app.io_threads import IOThreads
from app.pipeline import Prediction
from app.workers import ThreadPolicy


class FakeVersion:
    """What a flight uses of a ModelVersion: decode, lane and timed. Each stage can be held
    (an Event to wait on) or made to fail."""

    def __init__(self, hold_decode=None, hold_predict=None, predict_error=None):
        self.hold_decode, self.hold_predict = hold_decode, hold_predict
        self.predict_error = predict_error
        self.decoding, self.predicting = threading.Event(), threading.Event()
        self.predicted: list[int] = []
        self.lane = Lane(self.predict, 1, 0.0)

    def decode(self, data, probabilities, confidence):
        self.decoding.set()
        if self.hold_decode is not None:
            self.hold_decode.wait(10)
        if data == b"bad":
            raise InvalidInput("invalid_image", "not an image")
        return np.zeros((2, 2, 3), np.uint8), len(data)

    def predict(self, items, context):
        self.predicting.set()
        if self.hold_predict is not None:
            self.hold_predict.wait(10)
        if self.predict_error is not None:
            raise self.predict_error
        self.predicted.extend(items)
        return [Prediction(np.full((2, 2), n, np.uint8)) for n in items]

    def timed(self, seg, stage, seconds):
        seg.timings_ms[stage] = round(seconds * 1000, 3)


@pytest.fixture
async def threads():
    drops: list[str] = []
    batcher = Batcher(ThreadPolicy(threads=1, workers=1), max_queue=8, on_drop=drops.append)
    io = IOThreads(1)  # one: a later image's decode runs after an earlier one's is done
    batcher.start()
    yield batcher, io, drops
    batcher.stop(10)
    await asyncio.to_thread(io.shutdown)


def fly(version, data, threads, deadline_s=30.0, encode=None):
    batcher, io, _ = threads
    return Flight(version, data, io, batcher, deadline_s, encode).run()


async def test_an_image_comes_back_decoded_predicted_and_encoded_with_its_timings(threads):
    seg, body = await fly(FakeVersion(), b"abc", threads, encode=lambda seg: seg.mask.sum())
    assert seg.mask.tolist() == [[3, 3], [3, 3]] and body == 12
    assert set(seg.timings_ms) == {"decode", "queue", "inference"}


async def test_the_event_loop_is_woken_once_per_image(threads, monkeypatch):
    loop = asyncio.get_running_loop()
    wakes = []
    real = loop.call_soon_threadsafe
    monkeypatch.setattr(loop, "call_soon_threadsafe",
                        lambda *args: (wakes.append(args[0]), real(*args))[1])
    await fly(FakeVersion(), b"abc", threads, encode=lambda seg: b"body")
    assert len(wakes) == 1


async def test_a_decode_error_reaches_the_caller_as_it_is_and_nothing_is_queued(threads):
    version = FakeVersion()
    with pytest.raises(InvalidInput, match="not an image"):
        await fly(version, b"bad", threads)
    assert version.predicted == [] and threads[2] == []


async def test_a_failing_predict_is_predict_failed_with_its_error_as_the_cause(threads):
    with pytest.raises(PredictFailed) as caught:
        await fly(FakeVersion(predict_error=MemoryError("out")), b"abc", threads)
    assert isinstance(caught.value.__cause__, MemoryError)


async def test_a_caller_gone_while_queued_is_dropped_and_never_computed(threads):
    hold = threading.Event()
    busy_version, version = FakeVersion(hold_predict=hold), FakeVersion()
    busy = asyncio.create_task(fly(busy_version, b"x", threads))
    await asyncio.to_thread(busy_version.predicting.wait, 10)  # the one worker is held
    gone = asyncio.create_task(fly(version, b"abc", threads))
    assert await asyncio.to_thread(threads[0].wait_until_queued, 1, 10)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    hold.set()
    await busy
    await fly(FakeVersion(), b"y", threads)  # the worker has moved past the dropped image
    assert version.predicted == [] and threads[2] == ["disconnect"]


async def test_a_deadline_during_decode_answers_at_once_and_never_queues(threads):
    hold = threading.Event()
    version = FakeVersion(hold_decode=hold)
    try:
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(fly(version, b"abc", threads, deadline_s=0.05), 5)
    finally:
        hold.set()
    await fly(FakeVersion(), b"y", threads)  # decoded after the held image, on the one thread
    assert version.predicted == [] and threads[2] == ["deadline"]
    assert threads[0].depth == 0


async def test_a_deadline_after_predict_answered_lets_the_encode_finish(threads):
    encoding, hold = threading.Event(), threading.Event()

    def slow_encode(seg):
        encoding.set()
        hold.wait(10)
        return b"late but sent"

    flight = asyncio.create_task(fly(FakeVersion(), b"abc", threads, deadline_s=0.2,
                                     encode=slow_encode))
    await asyncio.to_thread(encoding.wait, 10)
    await asyncio.sleep(0.3)  # past the deadline, with the encode under way
    hold.set()
    _, body = await flight
    assert body == b"late but sent" and threads[2] == []


@pytest.mark.parametrize("data", [b"abc", b"bad"])
async def test_a_finished_flight_is_freed_without_the_cycle_collector(threads, data):
    # A cycle (the batcher's item calls back into its flight; a raised error's traceback holds
    # the frame that holds the flight) kept each image, mask and body until the collector ran.
    batcher, io, _ = threads
    gc.disable()
    try:
        flight = Flight(FakeVersion(), data, io, batcher, 30.0, lambda seg: b"body")
        alive = weakref.ref(flight)
        with contextlib.suppress(InvalidInput):
            await flight.run()
        del flight
        await fly(FakeVersion(), b"y", threads)  # the one I/O thread and worker have moved on
        assert alive() is None
    finally:
        gc.enable()
