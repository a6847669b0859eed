"""Real Taskwire processes for integration tests: `taskwire api` and `taskwire worker` on free ports."""

import subprocess
import sys
from pathlib import Path

import httpx

from app.core.processes import free_port, spawn, stop
from app.task_kinds import REGISTRY
from tests.support.waiting import wait_until

CLI = [sys.executable, "-m", "app.cli"]


def tail(path: Path, lines: int = 40) -> str:
    """The end of a process log, for failure messages."""
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ManagedProcess:
    """One child process with its log in a file; stopped by `stop()` even when a test fails."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path, *, cwd: Path | None = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._args, self._env, self._cwd = args, env, cwd
        self._log = self.log_path.open("wb")
        self.process: subprocess.Popen[bytes] = self._spawn()

    def _spawn(self) -> "subprocess.Popen[bytes]":
        return spawn(self._args, env=self._env, stdout=self._log, stderr=subprocess.STDOUT, cwd=self._cwd)

    def start_again(self) -> None:
        """Start the same command again after `stop()` (same port, log appended)."""
        self._log = self.log_path.open("ab")
        self.process = self._spawn()

    def log_text(self) -> str:
        """Everything the process has logged so far."""
        return self.log_path.read_text(errors="replace")

    def assert_running(self) -> None:
        """Fail with the log's tail when the process has exited."""
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{tail(self.log_path)}")

    def stop(self) -> int | None:
        """Stop gracefully (SIGTERM), then by force."""
        code = stop(self.process, timeout_s=20)
        self._log.close()
        return code


class ApiServer(ManagedProcess):
    """`taskwire api` on a free port, ready when /readyz says so."""

    def __init__(
        self, name: str, env: dict[str, str], log_dir: Path, *, timeout_s: float = 30, port: int | None = None
    ):
        self.port = port or free_port()
        super().__init__(name, [*CLI, "api", "--port", str(self.port)], env, log_dir)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self._timeout_s = timeout_s
        wait_until(self._ready, timeout_s=timeout_s, what=f"{name} /readyz to answer 200")

    def start_again(self) -> None:
        """Restart on the same port and wait until ready."""
        super().start_again()
        wait_until(self._ready, timeout_s=self._timeout_s, what=f"{self.name} to be ready again")

    def _ready(self) -> bool:
        self.assert_running()
        try:
            return httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


class Worker(ManagedProcess):
    """`taskwire worker`, ready when each of its processes has logged that it consumes its queues.

    Without `queues` it runs a process per queue, as in production; with them, one process.
    """

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        *,
        queues: str | None = None,
        concurrency: int | None = None,
        timeout_s: float = 30,
    ):
        args = [*CLI, "worker"]
        if queues is not None:
            args += ["--queues", queues]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        self._processes = 1 if queues is not None else len(REGISTRY.queues)
        super().__init__(name, args, env, log_dir)
        wait_until(self._ready, timeout_s=timeout_s, what=f"{name} to log 'worker ready' from each process")

    def _ready(self) -> bool:
        self.assert_running()
        return self.log_text().count("worker ready") >= self._processes


def migrate(env: dict[str, str]) -> None:
    """Apply the migrations to the test database with `taskwire migrate`."""
    result = subprocess.run([*CLI, "migrate"], env=env, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, f"taskwire migrate failed:\n{result.stderr.decode(errors='replace')}"


def make_operator(env: dict[str, str], username: str, password: str) -> None:
    """`taskwire admin add`: the account (created with `password` if new) becomes an operator."""
    result = subprocess.run(
        [*CLI, "admin", "add", username, "--password-stdin"],
        env=env,
        input=f"{password}\n".encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"taskwire admin add failed:\n{result.stderr.decode(errors='replace')}"
