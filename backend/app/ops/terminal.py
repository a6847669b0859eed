"""`taskwire status`: the ops overview, read from the database and Redis, printed for a terminal."""

import time
from datetime import UTC, datetime

from app.ops.schemas import Overview


def _ago(epoch: float | None, now: float) -> str:
    if epoch is None:
        return "-"
    seconds = max(now - epoch, 0.0)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def render(overview: Overview) -> str:
    """The overview as plain text: one section per ops page panel."""
    now = time.time()
    out = [f"Taskwire status at {datetime.fromtimestamp(overview.generated_at, UTC):%Y-%m-%d %H:%M:%S} UTC", ""]
    out.append("Task kinds")
    for name, health in overview.kinds.items():
        state = "available" if health.available else f"UNAVAILABLE: {health.reason}"
        out.append(f"  {name:<12} {state}; {health.workers} worker(s), {health.running} running, {health.slots} slots")
    out.append("Queues")
    for queue in overview.queues:
        out.append(f"  {queue.queue:<12} {queue.backlog} waiting, oldest {_ago(queue.oldest_enqueued_at, now)}")
    out.append(f"Workers ({len(overview.workers)} alive)")
    for worker in overview.workers:
        busy = ", ".join(f"{k} {v['running']}/{v['slots']}" for k, v in worker.get("kinds", {}).items())
        queues, seen = ",".join(worker.get("queues", [])), _ago(worker["last_seen"], now)
        out.append(f"  {worker['id']:<28} {queues}: {busy}; seen {seen} ago")
    out.append(f"API replicas ({len(overview.replicas)} alive)")
    for replica in overview.replicas:
        bus = "bus ok" if replica.get("bus_connected") else "BUS DOWN"
        out.append(
            f"  {replica['id']:<28} {replica.get('sockets', 0)} sockets, {replica.get('users', 0)} users, {bus}, "
            f"{replica.get('bus_reconnects', 0)} reconnects"
        )
    out.append("Last hour")
    for kind, states in overview.tasks_last_hour.items():
        counts = ", ".join(f"{state} {count}" for state, count in sorted(states.items())) or "none"
        first, result = overview.latency[kind]["first"], overview.latency[kind]["result"]
        out.append(
            f"  {kind:<12} {counts}; first message p50 {_ms(first['p50'])} p95 {_ms(first['p95'])}, "
            f"result p50 {_ms(result['p50'])} p95 {_ms(result['p95'])}"
        )
    out.append(f"Latest failures ({len(overview.failures)})")
    for task in overview.failures[:10]:
        code = (task.error or {}).get("code", "?")
        when = task.finished_at or task.created_at
        out.append(f"  {when:%H:%M:%S}  {task.kind:<10} {code:<22} {task.username}  {task.task_id}")
    return "\n".join(out)
