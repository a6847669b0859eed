"""`make loadtest`: run the Locust suite headless against a private stack (or HOST=…), write reports.

Reports (CSV and HTML) go to loadtests/reports/ (git-ignored); Locust prints P50/P95/P99 per
request and per WS event at the end.
"""

import os
import subprocess
import sys
from pathlib import Path

from loadtests.bench.stack import bench_stack

REPORTS = Path(__file__).resolve().parent / "reports"
USERS = os.environ.get("USERS", "10")
DURATION = os.environ.get("DURATION", "60s")


def run_locust(host: str) -> int:
    REPORTS.mkdir(exist_ok=True)
    args = [
        sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile.py")),
        "--headless", "--users", USERS, "--spawn-rate", USERS, "--run-time", DURATION, "--host", host,
        "--csv", str(REPORTS / "run"), "--html", str(REPORTS / "report.html"), "--only-summary",
    ]  # fmt: skip
    return subprocess.run(args, check=False).returncode


def main() -> int:
    host = os.environ.get("HOST")
    if host:
        return run_locust(host)
    with bench_stack(LLM_OFFLINE_DELAY_MS="20") as stack:
        return run_locust(stack.base_url)


if __name__ == "__main__":
    sys.exit(main())
