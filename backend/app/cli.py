"""`taskwire run | api | worker | migrate`: the one entry point for local use and production."""

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import httpx

from app.core.config import Settings, get_settings
from app.core.embedded_redis import EmbeddedRedis
from app.core.logging import configure_logging
from app.core.processes import child_env, spawn, stop

REPO_ROOT = Path(__file__).resolve().parents[2]


def migrate(settings: Settings) -> None:
    """Bring the database schema to the newest migration."""
    from alembic.config import Config

    from alembic import command

    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = settings.database_url
    command.upgrade(config, "head")


def serve_api(settings: Settings, host: str, port: int) -> None:
    """Run one API replica in this process until SIGINT/SIGTERM."""
    import uvicorn

    from app.main import begin_shutdown, create_app

    app = create_app(settings)

    class DrainingServer(uvicorn.Server):
        # uvicorn's own shutdown aborts WebSockets before the app's lifespan runs; stop intake,
        # then let the app flush and close its sockets first.
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:
                server.close()
            await begin_shutdown(app)
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # our own logging (JSON, tokens redacted)
        access_log=False,
        # wsproto: the leanest of uvicorn's WebSocket implementations per idle socket (31 KiB
        # against 34 for websockets, docs/scaling.md), at no measured cost in fan-out.
        ws="wsproto",
        ws_max_size=settings.ws_max_frame_bytes,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        ws_ping_interval=None,  # the application sends its own `ping` frames (SPEC §5.5)
        timeout_graceful_shutdown=10,
    )
    DrainingServer(config).run()


def serve_worker(settings: Settings, queues: str, concurrency: int | None, pool: str) -> None:
    """Run one Celery worker in this process until SIGTERM (warm shutdown)."""
    from celery.signals import setup_logging, worker_ready, worker_shutdown

    from app.worker.celery_app import celery_app, configure_celery
    from app.worker.reconciler import start_reconciler, stop_reconciler

    setup_logging.connect(lambda **_: configure_logging(settings.log_format, settings.log_level), weak=False)
    # The reconciler lives in the main process, beside the pool, for as long as the worker runs.
    worker_ready.connect(lambda **_: start_reconciler(settings, celery_app), weak=False)
    worker_shutdown.connect(lambda **_: stop_reconciler(), weak=False)
    configure_celery(celery_app, settings)
    # The pid keeps node names unique when several workers share a host.
    hostname = f"taskwire-{os.getpid()}@%h"
    argv = ["worker", "--queues", queues, "--hostname", hostname, "--loglevel", settings.log_level, "--pool", pool]
    # Gossip, mingle and event heartbeats serve worker-to-worker coordination Taskwire does not
    # use; gossip also failed to restart after a Redis restart, and mingle adds a second to startup.
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    argv += ["--concurrency", str(concurrency or settings.worker_concurrency)]
    celery_app.worker_main(argv)


def run_local(settings: Settings, host: str, port: int) -> int:
    """Migrate, start Redis if needed, one API replica and one worker; stop them all on Ctrl-C/SIGTERM."""
    configure_logging("text", settings.log_level)
    migrate(settings)
    stopping = False

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with contextlib.ExitStack() as stack:
        redis_url = settings.redis_url
        if not redis_url:
            embedded = stack.enter_context(EmbeddedRedis(settings.data_dir / "redis", persistent=True))
            redis_url = embedded.url
            print(f"Started an embedded Redis at {redis_url}", flush=True)
        log_format = settings.log_format if "log_format" in settings.model_fields_set else "text"
        env = child_env(REDIS_URL=redis_url, LOG_FORMAT=log_format)
        cli = [sys.executable, "-m", "app.cli"]
        children = [
            spawn([*cli, "api", "--host", host, "--port", str(port)], env=env),
            spawn([*cli, "worker"], env=env),
        ]
        for child in children:
            stack.callback(stop, child)
        probe_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        if not _wait_ready(f"http://{probe_host}:{port}/readyz", children, lambda: stopping):
            print("Taskwire did not become ready; see the log above.", file=sys.stderr)
            return 1
        print(f"\nTaskwire is running: open http://{probe_host}:{port}/  (Ctrl-C stops everything)\n", flush=True)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
        print("Stopping Taskwire…", flush=True)
        return 0 if stopping else 1


def _wait_ready(url: str, children: list[subprocess.Popen[bytes]], cancelled: object, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not cancelled():  # type: ignore[operator]
        if any(child.poll() is not None for child in children):
            return False
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        time.sleep(0.2)
    return False


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen component."""
    parser = argparse.ArgumentParser(prog="taskwire", description="Taskwire: HTTP submit, WebSocket notify.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start everything for local use (migrations, Redis, API, worker)")
    api = commands.add_parser("api", help="run one API replica")
    for sub in (run, api):
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8000)
    worker = commands.add_parser("worker", help="run one Celery worker")
    worker.add_argument("--queues", default="chat,submissions", help="comma-separated queues to consume")
    worker.add_argument("--concurrency", type=int, default=None, help="tasks at once (default: WORKER_CONCURRENCY)")
    worker.add_argument(
        "--pool",
        choices=["threads", "prefork", "solo"],
        default="threads",
        help="threads (default): one process, one event loop, tasks run concurrently; prefork: a process per task",
    )
    commands.add_parser("migrate", help="apply database migrations")
    args = parser.parse_args(argv)

    settings = get_settings()
    if args.command == "run":
        return run_local(settings, args.host, args.port)
    configure_logging(settings.log_format, settings.log_level)
    if args.command == "migrate":
        migrate(settings)
    elif args.command == "api":
        serve_api(settings, args.host, args.port)
    elif args.command == "worker":
        serve_worker(settings, args.queues, args.concurrency, args.pool)
    return 0


if __name__ == "__main__":
    sys.exit(main())
