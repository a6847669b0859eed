import json

import pytest

from app.realtime.envelopes import (
    ControlType,
    EnvelopeType,
    attach_id,
    control_frame,
    encode_body,
    history_key,
    is_stream_id,
    participant_from_channel,
    stream_id_key,
    user_channel,
)


def test_attach_id_puts_the_stream_id_into_the_encoded_body() -> None:
    body = encode_body(EnvelopeType.CHAT_DELTA, "task-1", {"delta": 'héllo "quoted"'})
    envelope = json.loads(attach_id(body, "1700000000000-3"))
    assert envelope["id"] == "1700000000000-3"
    assert envelope["v"] == 1 and envelope["type"] == "chat_delta" and envelope["task_id"] == "task-1"
    assert envelope["data"] == {"delta": 'héllo "quoted"'} and envelope["error"] is None
    assert envelope["timestamp"].endswith("Z")
    assert "id" not in json.loads(body)


def test_the_publisher_script_splices_the_id_exactly_like_attach_id() -> None:
    from app.realtime.publisher import _PUBLISH_SCRIPT

    # The Lua splice and attach_id must agree byte for byte, or live and replayed copies would differ.
    assert "'{\"id\":\"' .. id .. '\",' .. string.sub(ARGV[1], 2)" in _PUBLISH_SCRIPT
    assert attach_id('{"v":1}', "1-0") == '{"id":"1-0",' + '{"v":1}'[1:]


def test_stream_ids_order_numerically_not_lexically() -> None:
    assert stream_id_key("999-0") < stream_id_key("1000-0")
    assert stream_id_key("1000-2") < stream_id_key("1000-10")
    assert is_stream_id("1700000000000-0") and is_stream_id("5")
    for bad in ("", "abc", "1-x", None, 12, "1-2-3", "9" * 60):
        assert not is_stream_id(bad)


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        (user_channel("abc"), "abc"),
        ("ws:user:{}", None),
        ("ws:user:abc", None),
        ("other:{abc}", None),
        (history_key("abc"), None),
    ],
)
def test_participant_from_channel(channel: str, expected: str | None) -> None:
    assert participant_from_channel(channel) == expected


def test_control_frames_have_no_id() -> None:
    frame = json.loads(control_frame(ControlType.HELLO, {"recovered": True}))
    assert frame["type"] == "hello" and frame["data"] == {"recovered": True} and "id" not in frame
