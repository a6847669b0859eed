"""A private stack for benchmarks: redis-server, SQLite, one API replica and one worker on free ports."""

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.core.embedded_redis import EmbeddedRedis
from app.core.processes import child_env, free_port, spawn, stop

CLI = [sys.executable, "-m", "app.cli"]


@dataclass
class BenchStack:
    redis_url: str
    base_url: str
    ws_url: str


def _wait(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


@contextlib.contextmanager
def bench_stack(**settings: str) -> Iterator[BenchStack]:
    """Start everything with `settings` as environment overrides; stop it all afterwards."""
    with tempfile.TemporaryDirectory() as folder, EmbeddedRedis(Path(folder) / "redis") as redis_server:
        env = child_env(
            DATABASE_URL=f"sqlite:///{folder}/bench.db",
            REDIS_URL=redis_server.url,
            JWT_SECRET="benchmark-secret",
            LOG_LEVEL="WARNING",
            AUTH_RATE_LIMIT="1000000/60",
            SUBMIT_RATE_LIMIT="1000000/60",
            **settings,
        )
        spawn([*CLI, "migrate"], env=env).wait()
        port = free_port()
        logs = open(Path(folder) / "processes.log", "wb")  # noqa: SIM115 (closed below)
        api = spawn([*CLI, "api", "--port", str(port)], env=env, stdout=logs, stderr=logs)
        worker = spawn([*CLI, "worker"], env=env, stdout=logs, stderr=logs)
        try:
            _wait(f"http://127.0.0.1:{port}/readyz")
            yield BenchStack(redis_server.url, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
        finally:
            stop(worker)
            stop(api)
            logs.close()


@contextlib.contextmanager
def baseline_server(redis_url: str) -> Iterator[str]:
    """The bare FastAPI + Celery enqueue endpoint, on a free port."""
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
        _wait(f"http://127.0.0.1:{port}/docs")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
