"""`taskwire run | api | worker | migrate | status | admin`: the one entry point for local use and production."""

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from app.core.claims import ClaimRefused, check_port_free, claim_port, hold_data_dir
from app.core.config import Settings, get_settings
from app.core.embedded_redis import EmbeddedRedis
from app.core.logging import configure_logging
from app.core.processes import child_env, spawn, stop
from app.submissions.chromium import chromium_missing

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_FILE = "taskwire.run.json"
# How long `taskwire run` waits for the workers' first heartbeats before it prints the URL anyway.
WORKERS_WAIT_S = 20
# A worker's warm shutdown lets running answers finish; past this it is killed (they are redelivered).
WORKER_STOP_TIMEOUT_S = 60


def migrate(settings: Settings, *, quiet: bool = False) -> None:
    """Bring the database schema to the newest migration (`quiet`: say only what went wrong)."""
    if quiet:  # before the import: alembic logs its plugins as it loads
        logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic.config import Config

    from alembic import command

    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = settings.database_url
    command.upgrade(config, "head")


def serve_api(settings: Settings, host: str, port: int) -> None:
    """Run one API replica in this process until SIGINT/SIGTERM."""
    listening = claim_port(host, port)  # before anything slow: a taken port ends this at once
    import uvicorn

    from app.core.http_protocol import timed_http_protocol
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
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        http=timed_http_protocol(settings.http_header_timeout_s, settings.http_body_timeout_s),
        # wsproto: the leanest of uvicorn's WebSocket implementations per idle socket (31 KiB
        # against 34 for websockets, docs/scaling.md), at no measured cost in fan-out.
        ws="wsproto",
        ws_max_size=settings.ws_max_frame_bytes,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        ws_ping_interval=None,  # the application sends its own `ping` frames (SPEC §5.5)
        timeout_graceful_shutdown=10,
    )
    DrainingServer(config).run(sockets=[listening])


def serve_worker(settings: Settings, queues: list[str], concurrency: int | None, pool: str) -> int:
    """Run one Celery worker consuming `queues` in this process until SIGTERM (warm shutdown)."""
    from celery.signals import setup_logging

    from app.task_kinds import REGISTRY
    from app.worker.celery_app import create_worker_app

    try:
        kinds = REGISTRY.in_queues(queues)
    except ValueError as exc:
        print(f"taskwire worker: {exc}", file=sys.stderr)
        return 2
    setup_logging.connect(lambda **_: configure_logging(settings.log_format, settings.log_level), weak=False)
    app = create_worker_app(settings, REGISTRY, queues, pool)
    # Each kind's limit, summed: a process for one queue runs exactly its kinds' limits at once.
    slots = concurrency or sum(kind.limits(settings).concurrency for kind in kinds)
    # The pid keeps node names unique when several workers share a host.
    hostname = f"taskwire-{'-'.join(queues)}-{os.getpid()}@%h"
    argv = ["worker", "--queues", ",".join(queues), "--hostname", hostname, "--loglevel", settings.log_level]
    argv += ["--pool", pool, "--concurrency", str(slots)]
    # Gossip and mingle serve worker-to-worker coordination Taskwire does not use; gossip also
    # failed to restart after a Redis restart, and mingle adds a second to startup. Event
    # heartbeats are how Flower sees a worker: on with CELERY_EVENTS, with the task events.
    argv += ["--without-gossip", "--without-mingle"]
    if not settings.celery_events:
        argv.append("--without-heartbeat")
    level = logging.getLevelName(settings.log_level.upper())
    if isinstance(level, int) and level >= logging.WARNING:
        argv.insert(0, "--quiet")  # `celery --quiet worker`: the banner is an INFO-level screenful
    app.worker_main(argv)
    return 0


