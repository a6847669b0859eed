"""Hosts, origins and headers, from settings, on a real replica."""

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.client import register
from tests.support.stack import ApiServer


@pytest.fixture(scope="module")
def strict_api(stack_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    env = {**stack_env, "ALLOWED_HOSTS": '["127.0.0.1", "tutor.example"]', "CORS_ORIGINS": '["https://app.example"]'}
    server = ApiServer("api-strict", env, log_dir)
    yield server
    server.stop()


def test_unknown_host_headers_are_refused(strict_api: ApiServer) -> None:
    assert httpx.get(f"{strict_api.base_url}/healthz").status_code == 200
    assert httpx.get(f"{strict_api.base_url}/healthz", headers={"Host": "tutor.example"}).status_code == 200
    assert httpx.get(f"{strict_api.base_url}/healthz", headers={"Host": "evil.example"}).status_code == 400


async def test_unknown_host_headers_are_refused_on_websockets_too(strict_api: ApiServer) -> None:
    # Sockets skip the HTTP middleware stack, but not the Host check.
    async with httpx.AsyncClient(base_url=strict_api.base_url) as http:
        account = await register(http)
    port = strict_api.base_url.rsplit(":", 1)[1]
    path = f"/ws/user/{account.participant_id}"

    def to_replica(host: str) -> Any:
        # The URL names the Host header; the TCP connection goes to the replica.
        return connect(f"ws://{host}:{port}{path}", host="127.0.0.1", port=int(port))

    with pytest.raises(InvalidStatus) as refused:
        await to_replica("evil.example")
    assert refused.value.response.status_code == 400
    async with to_replica("tutor.example") as ws:
        await ws.send(json.dumps({"type": "auth", "token": account.token}))
        assert json.loads(await ws.recv())["type"] == "hello"


def test_only_configured_origins_may_call_cross_origin(strict_api: ApiServer) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{strict_api.base_url}/ai/chat2",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"},
        )  # fmt: skip

    allowed = preflight("https://app.example")
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
    refused = preflight("https://evil.example")
    assert "access-control-allow-origin" not in refused.headers


def test_html_pages_carry_security_headers(strict_api: ApiServer) -> None:
    page = httpx.get(f"{strict_api.base_url}/login.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "content-security-policy" not in httpx.get(f"{strict_api.base_url}/healthz").headers, "JSON stays plain"


async def test_clients_that_trickle_a_request_are_cut_off(stack_env: dict[str, str], log_dir: Path) -> None:
    # Issue 25: a thousand connections each sending a header byte every 2 s all stayed open.
    env = {**stack_env, "HTTP_HEADER_TIMEOUT_S": "2", "HTTP_BODY_TIMEOUT_S": "2"}
    api = ApiServer("api-trickle", env, log_dir)
    port = int(api.base_url.rsplit(":", 1)[1])
    try:
        headers = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        bodies = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        for _, writer in bodies:  # headers whole and quick, then a body that never comes
            writer.write(b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
        closed_at: list[float] = []
        started = asyncio.get_running_loop().time()

        async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for byte in request:
                if reader.at_eof():
                    break
                with contextlib.suppress(ConnectionError):
                    writer.write(bytes([byte]))
                try:
                    await asyncio.wait_for(reader.read(1024), 0.5)  # the server's answer: EOF
                except TimeoutError:
                    continue
                break
            closed_at.append(asyncio.get_running_loop().time() - started)

        async def wait_closed(reader: asyncio.StreamReader) -> None:
            await asyncio.wait_for(reader.read(), 10)
            closed_at.append(asyncio.get_running_loop().time() - started)

        await asyncio.wait_for(
            asyncio.gather(*(trickle(r, w) for r, w in headers), *(wait_closed(r) for r, _ in bodies)), 30
        )
        assert len(closed_at) == 25 and max(closed_at) < 10, closed_at
        assert httpx.get(f"{api.base_url}/healthz").status_code == 200, "a prompt client is served as ever"
    finally:
        api.stop()
