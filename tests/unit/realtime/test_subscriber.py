"""The subscribe connection's reading of Redis's replies, fed bytes as a socket would (no network)."""

import asyncio

from app.realtime.subscriber import SubscriberLost, _SubscriberProtocol, pack


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def _push(*parts: str) -> bytes:
    return pack(parts)  # a push is an array of bulk strings, like a command


def _protocol(replies: list[list[object]]) -> tuple[_SubscriberProtocol, _Transport]:
    protocol = _SubscriberProtocol(replies.extend)
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


async def test_every_reply_in_a_read_is_handed_on_in_order_however_the_bytes_are_split() -> None:
    stream = b"".join(
        [
            _push("subscribe", "ws:user:{a}", "1"),
            *(_push("message", "ws:user:{a}", f'{{"id":"{i}-0","text":"é{i}"}}') for i in range(50)),
            _push("smessage", "ws:user:{b}", "last"),
        ]
    )
    for chunk_size in (1, 7, 64, len(stream)):
        replies: list[list[object]] = []
        protocol, _ = _protocol(replies)
        for start in range(0, len(stream), chunk_size):
            protocol.data_received(stream[start : start + chunk_size])
        assert replies[0] == ["subscribe", "ws:user:{a}", "1"]
        assert [reply[2] for reply in replies[1:51]] == [f'{{"id":"{i}-0","text":"é{i}"}}' for i in range(50)]
        assert replies[51] == ["smessage", "ws:user:{b}", "last"]
        assert not protocol.lost.done()


async def test_the_pushes_of_one_read_are_handed_on_in_one_call() -> None:
    reads: list[list[list[object]]] = []
    protocol = _SubscriberProtocol(reads.append)
    protocol.connection_made(_Transport())  # type: ignore[arg-type]
    protocol.data_received(_push("message", "c", "1") + _push("message", "c", "2") + b"*3\r\n$7\r\nmess")
    protocol.data_received(b"age\r\n$1\r\nc\r\n$1\r\n3\r\n")
    protocol.data_received(b"*3\r\n")  # nothing whole yet: no call
    assert reads == [[["message", "c", "1"], ["message", "c", "2"]], [["message", "c", "3"]]]


async def test_bytes_that_are_not_utf8_are_replaced_and_the_connection_carries_on() -> None:
    replies: list[list[object]] = []
    protocol, _ = _protocol(replies)
    protocol.data_received(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\n\xff\xfe\r\n" + _push("message", "c", "fine"))
    assert replies == [["message", "c", "\ufffd\ufffd"], ["message", "c", "fine"]]
    assert not protocol.lost.done()


async def test_a_refused_command_ends_the_connection_with_the_reason() -> None:
    protocol, transport = _protocol([])
    protocol.data_received(b"-ERR only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed\r\n")
    reason = await asyncio.wait_for(protocol.lost, 1)
    assert isinstance(reason, SubscriberLost) and "refused" in str(reason) and "SUBSCRIBE" in str(reason)
    assert transport.closed


async def test_garbage_on_the_wire_ends_the_connection_instead_of_raising_into_the_loop() -> None:
    protocol, transport = _protocol([])
    protocol.data_received(b"?this is not RESP\r\n")
    assert isinstance(await asyncio.wait_for(protocol.lost, 1), SubscriberLost)
    assert transport.closed


async def test_a_handler_that_fails_ends_the_connection_so_the_listener_starts_over() -> None:
    def broken(_reply: list[object]) -> None:
        raise KeyError("bug")

    protocol = _SubscriberProtocol(broken)
    protocol.connection_made(_Transport())  # type: ignore[arg-type]
    protocol.data_received(_push("message", "c", "x"))
    assert "KeyError" in str(await asyncio.wait_for(protocol.lost, 1))


async def test_a_lost_connection_fails_waiting_requests_and_refuses_new_writes() -> None:
    protocol, transport = _protocol([])
    auth = protocol.request("AUTH", "secret")
    assert transport.written == [b"*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n"]
    protocol.connection_lost(ConnectionResetError("reset by peer"))
    reason = await asyncio.wait_for(protocol.lost, 1)
    assert "reset by peer" in str(reason)
    assert auth.done() and isinstance(auth.exception(), SubscriberLost)
    try:
        protocol.write("SUBSCRIBE", "c")
    except SubscriberLost:
        pass
    else:
        raise AssertionError("a write after the loss must raise")
    assert len(transport.written) == 1


def test_commands_are_packed_as_resp_arrays_of_bulk_strings() -> None:
    assert pack(("SUBSCRIBE", "ws:user:{é}")) == b"*2\r\n$9\r\nSUBSCRIBE\r\n$12\r\nws:user:{\xc3\xa9}\r\n"
