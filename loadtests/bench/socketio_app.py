"""Fan-out baseline: a plain python-socketio server with its Redis manager.

Each client joins the room of its user (sent as the connect auth); a publisher anywhere emits
to that room through Redis, the way python-socketio deployments push to many replicas.
Run by the benchmark as `uvicorn loadtests.bench.socketio_app:app`, with REDIS_URL set.
"""

import os
from typing import Any

import socketio

server = socketio.AsyncServer(
    async_mode="asgi", client_manager=socketio.AsyncRedisManager(os.environ["REDIS_URL"]), cors_allowed_origins=[]
)
app = socketio.ASGIApp(server)


@server.event
async def connect(sid: str, environ: dict[str, Any], auth: dict[str, str]) -> None:
    """Put the socket in its user's room."""
    await server.enter_room(sid, auth["user"])
