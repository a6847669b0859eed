"""WebSocket text frames built once per envelope and written straight to uvicorn's transport.

Through the ASGI send, every socket's copy of an envelope goes through a coroutine, uvicorn's
checks, a wsproto event and wsproto's framing of the same text again; for a user with ten tabs
that is ten encodings of one envelope. A server frame without extensions is just a header and
the UTF-8 payload (RFC 6455 §5.2, unmasked), so it is built once and the same bytes are
written to each socket, several queued frames in one write. Only for sockets of uvicorn's
wsproto protocol (`taskwire api` runs it) when the server offers no extension; anything else
goes through the ASGI send.
"""

import struct

from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from wsproto.connection import ConnectionState

_FIN_TEXT = 0x81

_last_text: str | None = None
_last_frame = b""


def text_frame(text: str) -> bytes:
    """The frame carrying `text`; the same text object again (another socket of the same
    envelope) gets the bytes already built."""
    global _last_text, _last_frame
    if text is _last_text:
        return _last_frame
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = bytes((_FIN_TEXT, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", _FIN_TEXT, 126, size)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, size)
    _last_text, _last_frame = text, header + payload
    return _last_frame


class FrameWriter:
    """Writes finished frames to one socket's transport, under the same conditions as uvicorn's
    own send: handshake done, no close sent or received, transport open and not paused."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WSProtocol):
        self._protocol = protocol

    @classmethod
    def of(cls, websocket: WebSocket) -> "FrameWriter | None":
        """The writer for this socket, or None when it must go through the ASGI send."""
        send = getattr(websocket, "_send", None)
        protocol = getattr(send, "__self__", None)
        if not isinstance(protocol, WSProtocol) or protocol.config.ws_per_message_deflate:
            return None
        return cls(protocol)

    def can_write(self) -> bool:
        """Whether a frame written now goes out (or into the transport's buffer) at once."""
        return self._protocol.writable.is_set() and self.is_open()

    def is_open(self) -> bool:
        """Whether frames may still be written, now or once the transport drains."""
        protocol = self._protocol
        return (
            protocol.handshake_complete
            and not protocol.close_sent
            and not protocol.disconnected
            and protocol.conn.state is ConnectionState.OPEN
            and not protocol.transport.is_closing()
        )

    def write(self, frames: bytes) -> None:
        """Write whole frames (check `can_write` first)."""
        self._protocol.transport.write(frames)

    def buffered(self) -> int:
        """Bytes written to the transport that the kernel has not taken yet."""
        return int(self._protocol.transport.get_write_buffer_size())

    async def writable(self) -> None:
        """Wait while the transport is paused (its buffer is over the high-water mark)."""
        await self._protocol.writable.wait()


def abort_transport(websocket: WebSocket) -> None:
    """Drop a uvicorn socket's connection at once, whatever is still buffered for it."""
    send = getattr(websocket, "_send", None)
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:
        transport.abort()


def frames_of(texts: "list[str] | tuple[str, ...]") -> bytes:
    """Several frames, back to back, for one write."""
    return b"".join(map(text_frame, texts))
