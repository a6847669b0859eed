"""A TCP proxy that delays every byte by a fixed time each way, run in its own process.

`python -m tests.support.latency_proxy --listen-port P --target HOST:PORT --delay-ms D`

Put between a worker and its Redis or PostgreSQL, it makes every round trip at least 2 × D:
a worker that made one such call on its event loop would hold the loop that long, which the
loop watchdog reports. Bytes keep their order and nothing is buffered beyond the delay.
"""

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from app.core.processes import free_port, spawn, stop


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        while data := await reader.read(65536):
            loop.call_later(delay_s, writer.write, data)
        await asyncio.sleep(delay_s)
        with contextlib.suppress(OSError):
            writer.write_eof()
    except ConnectionError:
        pass
    finally:
        await asyncio.sleep(delay_s)
        writer.close()


async def serve(listen_port: int, host: str, port: int, delay_s: float) -> None:
    """Forward connections on `listen_port` to host:port until killed."""

    async def connect(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _pipe(client_reader, upstream_writer, delay_s),
            _pipe(upstream_reader, client_writer, delay_s),
            return_exceptions=True,
        )

    server = await asyncio.start_server(connect, "127.0.0.1", listen_port, backlog=1024)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def latency_proxy(target_host: str, target_port: int, *, delay_ms: float) -> Iterator[int]:
    """Run a proxy to target_host:target_port in its own process; yields the port to connect to."""
    port = free_port()
    args = [sys.executable, "-m", "tests.support.latency_proxy", "--listen-port", str(port)]
    args += ["--target", f"{target_host}:{target_port}", "--delay-ms", str(delay_ms)]
    process = spawn(args, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the latency proxy did not start")
        yield port
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    asyncio.run(serve(args.listen_port, host, int(port), args.delay_ms / 1000))


if __name__ == "__main__":
    main()
