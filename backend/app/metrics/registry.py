"""This replica's Prometheus metrics (one registry per process; no FastAPI imports)."""

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

registry = CollectorRegistry()


def total_of(counter: Counter) -> int:
    """An unlabelled counter's value, read from that counter alone (the registry's
    get_sample_value would collect everything, the process collector's /proc reads included)."""
    (family,) = counter.collect()
    return int(next(s.value for s in family.samples if s.name.endswith("_total")))


# The process (CPU, memory, open files), the Python runtime and its collector, as every exporter has.
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    registry.register(_collector)

ws_connections = Gauge("taskwire_ws_connections", "Open WebSocket connections on this replica", registry=registry)
ws_delivered = Counter(
    "taskwire_ws_messages_delivered_total", "Envelopes queued for a socket on this replica", registry=registry
)
ws_dropped = Counter(
    "taskwire_ws_messages_dropped_total",
    "Envelopes not queued because the socket was too slow (it is closed with 4408 and resumes)",
    registry=registry,
)
ws_replayed = Counter(
    "taskwire_ws_messages_replayed_total", "Envelopes sent from history (resume, catch-up)", registry=registry
)
bus_reconnects = Counter(
    "taskwire_bus_reconnects_total", "Times this replica's bus listener reconnected", registry=registry
)
bus_connected = Gauge("taskwire_bus_connected", "1 while the bus listener hears its canary", registry=registry)
bus_received = Counter(
    "taskwire_bus_messages_received_total",
    "Pub/sub messages this replica's listener received (its users' envelopes and its canary)",
    registry=registry,
)
bus_lag = Histogram(
    "taskwire_bus_lag_seconds",
    "From an envelope's publication to its dispatch on this replica: the first envelope of each read",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=registry,
)
http_latency = Histogram(
    "taskwire_http_request_duration_seconds",
    "HTTP request latency by route and status",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=registry,
)
submits_shed = Counter(
    "taskwire_submits_shed_total",
    "Submits refused with 503 overloaded because their queue held QUEUE_MAX_BACKLOG tasks",
    ["kind"],
    registry=registry,
)
tasks_submitted = Counter(
    "taskwire_tasks_submitted_total",
    "Tasks accepted by this replica (a repeated Idempotency-Key is not)",
    ["kind"],
    registry=registry,
)
