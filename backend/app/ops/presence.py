"""Who is alive: every worker process and API replica writes a heartbeat to Redis; ops code reads them.

Taskwire's own registry, not Celery's: it works with CELERY_EVENTS off, says what Celery does
not know (slots in use per kind, whether this process can grade at all) and is one HGETALL to
read. An entry is a JSON object keyed by the process's id in one hash per role; an entry
older than STALE_AFTER_S is a dead process (it is dropped from the hash when read).
"""

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

WORKERS_KEY = "taskwire:ops:workers"
REPLICAS_KEY = "taskwire:ops:replicas"
HEARTBEAT_INTERVAL_S = 5.0
# Three missed beats: a process this quiet is gone (or its loop is stuck, which is as bad).
STALE_AFTER_S = 3 * HEARTBEAT_INTERVAL_S


def process_id() -> str:
    """This process's id in the registry: host and pid, as an operator finds it with `ps`."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Writes `describe()` under this process's id when it changes (looked at every CHECK_S) and at
    least every interval, until cancelled; removes the entry on the way out.

    Writing on change keeps the ops page's "running" and "sockets" in step with the tasks it
    lists, at one HSET per change-check at most; an idle process writes once per interval.
    """

    CHECK_S = 0.5

    def __init__(
        self,
        client: aioredis.Redis,
        key: str,
        describe: Callable[[], dict[str, Any]],
        *,
        interval_s: float = HEARTBEAT_INTERVAL_S,
    ):
        self._client = client
        self._key = key
        self._describe = describe
        self._interval_s = interval_s
        self.id = process_id()
        self._identity = {"id": self.id, "host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time()}

    async def beat(self, described: dict[str, Any]) -> None:
        """Write this process's entry now, saying `described`."""
        entry = {**self._identity, **described, "last_seen": time.time()}
        await self._client.hset(self._key, self.id, json.dumps(entry, separators=(",", ":")))

    async def run(self) -> None:
        """Beat on change and every interval; a Redis outage skips beats (the entry goes stale, as it should)."""
        last: dict[str, Any] | None = None
        written_at = 0.0
        try:
            while True:
                described = self._describe()
                if described != last or time.monotonic() - written_at >= self._interval_s:
                    try:
                        await self.beat(described)
                        last, written_at = described, time.monotonic()
                    except (RedisError, OSError) as exc:
                        logger.debug("heartbeat not written", extra={"key": self._key, "error": repr(exc)})
                await asyncio.sleep(self.CHECK_S)
        finally:
            # Said goodbye so the ops page drops the process at once, not STALE_AFTER_S later.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await self._client.hdel(self._key, self.id)


async def read_alive(client: aioredis.Redis, key: str, *, now: float | None = None) -> list[dict[str, Any]]:
    """The live entries of one registry, by id; stale and unreadable ones are removed."""
    now = time.time() if now is None else now
    alive, dead = [], []
    for field, raw in (await client.hgetall(key)).items():
        try:
            entry = json.loads(raw)
            fresh = now - float(entry["last_seen"]) <= STALE_AFTER_S
        except (ValueError, KeyError, TypeError):
            fresh, entry = False, None
        if fresh:
            alive.append(entry)
        else:
            dead.append(field)
    if dead:
        await client.hdel(key, *dead)
    return sorted(alive, key=lambda entry: str(entry["id"]))
