"""The ops page's live figures: pushed as `ops_overview` envelopes to operators with a socket here.

The page is a user of the platform, not a poller: each replica looks every OPS_PUSH_INTERVAL_S
for operators (ADMIN_USERNAMES) holding a socket on it, and publishes the overview to them
through the same history and bus as any task envelope — when it changed since the last one
they were sent. A short Redis claim per operator and interval keeps two replicas that both
hold one of their tabs from sending each figure twice.
"""

import asyncio
import hashlib
import json
import logging
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.ops import repository, service
from app.realtime.envelopes import EnvelopeType
from app.realtime.manager import ConnectionManager
from app.realtime.publisher import AsyncEnvelopePublisher
from app.tasks.registry import TaskRegistry

logger = logging.getLogger(__name__)

OPS_TASK_ID = "ops"  # the envelope's task_id: these figures belong to no task
_ADMINS_TTL_S = 30.0
_VOLATILE = ("generated_at", "last_seen")


def _digest(data: dict[str, Any]) -> str:
    # What changed for a reader: clocks that move every beat are left out.
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return hashlib.sha256(json.dumps(strip(data), sort_keys=True).encode()).hexdigest()


class OpsBroadcaster:
    """Pushes the ops overview to the operators this replica holds sockets for, when it changed."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        client: aioredis.Redis,
        registry: TaskRegistry,
        manager: ConnectionManager,
        publisher: AsyncEnvelopePublisher,
        *,
        broker: aioredis.Redis | None = None,
    ):
        self._settings = settings
        self._sessions = sessions
        self._client = client
        self._broker = broker
        self._registry = registry
        self._manager = manager
        self._publisher = publisher
        self._admins: list[uuid.UUID] = []
        self._admins_read_at = -_ADMINS_TTL_S
        self.pushed = 0

    async def run(self) -> None:
        """Push every interval until cancelled; an outage skips a turn."""
        while True:
            await asyncio.sleep(self._settings.ops_push_interval_s)
            try:
                await self.push_once()
            except (RedisError, SQLAlchemyError, OSError) as exc:
                logger.warning("ops overview not pushed", extra={"error": repr(exc)})

    async def push_once(self) -> int:
        """One turn: the overview to each operator here it changed for; how many were sent."""
        here = [admin for admin in await self._operators() if self._manager.holds(str(admin))]
        claim_ms = max(int(self._settings.ops_push_interval_s * 900), 1)
        claimed = [
            admin for admin in here if await self._client.set(f"taskwire:ops:turn:{admin}", 1, nx=True, px=claim_ms)
        ]
        if not claimed:
            return 0
        async with self._sessions() as session:
            overview = await service.overview(session, self._client, self._registry, broker=self._broker)
        data = overview.model_dump(mode="json")
        digest, sent = _digest(data), 0
        for admin in claimed:
            previous = await self._client.set(f"taskwire:ops:digest:{admin}", digest, ex=3600, get=True)
            if previous == digest:
                continue
            await self._publisher.publish(str(admin), EnvelopeType.OPS_OVERVIEW, OPS_TASK_ID, data)
            sent += 1
        self.pushed += sent
        return sent

    async def _operators(self) -> list[uuid.UUID]:
        # Read again now and then, and every turn while there is none (an indexed read): `taskwire
        # admin add` may promote someone while this replica runs.
        if not self._admins or time.monotonic() - self._admins_read_at >= _ADMINS_TTL_S:
            async with self._sessions() as session:
                self._admins = await session.run_sync(repository.operator_ids)
            self._admins_read_at = time.monotonic()
        return self._admins
