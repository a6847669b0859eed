"""A watchdog for the worker's event loop: warns, with the stack that held it, when the loop stops turning.

Hundreds of tasks share one loop, so one blocking call (a synchronous Redis or database round
trip, a CPU-heavy parse) delays every one of them. The watchdog runs in a thread of its own:
every `interval` it schedules a no-op on the loop and waits for it. When the no-op has not run
within the threshold, it samples what the loop thread is executing every few milliseconds until
the loop answers, then logs how late it was and why:
- `event loop blocked`: one step of one task held the loop (every sample in it, or for half the
  threshold and more): a call that should not be there. The stack is that step's.
- `event loop busy`: many short steps, none of them long, were ready at once (two hundred
  streams starting together): the loop has more work than one core does in the threshold, a
  capacity signal rather than a bug.
- `event loop late`: the process or the machine held it up, not the code: the loop thread was
  in the loop's own wait, or, where Linux tells (the thread's `schedstat`), it spent most of the
  delay waiting for a CPU, for another thread holding the GIL, or in garbage collection. One
  stack alone cannot tell this from a blocking call: on a busy two-core machine the loop thread,
  stopped for 390 ms, was caught in a one-line property.
"""

import asyncio
import gc
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

logger = logging.getLogger(__name__)

_SAMPLE_EVERY_S = 0.005
_LOOP_FILES = (f"asyncio{os.sep}base_events.py", f"asyncio{os.sep}events.py", f"asyncio{os.sep}runners.py")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


class ThreadClock:
    """CPU and run-queue time of one thread (Linux `schedstat`), and CPU time of its whole process."""

    def __init__(self, native_id: int | None):
        self._path = f"/proc/self/task/{native_id}/schedstat"
        self.available = native_id is not None and os.path.exists(self._path)

    def read(self) -> tuple[float, float, float]:
        """(thread on CPU, thread waiting for a CPU, process on CPU), in seconds; zeros when unknown."""
        if not self.available:
            return 0.0, 0.0, 0.0
        try:
            with open(self._path, "rb") as f:
                on_cpu_ns, runqueue_ns, _ = f.read().split()
        except (OSError, ValueError):
            self.available = False
            return 0.0, 0.0, 0.0
        return int(on_cpu_ns) / 1e9, int(runqueue_ns) / 1e9, time.process_time()


class CollectorClock:
    """Seconds one thread has spent in garbage collection, from `gc.callbacks`."""

    def __init__(self, thread_id: int):
        self._thread_id = thread_id
        self._started = 0.0
        self.total_s = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if threading.get_ident() != self._thread_id:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total_s += time.perf_counter() - self._started


@dataclass
class _Sample:
    at: float
    step: FrameType | None  # the outermost frame of the step running, None while the loop waits
    stack: str


