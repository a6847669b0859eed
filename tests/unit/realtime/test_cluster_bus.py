"""The cluster bus's slot arithmetic: which primary serves a user, canaries, node URLs."""

import uuid

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from app.realtime.cluster_bus import ShardLayout, node_url
from app.realtime.envelopes import history_key, user_channel
from app.tasks.keys import cancel_key, lease_key


def _three_primaries() -> ShardLayout:
    third = REDIS_CLUSTER_HASH_SLOTS // 3
    owners = [min(slot // third, 2) for slot in range(REDIS_CLUSTER_HASH_SLOTS)]
    return ShardLayout([("10.0.0.1", 7000), ("10.0.0.2", 7000), ("10.0.0.3", 7000)], owners)


def test_a_users_keys_and_channel_share_one_slot() -> None:
    task = uuid.uuid4()
    for user in ("alice", "b5b100cf-4383-4713-8548-e11f548e8c16"):
        slots = {key_slot(k.encode()) for k in (user_channel(user), history_key(user), lease_key(user, task))}
        slots.add(key_slot(cancel_key(user, task).encode()))
        assert len(slots) == 1


def test_users_spread_over_the_primaries_and_each_canary_lands_on_its_own() -> None:
    layout = _three_primaries()
    shards = {layout.shard_of(f"user-{i}") for i in range(100)}
    assert shards == {0, 1, 2}
    for shard in range(3):
        channel = layout.canary_channel(shard)
        assert layout.owner_of_slot[key_slot(channel.encode())] == shard


def test_node_urls_keep_the_seeds_credentials_and_options() -> None:
    seed = "rediss://user:secret@seed.example:7000/0?ssl_cert_reqs=none"
    assert node_url(seed, "10.0.0.2", 7001) == "rediss://user:secret@10.0.0.2:7001?ssl_cert_reqs=none"
    assert node_url("redis://seed:7000/0", "10.0.0.3", 7002) == "redis://10.0.0.3:7002"
