"""Heartbeat, idle timeout and frame limits on a real replica with short timers."""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.client import open_socket, register
from tests.support.stack import ApiServer
from tests.support.waiting import next_frame


@pytest.fixture(scope="module")
def quick_api(stack_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    env = {**stack_env, "WS_PING_INTERVAL_S": "0.3", "WS_IDLE_TIMEOUT_S": "1.5", "WS_MAX_FRAME_BYTES": "4096"}
    server = ApiServer("api-quick-timers", env, log_dir)
    yield server
    server.stop()


async def test_silent_client_gets_pings_then_is_closed_with_4000(quick_api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=quick_api.base_url, timeout=10) as http:
        account = await register(http)
    ws, _ = await open_socket(quick_api.ws_url, account)
    pings = 0
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(10):
            while True:
                frame = json.loads(await ws.recv())
                pings += frame["type"] == "ping"
    assert pings >= 2
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


async def test_client_answering_pings_stays_connected(quick_api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=quick_api.base_url, timeout=10) as http:
        account = await register(http)
    ws, _ = await open_socket(quick_api.ws_url, account)
    async with ws:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 4  # well past the 1.5 s idle timeout
        while loop.time() < deadline:
            frame = await next_frame(ws, timeout_s=2, what="a ping")
            if frame["type"] == "ping":
                await ws.send(json.dumps({"type": "pong"}))
        await ws.send("not json")
        error = await next_frame(ws, timeout_s=2, what="an error frame for a malformed frame")
        while error["type"] == "ping":
            error = await next_frame(ws, timeout_s=2, what="an error frame for a malformed frame")
        assert error["type"] == "error" and error["data"]["code"] == "malformed_frame"


async def test_oversized_client_frame_closes_with_1009(quick_api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=quick_api.base_url, timeout=10) as http:
        account = await register(http)
    ws, _ = await open_socket(quick_api.ws_url, account)
    await ws.send(json.dumps({"type": "pong", "pad": "x" * 10_000}))
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    # The replica is unharmed: a new socket works.
    ws, hello = await open_socket(quick_api.ws_url, account)
    await ws.close()
    assert hello["type"] == "hello"
