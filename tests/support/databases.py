"""Throwaway databases for tests: a SQLite file, or a fresh database on the local PostgreSQL."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

# The machine's PostgreSQL (trust auth). Each test run creates and drops its own database in it.
POSTGRES_ADMIN_URL = os.environ.get("TASKWIRE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for the duration of the block; its URL."""
    name = f"taskwire_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A throwaway database URL of the given kind ("sqlite" or "postgresql")."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'taskwire.db'}"
    else:
        with postgres_database() as url:
            yield url
