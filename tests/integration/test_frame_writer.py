"""Frames written straight to uvicorn's transport (realtime/frames.py), on a real uvicorn with
its wsproto protocol, in this process, read by a real WebSocket client."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.routing import Router, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection as Client
from websockets.asyncio.client import connect
from wsproto.frame_protocol import FrameProtocol

from app.core.processes import free_port
from app.realtime.connection import ClientConnection
from app.realtime.envelopes import attach_id
from app.realtime.frames import text_frame
from app.realtime.manager import ConnectionManager

pytestmark = pytest.mark.integration


@dataclass
class _Server:
    url: str
    manager: ConnectionManager
    opened: "asyncio.Queue[ClientConnection]" = field(default_factory=asyncio.Queue)


@pytest.fixture(params=[False, True], ids=["plain", "deflate"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[_Server]:
    """uvicorn as `taskwire api` runs it (wsproto), with or without permessage-deflate offered."""
    manager = ConnectionManager(redis=None, history_maxlen=100)  # type: ignore[arg-type]
    port = free_port()
    state = _Server(f"ws://127.0.0.1:{port}/ws", manager)

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        connection = ClientConnection(websocket, "p1", queue_size=1000)
        manager.register(connection)
        connection.release([], [], floor_id=None)
        connection.start()
        await state.opened.put(connection)
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            manager.unregister(connection)
            await connection.stop()

    # A bare router, as TaskwireApp routes sockets (past the HTTP middleware, whose wrappers
    # would hide uvicorn's send).
    app = Router(routes=[WebSocketRoute("/ws", endpoint)])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, ws="wsproto", ws_per_message_deflate=request.param, lifespan="off"
    )
    config.log_config = None
    uvicorn_server = uvicorn.Server(config)
    serving = asyncio.create_task(uvicorn_server.serve())
    async with asyncio.timeout(10):
        while not uvicorn_server.started:
            await asyncio.sleep(0.01)
    try:
        yield state
    finally:
        uvicorn_server.should_exit = True
        await serving


def _envelope(n: int, text: str) -> str:
    return attach_id(json.dumps({"type": "chat_delta", "data": {"text": text}}, ensure_ascii=False), f"{n}-0")


async def _receive(client: Client, count: int) -> list[str]:
    async with asyncio.timeout(10):
        return [str(await client.recv()) for _ in range(count)]


def _protocol(connection: ClientConnection) -> Any:
    return connection.websocket._send.__self__  # type: ignore[attr-defined]


async def test_frames_of_every_size_arrive_whole_and_an_idle_socket_needs_no_task(server: _Server) -> None:
    # Sizes around the frame header's length forms (125 | 126..65535 | 65536+ bytes), some of
    # them in multi-byte text, where characters and bytes differ.
    texts = ["", "x" * 90, "é" * 60, "x" * 126, "€" * 21_845, "x" * 65_536, "ü" * 70_000]
    async with connect(server.url, max_queue=None, max_size=None) as client:
        connection = await server.opened.get()
        for n, text in enumerate(texts, start=1):
            server.manager.deliver("p1", f"{n}-0", _envelope(n, text))
            if connection._frames is not None:
                assert connection._sender is None, "an idle, writable socket is written without a task"
        received = await _receive(client, len(texts))
    assert received == [_envelope(n, text) for n, text in enumerate(texts, start=1)]
    deflate = _protocol(connection).config.ws_per_message_deflate
    assert (connection._frames is None) == deflate, "deflate sockets go through the ASGI send"


async def test_frames_queued_while_the_transport_is_paused_go_out_in_order_in_one_write(server: _Server) -> None:
    async with connect(server.url, max_queue=None) as client:
        connection = await server.opened.get()
        protocol = _protocol(connection)
        writes = _CountingTransport(protocol.transport)
        protocol.transport = writes
        protocol.pause_writing()  # as the transport does when its buffer passes the high-water mark
        for n in range(1, 51):
            server.manager.deliver("p1", f"{n}-0", _envelope(n, str(n)))
        await asyncio.sleep(0.05)
        assert writes.count == 0 and connection.unsent_bytes > 0
        protocol.resume_writing()
        received = await _receive(client, 50)
        assert received == [_envelope(n, str(n)) for n in range(1, 51)]
        if connection._frames is not None:
            assert writes.count == 1, "fifty queued frames, one write"
        server.manager.deliver("p1", "51-0", _envelope(51, "after"))
        assert await _receive(client, 1) == [_envelope(51, "after")]
        assert connection.unsent_bytes == 0


async def test_frames_for_a_socket_its_client_closed_are_dropped_without_an_error(server: _Server) -> None:
    async with connect(server.url) as client:
        connection = await server.opened.get()
    await client.wait_closed()
    await asyncio.sleep(0.05)  # the server has seen the close
    for n in range(1, 4):
        assert connection.offer(f"{n}-0", _envelope(n, "late"))
    await asyncio.sleep(0.05)
    assert connection.unsent_bytes == 0 and (connection._sender is None or connection._sender.done())


def test_a_frame_is_what_wsproto_would_send_and_one_envelope_is_encoded_once() -> None:
    reference = FrameProtocol(client=False, extensions=[])
    for text in ["", "a" * 125, "é" * 63, "a" * 126, "a" * 65_535, "€" * 30_000]:
        assert text_frame(text) == reference.send_data(text, fin=True)
    shared = "x" * 300
    assert text_frame(shared) is text_frame(shared), "the same envelope for ten sockets: built once"


class _CountingTransport:
    """The protocol's transport, counting writes."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.count = 0

    def write(self, data: bytes) -> None:
        self.count += 1
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
