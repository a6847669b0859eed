"""Identity over HTTP and WebSocket (SPEC §2), and the error shape of bad requests (SPEC §3)."""

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import TEST_JWT_SECRET
from tests.support.client import Account, open_socket, register
from tests.support.inspect import tasks_of
from tests.support.stack import ApiServer, Worker
from tests.support.tokens import expired_token, tampered_token, unsigned_token
from tests.support.waiting import wait_until


def _expired_token(participant_id: str) -> str:
    return expired_token(participant_id, TEST_JWT_SECRET)


def _assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"]


async def _close_code(url: str, first_frame: dict[str, object] | None = None) -> int:
    async with connect(url) as ws:
        if first_frame is not None:
            await ws.send(json.dumps(first_frame))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None, "the server should close with a code"
    return closed.value.rcvd.code


async def test_register_then_login(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/auth/register", json={"username": "ada_lovelace", "password": "analytical engine"})
    assert response.status_code == 201
    registered = response.json()
    assert registered["token_type"] == "bearer" and uuid.UUID(registered["participant_id"])
    login = await http.post("/api/auth/login", json={"username": "ada_lovelace", "password": "analytical engine"})
    assert login.status_code == 200
    assert login.json()["participant_id"] == registered["participant_id"]
    duplicate = await http.post("/api/auth/register", json={"username": "ada_lovelace", "password": "another one!"})
    _assert_error(duplicate, 409, "username_taken")


async def test_wrong_password_and_unknown_user_are_the_same_401(http: httpx.AsyncClient) -> None:
    await http.post("/api/auth/register", json={"username": "grace_hopper", "password": "cobol forever"})
    wrong = await http.post("/api/auth/login", json={"username": "grace_hopper", "password": "fortran forever"})
    unknown = await http.post("/api/auth/login", json={"username": "nobody_here", "password": "cobol forever"})
    _assert_error(wrong, 401, "invalid_credentials")
    _assert_error(unknown, 401, "invalid_credentials")
    assert wrong.json() == unknown.json()


async def test_http_rejects_missing_bad_expired_tampered_and_unsigned_tokens(http: httpx.AsyncClient) -> None:
    account, victim = await register(http), await register(http)
    chat = {"message": "hi"}
    _assert_error(await http.post("/ai/chat2", json=chat), 401, "not_authenticated")
    tampered = tampered_token(account.token, victim.participant_id)
    for token in ("not-a-jwt", account.token + "x", _expired_token(account.participant_id), tampered):
        response = await http.post("/ai/chat2", json=chat, headers={"Authorization": f"Bearer {token}"})
        _assert_error(response, 401, "invalid_token")
    unsigned = await http.get(
        "/api/tasks/" + str(uuid.uuid4()), headers=Account("", unsigned_token(account.participant_id)).headers
    )
    _assert_error(unsigned, 401, "invalid_token")


async def test_websocket_rejects_bad_tokens_with_4401(api: ApiServer, http: httpx.AsyncClient) -> None:
    account = await register(http)
    path = f"{api.ws_url}/ws/user/{account.participant_id}"
    assert await _close_code(f"{path}?token=garbage") == 4401
    assert await _close_code(f"{path}?token={_expired_token(account.participant_id)}") == 4401
    assert await _close_code(f"{path}?token={unsigned_token(account.participant_id)}") == 4401
    assert await _close_code(path, {"type": "auth", "token": _expired_token(account.participant_id)}) == 4401
    assert await _close_code(path, {"type": "hello"}) == 4401
    # No auth frame at all: closed once WS_AUTH_TIMEOUT_S (1 s in these tests) passes.
    assert await _close_code(path) == 4401


async def test_websocket_rejects_a_token_for_another_participant_with_4403(
    api: ApiServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await register(http), await register(http)
    bobs_path = f"{api.ws_url}/ws/user/{bob.participant_id}"
    assert await _close_code(f"{bobs_path}?token={alice.token}") == 4403
    assert await _close_code(bobs_path, {"type": "auth", "token": alice.token}) == 4403
    # Bob's own token still works on Bob's path.
    ws, hello = await open_socket(api.ws_url, bob)
    await ws.close()
    assert hello["type"] == "hello"


async def test_another_users_task_is_404_like_an_unknown_one(
    api: ApiServer, worker: Worker, http: httpx.AsyncClient
) -> None:
    owner, stranger = await register(http), await register(http)
    response = await http.post("/ai/chat2", json={"message": "mine"}, headers=owner.headers)
    task_url = response.json()["status_url"]
    assert (await http.get(task_url, headers=owner.headers)).status_code == 200
    _assert_error(await http.get(task_url, headers=stranger.headers), 404, "task_not_found")
    _assert_error(await http.get(f"/api/tasks/{uuid.uuid4()}", headers=owner.headers), 404, "task_not_found")
    _assert_error(await http.get("/api/tasks/not-a-uuid", headers=owner.headers), 404, "task_not_found")


async def test_bad_input_gets_a_coded_error_and_enqueues_nothing(
    http: httpx.AsyncClient, stack_env: dict[str, str]
) -> None:
    account = await register(http)
    headers = {**account.headers, "content-type": "application/json"}
    _assert_error(await http.post("/ai/chat2", content=b"{not json", headers=headers), 422, "validation_error")
    _assert_error(await http.post("/ai/chat2", json={"message": ""}, headers=headers), 422, "validation_error")
    _assert_error(await http.post("/ai/chat2", json={"message": 42}, headers=headers), 422, "validation_error")
    _assert_error(
        await http.post("/ai/chat2", json={"message": "x", "mode": "exam"}, headers=headers), 422, "validation_error"
    )
    over_field_cap = {"message": "x", "code_context": {"html": "a" * 400_000}}
    _assert_error(await http.post("/ai/chat2", json=over_field_cap, headers=headers), 422, "validation_error")
    over_body_limit = {"message": "x", "code_context": {"html": "a" * 2_000_000}}
    _assert_error(await http.post("/ai/chat2", json=over_body_limit, headers=headers), 413, "body_too_large")
    oversized = json.dumps(over_body_limit).encode()

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: the limit counts the chunks
        for start in range(0, len(oversized), 65536):
            yield oversized[start : start + 65536]

    _assert_error(await http.post("/ai/chat2", content=streamed(), headers=headers), 413, "body_too_large")
    _assert_error(
        await http.post("/api/auth/register", json={"username": "x", "password": "short"}), 422, "validation_error"
    )
    assert len(tasks_of(stack_env["DATABASE_URL"], account.participant_id)) == 0
    # The same user's next good request is accepted: the bad ones left nothing behind.
    assert (await http.post("/ai/chat2", json={"message": "ok"}, headers=account.headers)).status_code == 202
    assert len(tasks_of(stack_env["DATABASE_URL"], account.participant_id)) == 1


async def test_tokens_and_passwords_never_reach_the_api_log(api: ApiServer, http: httpx.AsyncClient) -> None:
    password = "unmistakable-passphrase-7731"
    account = await register(http, password=password)
    await http.post("/api/auth/login", json={"username": "nobody-here", "password": password})
    ws, _ = await open_socket(api.ws_url, account, auth="query")
    await ws.close()
    await http.get("/api/tasks/" + str(uuid.uuid4()), headers=account.headers)
    wait_until(
        lambda: f"/ws/user/{account.participant_id}?token=[redacted]" in api.log_text(),
        timeout_s=10,
        what="the API to log the WebSocket connect with its token redacted",
    )
    assert account.token not in api.log_text()
    assert account.token.split(".")[2] not in api.log_text(), "not even the signature part"
    assert password not in api.log_text()
