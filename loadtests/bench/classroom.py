"""A classroom asks the tutor at once: N learners, each with an open socket, ask one question each.

Questions arrive evenly over N/100 seconds against a streaming fake LLM in its own process
(first token after 0.3 s, then 200 pieces 25 ms apart: an ideal answer takes 5.3 s). For each
question: first streamed text and whole answer, timed from its scheduled send time; LLM calls
in flight at the peak (counted by the fake); CPU and peak resident memory of the process that
runs the answers (the worker, or the ceiling's one process).

Three systems run the same classroom: Taskwire as it is; the previous runtime (the commit
before the async runtime, run from `git archive` with the same packages); and the ceiling, one
async process with no queue and no database (ceiling_app.py).
"""

import asyncio
import contextlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert
from websockets.asyncio.client import ClientConnection, connect

from app.core.config import Settings
from app.core.processes import child_env, free_port, spawn, stop
from app.core.security import create_access_token
from app.db.base import table_of
from app.db.session import create_sync_engine
from app.models import User
from loadtests.bench.meter import ProcessMeter
from loadtests.bench.stack import BenchStack, bench_stack, wait_ready
from loadtests.bench.stats import percentile_ms
from tests.support.streaming_llm import StreamingLLMProcess, streaming_llm

REPO = Path(__file__).resolve().parents[2]
# The last commit of the threads-pool runtime (8 tasks at a time per worker process).
PREVIOUS_RUNTIME_COMMIT = "600793c"
LEVELS = ((100, 1.0), (200, 2.0), (300, 3.0), (1000, 10.0))
PREVIOUS_LEVELS = ((100, 1.0), (300, 3.0))
# The settings every Taskwire stack runs with here: nothing sheds or rate-limits the classroom.
STACK_SETTINGS = {"QUEUE_MAX_BACKLOG": "0", "LOG_LEVEL": "WARNING"}


@dataclass
class Learner:
    id: str
    token: str = ""


@dataclass
class System:
    """How a learner reaches one of the systems."""

    name: str
    ws_url: Callable[[Learner], str]
    join: Callable[[ClientConnection, Learner], Awaitable[None]]
    submit: Callable[[httpx.AsyncClient, Learner], Awaitable[str | None]]
    answer_pids: Callable[[], list[int]]  # processes whose CPU and memory are reported


@dataclass
class Timings:
    intended: dict[str, float] = field(default_factory=dict)
    accepted: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def taskwire_system(stack: BenchStack, name: str) -> System:
    async def join(ws: ClientConnection, learner: Learner) -> None:
        await ws.send(json.dumps({"type": "auth", "token": learner.token}))
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello

    async def submit(http: httpx.AsyncClient, learner: Learner) -> str | None:
        headers = {"Authorization": f"Bearer {learner.token}"}
        response = await http.post(
            f"{stack.base_url}/ai/chat2", json={"message": "why is my list not red?"}, headers=headers
        )
        return str(response.json()["task_id"]) if response.status_code == 202 else None

    return System(
        name,
        lambda learner: f"{stack.ws_url}/ws/user/{learner.id}",
        join,
        submit,
        lambda: [process.pid for process in stack.workers],
    )


def ceiling_system(url: str, pid: int) -> System:
    async def join(_ws: ClientConnection, _learner: Learner) -> None:
        return None

    async def submit(http: httpx.AsyncClient, learner: Learner) -> str | None:
        response = await http.post(f"{url}/ask/{learner.id}")
        return str(response.json()["task_id"]) if response.status_code == 202 else None

    return System(
        "ceiling", lambda learner: f"{url.replace('http', 'ws', 1)}/ws/{learner.id}", join, submit, lambda: [pid]
    )


def add_learners(stack: BenchStack, count: int) -> list[Learner]:
    """Accounts straight in the stack's database (hashing passwords would take minutes), with tokens."""
    settings = Settings(jwt_secret=stack.env["JWT_SECRET"])
    ids = [uuid.uuid4() for _ in range(count)]
    engine = create_sync_engine(stack.env["DATABASE_URL"])
    try:
        with engine.begin() as connection:
            rows = [{"participant_id": i, "username": f"l{i.hex[:16]}", "password_hash": "-"} for i in ids]
            connection.execute(insert(table_of(User)), rows)
    finally:
        engine.dispose()
    return [Learner(str(i), create_access_token(i, settings)) for i in ids]


async def _read(ws: ClientConnection, timings: Timings, finished: asyncio.Event, expected: int) -> None:
    with contextlib.suppress(Exception):
        async for raw in ws:
            frame: dict[str, Any] = json.loads(raw)
            kind = frame.get("type")
            if kind == "ping":
                await ws.send('{"type":"pong"}')
                continue
            task_id = frame.get("task_id")
            now = time.perf_counter()
            if kind == "task_status" and frame["data"].get("state") == "STARTED":
                timings.started.setdefault(task_id, now)
            elif kind == "chat_delta" and frame["data"].get("delta") and task_id not in timings.first:
                timings.first[task_id] = now
            elif kind == "chat_result":
                timings.done[task_id] = now
                if frame.get("error"):
                    timings.failed[task_id] = frame["error"].get("code", "?")
                if len(timings.done) >= expected:
                    finished.set()


