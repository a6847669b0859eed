"""One open WebSocket of this replica: its bounded queue, its sender, its replay read a page at a time."""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketState

from app.metrics import registry as metrics
from app.realtime import history
from app.realtime.envelopes import CloseCode, stream_id_key
from app.realtime.frames import FrameWriter, abort_transport, frames_of, text_frame

logger = logging.getLogger(__name__)

# One queue slot: a single frame, or a batch (hello + replayed history) sent back to back.
QueueItem = str | list[str]
_SLOW_CONSUMER = "slow consumer: reconnect with your last id"
DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024
# A client may resume on an open socket a few times in a row, then once every few seconds:
# each resume reads history from Redis and may queue all of it.
RESUME_BURST = 3
RESUME_REFILL_S = 2.0
# Queued frames go to the transport this much at a time, each slice once the transport has
# room, so its buffer (which the budget counts) never takes a whole replay at once.
WRITE_SLICE_CHARS = 64 * 1024
# A close that cannot be sent in this long (the peer reads nothing) aborts the connection.
CLOSE_SEND_S = 1.0


class ReplayPages:
    """The rest of a replay, read from history a page at a time as the socket takes it."""

    __slots__ = ("_after", "_read", "_until", "owed", "told_lost")

    def __init__(
        self,
        read: Callable[[str, str], Awaitable[list[history.HistoryEntry]]],
        after: str,
        until: str,
        owed: int,
        told_lost: Callable[[], str],
    ):
        self._read, self._after, self._until = read, after, until
        self.owed = owed  # envelopes still to come, as counted when the replay began
        self.told_lost = told_lost  # the `hello` for a replay cut short (history trimmed meanwhile)

    async def next_page(self) -> list[history.HistoryEntry]:
        """The next envelopes of the replay; empty once it is done."""
        if self.owed <= 0:
            return []
        entries = await self._read(self._after, self._until)
        if entries:
            self._after = entries[-1].id
            self.owed -= len(entries)
        else:
            self.owed = -self.owed  # what was counted is gone: trimmed while the client read slowly
        return entries


