"""Chat providers: an OpenAI-compatible streaming client (DeepSeek, Qwen, OpenAI, Ollama, vLLM,
llama.cpp server) built on one httpx.AsyncClient, and the built-in offline tutor."""

import asyncio
import importlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx

from app.tasks.errors import PermanentError, TransientError

ChatMessages = list[dict[str, str]]

_PIECES = re.compile(r"\s*\S+\s*")
_FIRST_REQUEST_IMPORTS = ("httpcore._backends.anyio", "anyio._backends._asyncio")


class ChatProvider(Protocol):
    """Streams an answer to OpenAI-style messages, piece by piece, filling `usage` when known."""

    def stream(self, messages: ChatMessages, *, model: str, usage: dict[str, Any]) -> AsyncIterator[str]: ...


class OpenAICompatibleProvider:
    """`POST {base_url}/chat/completions` with `stream=true`, read as server-sent events."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_connections: int = 50,
    ):
        headers = {"Accept": "text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # One client per worker process: its connection pool is reused by every chat, and sized
        # for every chat the process runs at once (a smaller pool would queue answers behind it).
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=10, pool=10),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        # httpcore imports its async backend on the first request, on the event loop (~20 ms
        # that every other answer waits through): import it now, where the client is built.
        for module in _FIRST_REQUEST_IMPORTS:
            importlib.import_module(module)

    async def stream(self, messages: ChatMessages, *, model: str, usage: dict[str, Any]) -> AsyncIterator[str]:
        """Yield the answer's text pieces; raises TransientError (retry) or PermanentError (give up)."""
        body = {"model": model, "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
        try:
            async with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _http_error(response)
                async for line in response.aiter_lines():
                    piece = _parse_event(line, usage)
                    if piece is None:
                        break
                    if piece:
                        yield piece
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            # Connection refused, reset, or a stream that broke off half-way: try again.
            raise TransientError("llm_connection_error", f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _parse_event(line: str, usage: dict[str, Any]) -> str | None:
    """The text in one SSE line ('' for none); None at `[DONE]`."""
    if not line.startswith("data:"):
        return ""  # blank separators, comments (": keep-alive") and other fields
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    try:
        chunk = json.loads(data)
    except ValueError:
        raise TransientError("llm_bad_stream", "the model sent a malformed event") from None
    if chunk.get("usage"):
        usage.update(chunk["usage"])
    choices = chunk.get("choices") or []
    content = choices[0].get("delta", {}).get("content") if choices else None
    return content or ""


def _http_error(response: httpx.Response) -> Exception:
    detail = _error_message(response)
    status = response.status_code
    if status == 429:
        return TransientError("llm_rate_limited", f"rate limited: {detail}", retry_after_s=_retry_after(response))
    if status >= 500 or status == 408:
        return TransientError("llm_server_error", f"HTTP {status}: {detail}", retry_after_s=_retry_after(response))
    if status in (401, 403):
        return PermanentError("llm_auth_failed", "the tutor's model service refused our credentials")
    return PermanentError("llm_bad_request", f"the model service rejected the request (HTTP {status}): {detail}")


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class OfflineProvider:
    """Streams the built-in tutor's reply like a model's, word by word, for use with no network."""

    def __init__(self, *, delay_ms: int):
        self._delay_s = delay_ms / 1000

    async def stream_text(self, text: str) -> AsyncIterator[str]:
        """Yield `text` word by word, `LLM_OFFLINE_DELAY_MS` apart."""
        for index, match in enumerate(_PIECES.finditer(text)):
            if index and self._delay_s:
                await asyncio.sleep(self._delay_s)
            yield match.group()
