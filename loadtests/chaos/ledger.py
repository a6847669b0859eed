"""The client-side ledger of a chaos run: every accepted task, and what each socket received.

Counted per run (issue 10):
- lost: accepted, but not terminal in the database when the run settles;
- duplicated: a task with more than one terminal envelope (distinct ids) reaching a socket, or
  more than one in the user's history (completed twice);
- unnotified: terminal in the database, but some socket never received its terminal envelope,
  nor learned it from a resync (the client re-reading its open tasks over HTTP when a `hello`
  says history could not cover what it missed, as SPEC §5 prescribes);
- unexpected: envelopes for tasks the user never submitted.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests.support.client import TERMINAL_STATES

TERMINAL_TYPES = ("chat_result", "submission_result")


def is_terminal(envelope: dict[str, Any]) -> bool:
    """A task's last envelope: its result, or `task_status CANCELLED`."""
    if envelope["type"] in TERMINAL_TYPES:
        return True
    return envelope["type"] == "task_status" and envelope["data"].get("state") == "CANCELLED"


@dataclass
class SocketRecord:
    """What one socket of a user received, de-duplicated by envelope id."""

    ids: set[str] = field(default_factory=set)
    terminal: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # task -> envelope ids
    task_ids: set[str] = field(default_factory=set)
    resynced: set[str] = field(default_factory=set)  # terminal states learned over HTTP instead


@dataclass
class Ledger:
    """Accepted tasks per user and, per socket, what arrived."""

    accepted: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # user -> tasks
    accepted_at: dict[str, float] = field(default_factory=dict)
    sockets: dict[str, list[SocketRecord]] = field(default_factory=lambda: defaultdict(list))
    first_terminal_at: dict[str, float] = field(default_factory=dict)
    newest_task: dict[str, str] = field(default_factory=dict)  # user -> the last task accepted
    refused: Counter[str] = field(default_factory=Counter)  # "503 overloaded", "ConnectError", ...
    latencies: list[tuple[str, float, float]] = field(default_factory=list)  # (request, sent at, seconds)

    def socket(self, user: str) -> SocketRecord:
        """A new socket record for `user` (one per socket, kept across its reconnects)."""
        record = SocketRecord()
        self.sockets[user].append(record)
        return record

    def accept(self, user: str, task_id: str, at: float) -> None:
        self.accepted[user].add(task_id)
        self.accepted_at[task_id] = at
        self.newest_task[user] = task_id

    def refuse(self, reason: str) -> None:
        """A submit that was not accepted, by status and error code (or the client's exception)."""
        self.refused[reason] += 1

    def receive(self, record: SocketRecord, envelope: dict[str, Any], at: float) -> None:
        """Record one envelope on a socket; a repeated id (a replayed one) counts once."""
        if envelope["id"] in record.ids:
            return
        record.ids.add(envelope["id"])
        task_id = envelope.get("task_id")
        if task_id is None:
            return
        record.task_ids.add(task_id)
        if is_terminal(envelope):
            record.terminal[task_id].add(envelope["id"])
            self.first_terminal_at.setdefault(task_id, at)

    def resynced(self, record: SocketRecord, task_id: str) -> None:
        """The socket's client read this task's terminal state over HTTP (after `recovered: false`)."""
        record.resynced.add(task_id)

    def lost(self, statuses: dict[str, dict[str, Any]]) -> dict[str, str | None]:
        """Accepted tasks not terminal in `statuses`, with the state they stopped in."""
        states = {t: statuses.get(t, {}).get("state") for tasks in self.accepted.values() for t in tasks}
        return {t: state for t, state in states.items() if state not in TERMINAL_STATES}

    def counts(self, statuses: dict[str, dict[str, Any]], terminal_in_history: dict[str, int]) -> dict[str, int]:
        """The run's outcome; `statuses` from `GET /api/tasks/{id}`, history counts from Redis."""
        all_tasks = {task for tasks in self.accepted.values() for task in tasks}
        lost = set(self.lost(statuses))
        duplicated = {t for t, count in terminal_in_history.items() if count > 1 and t in all_tasks}
        unnotified: set[str] = set()
        unexpected = 0
        for user, records in self.sockets.items():
            for record in records:
                duplicated |= {t for t, ids in record.terminal.items() if len(ids) > 1}
                unexpected += len(record.task_ids - self.accepted[user])
                told = set(record.terminal) | record.resynced
                unnotified |= {t for t in self.accepted[user] - lost if t not in told}
        return {
            "accepted": len(all_tasks),
            "completed": sum(1 for t in all_tasks if statuses.get(t, {}).get("state") == "SUCCESS"),
            "failed": sum(1 for t in all_tasks if statuses.get(t, {}).get("state") == "FAILURE"),
            "lost": len(lost),
            "duplicated": len(duplicated),
            "unnotified": len(unnotified),
            "unexpected": unexpected,
            "resynced": sum(len(r.resynced - set(r.terminal)) for rs in self.sockets.values() for r in rs),
        }
