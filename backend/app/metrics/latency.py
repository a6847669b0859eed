"""Submit→first envelope and submit→result latency per task kind, aggregated across workers in Redis.

Workers observe (they know when a task was created and when they publish); each API replica
exposes the shared histograms on /metrics. Each observation also lands in a five-minute slice
that lives a little over an hour, from which the ops page reads the last hour's percentiles.
"""

import time
from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from redis.asyncio.client import Pipeline

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PHASES = {"first": "taskwire_submit_to_first_message_seconds", "result": "taskwire_submit_to_result_seconds"}
_BOUNDS = [*map(str, BUCKETS), "+Inf"]
_KEY = "taskwire:metrics:latency:{kind}:{phase}"
SLICE_S = 300
WINDOW_S = 3600


def _slice_key(kind: str, phase: str, slice_no: int) -> str:
    return f"{_KEY.format(kind=kind, phase=phase)}:{slice_no}"


def observe_in(pipe: Pipeline, kind: str, phase: str, seconds: float) -> None:
    """Add one observation to a pipeline: it rides in the round trip of the envelope it times."""
    bucket = next((str(b) for b in BUCKETS if seconds <= b), "+Inf")
    key = _KEY.format(kind=kind, phase=phase)
    pipe.hincrby(key, bucket, 1)
    pipe.hincrbyfloat(key, "sum", seconds)
    recent = _slice_key(kind, phase, int(time.time() // SLICE_S))
    pipe.hincrby(recent, bucket, 1)
    pipe.expire(recent, WINDOW_S + 2 * SLICE_S)


def _cumulative(raw: Mapping[str, str | float]) -> list[tuple[str, float]]:
    cumulative, buckets = 0.0, []
    for bound in _BOUNDS:
        cumulative += float(raw.get(bound, 0))
        buckets.append((bound, cumulative))
    return buckets


async def collect(client: aioredis.Redis, kinds: Iterable[str]) -> list[Metric]:
    """The shared histograms, as Prometheus metric families."""
    kinds = list(kinds)
    async with client.pipeline(transaction=False) as pipe:
        for phase in PHASES:
            for kind in kinds:
                pipe.hgetall(_KEY.format(kind=kind, phase=phase))
        replies = iter(await pipe.execute())
    families: list[Metric] = []
    for phase, name in PHASES.items():
        family = HistogramMetricFamily(name, f"Task submit to {phase} envelope, by kind (all workers)", labels=["kind"])
        for kind in kinds:
            raw = next(replies)
            family.add_metric([kind], _cumulative(raw), float(raw.get("sum", 0)))
        families.append(family)
    return families


def quantile(q: float, buckets: list[tuple[str, float]]) -> float | None:
    """The q-quantile of cumulative buckets, interpolated within its bucket as Prometheus's
    histogram_quantile does; None when empty. Past the last finite bound, that bound."""
    total = buckets[-1][1]
    if total == 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in buckets:  # the last, +Inf, holds the total: the loop always returns
        if count >= rank:
            if bound == "+Inf":
                return lower
            inside = count - below
            return lower + (float(bound) - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = float(bound), count
    return lower


async def recent_percentiles(
    client: aioredis.Redis, kinds: Iterable[str], *, now: float | None = None
) -> dict[str, dict[str, dict[str, float | None]]]:
    """{kind: {phase: {count, p50, p95, p99}}} over the last hour's slices (all workers)."""
    kinds = list(kinds)
    current = int((time.time() if now is None else now) // SLICE_S)
    slices = range(current - WINDOW_S // SLICE_S, current + 1)
    async with client.pipeline(transaction=False) as pipe:
        for kind in kinds:
            for phase in PHASES:
                for slice_no in slices:
                    pipe.hgetall(_slice_key(kind, phase, slice_no))
        replies = iter(await pipe.execute())
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for kind in kinds:
        out[kind] = {}
        for phase in PHASES:
            merged: dict[str, float] = {}
            for _ in slices:
                for bound, count in next(replies).items():
                    merged[bound] = merged.get(bound, 0.0) + float(count)
            buckets = _cumulative(merged)
            out[kind][phase] = {
                "count": buckets[-1][1],
                **{f"p{round(q * 100)}": quantile(q, buckets) for q in (0.5, 0.95, 0.99)},
            }
    return out
