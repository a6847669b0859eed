"""The one definition of the wire format, shared by the worker-side publisher and the API side.

No FastAPI or Celery imports here: both sides and the tests depend on this module alone.
An envelope is encoded in two steps because its `id` is the Redis stream id, known only once
the history entry is written: `encode_body` makes the JSON without `id`, and `attach_id`
(or the identical splice in the publisher's Lua script) puts `"id"` first.
"""

import json
import re
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

ENVELOPE_VERSION = 1


class EnvelopeType(StrEnum):
    """Messages stored in a user's history and pushed to the browser."""

    TASK_STATUS = "task_status"
    CHAT_DELTA = "chat_delta"
    CHAT_RESULT = "chat_result"
    SUBMISSION_PROGRESS = "submission_progress"
    SUBMISSION_RESULT = "submission_result"
    OPS_OVERVIEW = "ops_overview"  # the ops page's figures, to operators only (app/ops/broadcaster.py)


class ControlType(StrEnum):
    """Frames that belong to one connection and are never stored in history."""

    HELLO = "hello"
    PING = "ping"
    PONG = "pong"
    AUTH = "auth"
    RESUME = "resume"
    ERROR = "error"


class CloseCode:
    """WebSocket close codes Taskwire uses (documented in docs/protocol.md)."""

    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013  # Redis failed while the socket's stream was being opened
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    IDLE_TIMEOUT = 4000  # the client stayed silent past WS_IDLE_TIMEOUT_S
    BAD_REQUEST = 4400  # the connection request itself was malformed (e.g. last_id)
    SLOW_CONSUMER = 4408
    TOO_MANY_SOCKETS = 4429  # the user opened more than WS_MAX_SOCKETS_PER_USER here; the oldest goes


def user_tag(participant_id: str) -> str:
    """The hash tag every Redis key of one user carries (history, channel, their tasks' leases):
    on a Redis Cluster they all live in one slot, so one script can touch them together."""
    return "{" + participant_id + "}"


def history_key(participant_id: str) -> str:
    """The Redis stream holding one user's ordered message history."""
    return f"ws:history:{user_tag(participant_id)}"


def user_channel(participant_id: str) -> str:
    """The pub/sub channel of one user's live messages."""
    return f"ws:user:{user_tag(participant_id)}"


_CHANNEL_PREFIX = "ws:user:{"


def participant_from_channel(channel: str) -> str | None:
    """The participant id a `ws:user:{<id>}` channel belongs to, or None for any other channel."""
    if not channel.startswith(_CHANNEL_PREFIX) or not channel.endswith("}") or len(channel) == len(_CHANNEL_PREFIX) + 1:
        return None
    return channel[len(_CHANNEL_PREFIX) : -1]


def utc_timestamp() -> str:
    """Now, as the envelope's ISO 8601 UTC timestamp with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_body(
    envelope_type: EnvelopeType,
    task_id: str,
    data: dict[str, Any],
    error: dict[str, str] | None = None,
    *,
    timestamp: str | None = None,
) -> str:
    """The envelope as compact JSON without its `id`, ready for `attach_id` (stamped now, unless given)."""
    body = {
        "v": ENVELOPE_VERSION,
        "type": str(envelope_type),
        "task_id": task_id,
        "timestamp": timestamp or utc_timestamp(),
        "data": data,
        "error": error,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def attach_id(body: str, envelope_id: str) -> str:
    """The complete envelope text: `body` with `"id"` spliced in as its first member."""
    return '{"id":"' + envelope_id + '",' + body[1:]


def stream_id_key(envelope_id: str) -> tuple[int, int]:
    """A sortable key for a Redis stream id `<ms>-<seq>`; raises ValueError when malformed."""
    ms, _, seq = envelope_id.partition("-")
    return int(ms), int(seq or 0)


def id_ahead(after: str | None, *, headroom_ms: int, leave: int = 0) -> str:
    """A stream id to ask the publisher for: `headroom_ms` ahead of the clock, and after `after`
    with room for `leave` ids in between (envelopes published just before it).

    A publisher that must record an envelope's id before publishing it (the terminal state is
    committed first, SPEC §5.6) asks for such an id; the history accepts it unless something
    newer reached the stream meanwhile, which the headroom makes rare (the publisher then takes
    the next free id). Ids order a user's history; they are not read as times.
    """
    ms = int(time.time() * 1000) + headroom_ms
    if after is not None:
        after_ms, after_seq = stream_id_key(after)
        if after_ms >= ms:
            return f"{after_ms}-{after_seq + 1 + leave}"
    return f"{ms}-0"


# What Redis itself accepts: ASCII digits, each part within 64 bits. Python's int() also takes
# "1_0", "١٢" and numbers of any size, which Redis then refuses mid-resume.
_STREAM_ID = re.compile(r"[0-9]{1,20}(?:-[0-9]{1,20})?", re.ASCII)
_MAX_PART = 2**64 - 1


def parse_stream_id(value: object) -> tuple[int, int] | None:
    """`stream_id_key` of a well-formed Redis stream id; None for anything else."""
    if not isinstance(value, str) or _STREAM_ID.fullmatch(value) is None:
        return None
    key = stream_id_key(value)
    # The very last id is refused too: nothing can come after it, and Redis says so as an error.
    return key if key[0] <= _MAX_PART and key[1] <= _MAX_PART and key != (_MAX_PART, _MAX_PART) else None


def is_stream_id(value: object) -> bool:
    """Whether `value` is a well-formed Redis stream id."""
    return parse_stream_id(value) is not None


def control_frame(frame_type: ControlType, data: dict[str, Any] | None = None) -> str:
    """A control frame (`hello`, `ping`, `error`): same outer shape, no `id`, never stored."""
    frame = {"v": ENVELOPE_VERSION, "type": str(frame_type), "timestamp": utc_timestamp(), "data": data or {}}
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
