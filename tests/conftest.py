"""A real stack for the integration tests: a private redis-server, a SQLite database, API replicas, a worker.

A private redis-server (not the machine's shared one) because pub/sub channels ignore
database numbers: tests on a shared server would see, and be seen by, anyone else's messages.
"""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from app.core.embedded_redis import EmbeddedRedis
from app.core.processes import child_env
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.stack import ApiServer, Worker, migrate

TEST_JWT_SECRET = "integration-test-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def stack_env(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    database = tmp_path_factory.mktemp("db") / "taskwire.db"
    env = child_env(
        ENVIRONMENT="test",
        DATABASE_URL=f"sqlite:///{database}",
        REDIS_URL=redis_server.url,
        JWT_SECRET=TEST_JWT_SECRET,
        # Slow enough that a 202 visibly precedes the result, fast enough to keep the suite quick.
        LLM_OFFLINE_DELAY_MS="10",
        WS_AUTH_TIMEOUT_S="1",
        # Every test registers from 127.0.0.1: only test_limits.py sets real limits.
        AUTH_RATE_LIMIT="100000/60",
        LOGIN_USER_RATE_LIMIT="100000/60",
        SUBMIT_RATE_LIMIT="100000/60",
        LOG_FORMAT="json",
    )
    migrate(env)
    return env


def with_own_database(env: dict[str, str], folder: Path) -> dict[str, str]:
    """`env` with a fresh, migrated SQLite database in `folder`.

    Every stack on its own Redis needs its own database too: a worker's reconciler re-sends
    QUEUED tasks its broker does not hold, so a database shared with another broker's stack
    would have its tasks pulled across.
    """
    own = {**env, "DATABASE_URL": f"sqlite:///{folder / 'taskwire.db'}"}
    migrate(own)
    return own


@pytest.fixture(scope="session")
def api(stack_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    server = ApiServer("api-a", stack_env, log_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def api_b(stack_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    server = ApiServer("api-b", stack_env, log_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker(stack_env: dict[str, str], log_dir: Path) -> Iterator[Worker]:
    process = Worker("worker", stack_env, log_dir)
    yield process
    process.stop()


@pytest.fixture
async def http(api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as client:
        yield client


@pytest.fixture
async def http_b(api_b: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_b.base_url, timeout=10) as client:
        yield client


# The same stack with its bus on a three-primary Redis Cluster (BUS_REDIS_CLUSTER): its own
# broker Redis and database, so its workers and reconciler never touch the plain stack's tasks.


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("cluster-broker")) as server:
        yield server


@pytest.fixture(scope="session")
def cluster_env(
    stack_env: dict[str, str],
    redis_cluster: LocalRedisCluster,
    cluster_broker: EmbeddedRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    return {
        **with_own_database(stack_env, tmp_path_factory.mktemp("cluster-db")),
        "REDIS_URL": cluster_broker.url,
        "BUS_REDIS_URL": redis_cluster.url,
        "BUS_REDIS_CLUSTER": "true",
    }


@pytest.fixture(scope="session")
def cluster_api(cluster_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    server = ApiServer("api-cluster-a", cluster_env, log_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster_api_b(cluster_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    server = ApiServer("api-cluster-b", cluster_env, log_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster_worker(cluster_env: dict[str, str], log_dir: Path) -> Iterator[Worker]:
    process = Worker("worker-cluster", cluster_env, log_dir)
    yield process
    process.stop()
