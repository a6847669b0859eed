"""The exact Redis list entry Celery's `send_task` would push, built without kombu's blocking I/O.

Building it here lets the API push the message with redis.asyncio, in the same MULTI/EXEC as the
record of the dispatch: one round trip on the event loop instead of a thread hop into kombu.
The headers and body come from Celery itself (`app.amqp.as_task_v2`); only kombu's Redis
envelope (base64 body, delivery info and tag) is written out here. A test compares the result
with what `send_task` really writes, so a Celery or kombu upgrade that changes it is caught.
"""

import base64
import json
import uuid
from typing import Any

from celery import Celery
from celery.utils.nodenames import anon_nodename

# kombu's "persistent" delivery mode, which Celery sets on every task message.
_PERSISTENT = 2
# Where kombu's Redis transport keeps the messages it delivered and that are not yet acknowledged
# (a hash: delivery tag → [message, exchange, routing key]) and when it delivered them (a sorted
# set: delivery tag → time). A test checks these against kombu's own names.
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
_ORIGIN = anon_nodename()


def celery_message(app: Celery, task_name: str, task_id: str, participant_id: str, queue: str) -> str:
    """The JSON a Redis-transport `send_task(task_name, args=[task_id, participant_id], task_id=task_id)`
    pushes to `queue`."""
    headers, properties, body, _sent_event = app.amqp.as_task_v2(
        task_id,
        task_name,
        args=[task_id, participant_id],
        kwargs={},
        root_id=task_id,
        origin=_ORIGIN,
        reply_to=app.thread_oid,
        ignore_result=None,  # as send_task leaves it: the task's own setting decides
    )
    payload = json.dumps(body).encode()
    properties = {
        **properties,
        "delivery_mode": _PERSISTENT,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    message = {
        "body": base64.b64encode(payload).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }
    return json.dumps(message)


def task_id_of_unacked(raw: bytes | str) -> str | None:
    """The task id of an entry of kombu's unacknowledged-message hash (None if it is not a task message)."""
    try:
        return _task_id(json.loads(raw)[0])
    except (ValueError, LookupError, TypeError):
        return None


def task_id_of_queued(raw: bytes | str) -> str | None:
    """The task id of a message waiting in a queue (None if it is not a task message)."""
    try:
        return _task_id(json.loads(raw))
    except ValueError:
        return None


def _task_id(message: Any) -> str | None:
    try:
        return str(message["headers"]["id"])
    except (KeyError, TypeError):
        return None
