"""The registry of task kinds: what each kind is called, where it queues, its limits and its handler.

A feature declares its kind once (`<feature>/tasks.py`) and `app/task_kinds.py` lists every
kind. The API reads names, queues and input models from it; the worker also resolves each
kind's handler, which the registry holds as an import path so that the API never imports it
(the grader's handler brings Playwright, the tutor's an LLM client).
"""

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from app.core.config import Settings
from app.realtime.envelopes import EnvelopeType


@dataclass(frozen=True)
class KindLimits:
    """How much of a kind one worker process runs, and for how long."""

    concurrency: int  # tasks of this kind at once
    soft_time_limit_s: float  # past this the task fails with `timeout` (the handler is cancelled)
    hard_time_limit_s: float  # Celery replaces a prefork process stuck this long


@dataclass(frozen=True)
class TaskKindSpec:
    """One kind of task (one registry entry)."""

    name: str  # the `kind` clients see, e.g. "chat"
    task_name: str  # the Celery task, `<feature>.<verb>`
    queue: str  # kinds share a queue only when they may wait behind each other
    input_model: type[BaseModel]  # the submitted body, stored as the task's input
    result_type: EnvelopeType  # the envelope that ends a task of this kind
    handler: str  # "module:factory"; the factory takes HandlerResources and returns a Handler
    limits: Callable[[Settings], KindLimits]
    delta_type: EnvelopeType | None = None  # streamed text (`Reporter.delta`), if the kind streams
    progress_type: EnvelopeType | None = None  # progress steps (`Reporter.progress`), if it has any
    timeout_message: str = "the task took too long; please try again"
    # What the task is, in the learner's words, from its input ("Asked: why is my list…").
    describe: Callable[[dict[str, Any]], str] | None = None

    def load_handler_factory(self) -> Callable[..., object]:
        """Import the handler's factory (worker processes only)."""
        module_name, _, attribute = self.handler.partition(":")
        factory: Callable[..., object] = getattr(importlib.import_module(module_name), attribute)
        return factory


class TaskRegistry:
    """Every task kind by name; refuses two kinds with one name or one Celery task name."""

    def __init__(self, kinds: Iterable[TaskKindSpec]):
        self._by_name: dict[str, TaskKindSpec] = {}
        for kind in kinds:
            if kind.name in self._by_name:
                raise ValueError(f"task kind {kind.name!r} is registered twice")
            if any(other.task_name == kind.task_name for other in self._by_name.values()):
                raise ValueError(f"Celery task name {kind.task_name!r} is used by two kinds")
            if ":" not in kind.handler:
                raise ValueError(f"handler of {kind.name!r} must be 'module:factory', not {kind.handler!r}")
            self._by_name[kind.name] = kind

    def __getitem__(self, name: str) -> TaskKindSpec:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[TaskKindSpec]:
        return iter(self._by_name.values())

    def describe(self, kind: str, task_input: dict[str, Any]) -> str:
        """A few words saying what a task of `kind` with this input is; empty when the kind has none."""
        spec = self._by_name.get(kind)
        if spec is None or spec.describe is None:
            return ""
        try:
            return spec.describe(task_input)
        except (KeyError, TypeError, ValueError):  # an input stored by an older version
            return ""

    @property
    def names(self) -> list[str]:
        """Every kind's name."""
        return list(self._by_name)

    @property
    def queues(self) -> list[str]:
        """Every queue a kind uses, each once, in registration order."""
        return list(dict.fromkeys(kind.queue for kind in self))

    def in_queues(self, queues: Iterable[str]) -> list[TaskKindSpec]:
        """The kinds whose messages wait in these queues; raises ValueError for a queue no kind uses."""
        wanted = list(queues)
        unknown = sorted(set(wanted) - set(self.queues))
        if unknown:
            raise ValueError(f"no task kind uses the queue(s) {', '.join(unknown)}; queues: {', '.join(self.queues)}")
        return [kind for kind in self if kind.queue in wanted]
