"""Submit→first envelope and submit→result latency per task kind, aggregated across workers in Redis.

Workers observe (they know when a task was created and when they publish); each API replica
exposes the shared histograms on /metrics.
"""

import logging
from collections.abc import Iterable

import redis
import redis.asyncio as aioredis
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.metrics_core import Metric

logger = logging.getLogger(__name__)

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PHASES = {"first": "taskwire_submit_to_first_message_seconds", "result": "taskwire_submit_to_result_seconds"}
_KEY = "taskwire:metrics:latency:{kind}:{phase}"


def observe(client: redis.Redis, kind: str, phase: str, seconds: float) -> None:
    """Add one observation (best effort: metrics never fail a task)."""
    bucket = next((str(b) for b in BUCKETS if seconds <= b), "+Inf")
    try:
        with client.pipeline(transaction=False) as pipe:
            key = _KEY.format(kind=kind, phase=phase)
            pipe.hincrby(key, bucket, 1)
            pipe.hincrbyfloat(key, "sum", seconds)
            pipe.execute()
    except redis.RedisError:
        logger.debug("could not record latency", exc_info=True)


async def collect(client: aioredis.Redis, kinds: Iterable[str]) -> list[Metric]:
    """The shared histograms, as Prometheus metric families."""
    families: list[Metric] = []
    for phase, name in PHASES.items():
        family = HistogramMetricFamily(name, f"Task submit to {phase} envelope, by kind (all workers)", labels=["kind"])
        for kind in kinds:
            raw = await client.hgetall(_KEY.format(kind=kind, phase=phase))
            cumulative, buckets = 0.0, []
            for bound in [*map(str, BUCKETS), "+Inf"]:
                cumulative += float(raw.get(bound, 0))
                buckets.append((bound, cumulative))
            family.add_metric([kind], buckets, float(raw.get("sum", 0)))
        families.append(family)
    return families
