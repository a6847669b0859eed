"""Waiting on conditions, never on fixed sleeps: every wait has a timeout and says what did not happen."""

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection


def wait_until(condition: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {what}")
        time.sleep(interval_s)


async def next_frame(ws: ClientConnection, *, timeout_s: float = 10.0, what: str = "a frame") -> dict[str, Any]:
    """The next JSON frame from the socket."""
    try:
        raw = await asyncio.wait_for(ws.recv(), timeout=timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def frames_until(
    ws: ClientConnection, stop: Callable[[dict[str, Any]], bool], *, timeout_s: float = 30.0, what: str
) -> list[dict[str, Any]]:
    """Every frame up to and including the first for which `stop` holds (pings skipped)."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; got {len(frames)} frames")
        frame = await next_frame(ws, timeout_s=remaining, what=what)
        if frame.get("type") == "ping":
            continue
        frames.append(frame)
        if stop(frame):
            return frames
