"""kombu's Redis transport with its broadcasts on SUBSCRIBE: no pattern subscription on the broker.

kombu delivers fanout messages (Celery's remote control: revoke, ping) over Redis pub/sub and
subscribes with PSUBSCRIBE, although the topics it subscribes to are exact names, the same the
publisher writes to. Every PUBLISH on a Redis is matched against every pattern subscription on
it, and in the default deployment the broker is also the bus that carries every envelope.
Subscribing to the same names with SUBSCRIBE delivers the same messages (kombu reads `message`
pushes as well as `pmessage`) and leaves `PUBSUB NUMPAT` at 0. The subscription itself stays:
it is how a busy worker notices a restarted Redis (d648e41).
"""

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, subscribing to its fanout topics by name."""

    def _subscribe(self) -> None:
        keys = [topic for queue in self.active_fanout_queues for topic in self._topics(queue)]
        if not keys:
            return
        client = self.subclient
        if client.connection._sock is None:
            client.connection.connect()
        self._in_listen = client.connection
        client.subscribe(keys)

    def _unsubscribe_from(self, queue: Any) -> None:
        topics = self._topics(queue)
        client = self.subclient
        if client.connection and client.connection._sock:
            client.unsubscribe(topics)

    def _topics(self, queue: Any) -> list[str]:
        return list(self._get_subscribe_topics(queue))  # type: ignore[no-untyped-call]  # kombu is untyped


class Transport(kombu_redis.Transport):
    """`broker_transport` for a `redis://` or `rediss://` broker."""

    Channel = Channel
