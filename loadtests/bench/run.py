"""`make bench`: repeatable benchmarks, each printed beside a baseline measured in the same run.

1. Submit: `POST /ai/chat2` per second and API CPU per request, open-loop latency at fixed
   rates; baseline: a bare FastAPI endpoint that only enqueues a Celery task.
2. End to end, no-delay offline chat: closed loop at 1, 20 and 100 users, open loop by rate.
3. Fan-out to 1,000 sockets; baselines: python-socketio with its Redis manager, bare `websockets`.
4. Capacity: idle sockets, memory per socket, Redis connections; baseline: bare `websockets`.
5. Resume: 1,000 missed envelopes; baseline: one raw XRANGE of them.
6. Duplicates: 100 long tasks with worker kills and a 1 s visibility timeout.
7. Replicas: submits and fan-out with 1, 2 and 3 API replicas.
8. Classroom: N learners ask the tutor at once against a streaming fake LLM; baselines: the
   previous runtime (from git) and the ceiling (one async process, no queue, no database).
9. Round trips per no-delay chat, by process, for this runtime and the previous one.
10. The bus: Redis -> replica messages and bytes per envelope for 1, 2 and 3 replicas (baseline:
   pattern listeners, as before issue 18), and fan-out with the bus on a Redis Cluster.
`python -m loadtests.bench.run` runs them all and writes docs/performance.md; name sections
(`submit e2e fanout capacity resume duplicates replicas classroom round_trips bus`) to run only those, merged into the last run's figures.
"""

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from app.core.embedded_redis import EmbeddedRedis
from loadtests.bench import bus, capacity, classroom, duplicates, fanout, latency, replicas, resume, round_trips, submit
from loadtests.bench.report import MEASURED_AT, report
from loadtests.bench.stack import baseline_server, bench_stack

OUT = Path(__file__).resolve().parents[2] / "docs" / "performance.md"
# Raw figures, kept after each section so a late failure does not lose the earlier ones (git-ignored).
RAW = Path(__file__).resolve().parents[1] / "reports" / "bench-results.json"
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
SECTIONS = (
    "submit",
    "e2e",
    "fanout",
    "capacity",
    "resume",
    "duplicates",
    "replicas",
    "classroom",
    "round_trips",
    "bus",
)


@contextlib.contextmanager
def postgres_database() -> Iterator[str | None]:
    """A fresh database on the local PostgreSQL, or None when there is none to use."""
    name = f"taskwire_bench_{int(time.time())}"
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=2) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        yield None
        return
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _submit() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with postgres_database() as postgres_url:
        databases = {"SQLite": {}, **({"PostgreSQL": {"DATABASE_URL": postgres_url}} if postgres_url else {})}
        for name, settings in databases.items():
            with bench_stack(workers=0, **settings) as stack, baseline_server(stack.redis_url) as (url, pid):
                results[name] = await submit.run(stack.base_url, stack.api_pid, url, pid)
    return results


async def _e2e() -> dict[str, Any]:
    # Pieces are coalesced as configured by default (CHAT_DELTA_INTERVAL_MS): a no-delay answer
    # is then a handful of envelopes, not one per piece.
    # No shedding: the open loop goes past capacity on purpose, to show where it is.
    with (
        bench_stack(LLM_OFFLINE_DELAY_MS="0", QUEUE_MAX_BACKLOG="0") as stack,
        baseline_server(stack.redis_url) as (baseline_url, _pid),
    ):
        return {"closed": await latency.end_to_end(stack, baseline_url), "open": await latency.open_loop(stack)}


async def _fanout() -> dict[str, Any]:
    with bench_stack(workers=0) as stack:
        return await fanout.run(stack, stack.env["JWT_SECRET"])


async def _capacity() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder, EmbeddedRedis(Path(folder)) as redis_server:
        bare = await capacity.bare(redis_server.url)
    return {
        "taskwire": await capacity.taskwire(deflate=False),
        "taskwire, permessage-deflate": await capacity.taskwire(deflate=True),
        "bare websockets": bare,
    }


async def _resume() -> dict[str, Any]:
    with bench_stack(workers=0) as stack:
        return await resume.run(stack)


RUNNERS = {
    "submit": _submit,
    "e2e": _e2e,
    "fanout": _fanout,
    "capacity": _capacity,
    "resume": _resume,
    "duplicates": duplicates.run,
    "replicas": replicas.run,
    "classroom": classroom.run,
    "round_trips": round_trips.run,
    "bus": bus.run,
}


async def main(sections: list[str]) -> None:
    # Sections run alone are merged into the raw figures of earlier runs; the tables are written
    # to docs/performance.md once every section has figures.
    results: dict[str, Any] = json.loads(RAW.read_text()) if RAW.exists() and sections != list(SECTIONS) else {}
    for section in sections:
        print(f"running {section}…", file=sys.stderr, flush=True)
        results[section] = await RUNNERS[section]()
        results.setdefault(MEASURED_AT, {})[section] = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
        RAW.parent.mkdir(exist_ok=True)
        RAW.write_text(json.dumps(results, indent=1, default=str))
    text = report(results)
    print(text)
    if set(SECTIONS) <= set(results):
        OUT.write_text(text)
        print(f"written to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    chosen = sys.argv[1:] or list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown sections {sorted(unknown)}; choose from {' '.join(SECTIONS)}")
    asyncio.run(main(chosen))
