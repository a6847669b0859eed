"""A private stack for benchmarks: redis-server, SQLite, one API replica and one worker on free ports."""

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from celery import Celery

from app.core.embedded_redis import EmbeddedRedis
from app.core.processes import child_env, free_port, spawn, stop
from app.task_kinds import REGISTRY

CLI = [sys.executable, "-m", "app.cli"]


@dataclass
class BenchStack:
    redis_url: str
    ports: list[int]  # one per API replica
    apis: list[subprocess.Popen[bytes]]
    env: dict[str, str]
    logs: IO[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        """The first replica's HTTP URL."""
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def ws_url(self) -> str:
        """The first replica's WebSocket URL."""
        return f"ws://127.0.0.1:{self.ports[0]}"

    @property
    def api_pid(self) -> int:
        return self.apis[0].pid

    def ws_urls(self) -> list[str]:
        """Every replica's WebSocket URL."""
        return [f"ws://127.0.0.1:{port}" for port in self.ports]

    def start_worker(self) -> subprocess.Popen[bytes]:
        """One more `taskwire worker` process (its own process group, so it can be killed whole)."""
        self.workers.append(spawn([*CLI, "worker"], env=self.env, stdout=self.logs, stderr=self.logs))
        return self.workers[-1]


def wait_ready(url: str, timeout_s: float = 30) -> None:
    """Wait for `url` to answer 200, or for `tcp://host:port` to accept connections."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if url.startswith("tcp://"):
            host, port = url.removeprefix("tcp://").split(":")
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
                return
        else:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1).status_code == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


def wait_for_workers(redis_url: str, processes: int, timeout_s: float = 60) -> None:
    """Wait until `processes` Celery worker processes answer a ping on the broker.

    A measurement that starts earlier counts their start-up as work: tasks wait in the queue
    while the workers import (seconds of CPU where no bytecode cache may be written), which
    once made the open-loop chat figures look three times worse than they are.
    """
    app = Celery(broker=redis_url)
    deadline = time.monotonic() + timeout_s
    try:
        while len(app.control.ping(timeout=0.5) or []) < processes:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{processes} worker processes did not answer within {timeout_s:.0f} s")
    finally:
        app.close()


@contextlib.contextmanager
def bench_stack(
    *, workers: int = 1, replicas: int = 1, code: Path | None = None, **settings: str
) -> Iterator[BenchStack]:
    """Start everything with `settings` as environment overrides; stop it all afterwards.

    With no workers, tasks only queue up: what is measured is the API replicas alone. `code`
    runs another checkout's backend (its `backend/` first on the path) with the same packages.
    """
    with tempfile.TemporaryDirectory() as folder, EmbeddedRedis(Path(folder) / "redis") as redis_server:
        defaults = {
            "DATABASE_URL": f"sqlite:///{folder}/bench.db",
            "JWT_SECRET": "benchmark-secret",
            "LOG_LEVEL": "WARNING",
            "AUTH_RATE_LIMIT": "1000000/60",
            "SUBMIT_RATE_LIMIT": "1000000/60",
        }
        if code is not None:
            defaults["PYTHONPATH"] = str(code / "backend")
        if workers == 0:
            # No worker drains the queues: shedding would refuse every submit past the backlog.
            defaults["QUEUE_MAX_BACKLOG"] = "0"
        env = child_env(REDIS_URL=redis_server.url, **{**defaults, **settings})
        spawn([*CLI, "migrate"], env=env).wait()
        logs = open(Path(folder) / "processes.log", "wb")  # noqa: SIM115 (closed below)
        ports = [free_port() for _ in range(replicas)]
        apis = [spawn([*CLI, "api", "--port", str(port)], env=env, stdout=logs, stderr=logs) for port in ports]
        stack = BenchStack(redis_server.url, ports, apis, env, logs)
        for _ in range(workers):
            stack.start_worker()
        try:
            for port in ports:
                wait_ready(f"http://127.0.0.1:{port}/readyz")
            if workers:
                # This code's worker runs a process per queue; another checkout's may not.
                wait_for_workers(redis_server.url, workers * len(REGISTRY.queues) if code is None else workers)
            yield stack
        finally:
            for process in stack.workers + stack.apis:
                stop(process)
            logs.close()


@contextlib.contextmanager
def baseline_server(redis_url: str) -> Iterator[tuple[str, int]]:
    """The bare FastAPI + Celery enqueue endpoint, on a free port: (URL, pid)."""
    port = free_port()
    env = child_env(REDIS_URL=redis_url)
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "loadtests.bench.baseline_app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    process = spawn(args, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}/docs")
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        stop(process)
