"""Engines and sessions: an async engine for the API, a sync one for workers and migrations.

Both are built from the one `DATABASE_URL`; the driver is chosen here so configuration stays
driver-agnostic (`sqlite:///…` or `postgresql://…`).
"""

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def _with_driver(url: str, drivers: dict[str, str]) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in drivers:
        raise ValueError(f"unsupported DATABASE_URL backend {backend!r}; use sqlite or postgresql")
    return parsed.set(drivername=drivers[backend])


def sync_database_url(url: str) -> URL:
    """The URL with the synchronous driver (workers, Alembic)."""
    return _with_driver(url, _SYNC_DRIVERS)


def async_database_url(url: str) -> URL:
    """The URL with the asynchronous driver (the API)."""
    return _with_driver(url, _ASYNC_DRIVERS)


def _prepare_sqlite(url: URL, engine: Engine) -> None:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine, "connect")
    def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the API read while a worker writes; busy_timeout makes the two
        # processes wait for each other's short write transactions instead of failing.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


# Every engine is made with hide_parameters: a database error's message, and so its log line,
# never carries what a learner sent (a message, a username) or what we store (a password hash).


def create_sync_engine(url: str) -> Engine:
    """A synchronous engine with the pragmas and pool settings Taskwire relies on."""
    sync_url = sync_database_url(url)
    if sync_url.get_backend_name() != "sqlite":
        # A ping per checkout finds the connections a PostgreSQL restart broke.
        return create_engine(sync_url, pool_pre_ping=True, hide_parameters=True)
    # A SQLite file has no server to lose: a ping would be one more statement per step.
    engine = create_engine(sync_url, hide_parameters=True)
    _prepare_sqlite(sync_url, engine)
    return engine


def create_api_engine(url: str) -> AsyncEngine:
    """An asynchronous engine for the API replica."""
    async_url = async_database_url(url)
    if async_url.get_backend_name() != "sqlite":
        # A ping per checkout finds the connections a PostgreSQL restart broke.
        return create_async_engine(async_url, pool_pre_ping=True, hide_parameters=True)
    # SQLite takes one writer at a time: more connections only wait in its busy handler, which
    # sleeps in steps of up to 100 ms. Two connections queue requests in the pool instead.
    engine = create_async_engine(async_url, pool_size=2, max_overflow=0, hide_parameters=True)
    _prepare_sqlite(async_url, engine.sync_engine)
    return engine


def sync_sessionmaker(engine: Engine) -> sessionmaker[Any]:
    """Sessions for workers; objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def api_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """Sessions for the API; objects stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
