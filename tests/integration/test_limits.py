"""Limits proven against real replicas: shared rate limits, per-user socket cap (413 and 1009 live elsewhere)."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from app.core.embedded_redis import EmbeddedRedis
from tests.conftest import with_own_database
from tests.support.client import Account, open_socket, register
from tests.support.stack import ApiServer
from tests.support.waiting import next_frame


@pytest.fixture(scope="module")
def limited_pair(
    stack_env: dict[str, str], redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory, log_dir: Path
) -> Iterator[tuple[ApiServer, ApiServer, ApiServer]]:
    """Two limited replicas sharing one Redis, and a registrar on the same database counting elsewhere."""
    base = with_own_database(stack_env, tmp_path_factory.mktemp("limits-db"))
    redis_base = redis_server.url.rsplit("/", 1)[0]
    env = {
        **base,
        "REDIS_URL": f"{redis_base}/6",
        "SUBMIT_RATE_LIMIT": "3/60",
        "AUTH_RATE_LIMIT": "6/60",
        "WS_MAX_SOCKETS_PER_USER": "2",
    }
    first, second = ApiServer("api-limits-a", env, log_dir), ApiServer("api-limits-b", env, log_dir)
    # Accounts come from here, so the tests' own counts start at zero.
    registrar = ApiServer("api-limits-registrar", {**base, "REDIS_URL": f"{redis_base}/7"}, log_dir)
    yield first, second, registrar
    for server in (registrar, second, first):
        server.stop()


async def _account(registrar: ApiServer) -> Account:
    async with httpx.AsyncClient(base_url=registrar.base_url) as http:
        return await register(http)


async def test_submit_rate_limit_is_shared_by_replicas(limited_pair: tuple[ApiServer, ApiServer, ApiServer]) -> None:
    a, b, registrar = limited_pair
    account, other = await _account(registrar), await _account(registrar)
    async with httpx.AsyncClient(base_url=a.base_url) as http_a, httpx.AsyncClient(base_url=b.base_url) as http_b:
        codes = []
        for http in (http_a, http_b, http_a):
            codes.append((await http.post("/ai/chat2", json={"message": "hi"}, headers=account.headers)).status_code)
        over = await http_b.post("/ai/chat2", json={"message": "one too many"}, headers=account.headers)
        theirs = await http_b.post("/ai/chat2", json={"message": "hi"}, headers=other.headers)
    assert codes == [202, 202, 202]
    assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert theirs.status_code == 202, "the limit is per user"


async def test_auth_rate_limit_per_ip_is_shared_by_replicas(
    limited_pair: tuple[ApiServer, ApiServer, ApiServer],
) -> None:
    a, b, _ = limited_pair
    async with httpx.AsyncClient(base_url=a.base_url) as http_a, httpx.AsyncClient(base_url=b.base_url) as http_b:
        statuses = []
        for i in range(8):
            http = http_a if i % 2 else http_b
            response = await http.post("/api/auth/login", json={"username": "nobody", "password": "whatever1"})
            statuses.append(response.status_code)
    assert statuses == [401] * 6 + [429] * 2, "six attempts per address per minute, across both replicas"


async def test_a_user_past_the_socket_cap_loses_the_oldest_socket(
    limited_pair: tuple[ApiServer, ApiServer, ApiServer],
) -> None:
    a, _, registrar = limited_pair
    account = await _account(registrar)
    first, _ = await open_socket(a.ws_url, account)
    second, _ = await open_socket(a.ws_url, account)
    third, _ = await open_socket(a.ws_url, account)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await next_frame(first, timeout_s=5, what="the oldest socket to be closed")
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
    for ws in (second, third):
        await ws.ping()
        await ws.close()
