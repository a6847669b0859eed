"""A running task's envelopes: what its handler reports, published in order, coalesced and fenced.

The handler's calls return at once; one sender coroutine per execution publishes behind them.
Streamed text goes out at most once per CHAT_DELTA_INTERVAL_MS however fast the model writes
(the first piece at once), any other report goes out as soon as the text before it has, and
nothing waits on the database: progress is written there in the background, at most every
0.5 s. A publish the lease guard refuses (the task was taken over or cancelled) stops the
sender and is handed to the runner through `stopped`.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from app.realtime.envelopes import EnvelopeType
from app.realtime.publisher import AsyncEnvelopePublisher, PublishGuard, PublishRefused
from app.tasks.errors import LeaseLost, TaskCancelled, TransientError
from app.tasks.registry import TaskKindSpec

logger = logging.getLogger(__name__)

PROGRESS_DB_INTERVAL_S = 0.5

ProgressWriter = Callable[[str, float], Coroutine[Any, Any, None]]


def stop_reason(refusal: PublishRefused) -> Exception:
    """The runner's exception for a guard's refusal."""
    return LeaseLost() if refusal.reason == "owner" else TaskCancelled()


class EnvelopeStream:
    """The Reporter a runner hands to a handler (see tasks/contract.py)."""

    def __init__(
        self,
        publisher: AsyncEnvelopePublisher,
        kind: TaskKindSpec,
        task_id: uuid.UUID,
        participant_id: uuid.UUID,
        guard: PublishGuard,
        *,
        delta_interval_s: float,
        write_progress: ProgressWriter,
        stopped: asyncio.Future[None],
        opens_after: asyncio.Future[None] | None = None,
    ):
        self._publisher = publisher
        self._kind = kind
        self._task_id = str(task_id)
        self._participant_id = str(participant_id)
        self._guard = guard
        self._interval_s = delta_interval_s
        self._write_progress = write_progress
        self._text: list[str] = []
        self._queue: deque[tuple[EnvelopeType, dict[str, Any]]] = deque()
        # What the sender rests on, and whether new text ends its rest (not while it lets text gather).
        # A plain future and a timer per rest: this runs ~20 times a second per streaming task.
        self._nudge: asyncio.Future[None] | None = None
        self._nudged_by_text = True
        self._drained = asyncio.Event()  # nothing waits and nothing is being sent
        self._drained.set()
        self._hurry = False  # closing: stop letting text gather
        self._handing_over = False  # the runner takes what waits: stop before the next envelope
        self._last_delta_at = -float("inf")
        self._last_progress_write = -float("inf")
        self._progress_writes: set[asyncio.Task[None]] = set()
        # The execution's stop signal, shared with its lease renewer: set when a publish fails
        # (LeaseLost, TaskCancelled, or the Redis error itself).
        self.stopped = stopped
        # The envelope this stream must follow (the task's STARTED): nothing is sent before it is out.
        self._opens_after = opens_after
        self.last_id: str | None = None  # the newest envelope this stream published
        self._sender = asyncio.create_task(self._send_forever(), name=f"envelopes-{task_id}")

    # The Reporter protocol: each returns at once.

    def delta(self, text: str) -> None:
        """Queue the next piece of streamed text."""
        if text:
            self._text.append(text)
            self._drained.clear()
            if self._nudged_by_text:
                self._nudge_sender()

    def reset(self) -> None:
        """Tell the client to discard the text so far."""
        self._push(self._delta_type, {"delta": "", "reset": True})

    def progress(self, stage: str, message: str, fraction: float) -> None:
        """Queue a progress step; write it to the database now and then."""
        if self._kind.progress_type is None:
            raise TypeError(f"task kind {self._kind.name!r} declares no progress envelope")
        self._push(self._kind.progress_type, {"stage": stage, "message": message, "progress": fraction})
        now = time.monotonic()
        # At most one write in flight, and one per interval; the terminal write sets progress 1.0.
        if now - self._last_progress_write >= PROGRESS_DB_INTERVAL_S and not self._progress_writes:
            self._last_progress_write = now
            write: asyncio.Task[None] = asyncio.create_task(self._write_progress(stage, fraction))
            self._progress_writes.add(write)
            write.add_done_callback(self._progress_written)

    def retrying(self, next_attempt: int, delay_s: float, error: TransientError) -> None:
        """Tell the client a transient failure will be retried."""
        logger.warning("transient failure; retrying", extra={"code": error.code, "retry_in_s": round(delay_s, 2)})
        data = {"state": "RETRYING", "attempt": next_attempt, "retry_in_s": round(delay_s, 2), "reason": error.code}
        self._push(EnvelopeType.TASK_STATUS, data)

    # The runner's side.

    async def close(self) -> None:
        """Publish everything still waiting (at once), then stop; raises what stopped the sender, if anything."""
        self._hurry = True
        self._nudge_sender()
        if not self._drained.is_set():
            drained: asyncio.Future[Any] = asyncio.ensure_future(self._drained.wait())
            await asyncio.wait([drained, self.stopped], return_when=asyncio.FIRST_COMPLETED)
            drained.cancel()
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender
        await self._progress_written_all()
        if self.stopped.done():
            self.stopped.result()

    async def hand_over(self) -> list[tuple[EnvelopeType, dict[str, Any]]]:
        """Stop sending and return what still waits (the last text, mostly), for the runner to
        publish in the same round trip as the result; raises what stopped the sender, if anything."""
        self._handing_over = True
        self._nudge_sender()
        waiting: list[asyncio.Future[Any]] = [self._sender, self.stopped]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if self.stopped.done():
            self._sender.cancel()
            self.stopped.result()
        await self._progress_written_all()
        self._take_text()
        remaining = list(self._queue)
        self._queue.clear()
        return remaining

    def abandon(self) -> None:
        """Stop without publishing what waits (the execution ended some other way)."""
        self._sender.cancel()

    @property
    def _delta_type(self) -> EnvelopeType:
        if self._kind.delta_type is None:
            raise TypeError(f"task kind {self._kind.name!r} declares no streamed text")
        return self._kind.delta_type

    def _push(self, envelope_type: EnvelopeType, data: dict[str, Any]) -> None:
        self._take_text()
        self._queue.append((envelope_type, data))
        self._drained.clear()
        self._nudge_sender()

    def _take_text(self) -> None:
        if self._text:
            self._queue.append((self._delta_type, {"delta": "".join(self._text)}))
            self._text.clear()
            self._last_delta_at = time.monotonic()

    async def _progress_written_all(self) -> None:
        for write in list(self._progress_writes):
            with contextlib.suppress(Exception):
                await write

    def _progress_written(self, write: asyncio.Task[None]) -> None:
        self._progress_writes.discard(write)
        if not write.cancelled() and write.exception() is not None:
            logger.warning("could not record progress", exc_info=write.exception())

    def _nudge_sender(self) -> None:
        if self._nudge is not None and not self._nudge.done():
            self._nudge.set_result(None)

    async def _rest(self, seconds: float | None, *, ended_by_text: bool) -> None:
        loop = asyncio.get_running_loop()
        self._nudge, self._nudged_by_text = loop.create_future(), ended_by_text
        timer = loop.call_later(seconds, self._nudge_sender) if seconds is not None else None
        try:
            await self._nudge
        finally:
            if timer is not None:
                timer.cancel()
            self._nudge, self._nudged_by_text = None, True

    async def _send_forever(self) -> None:
        try:
            if self._opens_after is not None:
                await self._opens_after
            while not self._handing_over:
                if not (self._queue or self._text):
                    self._drained.set()
                    await self._rest(None, ended_by_text=True)
                    continue
                if not self._queue:
                    # Only text waits: let more of it gather until the interval is up.
                    wait = self._last_delta_at + self._interval_s - time.monotonic()
                    if wait > 0 and not self._hurry:
                        await self._rest(wait, ended_by_text=False)
                        continue
                    self._take_text()
                envelope_type, data = self._queue.popleft()
                await self._publish(envelope_type, data)
        except PublishRefused as refusal:
            self._stop(stop_reason(refusal))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis unreachable: the runner treats it as an infrastructure error
            self._stop(exc)

    def _stop(self, reason: Exception) -> None:
        if not self.stopped.done():
            self.stopped.set_exception(reason)

    async def _publish(self, envelope_type: EnvelopeType, data: dict[str, Any]) -> None:
        self.last_id = await self._publisher.publish(
            self._participant_id, envelope_type, self._task_id, data, guard=self._guard
        )
