"""kombu's Redis transport, made to survive a Redis restart with acknowledgements pending.

When the broker connection drops, Celery restarts its consumer: the old channel is closed and
its transport forgets its connection, and then the acknowledgements that were still pending
(tasks that finished as Redis went away) run on that closed channel. kombu 5.x then fails with
`'NoneType' object has no attribute 'hostname'`, an error it does not know as a connection
error, and the whole worker process exits. Here a closed channel says so with a Redis
ConnectionError instead, which kombu's acknowledgement path already logs and survives. The
message stays unacknowledged and is delivered again; the runner finds its task finished
(write-once terminal state) and acknowledges it then: nothing runs twice.
"""

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    """A Redis channel that refuses work once its connection is gone, with an error kombu handles."""

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if getattr(self.connection, "client", None) is None:
            raise RedisConnectionError("the broker channel was closed; the message will be delivered again")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        return params


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with that channel."""

    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
