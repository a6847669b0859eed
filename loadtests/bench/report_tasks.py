"""docs/performance.md tables for the task runtime: the classroom, and round trips per chat."""

from typing import Any

# Issue 14's targets against the ceiling measured in the same run.
FIRST_TEXT_FACTOR, FIRST_TEXT_SLACK_S = 1.5, 0.5
WHOLE_ANSWER_FACTOR = 1.2
TARGET_LEVELS = (100, 200, 300)


def _pair(values: list[float]) -> str:
    return f"{values[0]:.2f} / {values[1]:.2f}"


def _verdict(value: float, bound: float) -> str:
    return "met" if value <= bound else f"missed by {value - bound:.2f} s"


def classroom(results: dict[str, Any]) -> list[str]:
    """Section 8: N learners ask at once, against the previous runtime and the ceiling."""
    lines = [
        "## 8. A classroom asks the tutor at once",
        "",
        "N learners, each with an open socket, ask one question each, arriving evenly over N/100 s,",
        "against a streaming fake LLM in its own process (first token after 0.3 s, then 200 pieces",
        "25 ms apart: an ideal answer takes 5.3 s). One API replica and one worker process (the chat",
        "queue's, CHAT_CONCURRENCY=512), SQLite. Times in seconds from the scheduled send, P50 / P99.",
        "*Ceiling*: one async process with no queue and no database, the same LLM client and",
        "coalescing, writing straight to the sockets (`loadtests/bench/ceiling_app.py`). *Previous",
        "runtime*: commit 600793c (threads pool, 8 at a time), run from `git archive` in the same run.",
        "CPU and memory are of the process that runs the answers (the worker's, or the ceiling's one).",
        "",
        "| system | learners | STARTED | first streamed text | whole answer | LLM calls in flight (peak) | CPU (cores) | RSS MiB | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for system in ("taskwire", "previous runtime", "ceiling"):
        for row in results.get(system, []):
            started = _pair(row["started"]) if system != "ceiling" else "–"
            lines.append(
                f"| {system} | {row['learners']} over {row['arrival_s']:g} s | {started} | {_pair(row['first'])} | "
                f"{_pair(row['whole'])} | {row['llm_peak']} | {row['cores']:.2f} | {row['rss_mb']:.0f} | {row['errors']} |"
            )
    ceiling = {row["learners"]: row for row in results.get("ceiling", [])}
    lines += [
        "",
        f"Targets: first text P99 within {FIRST_TEXT_FACTOR}× the ceiling's (or + {FIRST_TEXT_SLACK_S} s, whichever",
        f"is larger), whole answer P99 within {WHOLE_ANSWER_FACTOR}× the ceiling's, no error; at 1,000 learners",
        "every answer arrives.",
        "",
        "| learners | first text P99 (bound) | whole answer P99 (bound) | errors |",
        "|---|---|---|---|",
    ]
    for row in results.get("taskwire", []):
        base = ceiling.get(row["learners"])
        if row["learners"] in TARGET_LEVELS and base is not None:
            first_bound = max(base["first"][1] * FIRST_TEXT_FACTOR, base["first"][1] + FIRST_TEXT_SLACK_S)
            whole_bound = base["whole"][1] * WHOLE_ANSWER_FACTOR
            first = f"{row['first'][1]:.2f} ({first_bound:.2f}): {_verdict(row['first'][1], first_bound)}"
            whole = f"{row['whole'][1]:.2f} ({whole_bound:.2f}): {_verdict(row['whole'][1], whole_bound)}"
        else:
            first = f"{row['first'][1]:.2f}"
            whole = f"{row['whole'][1]:.2f}"
        answered = f"{row['answered']} of {row['learners']} answered"
        lines.append(f"| {row['learners']} | {first} | {whole} | {row['errors']} ({answered}) |")
    return lines


def round_trips(results: dict[str, Any]) -> list[str]:
    """Section 9: what one no-delay chat costs each process, in round trips."""
    lines = [
        "## 9. Round trips per no-delay chat",
        "",
        "Counted inside every process by `loadtests/bench/counting/sitecustomize.py` (a redis-py",
        "send is one round trip, a pipeline included; statements and commits through SQLAlchemy's",
        "events) over 100 chats sent one after another, minus an idle run of the same length.",
        "",
        "| runtime | process | Redis round trips (Taskwire) | Redis round trips (Celery/kombu) | SQL statements | transactions |",
        "|---|---|---|---|---|---|",
    ]
    for runtime in ("previous runtime", "taskwire"):
        for role, counts in sorted(results.get(runtime, {}).items()):
            lines.append(
                f"| {runtime} | {role} | {counts['redis:taskwire']:.1f} | {counts['redis:celery']:.1f} | "
                f"{counts['db:statements']:.1f} | {counts['db:commits']:.1f} |"
            )
    return lines
