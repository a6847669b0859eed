"""The heartbeat writes when what it reports changes, and the reader drops the silent."""

import asyncio
import json
import time
from typing import Any

from app.ops import presence


class FakeRedis:
    """The three hash commands the registry uses, in memory (unit tests have no network)."""

    def __init__(self) -> None:
        self.hash: dict[str, str] = {}
        self.writes = 0

    async def hset(self, _key: str, field: str, value: str) -> None:
        self.writes += 1
        self.hash[field] = value

    async def hgetall(self, _key: str) -> dict[str, str]:
        return dict(self.hash)

    async def hdel(self, _key: str, *fields: str) -> None:
        for field in fields:
            self.hash.pop(field, None)


async def test_a_heartbeat_writes_on_change_and_says_goodbye(monkeypatch: Any) -> None:
    monkeypatch.setattr(presence.Heartbeat, "CHECK_S", 0.01)
    client = FakeRedis()
    state = {"running": 0}
    beat = presence.Heartbeat(client, "k", lambda: dict(state), interval_s=60)  # type: ignore[arg-type]
    task = asyncio.create_task(beat.run())
    await asyncio.sleep(0.1)
    assert client.writes == 1, "nothing changed: one write until the interval"
    state["running"] = 3
    await asyncio.sleep(0.1)
    assert client.writes == 2 and json.loads(client.hash[beat.id])["running"] == 3
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert client.hash == {}, "a stopping process removes its entry"


async def test_read_alive_drops_stale_and_broken_entries() -> None:
    client = FakeRedis()
    now = time.time()
    client.hash = {
        "a": json.dumps({"id": "a", "last_seen": now - 1}),
        "b": json.dumps({"id": "b", "last_seen": now - presence.STALE_AFTER_S - 1}),
        "c": "not json",
    }
    alive = await presence.read_alive(client, "k", now=now)  # type: ignore[arg-type]
    assert [entry["id"] for entry in alive] == ["a"]
    assert set(client.hash) == {"a"}
