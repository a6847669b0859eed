"""An OpenAI-compatible streaming server shaped like a real model, run in its own process.

`python -m tests.support.streaming_llm --port P [--first-token-s 0.3 --pieces 200 --interval-s 0.025]`

Every `POST /v1/chat/completions` waits `first-token-s`, then streams `pieces` server-sent
events `interval-s` apart, then usage and `[DONE]`: the real wire format, so the worker's real
httpx client runs. `GET /stats` tells how many requests it has served and how many streams were
open at once (now and at the peak); `POST /stats/reset` starts the count again.

It is a bare asyncio HTTP/1.1 server rather than an ASGI app because benchmarks run hundreds of
streams at once next to the system they measure: each event is bytes prepared once at start,
so the fake costs little CPU and does not become what is measured. It is a separate process for
the same reason (a fake inside the load generator's event loop distorts both).
"""

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from app.core.processes import free_port, spawn, stop

WORD = "tok "


@dataclass
class Shape:
    """How every answer streams."""

    first_token_s: float = 0.3
    pieces: int = 200
    interval_s: float = 0.025

    @property
    def answer(self) -> str:
        """The whole text a client assembles from one stream."""
        return WORD * self.pieces


def _chunk_raw(event: bytes) -> bytes:
    return f"{len(event):x}\r\n".encode() + event + b"\r\n"


def _chunk(payload: dict[str, object]) -> bytes:
    return _chunk_raw(f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode())


class StreamingLLM:
    """The server's state: the shape, and counts of streams."""

    def __init__(self, shape: Shape):
        self.shape = shape
        piece = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": WORD}}]}
        self._piece = _chunk(piece)
        usage = {"prompt_tokens": 40, "completion_tokens": shape.pieces, "total_tokens": 40 + shape.pieces}
        self._tail = _chunk({"object": "chat.completion.chunk", "choices": [], "usage": usage})
        self._tail += _chunk_raw(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        self.in_flight = 0
        self.peak = 0
        self.served = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one keep-alive connection until the client closes it."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
                length = int(headers.get("Content-Length", headers.get("content-length", "0")))
                if length:
                    await reader.readexactly(length)
                method, path, _ = request_line.split(" ", 2)
                if path.endswith("/chat/completions") and method == "POST":
                    await self._stream(writer)
                elif path == "/stats":
                    if method == "POST":
                        self.peak, self.served = self.in_flight, 0
                    body = json.dumps({"in_flight": self.in_flight, "peak": self.peak, "served": self.served}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                    writer.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            await asyncio.sleep(self.shape.first_token_s)
            # Sleep to absolute times so the pace holds even when the loop is late once.
            started = time.monotonic()
            for index in range(self.shape.pieces):
                writer.write(self._piece)
                await writer.drain()
                delay = started + (index + 1) * self.shape.interval_s - time.monotonic()
                await asyncio.sleep(max(delay, 0))
            writer.write(self._tail)
            self.served += 1
        finally:
            self.in_flight -= 1


async def serve(port: int, shape: Shape) -> None:
    """Run until killed."""
    llm = StreamingLLM(shape)
    server = await asyncio.start_server(llm.handle, "127.0.0.1", port, backlog=2048)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def streaming_llm(shape: Shape | None = None) -> Iterator["StreamingLLMProcess"]:
    """Start the server in its own process; stop it afterwards."""
    shape = shape or Shape()
    port = free_port()
    args = [sys.executable, "-m", "tests.support.streaming_llm", "--port", str(port)]
    args += ["--first-token-s", str(shape.first_token_s), "--pieces", str(shape.pieces)]
    args += ["--interval-s", str(shape.interval_s)]
    process = spawn(args, stdout=subprocess.DEVNULL)
    handle = StreamingLLMProcess(port, shape, process)
    try:
        handle.wait_ready()
        yield handle
    finally:
        stop(process)


@dataclass
class StreamingLLMProcess:
    """A running server: its URL for LLM_BASE_URL, and its counts."""

    port: int
    shape: Shape
    process: "subprocess.Popen[bytes]"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def wait_ready(self, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                self.stats()
                return
            if self.process.poll() is not None:
                raise AssertionError(f"the streaming LLM exited with {self.process.returncode}")
            time.sleep(0.05)
        raise AssertionError("the streaming LLM did not start")

    def stats(self) -> dict[str, int]:
        """{in_flight, peak, served} since the last reset."""
        return dict(httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=2).json())

    def reset(self) -> None:
        """Start counting the peak and the served requests again."""
        httpx.post(f"http://127.0.0.1:{self.port}/stats", timeout=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first-token-s", type=float, default=0.3)
    parser.add_argument("--pieces", type=int, default=200)
    parser.add_argument("--interval-s", type=float, default=0.025)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port, Shape(args.first_token_s, args.pieces, args.interval_s)))


if __name__ == "__main__":
    main()
