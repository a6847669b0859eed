"""Submit→first envelope and submit→result latency per task kind, aggregated across workers in Redis.

Workers observe (they know when a task was created and when they publish); each API replica
exposes the shared histograms on /metrics.
"""

from collections.abc import Iterable

import redis.asyncio as aioredis
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from redis.asyncio.client import Pipeline

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PHASES = {"first": "taskwire_submit_to_first_message_seconds", "result": "taskwire_submit_to_result_seconds"}
_KEY = "taskwire:metrics:latency:{kind}:{phase}"


def observe_in(pipe: Pipeline, kind: str, phase: str, seconds: float) -> None:
    """Add one observation to a pipeline: it rides in the round trip of the envelope it times."""
    key = _KEY.format(kind=kind, phase=phase)
    pipe.hincrby(key, next((str(b) for b in BUCKETS if seconds <= b), "+Inf"), 1)
    pipe.hincrbyfloat(key, "sum", seconds)


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
