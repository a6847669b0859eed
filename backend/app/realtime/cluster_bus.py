"""The bus on a Redis Cluster: one listener per primary, each subscribed to its own users' shard channels.

A user's history and channel share the user's hash tag, so both live on the primary that owns
the user's slot; the publish script appends and SPUBLISHes there in one step. A replica keeps
one plain connection per primary (not redis-py's cluster pub/sub, whose reader polls the nodes
in turn with the caller's timeout, so a quiet node delays a busy one) and subscribes on each
to the channels of the users it holds whose slots that primary owns.

The slot map is read once, at start. A resharding or a failover moves slots to other
addresses: the listener of a moved primary keeps failing, the replica's `/readyz` says the
bus is down, and a restart of the replica reads the new map (docs/scaling.md).
"""

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from app.core.redis import create_async_redis
from app.realtime.bus import BusListener
from app.realtime.envelopes import user_channel
from app.realtime.manager import ConnectionManager


@dataclass(frozen=True)
class ShardLayout:
    """The cluster's primaries (host, port) and which of them owns each slot."""

    primaries: list[tuple[str, int]]
    owner_of_slot: list[int]

    def shard_of(self, participant_id: str) -> int:
        """The index of the primary holding the user's history and channel."""
        return self.owner_of_slot[key_slot(user_channel(participant_id).encode())]

    def canary_channel(self, shard: int) -> str:
        """A channel of this replica's own, in a slot the shard's primary owns."""
        base = uuid.uuid4().hex
        for n in range(100_000):
            channel = user_channel(f"__canary__:{base}:{n}")
            if self.owner_of_slot[key_slot(channel.encode())] == shard:
                return channel
        raise RuntimeError(f"no slot of primary {self.primaries[shard]} found")  # it owns no slot at all


async def discover(client: aioredis.Redis) -> ShardLayout:
    """Read the cluster's slot map through the bus client (a cluster client)."""
    cluster = cast(RedisCluster, client)
    await cluster.initialize()
    primaries = sorted(cluster.get_primaries(), key=lambda node: (node.host, node.port))
    index = {node.name: i for i, node in enumerate(primaries)}
    owner_of_slot = [-1] * REDIS_CLUSTER_HASH_SLOTS
    for slot, nodes in cluster.nodes_manager.slots_cache.items():
        owner_of_slot[slot] = index[nodes[0].name]
    if -1 in owner_of_slot:
        raise RuntimeError("the bus Redis Cluster does not cover every slot")
    return ShardLayout([(node.host, int(node.port)) for node in primaries], owner_of_slot)


def node_url(seed_url: str, host: str, port: int) -> str:
    """The seed's URL (scheme, credentials, options) pointed at another node."""
    parts = urlsplit(seed_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, "", parts.query, ""))


class _AllConnected:
    """`connected` of the whole bus: set while every listener is."""

    def __init__(self, events: Iterable[asyncio.Event]):
        self._events = list(events)

    def is_set(self) -> bool:
        return all(event.is_set() for event in self._events)

    async def wait(self) -> None:
        while not self.is_set():
            await asyncio.gather(*(event.wait() for event in self._events))


class ClusterBus:
    """One BusListener per primary of the bus cluster, run and reported on as one."""

    def __init__(
        self,
        layout: ShardLayout,
        seed_url: str,
        manager: ConnectionManager,
        *,
        canary_interval_s: float = 5.0,
        read_window_s: float = 0.0,
    ):
        self._clients = [
            create_async_redis(node_url(seed_url, host, port), max_connections=4) for host, port in layout.primaries
        ]
        self.listeners = [
            BusListener(
                client,
                manager,
                canary_interval_s=canary_interval_s,
                shard=shard,
                sharded=True,
                canary_channel=layout.canary_channel(shard),
                read_window_s=read_window_s,
            )
            for shard, client in enumerate(self._clients)
        ]
        self.connected = _AllConnected(listener.connected for listener in self.listeners)

    @property
    def reconnects(self) -> int:
        """Reconnections of all listeners."""
        return sum(listener.reconnects for listener in self.listeners)

    async def run(self) -> None:
        """Run every listener until cancelled; then close the node connections."""
        try:
            await asyncio.gather(*(listener.run() for listener in self.listeners))
        finally:
            await asyncio.gather(*(client.aclose() for client in self._clients), return_exceptions=True)
