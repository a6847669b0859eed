"""What a browser does, in test form: register, submit over HTTP, listen on the WebSocket."""

import asyncio
import json
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.support.waiting import next_frame


@dataclass
class Account:
    participant_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def register(
    http: httpx.AsyncClient, password: str = "correct horse battery", *, username: str | None = None
) -> Account:
    """A new account (with a unique username unless one is given)."""
    response = await http.post(
        "/api/auth/register", json={"username": username or f"u{uuid.uuid4().hex[:12]}", "password": password}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return Account(body["participant_id"], body["access_token"])


async def open_socket(
    ws_base: str,
    account: Account,
    *,
    auth: str = "frame",
    last_id: str | None = None,
    path_id: str | None = None,
) -> tuple[ClientConnection, dict[str, Any]]:
    """An authenticated socket (token in a first frame or the query) and its `hello` frame."""
    url = f"{ws_base}/ws/user/{path_id or account.participant_id}"
    if auth == "query":
        url += f"?token={account.token}" + (f"&last_id={last_id}" if last_id else "")
    # Like a browser, read frames off the socket as they come (no client-side backpressure).
    ws = await connect(url, max_queue=None)
    if auth == "frame":
        frame: dict[str, Any] = {"type": "auth", "token": account.token}
        if last_id:
            frame["last_id"] = last_id
        await ws.send(json.dumps(frame))
    hello = await next_frame(ws, what="the hello frame")
    assert hello["type"] == "hello", hello
    return ws, hello


class StalledClient:
    """A WebSocket peer that authenticates and then stops reading, like a frozen tab.

    Client libraries keep reading into their own buffers, so this speaks the protocol over a
    plain socket (with a small, fixed receive buffer) and reads only when told to.
    """

    def __init__(self, ws_base: str, account: Account, *, receive_buffer: int = 65536):
        url = f"{ws_base}/ws/user/{account.participant_id}"
        self._protocol = ClientProtocol(parse_uri(url))
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        host, port = url.split("/")[2].split(":")
        self._sock.settimeout(10)
        self.bytes_read = 0
        self._sock.connect((host, int(port)))
        self._protocol.send_request(self._protocol.connect())
        self._flush()
        while self._protocol.state is State.CONNECTING:
            self._protocol.receive_data(self._sock.recv(4096))
        self._protocol.send_text(json.dumps({"type": "auth", "token": account.token}).encode())
        self._flush()
        # Registered once the hello arrives; from then on, read nothing.
        while not any(getattr(event, "data", b"").startswith(b'{"v":1,"type":"hello"') for event in self._events()):
            self._protocol.receive_data(self._sock.recv(4096))

    def send(self, frame: dict[str, Any]) -> None:
        """Send one JSON text frame (sending needs no reading)."""
        self._protocol.send_text(json.dumps(frame).encode())
        self._flush()

    def _events(self) -> list[object]:
        return list(self._protocol.events_received())

    def _flush(self) -> None:
        for data in self._protocol.data_to_send():
            if data:
                self._sock.sendall(data)

    def read_until_closed(self, *, quiet_s: float = 10) -> int | None:
        """Read everything the server sent, until it closes or sends nothing for `quiet_s`.

        Returns the close code the server sent, if any; `bytes_read` counts what was waiting.
        """
        self._sock.settimeout(quiet_s)
        try:
            while self._protocol.close_rcvd is None:
                data = self._sock.recv(1 << 20)
                if not data:
                    break
                self.bytes_read += len(data)
                self._protocol.receive_data(data)
        except TimeoutError:
            pass  # still open
        finally:
            self._sock.close()
        return self._protocol.close_rcvd.code if self._protocol.close_rcvd else None

    def close(self) -> None:
        """Drop the connection without a close handshake, as a killed tab does."""
        self._sock.close()


TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "CANCELLED"})


async def finished_tasks(
    http: httpx.AsyncClient, account: Account, task_ids: list[str], *, timeout_s: float = 60
) -> dict[str, dict[str, Any]]:
    """Poll `GET /api/tasks/{id}` until every task has a terminal state; their statuses by id."""
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, dict[str, Any]] = {}
    while True:
        for task_id in task_ids:
            if statuses.get(task_id, {}).get("state") not in TERMINAL_STATES:
                statuses[task_id] = (await http.get(f"/api/tasks/{task_id}", headers=account.headers)).json()
        if all(status["state"] in TERMINAL_STATES for status in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            unfinished = {t: s["state"] for t, s in statuses.items() if s["state"] not in TERMINAL_STATES}
            raise AssertionError(f"tasks still not finished after {timeout_s}s: {unfinished}")
        await asyncio.sleep(0.1)


async def status_on_result(
    http: httpx.AsyncClient, account: Account, task_id: str, result_id: str, *, timeout_s: float = 5
) -> dict[str, Any]:
    """The task's status read as its terminal envelope `result_id` arrives (SPEC §5.6).

    The terminal state must already be there on the first read. `last_event_id` can only be
    recorded after the envelope got its id from Redis, so it is awaited (docs/protocol.md).
    """
    status: dict[str, Any] = (await http.get(f"/api/tasks/{task_id}", headers=account.headers)).json()
    assert status["state"] in TERMINAL_STATES, f"the result arrived before the terminal state was committed: {status}"
    deadline = time.monotonic() + timeout_s
    while status["last_event_id"] != result_id:
        if time.monotonic() > deadline:
            raise AssertionError(f"last_event_id is {status['last_event_id']}, not the result {result_id}")
        await asyncio.sleep(0.02)
        status = (await http.get(f"/api/tasks/{task_id}", headers=account.headers)).json()
    return status
