"""A local OpenAI-compatible chat-completions server for tests: the one allowed fake (the outside LLM).

It speaks the real wire format (`POST /v1/chat/completions`, `stream=true`, server-sent events)
so the worker's real httpx client runs. Tests script what the next requests get:
`answer` streams a reply in pieces; `429`/`500` fail (429 with Retry-After); `disconnect`
streams a few pieces and then drops the connection. Every request is recorded.
"""

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.core.processes import free_port

API_KEY = "test-llm-key"


@dataclass
class Scenario:
    """What one request gets."""

    kind: str = "answer"  # answer | 429 | 500 | disconnect
    text: str = "Let's think about it together."
    piece_chars: int = 3
    delay_s: float = 0.005
    retry_after_s: int = 1
    disconnect_after: int = 3  # pieces sent before a `disconnect` drops the connection
    # Write each event in two parts cut inside a multi-byte character, where there is one.
    split_characters: bool = False


@dataclass
class FakeLLM:
    """The server's state: a queue of scripted scenarios (default: answer) and the requests seen."""

    port: int = field(default_factory=free_port)
    scenarios: list[Scenario] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    default: Scenario = field(default_factory=Scenario)
    expected_key: str = API_KEY

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *scenarios: Scenario) -> None:
        """The next requests get these, in order; then the default answer."""
        self.scenarios[:] = list(scenarios)
        self.requests.clear()

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"body": body, "authorization": request.headers.get("authorization")})
        if request.headers.get("authorization") != f"Bearer {self.expected_key}":
            return JSONResponse(
                {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}, 401
            )
        scenario = self.scenarios.pop(0) if self.scenarios else self.default
        if scenario.kind == "429":
            return JSONResponse(
                {"error": {"message": "Rate limit reached", "type": "rate_limit"}},
                429,
                headers={"Retry-After": str(scenario.retry_after_s)},
            )
        if scenario.kind == "500":
            return JSONResponse({"error": {"message": "The server had an error", "type": "server_error"}}, 500)
        return StreamingResponse(self._stream(body, scenario), media_type="text/event-stream")

    async def _stream(self, body: dict[str, Any], scenario: Scenario) -> AsyncIterator[bytes]:
        text = scenario.text
        pieces = [text[i : i + scenario.piece_chars] for i in range(0, len(text), scenario.piece_chars)]
        for index, piece in enumerate(pieces):
            if scenario.kind == "disconnect" and index == scenario.disconnect_after:
                raise ConnectionResetError("fake LLM dropped the stream")  # uvicorn aborts the response
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            event = f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()
            cut = next((i for i in range(len(event)) if event[i] >= 0xC0), None) if scenario.split_characters else None
            if cut is not None:
                yield event[: cut + 1]  # the lead byte alone: a decoder must wait for the rest
                await asyncio.sleep(0.002)
                yield event[cut + 1 :]
            else:
                yield event
            await asyncio.sleep(scenario.delay_s)
        final = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "model": body["model"],
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 42, "completion_tokens": len(pieces), "total_tokens": 42 + len(pieces)},
        }
        yield f"data: {json.dumps(final)}\n\n".encode()
        yield b"data: [DONE]\n\n"


class FakeLLMServer:
    """Runs a FakeLLM with uvicorn in a background thread of the test process."""

    def __init__(self) -> None:
        self.llm = FakeLLM()
        config = uvicorn.Config(
            self.llm.app(), host="127.0.0.1", port=self.llm.port, log_level="critical", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise AssertionError("the fake LLM server did not start")
            time.sleep(0.02)
        return self.llm

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
