"""Every Redis key of the task lifecycle, in one place: ops code reads them without the code that writes them.

Keys that name a task take its `uuid.UUID`, so every process spells a task id the same way
(the canonical lower-case, hyphenated form), whatever spelling a client used.
"""

import uuid

from app.realtime.envelopes import user_tag

# Task ids handed to the broker and not yet picked up by a worker. It lives in the broker's
# Redis, so whatever the broker loses (a restart without persistence) this loses too: a
# QUEUED task missing from it is one no worker will ever receive, and is dispatched again.
DISPATCHED_KEY = "taskwire:dispatched"
# Counters every worker adds to (tasks finished by state, failures by code, duplicate
# deliveries by reason), read by /metrics (app/metrics/shared.py).
METRICS_KEY = "taskwire:metrics"
RECONCILER_LOCK_KEY = "taskwire:reconciler:lock"


def lease_key(participant_id: str, task_id: uuid.UUID) -> str:
    """The key whose value is the fencing token of the execution that owns the task.

    A task's keys carry its user's hash tag: the publish guard checks them in the same
    script that appends to the user's history (one slot on a Redis Cluster).
    """
    return f"task:lease:{user_tag(participant_id)}:{task_id}"


def fence_key(participant_id: str, task_id: uuid.UUID) -> str:
    """The counter that hands out fencing tokens: each execution of a task gets a larger one."""
    return f"task:fence:{user_tag(participant_id)}:{task_id}"


def cancel_key(participant_id: str, task_id: uuid.UUID) -> str:
    """The key that marks a task as cancelled for its running execution."""
    return f"task:cancelled:{user_tag(participant_id)}:{task_id}"
