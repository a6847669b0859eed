"""Counters every worker and replica adds to in Redis, exposed as Prometheus counters by each replica.

A worker has no /metrics of its own, so what workers count lives in one Redis hash and every
replica serves the same cluster-wide values: aggregate these with `max`, not `sum`, across
replicas (docs/operations.md).
"""

import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from redis.asyncio.client import Pipeline

from app.chat.keys import TOKENS_KEY
from app.tasks.keys import METRICS_KEY


def count_finished_in(pipe: Pipeline, kind: str, state: str, error: dict[str, str] | None = None) -> None:
    """Count one task reaching its terminal state (and its error code, when it failed)."""
    pipe.hincrby(METRICS_KEY, f"finished:{kind}:{state}", 1)
    if error is not None:
        pipe.hincrby(METRICS_KEY, f"failed:{kind}:{error.get('code', 'unknown')}", 1)


async def collect(client: aioredis.Redis) -> list[Metric]:
    """The shared counters, as Prometheus metric families."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(METRICS_KEY)
        pipe.hgetall(TOKENS_KEY)
        counters, tokens = await pipe.execute()
    finished = CounterMetricFamily(
        "taskwire_tasks_finished", "Tasks that reached a terminal state (all workers)", labels=["kind", "state"]
    )
    failed = CounterMetricFamily(
        "taskwire_tasks_failed", "Failed tasks by error code (all workers)", labels=["kind", "code"]
    )
    duplicates = CounterMetricFamily(
        "taskwire_duplicate_deliveries",
        "Redelivered task messages acknowledged without running (all workers)",
        labels=["reason"],
    )
    for field, value in counters.items():
        name, _, rest = field.partition(":")
        if name == "finished":
            finished.add_metric(rest.split(":", 1), float(value))
        elif name == "failed":
            failed.add_metric(rest.split(":", 1), float(value))
        elif name == "duplicate_deliveries":
            duplicates.add_metric([rest], float(value))
    llm = CounterMetricFamily("taskwire_llm_tokens", "LLM tokens used (all workers)", labels=["model", "kind"])
    for field, value in tokens.items():
        model, _, kind = field.rpartition(":")
        llm.add_metric([model, kind.removesuffix("_tokens")], float(value))
    return [finished, failed, duplicates, llm]
