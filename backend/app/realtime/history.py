"""Reading a user's message history back from its Redis stream, for resume, a page at a time.

A replay can be a whole history (a thousand envelopes, megabytes): it is read page by page as
the socket takes it (manager.py), so a client that stops reading holds one page, not all of it.
"""

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
    """What a connecting client is owed from history: its first page, and how many in all."""

    entries: list[HistoryEntry] = field(default_factory=list)
    recovered: bool = True
    head_id: str | None = None
    # Entries owed in all (after `last_id`, up to `head_id`), this page's and the pages after it.
    count: int = 0

    @property
    def more(self) -> bool:
        """Whether pages follow this one (up to `head_id`)."""
        return len(self.entries) < self.count


async def head_id(client: aioredis.Redis, participant_id: str) -> str | None:
    """The newest id in the user's history, or None when it is empty."""
    newest = await client.xrevrange(history_key(participant_id), count=1)
    return str(newest[0][0]) if newest else None


# How many entries follow an id, up to another, counted in Redis a page at a time (so the
# count never holds the whole range in the server's memory either).
_COUNT_BETWEEN = """
local n, after = 0, ARGV[1]
while true do
  local page = redis.call('XRANGE', KEYS[1], '(' .. after, ARGV[2], 'COUNT', 500)
  n = n + #page
  if #page < 500 then return n end
  after = page[#page][1]
end
"""


async def read_after(
    client: aioredis.Redis, participant_id: str, last_id: str, *, limit: int, maxlen: int | None = None
) -> Replay:
    """The first `limit` retained envelopes after `last_id`, oldest first, how many there are in all,
    and whether nothing in between was lost.

    `maxlen` is the publisher's `MAXLEN ~`: a stream shorter than it was never trimmed.
    """
    key = history_key(participant_id)
    try:
        info: dict[str, Any] = await client.xinfo_stream(key)
    except ResponseError:
        # Never written, or expired after HISTORY_TTL_S without a message: nothing to replay. From
        # a real id that is no proof nothing was lost; from 0-0 ("all you have", a new client)
        # there is nothing it could have missed that is younger than the TTL.
        return Replay(recovered=stream_id_key(last_id) == (0, 0))
    last_entry = info.get("last-entry")
    head = str(last_entry[0]) if last_entry else None
    recovered = _nothing_lost_after(last_id, info, maxlen)
    if head is None or stream_id_key(head) <= stream_id_key(last_id):
        return Replay([], recovered, head)
    entries = await read_page(client, participant_id, last_id, head, limit=limit)
    count = len(entries)
    if count == limit:
        count = int(await client.eval(_COUNT_BETWEEN, 1, key, last_id, head))
    return Replay(entries, recovered, head, count)


async def read_page(
    client: aioredis.Redis, participant_id: str, after_id: str, until_id: str, *, limit: int
) -> list[HistoryEntry]:
    """Up to `limit` envelopes after `after_id`, up to and with `until_id`, oldest first."""
    # decode_responses=True on the shared pool: ids and fields are str.
    after = cast(
        list[tuple[str, dict[str, str]]],
        await client.xrange(history_key(participant_id), min=f"({after_id}", max=until_id, count=limit),
    )
    return [HistoryEntry(str(entry_id), attach_id(fields["e"], str(entry_id))) for entry_id, fields in after]


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
