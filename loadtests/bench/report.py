"""The benchmark results as Markdown tables (docs/performance.md); the analysis is docs/scaling.md."""

import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.bench import report_tasks


def machine() -> str:
    """CPU, memory, kernel and Python of this machine, in one line."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} × {cpu}, {memory_gib:.0f} GiB RAM, Linux {platform.release()}, Python {platform.python_version()}"


def _pair(row: dict[str, Any], key: str) -> str:
    return f"{row[key][0]:.1f} / {row[key][1]:.1f}"


def _submit(results: dict[str, Any]) -> list[str]:
    lines = [
        "## 1. Submit: `POST /ai/chat2` on one API replica",
        "",
        "No worker runs, so this is the replica alone. Closed loop: 64 requests always in flight for 5 s,",
        "50 learners. API CPU per request is the replica's CPU time divided by the requests it served,",
        "which the load generator sharing the machine does not distort. Open loop: requests sent on a",
        "fixed schedule, latency from the intended send time (milliseconds, P50 / P99).",
        "Baseline: a bare FastAPI endpoint that only enqueues a Celery task (no auth, database or idempotency).",
        "",
        "| database | requests/s | baseline requests/s | ratio | API CPU per request | baseline CPU per request | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for database, result in results.items():
        ours, base = result["taskwire"]["throughput"], result["baseline"]["throughput"]
        lines.append(
            f"| {database} | {ours['rps']:.0f} | {base['rps']:.0f} | {ours['rps'] / base['rps']:.2f}× | "
            f"{ours['cpu_ms']:.2f} ms | {base['cpu_ms']:.2f} ms | {ours['errors']:.0f} |"
        )
    lines += [
        "",
        "| database | offered/s | Taskwire P50 / P99 | baseline P50 / P99 | errors |",
        "|---|---|---|---|---|",
    ]
    for database, result in results.items():
        for ours, base in zip(result["taskwire"]["open_loop"], result["baseline"]["open_loop"], strict=True):
            lines.append(
                f"| {database} | {ours['rate']:.0f} | {ours['p50']:.1f} / {ours['p99']:.1f} | "
                f"{base['p50']:.1f} / {base['p99']:.1f} | {_errors(ours)} |"
            )
    return lines


def _e2e(results: dict[str, Any]) -> list[str]:
    lines = [
        "## 2. End to end, no-delay offline chat (milliseconds, P50 / P99)",
        "",
        "One API replica, one worker process on the chat queue, SQLite. Closed loop: each user sends",
        "chats one after another, about 200 in all per level; the baseline is the bare enqueue endpoint",
        "at the same concurrency.",
        "",
        "| users | chats | HTTP submit | baseline enqueue | submit ratio (P50) | submit → first envelope | submit → result |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["closed"]:
        ratio = row["submit"][0] / row["baseline"][0]
        lines.append(
            f"| {row['users']} | {row['n']} | {_pair(row, 'submit')} | {_pair(row, 'baseline')} | {ratio:.2f}× | "
            f"{_pair(row, 'first')} | {_pair(row, 'result')} |"
        )
    lines += [
        "",
        "Open loop: one learner submits on a fixed schedule for 5 s; submit → result from the intended",
        "send time. CPU per chat is each process's CPU time over the chats; 1,000 ms over it is what one",
        "core of that process could complete per second.",
        "",
        "| offered tasks/s | tasks | completed/s | submit → result P50 | P99 | errors | worker CPU per chat | API CPU per chat | chats/s per worker core |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["open"]:
        cpu = row.get("worker_cpu_ms")
        per_core = f"{1000 / cpu:.0f}" if cpu else "–"
        lines.append(
            f"| {row['rate']} | {row['tasks']} | {row['completed_per_s']:.0f} | {row['p50']:.1f} | {row['p99']:.1f} | {row['errors']} | "
            f"{cpu or 0:.2f} ms | {row.get('api_cpu_ms', 0):.2f} ms | {per_core} |"
        )
    return lines


def _errors(row: dict[str, Any]) -> str:
    """The error count, with what the errors were when the run recorded it."""
    kinds = row.get("error_kinds")
    detail = ", ".join(f"{kind}: {count}" for kind, count in sorted(kinds.items())) if kinds else ""
    return f"{row['errors']:.0f} ({detail})" if detail else f"{row['errors']:.0f}"


def _fanout(results: dict[str, Any]) -> list[str]:
    lines = [
        "## 3. Fan-out to 1,000 sockets",
        "",
        "A separate process publishes at the offered rate of deliveries per second for 4 s (each message",
        "goes to one user; with 10 sockets per user one message is 10 deliveries); 1,000 client sockets",
        "in one process record Redis → socket latency from the publish time inside each message.",
        "Taskwire publishes with its Lua script (XADD to history + PUBLISH), the baselines with a plain",
        "PUBLISH (python-socketio's RedisManager.emit, and a bare PUBLISH). `taskwire` runs as",
        "configured by default; `taskwire (no read window)` is the same replica with",
        "BUS_READ_WINDOW_MS=0, which reads its subscription whenever a message arrives instead of at",
        "most once per millisecond under load: what the window saves in CPU, and adds in latency.",
        "",
        "Server CPU per delivery is the server process's CPU time over the step divided by the",
        "deliveries: 1,000,000 / it is what one core could deliver per second, a ceiling this machine's",
        "load generators cannot reach. The ratios compare Taskwire's per-core ceiling with each baseline's.",
        "",
        "| server, users × sockets | offered/s | published/s | delivered/s | delivered | latency P50 ms | P99 ms | server CPU µs per delivery | deliveries/s per core |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        if name == "ratio rounds":
            continue
        for row in rows:
            lines.append(
                f"| {name} | {row['offered']:.0f} | {row['published_per_s']:.0f} | {row['delivered_per_s']:.0f} | "
                f"{row['delivered'] * 100:.1f} % | {row['p50']:.1f} | {row['p99']:.1f} | {row['cpu_us']:.0f} | "
                f"{1e6 / row['cpu_us']:.0f} |"
            )
    lines += ["", *_fanout_ratios(results)]
    return lines


def _fanout_ratios(results: dict[str, Any]) -> list[str]:
    """Taskwire's per-core delivery ceiling against each baseline's, at 5,000 deliveries/s: from
    the interleaved rounds (median, and the spread of the rounds' own ratios) when the run had them."""
    rounds: dict[str, dict[str, list[float]]] | None = results.get("ratio rounds")
    if rounds is None:  # a run from before the rounds: one sweep's row per system
        rounds = {name.split(", ", 1)[1]: {} for name in results if name != "ratio rounds"}
        for name, rows in results.items():
            server, shape = name.split(", ", 1)
            rounds[shape][server] = [next(float(r["cpu_us"]) for r in rows if r["offered"] == 5000)]
    count = max(len(v) for per in rounds.values() for v in per.values())
    lines = [
        (
            f"Ratios at 5,000 deliveries/s, each system measured again in turn {count} times with all the "
            "servers up: the ratio of the medians, in brackets the lowest and highest ratio of one round."
            if count > 1
            else "Ratios at 5,000 deliveries/s, from the rows above."
        ),
        "",
        "| users × sockets | server | µs / delivery | ÷ python-socketio (target ≥ 2) | ÷ bare websockets (target ≥ 0.8) |",
        "|---|---|---|---|---|",
    ]
    for shape in sorted(rounds):
        # Taskwire as configured, and the variants the run measured beside it (fanout.py).
        for ours_name in sorted(name for name in rounds[shape] if name.startswith("taskwire")):
            ours = rounds[shape][ours_name]

            def ratio(server: str, shape: str = shape, ours: list[float] = ours) -> str:
                # Deliveries per core of ours ÷ theirs = their CPU per delivery ÷ ours.
                theirs = rounds[shape][server]
                each = sorted(t / o for t, o in zip(theirs, ours, strict=True))
                return f"{statistics.median(theirs) / statistics.median(ours):.2f}× ({each[0]:.2f}–{each[-1]:.2f})"

            lines.append(
                f"| {shape} | {ours_name} | {statistics.median(ours):.0f} | {ratio('python-socketio')} | "
                f"{ratio('bare websockets')} |"
            )
    return lines


def _capacity(results: dict[str, Any]) -> list[str]:
    lines = [
        "## 4. Capacity: idle sockets on one replica",
        "",
        "Sockets opened in steps, one per user, by clients that answer the app's pings; memory is the",
        "server's resident set (VmRSS) minus its idle size, divided by the sockets. Redis connections",
        "are every client of the private redis-server except the measuring one.",
        "",
        "| server | sockets | still open | RSS MiB | KiB per socket | Redis connections | pattern subscriptions |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for row in rows:
            lines.append(
                f"| {name} | {row['sockets']:.0f} | {row['open']:.0f} | {row['rss_mib']:.0f} | "
                f"{row['kib_per_socket']:.1f} | {row['redis_connections']:.0f} | {row['pattern_subscriptions']:.0f} |"
            )
    return lines


def _resume(result: dict[str, float]) -> list[str]:
    return [
        "## 5. Resume: replaying 1,000 missed envelopes on reconnect (median of 5)",
        "",
        "| connect + auth + hello + 1,000 envelopes received | baseline: one raw XRANGE of the same 1,000 | ratio |",
        "|---|---|---|",
        f"| {result['replay_ms']:.1f} ms | {result['xrange_ms']:.1f} ms | {result['replay_ms'] / result['xrange_ms']:.1f}× |",
    ]


def _duplicates(result: dict[str, Any]) -> list[str]:
    failed = ", ".join(f"{count} {code}" for code, count in result["failed"].items()) or "0"
    return [
        "## 6. Duplicates: 100 long tasks, worker kills, 1 s visibility timeout",
        "",
        "Two workers (8 threads each), chats of about 2 s, Redis redelivering anything unacknowledged",
        "for 1 s, and every 4 s one worker killed whole (SIGKILL to its process group) and a new one",
        "started. Plain Celery would run each of those redeliveries to completion again.",
        "",
        "| tasks | kills | seconds | succeeded | failed (by code) | lost | completed twice | never notified | redeliveries recognised and dropped |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {result['tasks']} | {result['kills']} | {result['seconds']:.0f} | {result['succeeded']} | {failed} | "
        f"{result['lost']} | {result['completed_twice']} | {result['never_notified']} | {result['redeliveries_dropped']} |",
    ]


def _replicas(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## 7. Replicas: 1, 2 and 3 API replicas on this 2-core machine",
        "",
        "No worker. Submits: closed loop, 64 in flight, requests taken by the replicas in turn; CPU is",
        "summed over the replicas. Fan-out: 1,000 sockets (one per user) spread over the replicas,",
        "5,000 deliveries/s for 4 s; a replica receives only the envelopes of the users it holds (§10).",
        "",
        "| replicas | submits/s | API CPU per submit | errors | fan-out delivered/s | delivered | P50 ms | P99 ms | RSS MiB (all) | Redis connections |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        fan = row["fanout"]
        lines.append(
            f"| {row['replicas']} | {row['submits_per_s']:.0f} | {row['cpu_ms']:.2f} ms | {row['errors']:.0f} | "
            f"{fan['delivered_per_s']:.0f} | {fan['delivered'] * 100:.1f} % | {fan['p50']:.1f} | {fan['p99']:.1f} | "
            f"{row['rss_mib']:.0f} | {row['redis_connections']} |"
        )
    return lines


def _bus(result: dict[str, Any]) -> list[str]:
    lines = [
        "## 10. The bus: Redis → replica traffic, and a Redis Cluster",
        "",
        "Traffic: 1,000 users with one socket each, spread over the replicas; 10,000 envelopes published",
        "round-robin over them at 2,500/s. Per envelope published: pub/sub messages all replicas received",
        "(canaries included) and bytes Redis wrote to all clients (the publisher's replies included, the",
        "same in every row). Baseline, same run and publisher: as many connections subscribed to the",
        "pattern `ws:user:*` as there are replicas, as replicas listened until issue 18.",
        "",
        "| replicas | Taskwire: messages / envelope | Taskwire: Redis bytes out / envelope | delivered "
        "| pattern baseline: messages / envelope | pattern baseline: bytes / envelope | bytes, Taskwire / baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["traffic"]:
        ours, base = row["taskwire"], row["pattern"]
        lines.append(
            f"| {row['replicas']} | {ours['messages_per_envelope']:.2f} | {ours['bytes_per_envelope']:.0f} | "
            f"{ours['delivered'] * 100:.1f} % | {base['messages_per_envelope']:.2f} | {base['bytes_per_envelope']:.0f} | "
            f"{ours['bytes_per_envelope'] / base['bytes_per_envelope']:.2f} |"
        )
    lines += [
        "",
        "Fan-out to 1,000 sockets (1,000 × 1) on one replica at 2,000 deliveries/s (about what one",
        "publisher process reaches through redis-py's cluster client), the bus on one Redis and on a",
        "three-primary Redis Cluster on this machine (sharded pub/sub, one connection per primary):",
        "",
        "| bus | published/s | delivered/s | delivered | P50 ms | P99 ms | replica CPU µs / delivery |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (row,) in result["fanout"].items():
        lines.append(
            f"| {name} | {row['published_per_s']:.0f} | {row['delivered_per_s']:.0f} | {row['delivered'] * 100:.1f} % | "
            f"{row['p50']:.1f} | {row['p99']:.1f} | {row['cpu_us']:.0f} |"
        )
    return lines


SECTIONS = {
    "submit": _submit,
    "e2e": _e2e,
    "fanout": _fanout,
    "capacity": _capacity,
    "resume": _resume,
    "duplicates": _duplicates,
    "replicas": _replicas,
    "classroom": report_tasks.classroom,
    "round_trips": report_tasks.round_trips,
    "bus": _bus,
}


# Key of the raw results under which each section's time of measurement is kept.
MEASURED_AT = "measured_at"


def report(results: dict[str, Any]) -> str:
    """docs/performance.md: the header, then one table group per section that ran."""
    measured: dict[str, str] = results.get(MEASURED_AT, {})
    runs = sorted(set(measured.values()))
    if len(runs) > 1:  # sections re-run alone since the full run: say which figures are from when
        when = "; ".join(
            f"{', '.join(name for name in SECTIONS if measured.get(name) == run)} at {run}" for run in runs
        )
        header = f"Measured with `make bench` (`python -m loadtests.bench.run`), section by section: {when} UTC,"
    else:
        at = runs[0] if runs else f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
        header = f"Measured {at} UTC with `make bench` (`python -m loadtests.bench.run`)"
    lines = [
        "# Performance",
        "",
        header,
        f"on {machine()}.",
        "Everything (servers, redis-server, PostgreSQL, load generators) shares this machine; absolute",
        "numbers move with the machine, the ratios against baselines measured in the same run less so.",
        "What limits each number, how the numbers grow and where targets are missed: [scaling.md](scaling.md).",
    ]
    for name, section in SECTIONS.items():
        if name in results:
            lines += ["", *section(results[name])]
    return "\n".join(lines) + "\n"
