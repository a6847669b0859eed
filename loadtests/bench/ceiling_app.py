"""The classroom ceiling: one async process, no queue, no database, the LLM streamed straight to sockets.

It does what a tutor answer needs and nothing of what makes it durable: the same
OpenAI-compatible client (httpx, SSE parsing) and the same coalescing of pieces into envelopes
as Taskwire, written to the asker's socket. No lease, no history, no Redis, no database.
Run by the benchmark as `uvicorn loadtests.bench.ceiling_app:app` with LLM_BASE_URL set.

- `GET /ws/{learner}`: the learner's socket (no auth).
- `POST /ask/{learner}`: 202 {task_id} at once; the answer streams as `chat_delta`, then `chat_result`.
"""

import asyncio
import os
import time
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.chat.llm import OpenAICompatibleProvider
from app.realtime.envelopes import EnvelopeType, attach_id, encode_body

DELTA_INTERVAL_S = int(os.environ.get("CHAT_DELTA_INTERVAL_MS", "50")) / 1000

sockets: dict[str, WebSocket] = {}
running: set[asyncio.Task[None]] = set()
_provider: OpenAICompatibleProvider | None = None
_sequence = 0


def _provider_now() -> OpenAICompatibleProvider:
    global _provider
    if _provider is None:
        _provider = OpenAICompatibleProvider(
            base_url=os.environ["LLM_BASE_URL"],
            api_key=None,
            connect_timeout_s=10,
            read_timeout_s=60,
            max_connections=4096,
        )
    return _provider


async def _send(learner: str, envelope_type: EnvelopeType, task_id: str, data: dict[str, object]) -> None:
    global _sequence
    _sequence += 1
    socket = sockets.get(learner)
    if socket is not None:
        await socket.send_text(
            attach_id(encode_body(envelope_type, task_id, data), f"{int(time.time() * 1000)}-{_sequence}")
        )


async def _answer(learner: str, task_id: str) -> None:
    usage: dict[str, object] = {}
    pieces: list[str] = []
    pending: list[str] = []
    last_flush = time.monotonic()
    messages = [{"role": "user", "content": "benchmark question"}]
    async for piece in _provider_now().stream(messages, model="fake", usage=usage):
        pieces.append(piece)
        pending.append(piece)
        if time.monotonic() - last_flush >= DELTA_INTERVAL_S:
            await _send(learner, EnvelopeType.CHAT_DELTA, task_id, {"delta": "".join(pending)})
            pending.clear()
            last_flush = time.monotonic()
    if pending:
        await _send(learner, EnvelopeType.CHAT_DELTA, task_id, {"delta": "".join(pending)})
    await _send(learner, EnvelopeType.CHAT_RESULT, task_id, {"message": "".join(pieces), "usage": usage})


async def ask(request: Request) -> JSONResponse:
    """Start an answer for the learner; 202 with its id."""
    task_id = str(uuid.uuid4())
    task = asyncio.create_task(_answer(request.path_params["learner"], task_id))
    running.add(task)
    task.add_done_callback(running.discard)
    return JSONResponse({"task_id": task_id}, status_code=202)


async def learner_socket(socket: WebSocket) -> None:
    """Hold the learner's socket until it closes."""
    learner = socket.path_params["learner"]
    await socket.accept()
    sockets[learner] = socket
    try:
        while True:
            await socket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        sockets.pop(learner, None)


app = Starlette(
    routes=[Route("/ask/{learner}", ask, methods=["POST"]), WebSocketRoute("/ws/{learner}", learner_socket)]
)