class _TokenBucket:
    """`burst` takes at once, then one more every `refill_s`."""

    __slots__ = ("_at", "_burst", "_refill_s", "_tokens")

    def __init__(self, burst: int, refill_s: float):
        self._burst, self._refill_s = burst, refill_s
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) / self._refill_s)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class ClientConnection:
    """One open WebSocket: envelopes are queued here and written by a sender task.

    The sender task exists only while there is something to write: an idle socket holds no
    task (about 3 KiB each, docs/scaling.md).

    The watermark is the newest envelope id this socket has been given (or was not owed, for
    a fresh connection: the history head when it connected). Live envelopes at or below it are
    duplicates of replayed history and are dropped; after a bus outage the connection catches
    up from history above it.
    """

    # One per socket, ten thousand per replica: slots instead of a dict each (docs/scaling.md).
    __slots__ = (
        "_closer",
        "_frames",
        "_held",
        "_held_bytes",
        "_pages",
        "_pending",
        "_queue_bytes",
        "_queue_size",
        "_resumes",
        "_sender",
        "_started",
        "_watermark",
        "close_code",
        "connection_id",
        "greeted",
        "opened_at",
        "participant_id",
        "replaying",
        "unsent_bytes",
        "watermark_id",
        "websocket",
    )

    def __init__(
        self, websocket: WebSocket, participant_id: str, *, queue_size: int, queue_bytes: int = DEFAULT_QUEUE_BYTES
    ):
        self.websocket = websocket
        self.participant_id = participant_id
        self.connection_id = uuid.uuid4().hex
        self.opened_at = time.monotonic()
        # A list, not a deque: on every idle socket an empty deque is 760 bytes, a list 56; the
        # queue is short and mostly leaves whole (docs/scaling.md, capacity).
        self._pending: list[QueueItem] = []
        self._queue_size = queue_size
        # Bytes queued and not yet written (an item being written counts until it is): a replay
        # is one queue item however large, so the item count alone does not bound memory.
        self._queue_bytes = queue_bytes
        self.unsent_bytes = 0
        self.replaying = False  # a replay is queued or being written: a resume must wait for it
        self._resumes = _TokenBucket(RESUME_BURST, RESUME_REFILL_S)
        self._started = False
        # Live envelopes that arrive while history is being read wait here, so the hand-over
        # from replay to live has no gap.
        self._held: list[tuple[str, str]] | None = []
        self._held_bytes = 0
        self._pages: ReplayPages | None = None  # what is left of a replay, read as the socket takes it
        self._watermark: tuple[int, int] | None = None
        self.watermark_id: str | None = None
        self.greeted = False  # its `hello` is queued: from then on it may be pinged
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        # Frames written straight to uvicorn's transport, built once per envelope (frames.py);
        # None for any other socket, which is written through its ASGI send.
        self._frames = FrameWriter.of(websocket)

    def offer(self, envelope_id: str, text: str, key: tuple[int, int] | None = None) -> bool:
        """Queue a live envelope without waiting; False when the socket is too slow and is being closed.

        `key` is `stream_id_key(envelope_id)`, when the caller has it (once per envelope).
        """
        if self.close_code is not None:
            return False
        if self._held is not None:
            if self._held_bytes + len(text) > self._queue_bytes:
                self._close_slow()
                return False
            self._held.append((envelope_id, text))
            self._held_bytes += len(text)
            return True
        if key is None:
            key = stream_id_key(envelope_id)
        if self._watermark is not None and key <= self._watermark:
            return True  # already sent through replay
        if not self._put(text):
            return False
        self._raise_watermark(envelope_id, key)
        return True

    def offer_control(self, text: str) -> None:
        """Queue a control frame (`ping`, `error`) for this socket only; it has no id."""
        if self.close_code is None:
            self._put(text)

    def hold(self) -> None:
        """Hold live envelopes back while history is read for this socket."""
        if self._held is None:
            self._held = []

    def release(
        self,
        frames: list[str],
        replay: list[history.HistoryEntry],
        *,
        floor_id: str | None,
        keep_held: bool = True,
        pages: ReplayPages | None = None,
    ) -> None:
        """Queue `frames` and the replay's first page as one batch; once the replay is all sent
        (`pages` holds the rest), the held live envelopes above what was sent follow.

        `floor_id` is what the client already has (its `last_id`); held envelopes at or below
        it, or below the last replayed one, are dropped as duplicates. With `keep_held` False
        the held ones are dropped: the user's subscription was not in place when history was
        read, so they may start after a gap, and a catch-up from history must follow.
        """
        if not keep_held:
            self._held, self._held_bytes = [], 0
        self.greeted = True
        if floor_id is not None:
            self._raise_watermark(floor_id, stream_id_key(floor_id))
        if replay:
            self._raise_watermark(replay[-1].id, stream_id_key(replay[-1].id))
        batch = [*frames, *(entry.text for entry in replay)]
        metrics.ws_replayed.inc(len(replay))
        if batch and not self._put(batch):
            return
        self._pages = pages
        if replay or pages is not None:
            self.replaying = True
        if pages is None:
            self._release_held()
        else:
            self._kick()

    def _release_held(self) -> None:
        held, self._held, self._held_bytes = self._held or [], None, 0
        for envelope_id, text in held:
            self.offer(envelope_id, text)

    def not_owed_before(self, head_id: str | None) -> None:
        """Start a fresh connection after `head_id`, unless live envelopes it was given already
        started its run.

        Those came from the user's channel, which delivers every envelope in order; envelopes
        between the last of them and `head_id` may still be on their way through it, so raising
        the watermark over them would leave a gap.
        """
        if head_id is not None and self._watermark is None:
            self._raise_watermark(head_id, stream_id_key(head_id))

    def not_yet_given(self, entries: list[history.HistoryEntry]) -> list[history.HistoryEntry]:
        """The entries above the watermark (a catch-up re-sends nothing this socket was given)."""
        if self._watermark is None:
            return entries
        watermark = self._watermark
        return [entry for entry in entries if stream_id_key(entry.id) > watermark]

    def start(self) -> None:
        """Start writing: what is queued now, and whatever is queued later."""
        self._started = True
        self._kick()

    def request_close(self, code: int, reason: str) -> None:
        """Close this socket soon, from any task, without waiting for it."""
        if self.close_code is None:
            self.close_code = code
            if code == CloseCode.SLOW_CONSUMER and self._sender is not None:
                self._sender.cancel()  # the client resumes from history; stop feeding a stuck socket
            self._closer = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def drain(self) -> None:
        """Wait until everything queued so far has been written to the socket (or writing failed)."""
        while self._sender is not None and not self._sender.done():
            await asyncio.wait({self._sender})

    async def stop(self) -> None:
        """Stop the sender task and let a requested close finish; the route owns the socket."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._closer is not None:
            await self._closer

    def may_resume(self) -> bool:
        """Whether a client `resume` is within its rate (and counts it if so)."""
        return self._resumes.take()

    def held_bytes(self) -> int:
        """Everything this socket holds and its client has not read: queued, held back during a
        replay, and in the transport's buffer."""
        buffered = self._frames.buffered() if self._frames is not None else 0
        return self.unsent_bytes + self._held_bytes + buffered

    def _put(self, item: QueueItem) -> bool:
        size = len(item) if isinstance(item, str) else sum(map(len, item))
        holding = self.held_bytes()
        # One item larger than the budget still goes on an idle socket (a large envelope).
        over_bytes = holding > 0 and holding + size > self._queue_bytes
        if len(self._pending) >= self._queue_size or over_bytes:
            self._close_slow()
            return False
        self._pending.append(item)
        self.unsent_bytes += size
        self._kick()
        return True

    def _close_slow(self) -> None:
        logger.warning(
            "closing a slow consumer", extra={"connection_id": self.connection_id, "unsent_bytes": self.held_bytes()}
        )
        self.request_close(CloseCode.SLOW_CONSUMER, _SLOW_CONSUMER)

    def _kick(self) -> None:
        if self.close_code == CloseCode.SLOW_CONSUMER:
            return  # its sender was stopped on purpose; the client resumes from history
        wanted = self._pending or self._pages is not None
        if self._started and wanted and (self._sender is None or self._sender.done()):
            if self._pages is None and self._write_now():
                return
            self._sender = asyncio.get_running_loop().create_task(self._send_pending())

    def _write_now(self) -> bool:
        """Write the one frame waiting, here and now, when the socket can take it; True if done.

        Most live frames reach an idle socket one at a time, and a task per frame was the largest
        cost of fan-out after the write itself (docs/scaling.md). A batch, a paused transport, or
        a socket without a frame writer goes to the sender task.
        """
        frames = self._frames
        if frames is None or len(self._pending) != 1 or not frames.can_write():
            return False
        text = self._pending[0]
        if not isinstance(text, str):
            return False
        frames.write(text_frame(text))
        self._pending.clear()
        self.unsent_bytes -= len(text)
        return True

    def _raise_watermark(self, envelope_id: str, key: tuple[int, int]) -> None:
        if self._watermark is None or key > self._watermark:
            self._watermark, self.watermark_id = key, envelope_id

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            if self.websocket.application_state == WebSocketState.CONNECTED:
                try:
                    await asyncio.wait_for(self.websocket.close(code=code, reason=reason), CLOSE_SEND_S)
                except TimeoutError:
                    # The peer reads nothing, so the close frame waits behind what it never read:
                    # drop the connection, and with it everything queued for it.
                    abort_transport(self.websocket)

    async def _send_pending(self) -> None:
        try:
            while True:
                if self._frames is not None:
                    await self._write_frames(self._frames)
                else:
                    await self._send_through_asgi()
                if self._pages is None or self.close_code is not None or self._pending:
                    return
                await self._next_page(self._pages)
        except asyncio.CancelledError:
            raise
        except Exception:  # the peer went away; the receive loop notices and cleans up
            self._drop_pending()
            logger.debug("sender stopped", exc_info=True)

    async def _next_page(self, pages: ReplayPages) -> None:
        """Queue the replay's next page once the last one was taken; at its end, the held live envelopes."""
        try:
            entries = await pages.next_page()
        except Exception:
            logger.warning("a replay page could not be read; closing the socket so its client resumes", exc_info=True)
            self.request_close(CloseCode.SERVICE_RESTART, "please reconnect")
            return
        if self._pages is not pages:
            return  # a catch-up began a new replay meanwhile, from what this socket was given
        if entries:
            self._raise_watermark(entries[-1].id, stream_id_key(entries[-1].id))
            metrics.ws_replayed.inc(len(entries))
            self._put([entry.text for entry in entries])
            return
        self._pages = None
        if pages.owed < 0:  # some of what was promised was trimmed away meanwhile: say so
            self._put(pages.told_lost())
        self.replaying = False
        self._release_held()

    async def _send_through_asgi(self) -> None:
        while self._pending:
            item = self._pending.pop(0)
            for text in (item,) if isinstance(item, str) else item:
                await self.websocket.send_text(text)
                self.unsent_bytes -= len(text)
            if not isinstance(item, str) and self._pages is None:
                self.replaying = False

    async def _write_frames(self, frames: FrameWriter) -> None:
        # What is queued goes out in slices, each when the transport has room: a client that
        # fell behind costs a system call per slice, not one per frame, and the transport's
        # buffer (counted in the socket's budget) never holds more than about a slice.
        while self._pending:
            await frames.writable()
            if not frames.is_open():
                self._drop_pending()
                return
            texts, batch_done = self._take_slice()
            frames.write(frames_of(texts))
            self.unsent_bytes -= sum(map(len, texts))
            if batch_done and self._pages is None:
                self.replaying = False

    def _take_slice(self) -> tuple[list[str], bool]:
        """Frames from the front of the queue, about WRITE_SLICE_CHARS of them; and whether a batch ended."""
        texts: list[str] = []
        size, batch_done = 0, False
        pending = self._pending
        while pending and size < WRITE_SLICE_CHARS:
            item = pending[0]
            if isinstance(item, str):
                pending.pop(0)
                texts.append(item)
                size += len(item)
                continue
            taken = 0
            while taken < len(item) and size < WRITE_SLICE_CHARS:
                size += len(item[taken])
                taken += 1
            texts.extend(item[:taken])
            if taken == len(item):
                pending.pop(0)
                batch_done = True
            else:
                pending[0] = item[taken:]
        return texts, batch_done

    def _drop_pending(self) -> None:
        # The socket cannot be written any more: nothing queued will go out, nor held or paged.
        self._pending.clear()
        self.unsent_bytes, self.replaying, self._pages = 0, False, None
        self._held, self._held_bytes = None, 0
