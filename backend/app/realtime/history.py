"""Reading a user's message history back from its Redis stream, for resume."""

from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from app.realtime.envelopes import attach_id, history_key, stream_id_key


@dataclass(frozen=True)
class HistoryEntry:
    """One stored envelope: its id and complete JSON text."""

    id: str
    text: str


@dataclass
class Replay:
    """What a connecting client is owed from history."""

    entries: list[HistoryEntry] = field(default_factory=list)
    recovered: bool = True
    head_id: str | None = None


async def head_id(client: aioredis.Redis, participant_id: str) -> str | None:
    """The newest id in the user's history, or None when it is empty."""
    newest = await client.xrevrange(history_key(participant_id), count=1)
    return str(newest[0][0]) if newest else None


async def read_after(
    client: aioredis.Redis, participant_id: str, last_id: str, *, limit: int, maxlen: int | None = None
) -> Replay:
    """Every retained envelope after `last_id`, oldest first, and whether nothing in between was lost.

    `maxlen` is the publisher's `MAXLEN ~`: a stream shorter than it was never trimmed.
    """
    key = history_key(participant_id)
    try:
        info: dict[str, Any] = await client.xinfo_stream(key)
    except ResponseError:
        # Expired or never written: nothing to replay, and no proof that nothing was lost.
        return Replay(recovered=False)
    # decode_responses=True on the shared pool: ids and fields are str.
    after = cast(list[tuple[str, dict[str, str]]], await client.xrange(key, min=f"({last_id}", count=limit))
    entries = [HistoryEntry(str(entry_id), attach_id(fields["e"], str(entry_id))) for entry_id, fields in after]
    last_entry = info.get("last-entry")
    head = str(last_entry[0]) if last_entry else None
    recovered = _nothing_lost_after(last_id, info, maxlen) and len(after) < limit
    return Replay(entries, recovered, head)


def _nothing_lost_after(last_id: str, info: dict[str, Any], maxlen: int | None) -> bool:
    client_key = stream_id_key(last_id)
    deleted = info.get("max-deleted-entry-id")
    if client_key == (0, 0):
        # "Everything you have": complete only if nothing was ever trimmed. Redis 7 says so
        # directly; otherwise, approximate trimming never leaves fewer than MAXLEN entries.
        if deleted is not None:
            return bool(deleted == "0-0")
        return maxlen is not None and int(info.get("length", 0)) < maxlen
    first_entry = info.get("first-entry")
    if first_entry and client_key >= stream_id_key(str(first_entry[0])):
        return True  # the client's last message is still retained, so is everything after it
    # Redis 7 records the newest trimmed id; "0-0" means nothing was ever trimmed from this
    # stream, so a client id older than its first entry belongs to an earlier, expired stream.
    return deleted is not None and deleted != "0-0" and client_key >= stream_id_key(str(deleted))
