"""cancel_and_wait: background tasks end at shutdown even when one swallows a cancellation."""

import asyncio
import logging

import pytest

from app.core.cancellation import cancel_and_wait


async def test_a_task_that_swallows_the_first_cancellation_is_still_stopped() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 1:
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]  # as redis-py can
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait([task], timeout_s=2), timeout=3)
    assert task.cancelled() and swallowed == 2


async def test_one_that_never_stops_is_named_and_left_behind(caplog: pytest.LogCaptureFixture) -> None:
    listening = asyncio.Event()

    async def deaf() -> None:
        while not listening.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.create_task(deaf(), name="deaf")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING):
        await cancel_and_wait([task], timeout_s=0.3)
    assert not task.done()
    assert any(getattr(record, "tasks", None) == ["deaf"] for record in caplog.records)
    listening.set()
    task.cancel()
    await asyncio.wait({task})
