"""With CELERY_EVENTS=true, what Flower listens to is there: worker heartbeats and task events (issue 17)."""

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

from app.core.embedded_redis import EmbeddedRedis
from tests.conftest import with_own_database
from tests.support.client import finished_tasks, register
from tests.support.stack import ApiServer, Worker


class EventLog:
    """A Celery event receiver, as Flower runs one, on its own thread until told to stop."""

    def __init__(self, broker_url: str):
        self.events: list[dict[str, Any]] = []
        self._app = Celery("flower-stand-in", broker=broker_url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def __enter__(self) -> "EventLog":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _listen(self) -> None:
        with self._app.connection() as connection:
            receiver = self._app.events.Receiver(connection, handlers={"*": self.events.append})
            while not self._stop.is_set():
                try:
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)
                except TimeoutError:
                    continue

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("type") == kind]


@pytest.fixture(scope="module")
def events_stack(
    stack_env: dict[str, str], redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory, log_dir: Path
) -> Iterator[tuple[ApiServer, dict[str, str]]]:
    env = {
        **with_own_database(stack_env, tmp_path_factory.mktemp("events-db")),
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/14",
        "CELERY_EVENTS": "true",
        "LLM_OFFLINE_DELAY_MS": "0",
    }
    api = ApiServer("api-events", env, log_dir)
    yield api, env
    api.stop()


async def test_flower_sees_the_worker_and_a_task(events_stack: tuple[ApiServer, dict[str, str]], log_dir: Path) -> None:
    api, env = events_stack
    with EventLog(env["REDIS_URL"]) as log:
        worker = Worker("worker-events", env, log_dir, queues="chat")
        try:
            async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
                account = await register(http)
                accepted = await http.post("/ai/chat2", json={"message": "seen?"}, headers=account.headers)
                task_id = accepted.json()["task_id"]
                await finished_tasks(http, account, [task_id], timeout_s=30)
        finally:
            worker.stop()
    workers = {event["hostname"] for event in log.of_type("worker-online") + log.of_type("worker-heartbeat")}
    assert any(name.startswith("taskwire-chat-") for name in workers), workers
    for kind in ("task-received", "task-started", "task-succeeded"):
        assert any(event.get("uuid") == task_id for event in log.of_type(kind)), (kind, log.events[-5:])
