"""The subscription bookkeeping: batched diffs, confirmations in order, waiting and lateness."""

import asyncio

from app.realtime.subscriptions import Subscriptions


def test_wants_and_drops_become_one_batch_of_each() -> None:
    subs = Subscriptions()
    for user in ("a", "b", "c"):
        subs.want(user)
    assert subs.changed().is_set()
    assert subs.to_send() == (["a", "b", "c"], [])
    assert not subs.changed().is_set()
    subs.drop("b")
    subs.want("d")
    assert subs.to_send() == (["d"], ["b"])
    assert subs.to_send() == ([], [])


def test_a_user_who_leaves_and_returns_before_the_batch_costs_nothing() -> None:
    subs = Subscriptions()
    subs.want("a")
    subs.to_send()
    subs.confirmed("a")
    subs.drop("a")
    subs.want("a")
    assert subs.to_send() == ([], []), "still subscribed: no UNSUBSCRIBE then SUBSCRIBE"
    assert subs.is_confirmed("a")


def test_an_older_confirmation_does_not_count_for_a_later_subscribe() -> None:
    # SUBSCRIBE a, UNSUBSCRIBE a, SUBSCRIBE a: the first reply comes before Redis has applied
    # the second SUBSCRIBE, so only the last reply may confirm it.
    subs = Subscriptions()
    subs.want("a")
    subs.to_send()
    subs.drop("a")
    subs.to_send()
    subs.want("a")
    assert subs.to_send() == (["a"], [])
    subs.confirmed("a")
    assert not subs.is_confirmed("a")
    subs.confirmed("a")
    assert subs.is_confirmed("a")


async def test_ready_waits_for_the_confirmation() -> None:
    subs = Subscriptions()
    subs.set_listening(0, True)
    subs.want("a")
    subs.to_send()
    waiting = asyncio.create_task(subs.ready("a", timeout_s=5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    subs.confirmed("a")
    assert await waiting is True
    assert await subs.ready("a", timeout_s=0) is True


async def test_a_late_user_is_caught_up_when_the_confirmation_lands() -> None:
    subs = Subscriptions()
    caught_up: list[str] = []
    subs.on_late_confirmed = caught_up.append
    subs.want("a")
    assert await subs.ready("a", timeout_s=5) is False, "not listening: no wait at all"
    subs.set_listening(0, True)
    subs.want("b")
    assert await subs.ready("b", timeout_s=0.01) is False
    subs.to_send()
    subs.confirmed("a")
    subs.confirmed("b")
    assert caught_up == ["a", "b"]


def test_after_a_reset_everything_wanted_is_sent_again() -> None:
    subs = Subscriptions()
    subs.want("a")
    subs.want("b")
    subs.to_send()
    subs.confirmed("a")
    subs.reset()
    assert not subs.is_confirmed("a") and not subs.is_listening(0)
    assert subs.to_send() == (["a", "b"], [])


def _two_shards() -> Subscriptions:
    # Users "a…" on shard 0, "b…" on shard 1: two primaries of a cluster.
    return Subscriptions(shards=2, shard_of=lambda participant_id: 0 if participant_id.startswith("a") else 1)


def test_each_shard_sends_only_its_own_users() -> None:
    subs = _two_shards()
    for user in ("a1", "b1", "a2"):
        subs.want(user)
    assert subs.changed(0).is_set() and subs.changed(1).is_set()
    assert subs.to_send(0) == (["a1", "a2"], [])
    assert subs.to_send(1) == (["b1"], [])
    assert (subs.wanted_in(0), subs.wanted_in(1)) == (2, 1)


def test_losing_one_shard_leaves_the_other_confirmed() -> None:
    subs = _two_shards()
    subs.want("a1")
    subs.want("b1")
    subs.to_send(0)
    subs.to_send(1)
    subs.confirmed("a1")
    subs.confirmed("b1")
    before = (subs.epoch_of("a1"), subs.epoch_of("b1"))
    subs.reset(1)
    assert subs.is_confirmed("a1") and not subs.is_confirmed("b1")
    assert (subs.epoch_of("a1"), subs.epoch_of("b1")) == (before[0], before[1] + 1)
    assert subs.to_send(0) == ([], []) and subs.to_send(1) == (["b1"], [])


def test_a_reply_lost_with_its_connection_does_not_hold_back_the_next_subscribe() -> None:
    # SUBSCRIBE b1 is sent, b1 leaves before the reply, the connection drops (the reply never
    # comes), b1 returns: the one reply on the new connection confirms it.
    subs = _two_shards()
    subs.want("b1")
    subs.to_send(1)
    subs.drop("b1")
    subs.to_send(1)
    subs.reset(1)
    subs.want("b1")
    assert subs.to_send(1) == (["b1"], [])
    subs.confirmed("b1")
    assert subs.is_confirmed("b1")