def supervise_workers(queues: list[str], pool: str) -> int:
    """One worker process per queue, each with its own limits, so a burst of one kind never starves another.

    They share this process group (a SIGKILL of the group takes them all, as of one worker) and
    die with this process. SIGTERM is passed on. A worker that exits on its own is started again
    (sooner or later every broker client meets a Redis restart it does not survive: kombu 5.7
    exits on some), after a pause that grows while it keeps failing within a minute.
    """
    cli = [sys.executable, "-m", "app.cli", "worker", "--pool", pool, "--queues"]
    children = {queue: spawn([*cli, queue], env=child_env(), own_session=False) for queue in queues}
    started_at = dict.fromkeys(queues, time.monotonic())
    pauses = dict.fromkeys(queues, 0.0)
    stopping = False

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if signum == signal.SIGTERM:  # Ctrl-C's SIGINT already reached the whole group
            for child in children.values():
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    while not stopping:
        for queue, child in children.items():
            if child.poll() is None or stopping:
                continue
            lived = time.monotonic() - started_at[queue]
            pauses[queue] = 1.0 if lived > 60 else min(max(pauses[queue] * 2, 1.0), 30.0)
            print(
                f"taskwire worker: the {queue} worker exited with {child.returncode}; "
                f"starting it again in {pauses[queue]:g} s",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(pauses[queue])
            if not stopping:
                children[queue] = spawn([*cli, queue], env=child_env(), own_session=False)
                started_at[queue] = time.monotonic()
        time.sleep(0.2)
    for child in children.values():
        stop(child, timeout_s=WORKER_STOP_TIMEOUT_S)
    return 0


def run_local(settings: Settings, host: str, port: int, *, verbose: bool = False) -> int:
    """Migrate, start Redis if needed, one API replica and one worker; stop them all on Ctrl-C/SIGTERM."""
    configure_logging("text", settings.log_level)
    check_port_free(host, port)
    with hold_data_dir(settings.data_dir):
        return _run_local(settings, host, port, verbose=verbose)


def _run_local(settings: Settings, host: str, port: int, *, verbose: bool) -> int:
    print("Starting Taskwire (database, Redis, API and workers)…", flush=True)
    missing = chromium_missing(settings.chromium_path)
    if missing:
        print(f"Grading will be unavailable: {missing}. The tutor works without it.", flush=True)
    migrate(settings, quiet=not verbose)
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
        probe_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        stack.enter_context(_run_file(settings.data_dir, redis_url=redis_url, url=f"http://{probe_host}:{port}/"))
        overrides = {"REDIS_URL": redis_url}
        if "log_format" not in settings.model_fields_set:
            overrides["LOG_FORMAT"] = "text"
        if not verbose and "log_level" not in settings.model_fields_set:
            overrides["LOG_LEVEL"] = "WARNING"  # a quiet start: warnings and errors only (--verbose: all)
        env = child_env(**overrides)
        cli = [sys.executable, "-m", "app.cli"]
        children = [
            spawn([*cli, "api", "--host", host, "--port", str(port)], env=env),
            spawn([*cli, "worker"], env=env),
        ]
        for child in children:
            stack.callback(stop, child)
        readiness = _wait_ready(f"http://{probe_host}:{port}/readyz", children, lambda: stopping)
        if readiness is None:
            print("Taskwire did not become ready; see the log above.", file=sys.stderr)
            return 1
        for kind, health in readiness.get("task_kinds", {}).items():
            if not health.get("available"):
                print(f"Note: {kind} tasks cannot run: {health.get('reason')}", flush=True)
        print(f"\nTaskwire is running: open http://{probe_host}:{port}/\nPress Ctrl-C to stop it.\n", flush=True)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
        print("Stopping Taskwire…", flush=True)
        return 0 if stopping else 1


@contextlib.contextmanager
def _run_file(data_dir: Path, **facts: str) -> Iterator[None]:
    # Where `taskwire status` finds this run's Redis (the embedded one's port changes every run).
    path = data_dir / RUN_FILE
    path.write_text(json.dumps({**facts, "pid": os.getpid()}))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _wait_ready(
    url: str, children: list[subprocess.Popen[bytes]], cancelled: object, timeout_s: float = 60
) -> dict[str, Any] | None:
    """/readyz's answer once the API is ready and every task kind has a worker (or has had
    WORKERS_WAIT_S to find one: a kind may stay unavailable, and says why); None if it never is."""
    deadline = time.monotonic() + timeout_s
    ready_since: float | None = None
    while time.monotonic() < deadline and not cancelled():  # type: ignore[operator]
        if any(child.poll() is not None for child in children):
            return None
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = httpx.get(url, timeout=1)
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                ready_since = ready_since or time.monotonic()
                kinds = body.get("task_kinds", {}).values()
                waiting = any(kind.get("workers") == 0 for kind in kinds)
                if not waiting or time.monotonic() - ready_since > WORKERS_WAIT_S:
                    return body
        time.sleep(0.2)
    return None


def status(settings: Settings) -> int:
    """Print the ops overview (the ops page's figures) from the database and Redis; 1 if they cannot be read."""
    redis_url = settings.redis_url
    run_file = settings.data_dir / RUN_FILE
    if not redis_url and run_file.exists():
        redis_url = json.loads(run_file.read_text())["redis_url"]
    if not redis_url:
        print("taskwire status: REDIS_URL is not set and no `taskwire run` is running here", file=sys.stderr)
        return 1
    from app.core.redis import create_async_bus_redis, create_async_redis
    from app.db.session import api_sessionmaker, create_api_engine
    from app.ops.service import overview
    from app.ops.terminal import render
    from app.task_kinds import REGISTRY

    async def read() -> str:
        engine, broker = create_api_engine(settings.database_url), create_async_redis(redis_url)
        client = create_async_bus_redis(settings, broker)
        try:
            async with api_sessionmaker(engine)() as session:
                return render(await overview(session, client, REGISTRY, broker=broker))
        finally:
            await client.aclose()
            if broker is not client:
                await broker.aclose()
            await engine.dispose()

    try:
        print(asyncio.run(read()))
    except Exception as exc:
        print(f"taskwire status: could not read the overview: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen component."""
    parser = argparse.ArgumentParser(prog="taskwire", description="Taskwire: HTTP submit, WebSocket notify.")
    parser.add_argument("--version", action="version", version=f"taskwire {importlib.metadata.version('taskwire')}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start everything for local use (migrations, Redis, API, worker)")
    api = commands.add_parser("api", help="run one API replica")
    for sub in (run, api):
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8000)
    run.add_argument("--verbose", action="store_true", help="show every component's INFO log (default: warnings only)")
    worker = commands.add_parser("worker", help="run Celery workers: one process per queue unless --queues names some")
    worker.add_argument(
        "--queues",
        default=None,
        help="comma-separated queues for one worker process (default: every queue, a process each)",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="tasks at once in that process (default: the limits of its kinds, e.g. CHAT_CONCURRENCY)",
    )
    worker.add_argument(
        "--pool",
        choices=["threads", "prefork", "solo"],
        default="threads",
        help="threads (default): tasks run concurrently on the process's event loop; prefork: a process per task",
    )
    commands.add_parser("migrate", help="apply database migrations")
    commands.add_parser("status", help="print what the system is doing now: queues, workers, replicas, failures")
    from app.auth import operators

    operators.add_arguments(commands.add_parser("admin", help="add, remove or list operators (who may open /ops)"))
    args = parser.parse_args(argv)

    settings = get_settings()
    try:
        if args.command == "run":
            return run_local(settings, args.host, args.port, verbose=args.verbose)
        if args.command == "status":
            return status(settings)
        if args.command == "admin":
            return operators.run(settings, args)
        configure_logging(settings.log_format, settings.log_level)
        if args.command == "api":
            serve_api(settings, args.host, args.port)
    except ClaimRefused as refused:
        print(f"taskwire {args.command}: {refused}", file=sys.stderr, flush=True)
        return 2
    if args.command == "migrate":
        migrate(settings)
    elif args.command == "worker":
        if args.queues is None:
            if args.concurrency is not None:
                parser.error("--concurrency applies to one worker process: name its --queues")
            from app.task_kinds import REGISTRY

            return supervise_workers(REGISTRY.queues, args.pool)
        return serve_worker(settings, [q for q in args.queues.split(",") if q], args.concurrency, args.pool)
    return 0


if __name__ == "__main__":
    sys.exit(main())
