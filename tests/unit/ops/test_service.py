from app.ops.service import kinds_health
from app.task_kinds import REGISTRY


def _worker(kind: str, *, running: int = 0, slots: int = 5, unavailable: str | None = None) -> dict[str, object]:
    return {"kinds": {kind: {"slots": slots, "running": running, "unavailable": unavailable}}}


def test_a_kind_with_no_worker_says_which_queue_waits() -> None:
    health = kinds_health([_worker("chat", running=2)], REGISTRY)
    assert health["chat"].available and health["chat"].running == 2 and health["chat"].slots == 5
    assert not health["submission"].available
    assert health["submission"].reason == "no worker is taking the submissions queue"


def test_a_kind_is_available_while_one_worker_can_do_it_and_counts_only_able_slots() -> None:
    blind = _worker("submission", running=1, unavailable="no Chromium at /x")
    able = _worker("submission", slots=10)
    health = kinds_health([blind, able], REGISTRY)["submission"]
    assert health.available and health.reason is None and health.workers == 2
    assert health.slots == 10 and health.running == 1
    only_blind = kinds_health([blind], REGISTRY)["submission"]
    assert not only_blind.available and only_blind.reason == "no Chromium at /x" and only_blind.slots == 0
