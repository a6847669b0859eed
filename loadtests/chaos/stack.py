"""The stack a chaos run breaks: its own redis-server, SQLite, 2 API replicas, 2 workers.

Workers run under a supervisor, as they do in production (compose's `restart: unless-stopped`):
a worker that exits, for whatever reason, is started again half a second later.
"""

import os
import signal
import tempfile
import threading
from pathlib import Path

from app.core.embedded_redis import EmbeddedRedis
from app.core.processes import child_env
from tests.support.client import StalledClient
from tests.support.stack import CLI, ApiServer, ManagedProcess, migrate
from tests.support.waiting import wait_until

# Short leases and intervals so a run recovers in seconds, not the production minutes.
SETTINGS = {
    "JWT_SECRET": "chaos-secret",
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "AUTH_RATE_LIMIT": "100000/60",
    "SUBMIT_RATE_LIMIT": "100000/60",
    "LLM_OFFLINE_DELAY_MS": "10",  # an answer takes about a second
    "TASK_LEASE_TTL_S": "3",
    "TASK_RECONCILE_INTERVAL_S": "1",
    "BUS_CANARY_INTERVAL_S": "1",
    "SHUTDOWN_DRAIN_TIMEOUT_S": "5",
}


class ChaosWorker(ManagedProcess):
    """`taskwire worker` with a chosen pool, ready once it says so."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, *, pool: str):
        # Chaos runs only chats: one process on the chat queue, four at a time (so a run can overload it).
        super().__init__(name, [*CLI, "worker", "--queues", "chat", "--pool", pool, "--concurrency", "4"], env, log_dir)
        self.wait_ready()

    def wait_ready(self) -> None:
        wait_until(lambda: "worker ready" in self.log_text(), timeout_s=30, what=f"{self.name} to be ready")

    def children(self) -> list[int]:
        """The pool's child processes (prefork)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def kill_whole(self) -> None:
        """SIGKILL the main process and its pool together."""
        os.killpg(self.process.pid, signal.SIGKILL)

    def warm_stop(self) -> None:
        """SIGTERM: finish what runs, take nothing new, exit."""
        self.process.send_signal(signal.SIGTERM)


class ChaosStack:
    """Everything a run needs, in a temporary folder; `close()` stops it all."""

    def __init__(self, *, persistent_redis: bool = False, worker_pool: str = "threads", **overrides: str):
        self._folder = tempfile.TemporaryDirectory(prefix="taskwire-chaos-")
        folder = Path(self._folder.name)
        self.log_dir = folder
        self.redis = EmbeddedRedis(folder / "redis", persistent=persistent_redis).start()
        self.database_url = f"sqlite:///{folder}/chaos.db"
        self.env = child_env(DATABASE_URL=self.database_url, REDIS_URL=self.redis.url, **{**SETTINGS, **overrides})
        migrate(self.env)
        self.apis = [ApiServer(f"api-{i}", self.env, folder) for i in range(2)]
        self.workers = [ChaosWorker(f"worker-{i}", self.env, folder, pool=worker_pool) for i in range(2)]
        self.stalled: list[StalledClient] = []  # sockets that stopped reading (scenario 7)
        self.restarts = 0  # workers the supervisor started again
        self.injected_exits = 0  # of those, exits the scenario caused on purpose
        self._closing = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="chaos-supervisor", daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        while not self._closing.wait(0.5):
            for worker in self.workers:
                if worker.process.poll() is not None and not self._closing.is_set():
                    worker.start_again()
                    self.restarts += 1

    @property
    def unexpected_worker_exits(self) -> int:
        """Workers that died of something other than the injected fault."""
        return self.restarts - self.injected_exits

    def close(self) -> None:
        for stalled in self.stalled:
            stalled.close()
        self._closing.set()
        self._supervisor.join()
        for process in [*self.workers, *self.apis]:
            if process.process.poll() is None:
                process.stop()
        if self.redis.process is not None and self.redis.process.poll() is None:
            self.redis.stop()
        self._folder.cleanup()
