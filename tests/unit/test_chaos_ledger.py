"""The chaos ledger counts what issue 10 defines: lost, duplicated, unnotified, unexpected."""

from typing import Any

from loadtests.chaos.ledger import Ledger
from loadtests.chaos.report import passes
from loadtests.chaos.scenarios import SCENARIOS


def _result(envelope_id: str, task_id: str) -> dict[str, Any]:
    return {"id": envelope_id, "type": "chat_result", "task_id": task_id, "data": {}}


def _delta(envelope_id: str, task_id: str) -> dict[str, Any]:
    return {"id": envelope_id, "type": "chat_delta", "task_id": task_id, "data": {"delta": "x"}}


def test_a_clean_run_counts_nothing_wrong() -> None:
    ledger = Ledger()
    tab_a, tab_b = ledger.socket("u"), ledger.socket("u")
    ledger.accept("u", "t1", 0.0)
    for tab in (tab_a, tab_b):
        ledger.receive(tab, _delta("1-0", "t1"), 1.0)
        ledger.receive(tab, _result("2-0", "t1"), 1.0)
        ledger.receive(tab, _result("2-0", "t1"), 2.0)  # replayed after a reconnect: the same id
    counts = ledger.counts({"t1": {"state": "SUCCESS"}}, {"t1": 1})
    assert counts == {
        "accepted": 1,
        "completed": 1,
        "failed": 0,
        "lost": 0,
        "duplicated": 0,
        "unnotified": 0,
        "unexpected": 0,
        "resynced": 0,
    }


def test_each_kind_of_failure_is_counted() -> None:
    ledger = Ledger()
    tab_a, tab_b = ledger.socket("u"), ledger.socket("u")
    for task in ("lost", "twice", "quiet", "history-twice"):
        ledger.accept("u", task, 0.0)
    ledger.receive(tab_a, _result("1-0", "twice"), 1.0)
    ledger.receive(tab_a, _result("2-0", "twice"), 1.0)  # a second terminal envelope, another id
    ledger.receive(tab_b, _result("1-0", "twice"), 1.0)
    ledger.receive(tab_b, _result("2-0", "twice"), 1.0)
    ledger.receive(tab_a, _result("3-0", "quiet"), 1.0)  # tab B never hears of it
    for tab in (tab_a, tab_b):
        ledger.receive(tab, _result("4-0", "history-twice"), 1.0)
        ledger.receive(tab, _delta("5-0", "not-mine"), 1.0)
    statuses = {
        "lost": {"state": "STARTED"},
        "twice": {"state": "SUCCESS"},
        "quiet": {"state": "SUCCESS"},
        "history-twice": {"state": "FAILURE"},
    }
    counts = ledger.counts(statuses, {"twice": 2, "quiet": 1, "history-twice": 2})
    assert counts["accepted"] == 4 and counts["completed"] == 2 and counts["failed"] == 1
    assert counts["lost"] == 1
    assert counts["duplicated"] == 2  # "twice" on the sockets, "history-twice" in the history
    assert counts["unnotified"] == 1  # "quiet"; a lost task is counted as lost only
    assert counts["unexpected"] == 2  # one per socket


def test_a_resync_over_http_counts_as_notified() -> None:
    ledger = Ledger()
    tab = ledger.socket("u")
    ledger.accept("u", "t1", 0.0)
    statuses = {"t1": {"state": "SUCCESS"}}
    assert ledger.counts(statuses, {"t1": 1})["unnotified"] == 1
    ledger.resynced(tab, "t1")  # the client re-read the task after `hello.recovered = false`
    assert ledger.counts(statuses, {"t1": 1})["unnotified"] == 0


def test_the_first_terminal_arrival_is_kept_for_recovery_times() -> None:
    ledger = Ledger()
    tab = ledger.socket("u")
    ledger.accept("u", "t1", 5.0)
    ledger.receive(tab, _result("1-0", "t1"), 6.5)
    ledger.receive(ledger.socket("u"), _result("1-0", "t1"), 7.0)
    assert ledger.first_terminal_at == {"t1": 6.5}


def test_a_run_fails_the_bar_on_a_check_of_its_own_or_a_duplicate_without_a_fault() -> None:
    by_key = {scenario.key: scenario for scenario in SCENARIOS}
    clean = {"lost": 0, "unnotified": 0, "unexpected": 0, "duplicated": 0, "failures": []}
    assert passes(by_key["overload"], clean)
    assert not passes(by_key["overload"], {**clean, "failures": ["nothing was shed at twice the capacity"]})
    assert not passes(by_key["bad-input"], {**clean, "duplicated": 1}), (
        "nothing interrupts a task, so no duplicate is allowed"
    )
    assert passes(by_key["kill-worker"], {**clean, "duplicated": 1}), "one injected fault may duplicate once"
