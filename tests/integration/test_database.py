"""The schema and the queries on both supported databases: SQLite and the local PostgreSQL."""

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic.config import Config
from sqlalchemy import inspect

from alembic import command
from app.auth import repository as users
from app.cli import REPO_ROOT
from app.core.embedded_redis import EmbeddedRedis
from app.core.security import hash_password
from app.db.base import UTCDateTime, utcnow
from app.db.session import api_sessionmaker, create_api_engine, create_sync_engine, sync_sessionmaker
from app.models import TaskState, User
from app.tasks import repository as tasks
from tests.support.client import open_socket, register
from tests.support.databases import database, postgres_database
from tests.support.stack import ApiServer, Worker, migrate
from tests.support.waiting import frames_until


def _alembic(url: str) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    return config


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


def test_migrations_round_trip_and_match_the_models(database_url: str) -> None:
    config = _alembic(database_url)
    command.upgrade(config, "head")
    command.check(config)  # raises when the models and the migrations disagree
    command.downgrade(config, "base")
    engine = create_sync_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    command.upgrade(config, "head")
    engine = create_sync_engine(database_url)
    try:
        assert {"users", "tasks", "chat_messages", "submissions"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_task_lifecycle_queries_behave_the_same(database_url: str) -> None:
    command.upgrade(_alembic(database_url), "head")
    engine = create_sync_engine(database_url)
    sessions = sync_sessionmaker(engine)
    try:
        with sessions.begin() as session:
            owner = users.add_user(session, f"u{uuid.uuid4().hex[:8]}", "hash")
            task_id = tasks.add_task(session, owner.participant_id, "chat", {"message": "hi"}, idempotency_key="k1")
        with sessions.begin() as session:
            assert tasks.claim(session, task_id, attempt=1)
            running = tasks.running_started_before(session, utcnow() + timedelta(seconds=1))
            assert running == [tasks.TaskRef(task_id, "chat", owner.participant_id)]
        with sessions.begin() as session:
            # Fenced: a superseded execution (attempt 0) cannot finish it.
            assert not tasks.finish(session, task_id, TaskState.SUCCESS, result={"x": 1}, attempt=0)
            assert tasks.finish(session, task_id, TaskState.SUCCESS, result={"x": 1}, attempt=1)
            assert not tasks.finish(session, task_id, TaskState.FAILURE, error={"code": "late"})
        with sessions() as session:
            stored = tasks.get(session, task_id)
            assert stored is not None and stored.state == TaskState.SUCCESS and stored.result == {"x": 1}
            assert stored.finished_at is not None and stored.finished_at.tzinfo is not None
            assert tasks.get_by_idempotency_key(session, owner.participant_id, "k1") is not None
            listed = tasks.list_owned(session, owner.participant_id, state="SUCCESS", kind="chat", limit=5)
            assert [t.task_id for t in listed] == [task_id]
    finally:
        engine.dispose()


async def test_the_api_reaches_the_same_queries_through_its_async_driver(database_url: str) -> None:
    command.upgrade(_alembic(database_url), "head")
    engine = create_api_engine(database_url)
    try:
        async with api_sessionmaker(engine)() as session:
            user = await session.run_sync(users.add_user, f"a{uuid.uuid4().hex[:8]}", "hash")
            await session.commit()
            found = await session.run_sync(users.get_by_username, user.username)
            assert found is not None and found.participant_id == user.participant_id
    finally:
        await engine.dispose()


async def test_the_whole_stack_runs_on_postgresql(
    stack_env: dict[str, str], redis_server: EmbeddedRedis, log_dir: Path
) -> None:
    with postgres_database() as url:
        env = {**stack_env, "DATABASE_URL": url, "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/5"}
        migrate(env)
        api = ApiServer("api-postgres", env, log_dir)
        worker = Worker("worker-postgres", env, log_dir)
        try:
            async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
                account = await register(http)
                ws, _ = await open_socket(api.ws_url, account)
                async with ws:
                    response = await http.post("/ai/chat2", json={"message": "on postgres"}, headers=account.headers)
                    task_id = response.json()["task_id"]
                    frames = await frames_until(
                        ws, lambda f: f["type"] == "chat_result" and f["task_id"] == task_id, what="the result"
                    )
                status = (await http.get(f"/api/tasks/{task_id}", headers=account.headers)).json()
                history = (await http.get("/api/chat/history", headers=account.headers)).json()
            assert status["state"] == "SUCCESS" and status["result"]["message"] == frames[-1]["data"]["message"]
            assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
        finally:
            worker.stop()
            api.stop()


async def test_existing_usernames_are_folded_and_a_kept_spelling_still_signs_in(
    database_url: str, stack_env: dict[str, str], log_dir: Path
) -> None:
    # Migration 0004: names are folded where no other account has the folded name; the one that
    # must keep its spelling signs in by it exactly.
    config = _alembic(database_url)
    command.upgrade(config, "0003_submissions")
    engine = create_sync_engine(database_url)
    sessions = sync_sessionmaker(engine)
    suffix = uuid.uuid4().hex[:6]
    # The users table as it was at 0003 (today's model has columns added since).
    old_users = sa.table(
        "users",
        sa.column("participant_id", sa.Uuid()),
        sa.column("username", sa.String()),
        sa.column("password_hash", sa.String()),
        sa.column("created_at", UTCDateTime()),
    )
    kept, folded = uuid.uuid4(), uuid.uuid4()
    try:
        with sessions.begin() as session:
            for participant_id, name, password in (
                (kept, f"Ada{suffix}", "analytical engine"),
                (uuid.uuid4(), f"ada{suffix}", "another password"),
                (folded, f"ＧＲＡＣＥ{suffix}", "cobol forever"),
            ):
                row = {"participant_id": participant_id, "username": name, "password_hash": hash_password(password)}
                session.execute(sa.insert(old_users).values(**row, created_at=utcnow()))
        command.upgrade(config, "head")
        with sessions() as session:
            names = {user.participant_id: user.username for user in session.query(User)}
    finally:
        engine.dispose()
    assert names[folded] == f"grace{suffix}" and names[kept] == f"Ada{suffix}"
    api = ApiServer(f"api-folded-{uuid.uuid4().hex[:4]}", {**stack_env, "DATABASE_URL": database_url}, log_dir)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:

            async def sign_in(username: str, password: str) -> str | None:
                response = await http.post("/api/auth/login", json={"username": username, "password": password})
                return response.json().get("participant_id") if response.status_code == 200 else None

            assert await sign_in(f"Grace{suffix}", "cobol forever") == str(folded)
            assert await sign_in(f"Ada{suffix}", "analytical engine") == str(kept)
    finally:
        api.stop()
