"""uvicorn's HTTP protocol with time limits on reading a request, which uvicorn does not have.

A client that sends a header byte every two seconds, or a body a byte at a time, held its
connection (and a file descriptor, and parser state) for as long as it liked: a thousand of them
stayed open (issue 25). Here the headers must arrive within HEADER_TIMEOUT_S of the request's
first byte, and the body within BODY_TIMEOUT_S of the headers, or the connection is closed.
A WebSocket upgrade leaves this protocol once its headers are in, with no timer behind.
"""

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 60.0


def timed_http_protocol(header_timeout_s: float, body_timeout_s: float) -> type["TimedHttpProtocol"]:
    """The protocol class for uvicorn's `http=`, with these limits."""
    return type(
        "TimedHttpProtocol",
        (TimedHttpProtocol,),
        {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s},
    )


class TimedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes a connection whose request is read too slowly."""

    header_timeout_s = HEADER_TIMEOUT_S
    body_timeout_s = BODY_TIMEOUT_S
    _reading_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection: its first request's headers are due within the header timeout."""
        super().connection_made(transport)
        self._time_reading(self.header_timeout_s)

    def on_message_begin(self) -> None:
        """A request begins (the next on a kept-alive connection): its headers are due."""
        super().on_message_begin()
        if self._reading_timer is None:
            self._time_reading(self.header_timeout_s)

    def on_headers_complete(self) -> None:
        """The headers are in: a body, if one follows, is due within the body timeout."""
        self._stop_timing()
        upgrading = self.parser.should_upgrade()
        super().on_headers_complete()
        if not upgrading:
            self._time_reading(self.body_timeout_s)

    def on_message_complete(self) -> None:
        """The whole request is in."""
        self._stop_timing()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone; so is its timer."""
        self._stop_timing()
        super().connection_lost(exc)

    def _time_reading(self, seconds: float) -> None:
        self._stop_timing()
        self._reading_timer = self.loop.call_later(seconds, self._too_slow)

    def _stop_timing(self) -> None:
        if self._reading_timer is not None:
            self._reading_timer.cancel()
            self._reading_timer = None

    def _too_slow(self) -> None:
        self._reading_timer = None
        if not self.transport.is_closing():
            self.transport.close()
