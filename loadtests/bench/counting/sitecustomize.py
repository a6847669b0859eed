"""Counts a process's round trips to Redis and the database; loaded by Python at start-up.

Put this folder on PYTHONPATH (with TASKWIRE_COUNT_DIR set) and every Python process started
with it counts, without any change to the code it runs: each redis-py send (a command, or a
whole pipeline) is one round trip, told apart by whether Celery/kombu or Taskwire made it; each
SQL statement and each commit are counted through SQLAlchemy's events. The counts are written to
TASKWIRE_COUNT_DIR/<pid>.json with the process's command line every 0.2 s and at exit (uvicorn
ends by re-raising SIGTERM, which skips exit handlers). Used by
loadtests/bench/round_trips.py to compare runtimes; never loaded in production.
"""

import atexit
import json
import os
import sys
import threading
import time
from collections import Counter

_OUT = os.environ.get("TASKWIRE_COUNT_DIR")
counts: Counter[str] = Counter()


def _caller_is_celery() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith(("kombu", "celery")):
            return True
        if name.startswith("app."):
            return False
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _install() -> None:
    import redis.asyncio.connection as async_connection
    import redis.connection as sync_connection
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def wrap(owner: type, name: str, is_async: bool) -> None:
        original = getattr(owner, name)
        if is_async:

            async def counted_async(self: object, *args: object, **kwargs: object) -> object:
                counts["redis:celery" if _caller_is_celery() else "redis:taskwire"] += 1
                return await original(self, *args, **kwargs)

            setattr(owner, name, counted_async)
        else:

            def counted(self: object, *args: object, **kwargs: object) -> object:
                counts["redis:celery" if _caller_is_celery() else "redis:taskwire"] += 1
                return original(self, *args, **kwargs)

            setattr(owner, name, counted)

    wrap(sync_connection.AbstractConnection, "send_packed_command", False)
    wrap(async_connection.AbstractConnection, "send_packed_command", True)

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(*_: object) -> None:
        counts["db:statements"] += 1

    @event.listens_for(Engine, "commit")
    def _commit(*_: object) -> None:
        counts["db:commits"] += 1


def _write() -> None:
    if counts and _OUT:
        path = os.path.join(_OUT, f"{os.getpid()}.json")
        with open(path + ".tmp", "w") as out:
            json.dump({"argv": sys.argv, "counts": dict(counts)}, out)
        os.replace(path + ".tmp", path)


def _keep_writing() -> None:
    while True:
        time.sleep(0.2)
        _write()


if _OUT:
    try:
        _install()
    except ImportError:
        pass
    else:
        atexit.register(_write)
        threading.Thread(target=_keep_writing, name="round-trip-counts", daemon=True).start()
