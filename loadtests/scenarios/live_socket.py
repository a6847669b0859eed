"""A learner's WebSocket inside Locust: a gevent-friendly client that times envelopes per task."""

import json
import time
from collections.abc import Callable

import gevent
import websocket  # websocket-client: plain sockets, which gevent's monkey-patching makes cooperative

Fire = Callable[..., None]


class LiveSocket:
    """Holds one authenticated socket and reports submit→first envelope and submit→result as Locust events."""

    def __init__(self, ws_url: str, token: str, fire: Fire):
        self._fire = fire
        self._pending: dict[str, tuple[str, float, bool]] = {}  # task_id → (kind, submitted at, first seen)
        self._socket = websocket.create_connection(ws_url, timeout=30)
        self._socket.send(json.dumps({"type": "auth", "token": token}))
        hello = json.loads(self._socket.recv())
        if hello.get("type") != "hello":
            raise RuntimeError(f"no hello: {hello}")
        self._reader = gevent.spawn(self._read)

    def expect(self, task_id: str, kind: str, submitted_at: float) -> None:
        """Start timing a task submitted at `submitted_at` (time.perf_counter())."""
        self._pending[task_id] = (kind, submitted_at, False)

    def close(self) -> None:
        self._reader.kill()
        self._socket.close()

    def _read(self) -> None:
        while True:
            try:
                frame = json.loads(self._socket.recv())
            except (websocket.WebSocketException, OSError, ValueError):
                return
            if frame.get("type") == "ping":
                self._socket.send(json.dumps({"type": "pong"}))
                continue
            entry = self._pending.get(str(frame.get("task_id")))
            if entry is None:
                continue
            kind, submitted_at, first_seen = entry
            elapsed_ms = (time.perf_counter() - submitted_at) * 1000
            if not first_seen:
                self._pending[frame["task_id"]] = (kind, submitted_at, True)
                self._fire(
                    request_type="WS",
                    name=f"{kind}: submit → first envelope",
                    response_time=elapsed_ms,
                    response_length=0,
                    exception=None,
                )
            if frame["type"].endswith("_result"):
                del self._pending[frame["task_id"]]
                failure = RuntimeError(frame["error"]["code"]) if frame.get("error") else None
                self._fire(
                    request_type="WS",
                    name=f"{kind}: submit → result",
                    response_time=elapsed_ms,
                    response_length=len(json.dumps(frame["data"])),
                    exception=failure,
                )
