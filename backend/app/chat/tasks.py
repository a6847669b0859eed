"""The tutor's task kind: one learner question, answered by the LLM and streamed token by token."""

from typing import Any

from app.chat.schemas import ChatRequest
from app.core.config import Settings
from app.realtime.envelopes import EnvelopeType
from app.tasks.registry import KindLimits, TaskKindSpec


def _describe(task_input: dict[str, Any]) -> str:
    message = " ".join(str(task_input["message"]).split())
    return f"Asked: {message[:60]}…" if len(message) > 60 else f"Asked: {message}"


def _limits(settings: Settings) -> KindLimits:
    # An answer waits on the model, not the CPU: hundreds run at once in one worker process.
    return KindLimits(
        concurrency=settings.chat_concurrency,
        soft_time_limit_s=settings.chat_soft_time_limit_s,
        hard_time_limit_s=settings.chat_time_limit_s,
    )


CHAT = TaskKindSpec(
    name="chat",
    task_name="chat.reply",
    queue="chat",
    input_model=ChatRequest,
    result_type=EnvelopeType.CHAT_RESULT,
    delta_type=EnvelopeType.CHAT_DELTA,
    handler="app.chat.handler:ChatAnswerer",
    limits=_limits,
    timeout_message="the tutor took too long to answer; please try again",
    describe=_describe,
)
