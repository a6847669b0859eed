"""Database work for an event loop that must never block: each step is one hop to a thread.

A worker runs a whole step (a read, or a transaction of several statements) in one call to a
small thread pool, so the loop waits on one future per step instead of a driver round trip
per statement. Steps get a Core `Connection`, not an ORM Session: the repositories' worker
functions are prebuilt Core statements, and a Session's unit of work would cost several times
the CPU of the SQL (docs/scaling.md).
"""

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine

P = ParamSpec("P")
T = TypeVar("T")


class StepThreads:
    """A fixed set of threads running blocking steps for an event loop.

    Not a ThreadPoolExecutor: its `submit` takes a lock shared by every executor in the process,
    which Celery's threads pool holds while it starts each new pool thread, so a submit from the
    loop could wait there (170 ms seen by the loop watchdog). These threads start at once and
    take steps from a lock-free queue; results come back through `call_soon_threadsafe`.
    """

    def __init__(self, count: int, name: str):
        self._steps: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def run(self, step: Callable[[], T]) -> "asyncio.Future[T]":
        """Queue `step`; the future resolves on the caller's loop with its result or exception."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._steps.put((step, future))
        return future

    def close(self) -> None:
        """Finish the queued steps, then end the threads."""
        for _ in self._threads:
            self._steps.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def _work(self) -> None:
        while (item := self._steps.get()) is not None:
            step, future = item
            try:
                result = step()
            except BaseException as exc:
                future.get_loop().call_soon_threadsafe(_settle, future, None, exc)
            else:
                future.get_loop().call_soon_threadsafe(_settle, future, result, None)


def _settle(future: "asyncio.Future[Any]", result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class ThreadedDatabase:
    """Runs `fn(connection, ...)` in a database thread: `read` outside a transaction, `write` in one it commits.

    Reads and writes have threads of their own, so a burst of writes (claims, results) never
    holds up the reads a task needs to start (its conversation).
    """

    def __init__(self, engine: Engine, *, write_threads: int, read_threads: int):
        self.engine = engine
        self._writers = StepThreads(write_threads, "taskwire-db-write")
        self._readers = StepThreads(read_threads, "taskwire-db-read")

    async def read(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn`'s result, from a connection that is returned (and rolled back) afterwards."""

        def step() -> T:
            with self.engine.connect() as connection:
                return fn(connection, *args, **kwargs)

        return await self._readers.run(step)

    async def write(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn`'s result, from a transaction that is committed when `fn` returns."""

        def step() -> T:
            with self.engine.begin() as connection:
                return fn(connection, *args, **kwargs)

        return await self._writers.run(step)

    def close(self) -> None:
        """Wait for running steps, then release the connections."""
        self._writers.close()
        self._readers.close()
        self.engine.dispose()

    @classmethod
    def for_worker(cls, engine: Engine) -> "ThreadedDatabase":
        """The threads a worker's steps need. SQLite takes one writer at a time: more writer
        threads would only wait for each other in its busy handler, which sleeps in steps of
        milliseconds; in WAL mode its readers run beside the writer."""
        writers = 1 if engine.dialect.name == "sqlite" else 4
        return cls(engine, write_threads=writers, read_threads=4)

    @classmethod
    def for_submits(cls, engine: Engine) -> "ThreadedDatabase":
        """The API's: its submit transactions, one writer thread on SQLite as for workers."""
        return cls(engine, write_threads=1 if engine.dialect.name == "sqlite" else 4, read_threads=1)
