"""The I/O threads (app/io_threads.py): results and errors come back to the caller, a call whose
caller left while it waited never runs, and shutdown finishes what is queued."""

import asyncio
import threading

import pytest

from app.io_threads import IOThreads


async def test_a_call_returns_its_result_or_raises_its_error_on_a_thread_of_the_pool():
    local = threading.local()
    pool = IOThreads(2, "t", initializer=lambda: setattr(local, "ready", True))

    def where(x):
        return x * 2, threading.current_thread().name, getattr(local, "ready", False)

    def fail():
        raise ValueError("bad bytes")

    try:
        doubled, name, ready = await pool.run(where, 21)
        assert (doubled, ready) == (42, True) and name.startswith("t_")
        with pytest.raises(ValueError, match="bad bytes"):
            await pool.run(fail)
    finally:
        await asyncio.to_thread(pool.shutdown)


async def test_a_call_whose_caller_left_while_it_waited_never_runs():
    pool = IOThreads(1)
    gate, ran = threading.Event(), []
    busy = asyncio.ensure_future(pool.run(gate.wait))
    await asyncio.sleep(0.05)  # the one thread is now blocked on the gate
    waiting = asyncio.ensure_future(pool.run(ran.append, "ran"))
    await asyncio.sleep(0)
    waiting.cancel()
    gate.set()
    assert await busy is True
    await asyncio.to_thread(pool.shutdown)
    assert ran == [] and waiting.cancelled()


async def test_shutdown_finishes_the_queued_calls_then_refuses_new_ones():
    pool = IOThreads(1)
    done = []
    calls = [asyncio.ensure_future(pool.run(done.append, i)) for i in range(5)]
    await asyncio.sleep(0)
    await asyncio.to_thread(pool.shutdown)
    await asyncio.gather(*calls)
    assert done == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="shut down"):
        await pool.run(done.append, 5)


def test_a_submitted_call_that_raises_is_logged_and_the_thread_serves_on(caplog):
    pool = IOThreads(1, "t")
    ran = threading.Event()

    def fail():
        raise ValueError("lost result")

    pool.submit(fail)
    pool.submit(ran.set)
    try:
        assert ran.wait(10)
    finally:
        pool.shutdown()
    assert "a call submitted to the I/O threads failed" in caplog.text
    assert "lost result" in caplog.text
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(ran.set)
