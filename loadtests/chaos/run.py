"""`make chaos` / `make chaos-quick`: drive load through a real stack, break it, settle the ledger.

Each run: a fresh ChaosStack (2 API replicas, 2 workers, its own redis-server) and learners
with resuming sockets; scenarios 1-7 inject one fault under steady load (steady.py), 8 overloads
the stack (overload.py), 9 mixes bad input into good traffic (bad_input.py). Then settle: every
accepted task terminal in the database, every socket caught up. The pass bar is report.passes.
`--quick` runs scenarios 1-5 once and writes nothing (`--only KEY...` picks scenarios); the full
run repeats every scenario RUNS times and writes docs/reliability.md. Exit status 1 when any run
misses the bar.
"""

import argparse
import asyncio
import functools
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from loadtests.chaos.ledger import Ledger
from loadtests.chaos.report import passes, report, table
from loadtests.chaos.scenarios import SCENARIOS, Scenario
from loadtests.chaos.stack import ChaosStack
from loadtests.chaos.steady import run_with_fault

RUNS = 3
OUT = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
RAW = Path(__file__).resolve().parents[1] / "reports" / "chaos-results.json"  # per run, git-ignored
FAILED_RUNS = RAW.parent / "chaos-failed"


async def run_once(scenario: Scenario) -> dict[str, Any]:
    """One run of one scenario on a fresh stack: its counts and recovery time."""
    stack = await asyncio.to_thread(
        ChaosStack,
        persistent_redis=scenario.persistent_redis,
        worker_pool=scenario.worker_pool,
        **dict(scenario.settings),
    )
    runner = scenario.run or functools.partial(run_with_fault, scenario)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            counts = await runner(stack, http, Ledger())
        counts["worker_crashes"] = stack.unexpected_worker_exits
        if not passes(scenario, counts):  # keep the processes' logs and the database to find out why
            kept = FAILED_RUNS / f"{scenario.key}-{time.strftime('%Y%m%dT%H%M%S')}"
            shutil.copytree(stack.log_dir, kept, ignore=shutil.ignore_patterns("redis"))
            print(f"{scenario.key}: missed the bar; logs kept in {kept}", file=sys.stderr)
    finally:
        await asyncio.to_thread(stack.close)
    return counts


async def main(quick: bool, only: list[str], runs: int) -> int:
    """Run the chosen scenarios; write docs/reliability.md after a full run. 1 when any run misses the bar."""
    results: dict[Scenario, list[dict[str, Any]]] = {}
    for scenario in SCENARIOS:
        if (quick and not scenario.quick) or (only and scenario.key not in only):
            continue
        results[scenario] = []
        for i in range(runs):
            counts = await run_once(scenario)
            print(f"{scenario.key} run {i + 1}: {counts}", file=sys.stderr, flush=True)
            results[scenario].append(counts)
            RAW.parent.mkdir(exist_ok=True)
            RAW.write_text(json.dumps({s.key: runs for s, runs in results.items()}, indent=1))
    print(table(results))
    if not quick and not only:
        OUT.write_text(report(results))
        print(f"written to {OUT}", file=sys.stderr)
    return 0 if all(passes(s, r) for s, runs in results.items() for r in runs) else 1


def rewrite_report() -> None:
    """docs/reliability.md again from the raw results of the last run (after editing its text)."""
    raw = json.loads(RAW.read_text())
    OUT.write_text(report({scenario: raw[scenario.key] for scenario in SCENARIOS if scenario.key in raw}))
    print(f"written to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one run of each CI scenario (1-5); writes nothing")
    parser.add_argument("--only", nargs="+", default=[], metavar="KEY", help="these scenarios only; writes nothing")
    parser.add_argument("--runs", type=int, help=f"runs of each scenario (default {RUNS}; 1 with --quick)")
    parser.add_argument("--report", action="store_true", help=f"only rewrite {OUT.name} from the last run's {RAW.name}")
    args = parser.parse_args()
    if args.report:
        rewrite_report()
        sys.exit(0)
    sys.exit(asyncio.run(main(args.quick, args.only, args.runs or (1 if args.quick else RUNS))))
