"""FastAPI dependencies, as Annotated aliases endpoints declare by type.

They are all `async def`, even those that do no I/O: FastAPI runs a plain `def` dependency in
a worker thread, a hop that cost about a tenth of a submit's time.
"""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.hashing import PasswordHashing
from app.core.config import Settings
from app.core.errors import NotAuthenticated
from app.core.rate_limit import RateLimiter
from app.core.security import InvalidToken, decode_access_token
from app.db.threaded import ThreadedDatabase
from app.realtime.publisher import AsyncEnvelopePublisher
from app.tasks.admission import SubmitAdmission
from app.tasks.dispatch import TaskDispatcher
from app.tasks.registry import TaskKindSpec, TaskRegistry

_bearer = HTTPBearer(auto_error=False)


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


async def _redis(request: Request) -> aioredis.Redis:
    client: aioredis.Redis = request.app.state.redis
    return client


async def _broker(request: Request) -> aioredis.Redis:
    client: aioredis.Redis = request.app.state.broker
    return client


async def _publisher(request: Request) -> AsyncEnvelopePublisher:
    publisher: AsyncEnvelopePublisher = request.app.state.publisher
    return publisher


async def _database(request: Request) -> ThreadedDatabase:
    db: ThreadedDatabase = request.app.state.db
    return db


async def _dispatcher(request: Request) -> TaskDispatcher:
    dispatcher: TaskDispatcher = request.app.state.dispatcher
    return dispatcher


async def _registry(request: Request) -> TaskRegistry:
    registry: TaskRegistry = request.app.state.registry
    return registry


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[TaskRegistry, Depends(_registry)]
SessionDep = Annotated[AsyncSession, Depends(_session)]
# The submit path's writes: one hop to a database thread per transaction (db/threaded.py).
DatabaseDep = Annotated[ThreadedDatabase, Depends(_database)]
# The bus Redis (history, pub/sub, leases, ...); BrokerDep is Celery's (queues, dispatch records).
RedisDep = Annotated[aioredis.Redis, Depends(_redis)]
BrokerDep = Annotated[aioredis.Redis, Depends(_broker)]
PublisherDep = Annotated[AsyncEnvelopePublisher, Depends(_publisher)]
DispatcherDep = Annotated[TaskDispatcher, Depends(_dispatcher)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128)]


async def _current_participant(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> uuid.UUID:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated("send Authorization: Bearer <token>")
    try:
        return decode_access_token(credentials.credentials, settings)
    except InvalidToken:
        raise NotAuthenticated("invalid or expired token", code="invalid_token") from None


CurrentParticipant = Annotated[uuid.UUID, Depends(_current_participant)]


def admitted_submitter(kind: TaskKindSpec) -> Callable[..., Awaitable[uuid.UUID]]:
    """A dependency: the caller of a submit endpoint for `kind`, admitted by SUBMIT_RATE_LIMIT and
    its queue's QUEUE_MAX_BACKLOG (`Annotated[uuid.UUID, Depends(admitted_submitter(KIND))]`)."""

    async def admit(request: Request, participant_id: CurrentParticipant) -> uuid.UUID:
        admission: SubmitAdmission = request.app.state.admission
        await admission.admit(str(participant_id), kind.name)
        return participant_id

    return admit


async def _rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


async def _hashing(request: Request) -> PasswordHashing:
    hashing: PasswordHashing = request.app.state.password_hashing
    return hashing


RateLimiterDep = Annotated[RateLimiter, Depends(_rate_limiter)]
HashingDep = Annotated[PasswordHashing, Depends(_hashing)]


async def _limit_auth(request: Request, settings: SettingsDep, limiter: RateLimiterDep) -> None:
    # The client's own address: behind a proxy, uvicorn takes it from X-Forwarded-For when the
    # proxy is in FORWARDED_ALLOW_IPS (compose sets it), or every learner would share nginx's.
    client_ip = request.client.host if request.client else "unknown"
    await limiter.check("auth", client_ip, settings.auth_rate_limit)


# Register and login count against AUTH_RATE_LIMIT per client IP.
AuthRateLimit = Depends(_limit_auth)
