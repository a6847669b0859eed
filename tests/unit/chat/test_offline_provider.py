from app.chat.llm import OfflineProvider
from app.chat.prompt import build_prompt


def _prompt(message: str) -> list[dict[str, str]]:
    return build_prompt({"message": message}, [], None, history_chars=1000)


async def test_offline_reply_streams_in_pieces_that_add_up_to_the_reply() -> None:
    provider = OfflineProvider(delay_ms=0)
    messages = _prompt("How do I   centre a div?\n")
    pieces = [piece async for piece in provider.stream(messages, model="offline", usage={})]
    reply = provider.reply_text(messages)
    assert len(pieces) > 10
    assert "".join(pieces) == reply
    assert reply.startswith("[Offline tutor")
    assert "How do I centre a div?" in reply
    assert reply == provider.reply_text(messages), "the offline reply is deterministic"


async def test_long_questions_are_shortened_in_the_reply() -> None:
    provider = OfflineProvider(delay_ms=0)
    reply = provider.reply_text(_prompt("x" * 5000))
    assert "x" * 199 + "…" in reply and "x" * 201 not in reply
