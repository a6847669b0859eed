"""Database work for an event loop that must never block: each step is one hop to a thread.

The repositories are plain functions on a sync `Session`. A worker runs a whole step (a read,
or a transaction of several statements) in one call to a small thread pool, so the loop waits
on one future per step instead of a driver round trip per statement.
"""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.db.session import sync_sessionmaker

P = ParamSpec("P")
T = TypeVar("T")


class ThreadedSessions:
    """Runs `fn(session, ...)` in a database thread: `read` without a transaction to commit, `write` in one."""

    def __init__(self, engine: Engine, *, threads: int):
        self.engine = engine
        self._sessions = sync_sessionmaker(engine)
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="taskwire-db")

    async def read(self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn`'s result, from a session that is closed (and rolled back) afterwards."""

        def step() -> T:
            with self._sessions() as session:
                return fn(session, *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self._threads, step)

    async def write(self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn`'s result, from a transaction that is committed when `fn` returns."""

        def step() -> T:
            with self._sessions.begin() as session:
                return fn(session, *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self._threads, step)

    def close(self) -> None:
        """Wait for running steps, then release the connections."""
        self._threads.shutdown(wait=True)
        self.engine.dispose()


def threads_for(engine: Engine) -> int:
    """How many threads a worker's database steps need: SQLite takes one writer at a time."""
    # More SQLite threads would only wait for each other in its busy handler, which sleeps in
    # steps of milliseconds; one thread queues the steps instead.
    return 1 if engine.dialect.name == "sqlite" else 4
