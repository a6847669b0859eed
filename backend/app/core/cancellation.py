"""Stopping background tasks for sure, even when a library swallowed the cancellation."""

import asyncio
import logging
from collections.abc import Iterable

logger = logging.getLogger(__name__)

# redis-py can swallow a cancellation that lands in the middle of a command: the task carries on
# as if nothing happened (seen: a bus sender back to waiting for work, and an API replica whose
# shutdown waited for ever on its presence heartbeat, 1 stop in 20 under test). Asking again
# every RETRY_S ends them.
RETRY_S = 0.1


async def cancel_and_wait(tasks: Iterable["asyncio.Task[object]"], *, timeout_s: float = 5.0) -> None:
    """Cancel the tasks and wait until they have ended, cancelling again while any carries on.

    Past `timeout_s` the ones still running are logged and left behind.
    """
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RETRY_S)
    if pending:
        logger.warning("background tasks did not stop", extra={"tasks": sorted(t.get_name() for t in pending)})
