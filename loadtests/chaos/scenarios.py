"""The faults, each injected once into a running ChaosStack under load.

Each returns when the fault is over (the broken part restarted or replaced); the run measures
recovery from the moment `inject` was called.
"""

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loadtests.chaos.stack import ChaosStack

REDIS_DOWN_S = 3.0


async def kill_pool_process(stack: ChaosStack) -> None:
    """1. SIGKILL one prefork pool process of a worker, mid-task; Celery replaces it."""
    children = stack.workers[0].children()
    assert children, "the worker has no pool processes to kill"
    os.kill(children[0], signal.SIGKILL)


async def kill_whole_worker(stack: ChaosStack) -> None:
    """2. SIGKILL a whole worker (main process and pool); the other picks up, the supervisor restarts it."""
    stack.injected_exits += 1
    stack.workers[0].kill_whole()


async def warm_shutdown_worker(stack: ChaosStack) -> None:
    """3. SIGTERM a worker: it finishes what it runs and exits; the supervisor starts it again."""
    stack.injected_exits += 1
    stack.workers[0].warm_stop()


async def restart_redis(stack: ChaosStack) -> None:
    """4. SIGKILL redis-server, start it again REDIS_DOWN_S later (same port, same data dir)."""
    assert stack.redis.process is not None
    stack.redis.process.send_signal(signal.SIGKILL)
    stack.redis.process.wait()
    await asyncio.sleep(REDIS_DOWN_S)
    await asyncio.to_thread(stack.redis.start)


async def restart_api_replica(stack: ChaosStack) -> None:
    """5. SIGTERM an API replica holding sockets (a rolling restart), then start it again."""
    api = stack.apis[0]
    await asyncio.to_thread(api.stop)
    await asyncio.to_thread(api.start_again)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    inject: Callable[[ChaosStack], Awaitable[None]]
    persistent_redis: bool = False
    worker_pool: str = "threads"
    warm: bool = False  # no duplicate completion is acceptable at all


SCENARIOS = (
    Scenario(
        "kill-pool-process", "1. SIGKILL one pool process mid-task (prefork)", kill_pool_process, worker_pool="prefork"
    ),
    Scenario("kill-worker", "2. SIGKILL a whole worker", kill_whole_worker),
    Scenario("warm-shutdown", "3. SIGTERM a worker (warm shutdown)", warm_shutdown_worker, warm=True),
    Scenario("redis-restart", "4a. Redis SIGKILL, restart after 3 s, no persistence", restart_redis),
    Scenario(
        "redis-restart-aof", "4b. Redis SIGKILL, restart after 3 s, appendonly", restart_redis, persistent_redis=True
    ),
    Scenario("api-restart", "5. SIGTERM an API replica with sockets on it", restart_api_replica),
)
