"""`taskwire run`: the one-command local start brings up everything, with no Redis given, and cleans up."""

import contextlib
import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from app.core.processes import child_env, free_port
from tests.support.client import open_socket, register
from tests.support.stack import CLI, ManagedProcess
from tests.support.waiting import frames_until, wait_until


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class LocalRun(ManagedProcess):
    """`taskwire run` on a free port, with its data in a temporary folder."""

    def __init__(self, tmp_path: Path, **overrides: str):
        env = child_env(LLM_OFFLINE_DELAY_MS="0", JWT_SECRET="cli-run-test-secret", **overrides)
        for name in ("REDIS_URL", "DATABASE_URL", "DATA_DIR", "LOG_LEVEL", "LOG_FORMAT"):
            env.pop(name, None)
        self.port = free_port()
        # The defaults, as `make run` uses them: DATA_DIR=var, relative to the working directory.
        super().__init__("taskwire-run", [*CLI, "run", "--port", str(self.port)], env, tmp_path, cwd=tmp_path)


async def _ask(port: int, message: str) -> dict[str, Any]:
    """Ask the tutor of the Taskwire on `port` as a new learner; its `chat_result` frame."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        account = await register(http)
        ws, _ = await open_socket(f"ws://127.0.0.1:{port}", account)
        async with ws:
            response = await http.post("/ai/chat2", json={"message": message}, headers=account.headers)
            task_id = response.json()["task_id"]
            frames = await frames_until(
                ws, lambda f: f["type"] == "chat_result" and f["task_id"] == task_id, what="the answer", timeout_s=60
            )
    return frames[-1]


@pytest.fixture
def local_run(tmp_path: Path) -> Iterator[LocalRun]:
    process = LocalRun(tmp_path)
    yield process
    process.stop()


async def test_run_starts_embedded_redis_api_and_worker_and_stops_them_all(local_run: LocalRun) -> None:
    port = local_run.port
    wait_until(
        lambda: local_run.assert_running() is None and "Taskwire is running" in local_run.log_text(),
        timeout_s=90,
        what="taskwire run to print its URL",
    )
    # A quiet start: no migration chatter or Celery banner, and the last lines say where and how to stop.
    log = local_run.log_text()
    assert log.strip().splitlines()[-2:] == [
        f"Taskwire is running: open http://127.0.0.1:{port}/",
        "Press Ctrl-C to stop it.",
    ]
    assert "alembic" not in log and "[queues]" not in log and "uvicorn" not in log, log
    run_file = json.loads((local_run.log_path.parent / "var" / "taskwire.run.json").read_text())
    redis_port = int(run_file["redis_url"].split(":")[2].split("/")[0])
    assert _port_open(redis_port), "with no REDIS_URL, taskwire run should start an embedded Redis"

    result = await _ask(port, "hi from taskwire run")
    assert "hi from taskwire run" in result["data"]["message"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "Taskwire" in page.text

    local_run.process.send_signal(signal.SIGTERM)
    assert local_run.process.wait(timeout=60) == 0
    assert not _port_open(port), "the API should be stopped"
    assert not _port_open(redis_port), "the embedded Redis should be stopped"
    assert (Path(local_run.log_path.parent) / "var" / "taskwire.db").exists(), "migrations ran into DATA_DIR"
    assert not (Path(local_run.log_path.parent) / "var" / "taskwire.run.json").exists(), "the run file is removed"


async def test_run_keeps_going_when_its_worker_crashes(local_run: LocalRun) -> None:
    # Issue 15, hole 7: a worker that dies (kombu exits on some Redis restarts) is started again;
    # `taskwire run` no longer stops everything with it.
    wait_until(lambda: "Taskwire is running" in local_run.log_text(), timeout_s=90, what="taskwire run to start")

    def chat_worker() -> psutil.Process | None:
        for child in psutil.Process(local_run.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                command = child.cmdline()
                if "--queues" in command and command[command.index("--queues") + 1] == "chat":
                    return child
        return None

    first = chat_worker()
    assert first is not None
    first.kill()
    wait_until(
        lambda: (again := chat_worker()) is not None and again.pid != first.pid,
        timeout_s=20,
        what="the chat worker to be started again",
    )
    local_run.assert_running()
    assert (await _ask(local_run.port, "still there?"))["error"] is None
    assert "the chat worker exited with" in local_run.log_text()


# --- a start that fails fast and says why (issue 17) --------------------------------------------


def _held_port() -> tuple[socket.socket, int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, holder.getsockname()[1]


@pytest.mark.parametrize("command", ["api", "run"])
def test_a_taken_port_ends_the_start_within_seconds_naming_the_port(command: str, tmp_path: Path) -> None:
    holder, port = _held_port()
    env = child_env(JWT_SECRET="cli-run-test-secret", DATA_DIR=str(tmp_path / "var"))
    env.pop("REDIS_URL", None)
    started = time.monotonic()
    try:
        done = subprocess.run(
            [*CLI, command, "--port", str(port)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
        )
    finally:
        holder.close()
    took = time.monotonic() - started
    assert done.returncode == 2, done
    assert took < 10, f"{took:.1f} s to give up"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, "one line, the cause"
    assert (
        lines[0].startswith(f"taskwire {command}: port {port} on 127.0.0.1 is already in use") and "--port" in lines[0]
    )
    assert not (tmp_path / "var" / "redis").exists(), "nothing was started"


async def test_a_second_run_on_the_same_data_dir_is_refused(local_run: LocalRun, tmp_path: Path) -> None:
    wait_until(lambda: "Taskwire is running" in local_run.log_text(), timeout_s=90, what="taskwire run to start")
    env = child_env(JWT_SECRET="cli-run-test-secret")
    for name in ("REDIS_URL", "DATABASE_URL", "DATA_DIR"):
        env.pop(name, None)
    done = subprocess.run(
        [*CLI, "run", "--port", str(free_port())], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, done
    assert "is in use by another `taskwire run` (pid" in done.stderr and str(tmp_path / "var") in done.stderr
    local_run.assert_running()
    assert (await _ask(local_run.port, "still mine?"))["error"] is None, "the first one was not disturbed"


def test_without_chromium_the_start_says_grading_is_unavailable_and_status_shows_it(tmp_path: Path) -> None:
    run = LocalRun(tmp_path, CHROMIUM_PATH="/nonexistent/chromium")
    try:
        wait_until(lambda: "Taskwire is running" in run.log_text(), timeout_s=90, what="taskwire run to start")
        log = run.log_text()
        assert "Grading will be unavailable: no Chromium at /nonexistent/chromium" in log, log
        assert "Note: submission tasks cannot run: no Chromium at /nonexistent/chromium" in log, log
        ready = httpx.get(f"http://127.0.0.1:{run.port}/readyz", timeout=5)
        assert ready.status_code == 200, "the API still serves: the tutor works, grading waits"
        kinds = ready.json()["task_kinds"]
        assert kinds["chat"] == {"available": True, "reason": None, "workers": 1}
        assert kinds["submission"]["available"] is False and "/nonexistent/chromium" in kinds["submission"]["reason"]

        env = child_env(JWT_SECRET="cli-run-test-secret")
        for name in ("REDIS_URL", "DATABASE_URL", "DATA_DIR"):
            env.pop(name, None)
        status = subprocess.run([*CLI, "status"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status
        assert "Workers (2 alive)" in status.stdout and "API replicas (1 alive)" in status.stdout, status.stdout
        assert "submission   UNAVAILABLE: no Chromium at /nonexistent/chromium" in status.stdout, status.stdout
    finally:
        run.stop()


def test_status_without_redis_says_why(tmp_path: Path) -> None:
    env = child_env(JWT_SECRET="cli-run-test-secret")
    for name in ("REDIS_URL", "DATABASE_URL", "DATA_DIR"):
        env.pop(name, None)
    done = subprocess.run([*CLI, "status"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "REDIS_URL is not set and no `taskwire run` is running here" in done.stderr, done


def test_version() -> None:
    done = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and re.fullmatch(r"taskwire \d+\.\d+\.\d+\n", done.stdout), done