class LoopWatchdog:
    """Measures how late an event loop runs a callback; warns past `threshold_s`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        loop_thread: threading.Thread,
        *,
        threshold_s: float,
        idle_in: CodeType | None = None,
    ):
        assert loop_thread.ident is not None, "start the loop thread first"
        self._loop = loop
        self._loop_thread_id = loop_thread.ident
        self._clock = ThreadClock(loop_thread.native_id)
        self._collector = CollectorClock(loop_thread.ident)
        # The innermost Python frame of the loop thread while it waits: uvloop waits and dispatches
        # in C, under the function that called run_forever; the pure-Python loop in its selector.
        self._idle_in = idle_in
        self._threshold_s = threshold_s
        self._interval_s = min(max(threshold_s / 2, 0.01), 0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="taskwire-loop-watchdog", daemon=True)
        self.max_lag_s = 0.0
        self.blocked = 0  # times one step of our code held the loop past the threshold
        self.busy = 0  # times many short steps together did
        self.late = 0  # times the process or the machine did

    def is_waiting(self, frame: FrameType) -> bool:
        """Whether the loop thread, at `frame`, is in the loop's own wait rather than in our code."""
        return frame.f_code is self._idle_in or (
            frame.f_code.co_name == "select" and "selectors" in frame.f_code.co_filename
        )

    def start(self) -> None:
        """Start watching."""
        gc.callbacks.append(self._collector)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and log the summary."""
        self._stop.set()
        self._thread.join(timeout=2)
        if self._collector in gc.callbacks:
            gc.callbacks.remove(self._collector)
        logger.info(
            "event loop watchdog stopped",
            extra={
                "max_lag_ms": _ms(self.max_lag_s),
                "blocked": self.blocked,
                "busy": self.busy,
                "late": self.late,
            },
        )

    def _watch(self) -> None:
        while not self._stop.wait(self._interval_s):
            answered = threading.Event()
            before = (*self._clock.read(), self._collector.total_s)
            posted = time.monotonic()
            try:
                self._loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # the loop is closed
                return
            if answered.wait(self._threshold_s):
                self.max_lag_s = max(self.max_lag_s, time.monotonic() - posted)
                continue
            samples: list[_Sample] = []
            while True:
                samples.append(self._sample())
                if answered.wait(_SAMPLE_EVERY_S):
                    break
                if self._stop.is_set():
                    return
            lag = time.monotonic() - posted
            self.max_lag_s = max(self.max_lag_s, lag)
            self._report(lag, samples, before, (*self._clock.read(), self._collector.total_s))
            samples.clear()  # the frames held keep their coroutines' locals alive

    def _sample(self) -> _Sample:
        frame = sys._current_frames().get(self._loop_thread_id)
        if frame is None:
            return _Sample(time.monotonic(), None, "(no frame)")
        stack = "".join(traceback.format_stack(frame, limit=15))
        return _Sample(time.monotonic(), None if self.is_waiting(frame) else self._step_of(frame), stack)

    def _step_of(self, frame: FrameType) -> FrameType:
        """The outermost frame above the loop's own: which task or callback is running."""
        step = frame
        current: FrameType | None = frame
        while current is not None:
            code = current.f_code
            if code is self._idle_in or code.co_filename.endswith(_LOOP_FILES):
                return step
            step, current = current, current.f_back
        return step

    def _report(
        self,
        lag: float,
        samples: list[_Sample],
        before: tuple[float, float, float, float],
        after: tuple[float, float, float, float],
    ) -> None:
        on_cpu, runqueue = after[0] - before[0], after[1] - before[1]
        others = max(after[2] - before[2] - on_cpu, 0.0)
        collecting = after[3] - before[3]
        extra: dict[str, object] = {"blocked_ms": _ms(lag), "samples": len(samples), "gc_ms": _ms(collecting)}
        if self._clock.available:
            extra |= {"on_cpu_ms": _ms(on_cpu), "runqueue_ms": _ms(runqueue), "other_threads_ms": _ms(others)}
        # Time the loop thread could not run our code: waiting for a CPU, for the GIL's holder, or
        # collecting garbage (which runs wherever an allocation trips it).
        held_up = runqueue + others + collecting if self._clock.available else collecting
        ours = on_cpu - collecting if self._clock.available else 0.0
        running = [s for s in samples if s.step is not None]
        spans: dict[int, list[_Sample]] = {}
        for sample in running:
            spans.setdefault(id(sample.step), []).append(sample)
        longest = max(spans.values(), key=lambda seen: seen[-1].at - seen[0].at, default=[])
        one_step = len(spans) == 1 or (bool(longest) and longest[-1].at - longest[0].at >= self._threshold_s / 2)
        if not running or (held_up >= lag / 2 and ours < lag / 2):
            self.late += 1
            logger.warning("event loop late", extra={**extra, "stack": samples[0].stack})
        elif one_step:
            self.blocked += 1
            logger.warning("event loop blocked", extra={**extra, "stack": longest[0].stack})
        else:
            self.busy += 1
            logger.warning("event loop busy", extra={**extra, "steps": len(spans), "stack": running[0].stack})