async def run_level(
    system: System, learners: list[Learner], arrival_s: float, llm: StreamingLLMProcess
) -> dict[str, Any]:
    """One classroom: connect everyone, then the questions on schedule; wait for every answer."""
    timings = Timings()
    finished = asyncio.Event()
    gate = asyncio.Semaphore(100)
    sockets: list[ClientConnection] = []

    async def open_socket(learner: Learner) -> None:
        async with gate:
            ws = await connect(system.ws_url(learner), ping_interval=None, max_queue=None, open_timeout=60)
            await system.join(ws, learner)
            sockets.append(ws)

    await asyncio.gather(*(open_socket(learner) for learner in learners))
    readers = [asyncio.create_task(_read(ws, timings, finished, len(learners))) for ws in sockets]
    llm.reset()
    meter = ProcessMeter(system.answer_pids())
    errors = 0
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def ask(learner: Learner, at: float) -> None:
            nonlocal errors
            try:
                task_id = await system.submit(http, learner)
            except httpx.HTTPError:
                task_id = None
            if task_id is None:
                errors += 1
            else:
                timings.intended[task_id] = at
                timings.accepted[task_id] = time.perf_counter()

        start = time.perf_counter() + 0.2
        asks = []
        for index, learner in enumerate(learners):
            at = start + index * arrival_s / len(learners)
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            asks.append(asyncio.create_task(ask(learner, at)))
        await asyncio.gather(*asks)
        expected = len(learners) - errors
        if len(timings.done) < expected:
            finished.clear()
            if len(timings.done) >= expected:
                finished.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), timeout=arrival_s + 30 + len(learners) * 0.6)
    elapsed = time.perf_counter() - start
    cpu_s = meter.stop()
    peak = llm.stats()["peak"]
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    accepts = [timings.accepted[t] - at for t, at in timings.intended.items()]
    starts = [timings.started[t] - at for t, at in timings.intended.items() if t in timings.started]
    firsts = [timings.first[t] - at for t, at in timings.intended.items() if t in timings.first]
    wholes = [
        timings.done[t] - at for t, at in timings.intended.items() if t in timings.done and t not in timings.failed
    ]
    missing = len(timings.intended) - sum(1 for t in timings.intended if t in timings.done)
    return {
        "learners": len(learners),
        "arrival_s": arrival_s,
        "answered": len(wholes),
        "errors": errors + len(timings.failed) + missing,
        "error_codes": sorted(set(timings.failed.values())),
        "accepted": (percentile_ms(accepts, 50) / 1000, percentile_ms(accepts, 99) / 1000),
        "started": (percentile_ms(starts, 50) / 1000, percentile_ms(starts, 99) / 1000),
        "first": (percentile_ms(firsts, 50) / 1000, percentile_ms(firsts, 99) / 1000),
        "whole": (percentile_ms(wholes, 50) / 1000, percentile_ms(wholes, 99) / 1000),
        "llm_peak": peak,
        "cpu_s": cpu_s,
        "cores": cpu_s / elapsed,
        "rss_mb": meter.peak_rss / 2**20,
    }


@contextlib.contextmanager
def previous_runtime_code() -> Iterator[Path]:
    """The previous runtime's backend and migrations, unpacked from git into a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        git = shutil.which("git") or "git"
        archive = subprocess.run(
            [git, "-C", str(REPO), "archive", PREVIOUS_RUNTIME_COMMIT, "backend", "alembic", "alembic.ini"],
            capture_output=True,
            check=True,
        )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(folder, filter="data")
        yield Path(folder)


@contextlib.contextmanager
def ceiling_server(llm_url: str) -> Iterator[tuple[str, int]]:
    """ceiling_app on a free port: (URL, pid)."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "loadtests.bench.ceiling_app:app", "--port", str(port)]
    args += ["--ws", "wsproto", "--log-level", "warning", "--no-access-log"]
    process = spawn(args, env=child_env(LLM_BASE_URL=llm_url), cwd=REPO)
    try:
        wait_ready(f"tcp://127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        stop(process)


async def _levels(
    system: System,
    make_learners: Callable[[int], list[Learner]],
    llm: StreamingLLMProcess,
    levels: tuple[tuple[int, float], ...],
) -> list[dict[str, Any]]:
    rows = []
    for count, arrival_s in levels:
        print(f"  classroom: {system.name}, {count} learners over {arrival_s:g} s", file=sys.stderr, flush=True)
        rows.append(await run_level(system, make_learners(count), arrival_s, llm))
        await asyncio.sleep(1)
    return rows


async def run(
    levels: tuple[tuple[int, float], ...] = LEVELS, previous_levels: tuple[tuple[int, float], ...] = PREVIOUS_LEVELS
) -> dict[str, Any]:
    """Every system at its levels: {system name: [rows]}."""
    results: dict[str, Any] = {}
    with streaming_llm() as llm:
        settings = {**STACK_SETTINGS, "LLM_BASE_URL": llm.base_url, "LLM_API_KEY": "bench"}
        with bench_stack(**settings) as stack:
            system = taskwire_system(stack, "taskwire")
            results["taskwire"] = await _levels(system, lambda n: add_learners(stack, n), llm, levels)
        with ceiling_server(llm.base_url) as (url, pid):
            system = ceiling_system(url, pid)
            results["ceiling"] = await _levels(
                system, lambda n: [Learner(uuid.uuid4().hex) for _ in range(n)], llm, levels
            )
        if previous_levels:
            with previous_runtime_code() as code, bench_stack(code=code, **settings) as stack:
                system = taskwire_system(stack, "previous runtime")
                results["previous runtime"] = await _levels(
                    system, lambda n: add_learners(stack, n), llm, previous_levels
                )
    return results


if __name__ == "__main__":
    # `python -m loadtests.bench.classroom [N ARRIVAL_S]`: one level of each system, for profiling.
    chosen = ((int(sys.argv[1]), float(sys.argv[2])),) if len(sys.argv) == 3 else LEVELS
    print(json.dumps(asyncio.run(run(chosen, ())), indent=1))
