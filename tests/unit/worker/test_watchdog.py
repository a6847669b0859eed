"""The event loop watchdog: silent while the loop turns, loud (with the culprit's stack) when it does not."""

import asyncio
import logging
import sys
import threading
import time

import pytest

from app.worker.watchdog import LoopWatchdog


def _run_loop_with_watchdog(work: object, threshold_s: float) -> LoopWatchdog:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)  # the pure-Python loop waits in select()
    thread.start()
    assert thread.ident is not None
    watchdog = LoopWatchdog(loop, thread.ident, threshold_s=threshold_s)
    watchdog.start()
    try:
        asyncio.run_coroutine_threadsafe(work, loop).result(timeout=10)  # type: ignore[arg-type]
        time.sleep(threshold_s * 2)
    finally:
        watchdog.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
    return watchdog


def _blocking_redis_call_stand_in() -> None:
    time.sleep(0.15)  # what a synchronous round trip on the loop does to every other task


async def _blocks_the_loop() -> None:
    await asyncio.sleep(0.05)
    _blocking_redis_call_stand_in()
    await asyncio.sleep(0.05)


async def _awaits_politely() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


def test_a_blocking_call_is_reported_with_its_stack(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.worker.watchdog"):
        watchdog = _run_loop_with_watchdog(_blocks_the_loop(), threshold_s=0.05)
    warnings = [r for r in caplog.records if r.getMessage() == "event loop blocked"]
    assert watchdog.blocked == 1 and len(warnings) == 1
    assert warnings[0].blocked_ms >= 100  # type: ignore[attr-defined]
    assert "_blocking_redis_call_stand_in" in warnings[0].stack  # type: ignore[attr-defined]
    assert watchdog.max_lag_s >= 0.1


def test_a_loop_that_keeps_turning_is_never_reported(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.worker.watchdog"):
        watchdog = _run_loop_with_watchdog(_awaits_politely(), threshold_s=0.05)
    assert watchdog.blocked == 0
    assert not [r for r in caplog.records if r.getMessage() == "event loop blocked"]
    assert 0 < watchdog.max_lag_s < 0.05, "it measured the loop"


def test_a_loop_waiting_for_events_is_told_apart_from_code_running_on_it() -> None:
    # When the loop is late, this decides between "the process held it up" and "our code did".
    loop = asyncio.new_event_loop()
    waiting = threading.Thread(target=loop.run_forever, daemon=True)
    busy_until = time.monotonic() + 1

    def busy() -> None:
        while time.monotonic() < busy_until:
            pass

    running = threading.Thread(target=busy, daemon=True)
    waiting.start()
    running.start()
    try:
        time.sleep(0.2)  # the loop is in its selector by now, the other thread in busy()
        assert waiting.ident is not None and running.ident is not None
        watchdog = LoopWatchdog(loop, waiting.ident, threshold_s=0.05)
        frames = sys._current_frames()
        assert watchdog.is_waiting(frames[waiting.ident])
        assert not watchdog.is_waiting(frames[running.ident])
    finally:
        loop.call_soon_threadsafe(loop.stop)
        waiting.join(timeout=5)
        running.join(timeout=5)
        loop.close()
