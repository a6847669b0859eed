"""A learner as the real web client behaves: sockets that reconnect and resume, steady submits.

Each learner holds one socket (or several) per replica URL. A socket that closes reconnects after a
short backoff, to its own replica first and the others when that fails, resuming from the newest
envelope id it has (`last_id`), as frontend/js/ws-client.js does; a `hello` with
`recovered: false` makes it re-read its open tasks over HTTP. Submits go to the replicas in
turn; only a `202` counts as accepted.
"""

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from loadtests.chaos.ledger import Ledger, SocketRecord

RECONNECT_DELAY_S = 0.3


async def _on_schedule(
    interval_s: float, until: float, action: Callable[[int], Awaitable[None]], first_at: float | None = None
) -> None:
    """Run `action(turn)` every `interval_s` from `first_at` (default: now) until `until` (monotonic).

    The schedule is fixed: a slow answer does not lower the offered rate, the next action goes at
    its planned time (or at once, when late).
    """
    planned = first_at if first_at is not None else time.monotonic()
    turn = itertools.count()
    while planned < until:
        await asyncio.sleep(max(0.0, planned - time.monotonic()))
        await action(next(turn))
        planned += interval_s


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "not-an-error-body"


class Learner:
    """One account with a resuming socket per replica and a submit loop."""

    def __init__(self, ledger: Ledger, http_urls: list[str], ws_urls: list[str], *, sockets_per_replica: int = 1):
        self.ledger = ledger
        self.http_urls = http_urls
        self.ws_urls = ws_urls
        self.participant_id = ""
        self.token = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._sockets: list[ClientConnection | None] = [None] * (len(ws_urls) * sockets_per_replica)

    async def register(self, http: httpx.AsyncClient) -> None:
        body = {"username": f"chaos{uuid.uuid4().hex[:12]}", "password": "chaos-password-1"}
        account = (await http.post(f"{self.http_urls[0]}/api/auth/register", json=body)).json()
        self.participant_id, self.token = account["participant_id"], account["access_token"]

    def start_sockets(self) -> None:
        for index in range(len(self._sockets)):
            record = self.ledger.socket(self.participant_id)
            self._tasks.append(asyncio.create_task(self._keep_socket(index, record)))

    async def _keep_socket(self, index: int, record: SocketRecord) -> None:
        last_id: str | None = None
        home = index % len(self.ws_urls)
        urls = itertools.cycle(self.ws_urls[home:] + self.ws_urls[:home])
        while True:
            url = next(urls)
            try:
                async with connect(f"{url}/ws/user/{self.participant_id}", max_queue=None, open_timeout=5) as ws:
                    self._sockets[index] = ws
                    auth: dict[str, Any] = {"type": "auth", "token": self.token}
                    if last_id is not None:
                        auth["last_id"] = last_id
                    await ws.send(json.dumps(auth))
                    urls = itertools.cycle(self.ws_urls[home:] + self.ws_urls[:home])  # reconnect here first
                    async for raw in ws:
                        frame = json.loads(raw)
                        if frame["type"] == "ping":
                            await ws.send('{"type":"pong"}')
                        elif frame["type"] == "hello":
                            last_id = last_id or frame["data"].get("head_id")
                            if frame["data"].get("recovered") is False:
                                await self._resync(record)
                        elif frame.get("id"):
                            self.ledger.receive(record, frame, time.monotonic())
                            last_id = frame["id"]
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                pass
            finally:
                self._sockets[index] = None
            await asyncio.sleep(RECONNECT_DELAY_S)

    async def _resync(self, record: SocketRecord) -> None:
        """History could not cover what this socket missed: re-read the open tasks over HTTP."""
        async with httpx.AsyncClient(timeout=10) as http:
            for task_id in self.ledger.accepted[self.participant_id] - set(record.terminal):
                with contextlib.suppress(httpx.HTTPError):
                    url = f"{self.http_urls[0]}/api/tasks/{task_id}"
                    response = await http.get(url, headers={"Authorization": f"Bearer {self.token}"})
                    if response.json().get("state") in ("SUCCESS", "FAILURE", "CANCELLED"):
                        self.ledger.resynced(record, task_id)

    def drop_sockets(self) -> None:
        """Cut every socket's TCP connection without a close handshake (a network drop)."""
        for ws in self._sockets:
            if ws is not None:
                ws.transport.abort()

    def all_connected(self) -> bool:
        return all(ws is not None for ws in self._sockets)

    async def submit_once(self, http: httpx.AsyncClient, url: str | None = None) -> None:
        """Submit one chat; the ledger records it as accepted, or why it was not, and the answer's latency."""
        sent = time.monotonic()
        try:
            response = await http.post(
                f"{url or self.http_urls[0]}/ai/chat2",
                json={"message": f"chaos {uuid.uuid4().hex[:6]}"},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        except httpx.HTTPError as exc:
            self.ledger.refuse(type(exc).__name__)
            return
        answered = time.monotonic()
        self.ledger.latencies.append(("submit", sent, answered - sent))
        if response.status_code == 202:
            self.ledger.accept(self.participant_id, response.json()["task_id"], answered)
        else:
            self.ledger.refuse(f"{response.status_code} {_error_code(response)}")

    async def submit_every(
        self, http: httpx.AsyncClient, interval_s: float, until: float, *, first_at: float | None = None
    ) -> None:
        """Submit a chat every `interval_s` from `first_at` (default: now) until `until`, to the replicas in turn."""
        await _on_schedule(
            interval_s, until, lambda turn: self.submit_once(http, self.http_urls[turn % len(self.http_urls)]), first_at
        )

    async def read_every(self, http: httpx.AsyncClient, interval_s: float, until: float) -> None:
        """Read the status of this learner's newest task every `interval_s` (as a task page does)."""

        async def read(turn: int) -> None:
            task_id = self.ledger.newest_task.get(self.participant_id)
            url = self.http_urls[turn % len(self.http_urls)]
            path = f"/api/tasks/{task_id}" if task_id else "/api/tasks?limit=5"
            sent = time.monotonic()
            try:
                response = await http.get(f"{url}{path}", headers={"Authorization": f"Bearer {self.token}"})
            except httpx.HTTPError as exc:
                self.ledger.refuse(f"read {type(exc).__name__}")
                return
            self.ledger.latencies.append(("read", sent, time.monotonic() - sent))
            if response.status_code != 200:
                self.ledger.refuse(f"read {response.status_code} {_error_code(response)}")

        await _on_schedule(interval_s, until, read)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def connected_learners(
    ledger: Ledger, http: httpx.AsyncClient, http_urls: list[str], ws_urls: list[str], count: int, **options: int
) -> list[Learner]:
    """`count` registered learners whose sockets are all open (options: `sockets_per_replica`)."""
    learners = [Learner(ledger, http_urls, ws_urls, **options) for _ in range(count)]
    for learner in learners:
        await learner.register(http)
        learner.start_sockets()
    deadline = time.monotonic() + 15
    while not all(learner.all_connected() for learner in learners):
        if time.monotonic() > deadline:
            raise AssertionError("timed out after 15s waiting for every learner's sockets to open")
        await asyncio.sleep(0.05)
    return learners
