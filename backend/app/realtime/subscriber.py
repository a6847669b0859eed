"""One Redis connection in subscribe mode, read in batches: every reply that has arrived is
handed on in one synchronous call as the bytes come in.

redis-py's `PubSub.get_message` costs a task wake-up, a timeout, a retry wrapper, a health
check and a dict per message; on a replica fanning out thousands of envelopes a second that
was a fifth of its busy time (docs/performance.md). Subscribe mode needs little of a client:
connect, authenticate, write (S)SUBSCRIBE commands, read pushes. This is that, on an asyncio
protocol fed to hiredis's reader.

Under load it also reads at most once per `read_window_s`, as a network card moderates its
interrupts: each wake-up of the replica for one message cost about as much as the message's
socket write (docs/performance.md), so while messages come at two or more per window, those
that arrive close together wait up to one window and are handled in one pass. Slower streams,
and a message after a quiet spell, are read as they come.
"""

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

# A push or reply from Redis, as hiredis reads it: ["message", channel, data], ["subscribe", channel, count], ...
Reply = list[object]
OnReplies = Callable[[list[Reply]], None]  # every push of one read, in order

CONNECT_TIMEOUT_S = 5.0


class SubscriberLost(ConnectionError):
    """The subscribe connection closed, failed, or Redis refused one of its commands."""


class _SubscriberProtocol(asyncio.Protocol):
    def __init__(self, on_replies: OnReplies, read_window_s: float = 0.0):
        self._on_replies = on_replies
        self._loop = asyncio.get_running_loop()
        self._read_window_s = read_window_s
        self._last_read_at = float("-inf")
        self._resume: asyncio.TimerHandle | None = None
        # Text, as the rest of the bus reads it; bytes that are not UTF-8 come out replaced and
        # the envelope is skipped as malformed further on, the connection carries on.
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace")
        self._waiting: deque[asyncio.Future[object]] = deque()  # replies to AUTH, before subscribe mode
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[SubscriberLost] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        replies: list[Reply] = []
        try:
            while (reply := self._reader.gets()) is not False:
                if self._waiting:
                    self._waiting.popleft().set_result(reply)
                elif isinstance(reply, hiredis.ReplyError):
                    raise SubscriberLost(f"Redis refused a subscription command: {reply}")
                elif isinstance(reply, list):
                    replies.append(reply)
            if self._read_window_s:
                self._pace(len(replies))
            if replies:
                self._on_replies(replies)
        except Exception as exc:  # a protocol error, a refusal, or a bug in the handler: start over
            # (pushes read before a refusal are dropped with the connection: the listener's
            # reconnect catches every socket up from history)
            self.fail(exc if isinstance(exc, SubscriberLost) else SubscriberLost(repr(exc)))

    def _pace(self, replies: int) -> None:
        # Messages coming at two or more per window (this read's over the time since the last
        # one): leave the next ones in the socket until the window has passed, so one wake-up
        # handles several. Slower than that, a pause costs more than it saves (a timer wake-up
        # and two epoll changes per window, measured in docs/performance.md §3).
        now = time.monotonic()
        if replies * self._read_window_s >= 2 * (now - self._last_read_at) and self.transport is not None:
            self.transport.pause_reading()
            self._resume = self._loop.call_later(self._read_window_s, self._resume_reading)
        self._last_read_at = now

    def _resume_reading(self) -> None:
        self._resume = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(SubscriberLost(f"connection lost: {exc!r}" if exc else "connection closed by Redis"))

    def fail(self, reason: SubscriberLost) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_exception(reason)
        self._waiting.clear()
        if self._resume is not None:
            self._resume.cancel()
        if self.transport is not None:
            self.transport.close()

    def request(self, *args: str) -> "asyncio.Future[object]":
        waiter: asyncio.Future[object] = self._loop.create_future()
        self._waiting.append(waiter)
        self.write(*args)
        return waiter

    def write(self, *args: str) -> None:
        if self.lost.done() or self.transport is None:
            raise self.lost.result() if self.lost.done() else SubscriberLost("not connected")
        self.transport.write(pack(args))


class Subscriber:
    """An open subscribe connection: `subscribe`/`unsubscribe` write at once (their
    confirmations come back through `on_replies`), `lost` resolves when it ends."""

    def __init__(self, protocol: _SubscriberProtocol, *, sharded: bool):
        self._protocol = protocol
        self._sharded = sharded
        self.lost = protocol.lost

    def subscribe(self, channels: list[str]) -> None:
        """Subscribe to `channels` (SSUBSCRIBE when sharded: then all of one slot)."""
        if channels:
            self._protocol.write("SSUBSCRIBE" if self._sharded else "SUBSCRIBE", *channels)

    def unsubscribe(self, channels: list[str]) -> None:
        """Unsubscribe from `channels`."""
        if channels:
            self._protocol.write("SUNSUBSCRIBE" if self._sharded else "UNSUBSCRIBE", *channels)


@contextlib.asynccontextmanager
async def open_subscriber(
    client: aioredis.Redis, on_replies: OnReplies, *, sharded: bool = False, read_window_s: float = 0.0
) -> AsyncIterator[Subscriber]:
    """A subscribe connection to the Redis `client` talks to (its address, credentials and TLS),
    closed on exit. `on_replies` gets the pushes of each read, in order, on the event loop; under
    load, reads are at least `read_window_s` apart (0: read whenever data arrives)."""
    pool = client.connection_pool
    options = pool.connection_kwargs
    loop = asyncio.get_running_loop()
    protocol = _SubscriberProtocol(on_replies, read_window_s)
    async with asyncio.timeout(options.get("socket_connect_timeout") or CONNECT_TIMEOUT_S):
        if issubclass(pool.connection_class, UnixDomainSocketConnection):
            await loop.create_unix_connection(lambda: protocol, options["path"])
        else:
            context = _ssl_context(pool) if issubclass(pool.connection_class, SSLConnection) else None
            host, port = options.get("host", "localhost"), options.get("port", 6379)
            await loop.create_connection(lambda: protocol, host, port, ssl=context)
        try:
            if options.get("password"):
                user = [options["username"]] if options.get("username") else []
                reply = await protocol.request("AUTH", *user, options["password"])
                if isinstance(reply, hiredis.ReplyError):
                    raise SubscriberLost(f"Redis refused the bus's credentials: {reply}")
        except BaseException:
            protocol.fail(SubscriberLost("closed during its handshake"))
            raise
    try:
        yield Subscriber(protocol, sharded=sharded)
    finally:
        protocol.fail(SubscriberLost("closed"))


def _ssl_context(pool: aioredis.ConnectionPool) -> ssl.SSLContext:
    # The pool's own connection class builds the context from the URL's ssl_* options (no I/O).
    connection = pool.connection_class(**pool.connection_kwargs)
    context: ssl.SSLContext = connection.ssl_context.get()  # type: ignore[attr-defined]
    return context


def pack(args: tuple[str, ...]) -> bytes:
    """One command in Redis's protocol (RESP)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)
