"""A watchdog for the worker's event loop: warns, with the stack that held it, when the loop stops turning.

Hundreds of tasks share one loop, so one blocking call (a synchronous Redis or database round
trip, a CPU-heavy parse) delays every one of them. The watchdog runs in a thread of its own:
every `interval` it schedules a no-op on the loop and waits for it. When the no-op has not run
within the threshold, it records what the loop thread is executing at that moment, and once
the loop answers it logs how long, and that stack:
- `event loop blocked` when code was running on the loop: a call that should not be there;
- `event loop late` when the loop thread was between callbacks (in the loop's own wait): the
  process or the machine held it up (another thread holding the GIL, a busy CPU), not the code.
"""

import asyncio
import logging
import sys
import threading
import time
import traceback
from types import CodeType, FrameType

logger = logging.getLogger(__name__)


class LoopWatchdog:
    """Measures how late an event loop runs a callback; warns past `threshold_s`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        loop_thread_id: int,
        *,
        threshold_s: float,
        idle_in: CodeType | None = None,
    ):
        self._loop = loop
        self._loop_thread_id = loop_thread_id
        # The innermost Python frame of the loop thread while it waits: uvloop waits and dispatches
        # in C, under the function that called run_forever; the pure-Python loop in its selector.
        self._idle_in = idle_in
        self._threshold_s = threshold_s
        self._interval_s = min(max(threshold_s / 2, 0.01), 0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="taskwire-loop-watchdog", daemon=True)
        self.max_lag_s = 0.0
        self.blocked = 0  # times code on the loop held it past the threshold
        self.late = 0  # times the loop, idle, ran late past the threshold

    def is_waiting(self, frame: FrameType) -> bool:
        """Whether the loop thread, at `frame`, is in the loop's own wait rather than in our code."""
        return frame.f_code is self._idle_in or (
            frame.f_code.co_name == "select" and "selectors" in frame.f_code.co_filename
        )

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and log the summary."""
        self._stop.set()
        self._thread.join(timeout=2)
        logger.info(
            "event loop watchdog stopped",
            extra={"max_lag_ms": round(self.max_lag_s * 1000, 1), "blocked": self.blocked, "late": self.late},
        )

    def _watch(self) -> None:
        while not self._stop.wait(self._interval_s):
            answered = threading.Event()
            posted = time.monotonic()
            try:
                self._loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # the loop is closed
                return
            stack, idle = None, False
            if not answered.wait(self._threshold_s):
                frame = sys._current_frames().get(self._loop_thread_id)
                idle = frame is None or self.is_waiting(frame)
                stack = "".join(traceback.format_stack(frame, limit=15)) if frame is not None else "(no frame)"
                while not answered.wait(0.1):
                    if self._stop.is_set():
                        return
            lag = time.monotonic() - posted
            self.max_lag_s = max(self.max_lag_s, lag)
            if stack is None:
                continue
            extra = {"blocked_ms": round(lag * 1000, 1), "stack": stack}
            if idle:
                self.late += 1
                logger.warning("event loop late", extra=extra)
            else:
                self.blocked += 1
                logger.warning("event loop blocked", extra=extra)
