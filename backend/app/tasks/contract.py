"""The contract between the task runner and a feature's handler.

A handler is `async (Job) -> Outcome`. It may also have `prepare(connection, task_id,
participant_id)`: the reads it needs before it starts, run inside the runner's claim
transaction (one database step fewer per task); what it returns is `job.prepared`. It streams
what the learner should see as it happens
through `job.report` (which never blocks: the runner publishes, coalesces and fences), and
returns its Outcome; it fails by raising PermanentError (or TransientError from inside
`call_with_retries`). It never publishes, writes the task's state or touches the lease: the
runner commits the terminal state together with the rows the Outcome asks for, then publishes
the result envelope.
"""

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel
from sqlalchemy import Connection

from app.core.config import Settings
from app.db.threaded import ThreadedDatabase
from app.tasks.errors import TransientError

InputT = TypeVar("InputT", bound=BaseModel)


class Reporter(Protocol):
    """What a running task tells the learner; every method returns at once."""

    def delta(self, text: str) -> None:
        """The next piece of streamed text (coalesced into envelopes by the runner)."""

    def reset(self) -> None:
        """The text streamed so far is void: the client discards it (a retry starts the answer over)."""

    def progress(self, stage: str, message: str, fraction: float) -> None:
        """A progress step, 0 ≤ fraction ≤ 1 (written to the database at most every 0.5 s)."""

    def retrying(self, next_attempt: int, delay_s: float, error: TransientError) -> None:
        """A transient failure will be retried after `delay_s` (`task_status RETRYING`)."""


@dataclass(frozen=True)
class Job(Generic[InputT]):
    """One execution of a task, as its handler sees it."""

    task_id: uuid.UUID
    participant_id: uuid.UUID
    input: InputT
    attempt: int  # this execution's fencing token: 1 on the first execution
    resumed: bool  # an earlier execution started this task and died; its partial output must go
    report: Reporter
    prepared: Any = None  # what the handler's `prepare` read in the claim's transaction, if it has one


@dataclass(frozen=True)
class Outcome:
    """What a handler produced: the result, and what to store with the terminal state."""

    result: dict[str, Any]  # the result envelope's `data`, also stored as the task's result
    # The feature's own rows, written in the same transaction as the terminal state, so the two
    # are committed together or not at all (and never by a superseded execution).
    persist: Callable[[Connection], None] | None = None
    # Counters to add once the task has succeeded: Redis hash → field → amount.
    tallies: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class HandlerResources:
    """What a handler factory receives in a worker process: settings and the database."""

    settings: Settings
    db: ThreadedDatabase


class Handler(Protocol[InputT]):
    """A kind's work. Built once per worker process by the factory named in the registry.

    Optionally also `prepare(connection, task_id, participant_id) -> Any` (see the module docstring)
    and `unavailable() -> str | None`: why this process cannot do the kind's work now (no browser),
    which its worker's heartbeat reports to readiness and the ops page.
    """

    async def __call__(self, job: Job[InputT]) -> Outcome:
        """Do the task and return its Outcome."""

    async def aclose(self) -> None:
        """Release the handler's long-lived clients (LLM connections, browsers)."""
