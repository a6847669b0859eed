"""The faults, each injected once into a running ChaosStack under load.

Each returns when the fault is over (the broken part restarted or replaced); the run measures
recovery from the moment `inject` was called. The learners are passed for client-side faults.
"""

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import redis

from loadtests.chaos import hostile, overload
from loadtests.chaos.bad_input import run_bad_input
from loadtests.chaos.learner import Learner
from loadtests.chaos.ledger import Ledger
from loadtests.chaos.stack import ChaosStack
from tests.support.client import Account, StalledClient

REDIS_DOWN_S = 3.0


async def kill_pool_process(stack: ChaosStack, _learners: list[Learner]) -> None:
    """1. SIGKILL one prefork pool process of a worker, mid-task; Celery replaces it."""
    children = stack.workers[0].children()
    assert children, "the worker has no pool processes to kill"
    os.kill(children[0], signal.SIGKILL)


async def kill_whole_worker(stack: ChaosStack, _learners: list[Learner]) -> None:
    """2. SIGKILL a whole worker (main process and pool); the other picks up, the supervisor restarts it."""
    stack.injected_exits += 1
    stack.workers[0].kill_whole()


async def warm_shutdown_worker(stack: ChaosStack, _learners: list[Learner]) -> None:
    """3. SIGTERM a worker: it finishes what it runs and exits; the supervisor starts it again."""
    stack.injected_exits += 1
    stack.workers[0].warm_stop()


async def restart_redis(stack: ChaosStack, _learners: list[Learner]) -> None:
    """4. SIGKILL redis-server, start it again REDIS_DOWN_S later (same port, same data dir)."""
    assert stack.redis.process is not None
    stack.redis.process.send_signal(signal.SIGKILL)
    stack.redis.process.wait()
    await asyncio.sleep(REDIS_DOWN_S)
    await asyncio.to_thread(stack.redis.start)


async def restart_api_replica(stack: ChaosStack, _learners: list[Learner]) -> None:
    """5. SIGTERM an API replica holding sockets (a rolling restart), then start it again."""
    api = stack.apis[0]
    await asyncio.to_thread(api.stop)
    await asyncio.to_thread(api.start_again)


async def drop_connections(stack: ChaosStack, learners: list[Learner]) -> None:
    """6. Drop TCP connections: Redis kills the replicas' pub/sub links, and every browser socket is cut."""
    client = redis.Redis.from_url(stack.redis.url)
    try:
        client.client_kill_filter(_type="pubsub")
    finally:
        client.close()
    for learner in learners:
        learner.drop_sockets()


async def stall_a_consumer(stack: ChaosStack, learners: list[Learner]) -> None:
    """7. A tab that stops reading: one more socket of the first learner never reads again (1 % of them)."""
    account = Account(learners[0].participant_id, learners[0].token)
    stack.stalled.append(await asyncio.to_thread(StalledClient, stack.apis[0].ws_url, account))


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    inject: Callable[[ChaosStack, list[Learner]], Awaitable[None]] | None  # None: the scenario has its own run
    persistent_redis: bool = False
    worker_pool: str = "threads"
    zero_duplicates: bool = False  # no task may complete twice: nothing in the scenario interrupts one
    quick: bool = True  # part of `make chaos-quick` (CI)
    sockets_per_replica: int = 1  # per learner
    settings: tuple[tuple[str, str], ...] = ()  # the stack's settings that differ for this scenario
    # A run of its own instead of steady load and `inject`: (stack, http client, ledger) -> counts.
    run: Callable[[ChaosStack, httpx.AsyncClient, Ledger], Awaitable[dict[str, Any]]] | None = None


SCENARIOS = (
    Scenario(
        "kill-pool-process", "1. SIGKILL one pool process mid-task (prefork)", kill_pool_process, worker_pool="prefork"
    ),
    Scenario("kill-worker", "2. SIGKILL a whole worker", kill_whole_worker),
    Scenario("warm-shutdown", "3. SIGTERM a worker (warm shutdown)", warm_shutdown_worker, zero_duplicates=True),
    Scenario("redis-restart", "4a. Redis SIGKILL, restart after 3 s, no persistence", restart_redis),
    Scenario(
        "redis-restart-aof", "4b. Redis SIGKILL, restart after 3 s, appendonly", restart_redis, persistent_redis=True
    ),
    Scenario("api-restart", "5. SIGTERM an API replica with sockets on it", restart_api_replica),
    Scenario(
        "drop-connections", "6. pub/sub links killed in Redis, every client socket cut", drop_connections, quick=False
    ),
    Scenario(
        "stalled-consumer",
        "7. 1 socket in 97 stops reading",
        stall_a_consumer,
        quick=False,
        sockets_per_replica=16,  # 3 learners × 2 replicas × 16 live sockets, and the stalled one
    ),
    Scenario(
        "overload",
        "8. twice the measured capacity for 60 s",
        None,
        quick=False,
        zero_duplicates=True,
        settings=(("QUEUE_MAX_BACKLOG", str(overload.MAX_BACKLOG)),),
        run=overload.run_overload,
    ),
    Scenario(
        "bad-input", "9. bad input mixed into good traffic", None, quick=False, zero_duplicates=True, run=run_bad_input
    ),
    Scenario(
        "grading-floods",
        "10. pages that flood their browser, beside honest gradings",
        None,
        quick=False,
        zero_duplicates=True,
        run=hostile.run_grading_floods,
    ),
    Scenario(
        "never-reading-sockets",
        "11. 40 sockets that ask for a whole history and read nothing",
        None,
        quick=False,
        zero_duplicates=True,
        settings=(
            ("WS_IDLE_TIMEOUT_S", str(hostile.IDLE_TIMEOUT_S)),
            ("WS_PING_INTERVAL_S", "1"),
            ("WS_MAX_SOCKETS_PER_USER", str(hostile.SOCKETS_CAP)),
        ),
        run=hostile.run_never_reading_sockets,
    ),
)
