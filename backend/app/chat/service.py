"""Chat: accepting a learner's message (API side) and streaming the tutor's reply (worker side)."""

import asyncio
import logging
import time
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.chat import repository
from app.chat.llm import ChatMessages
from app.chat.metrics import count_tokens
from app.chat.prompt import build_prompt, choose_model
from app.chat.schemas import ChatHistoryPage, ChatMessageOut, ChatRequest
from app.exercises.repository import all_exercises
from app.models import ChatRole, TaskKind, TaskState
from app.realtime.envelopes import EnvelopeType
from app.tasks import service as tasks_service
from app.tasks.dispatch import TaskDispatcher
from app.worker.progress import TaskRun, execute
from app.worker.resources import WorkerResources
from app.worker.retry import call_with_retries

logger = logging.getLogger(__name__)


async def submit(
    session: AsyncSession,
    participant_id: uuid.UUID,
    request: ChatRequest,
    dispatcher: TaskDispatcher,
    *,
    idempotency_key: str | None = None,
) -> uuid.UUID:
    """Store the learner's message and its task, commit, then enqueue the reply; returns the task id."""

    def store_question(session: Session, task_id: uuid.UUID) -> None:
        repository.add_message(session, participant_id, task_id, ChatRole.USER, request.message)

    return await tasks_service.accept(
        session,
        dispatcher,
        participant_id,
        TaskKind.CHAT,
        request,
        idempotency_key=idempotency_key,
        also_write=store_question,
    )


async def history(
    session: AsyncSession, participant_id: uuid.UUID, *, before_id: int | None, limit: int
) -> ChatHistoryPage:
    """A page of the caller's conversation, oldest first."""
    messages = await session.run_sync(repository.page, participant_id, before_id, limit)
    out = [
        ChatMessageOut(
            id=m.id,
            role=m.role,
            content=m.content,
            model=m.model,
            task_id=str(m.task_id) if m.task_id else None,
            created_at=m.created_at,
        )
        for m in messages
    ]
    return ChatHistoryPage(messages=out, next_before=out[0].id if len(out) == limit else None)


async def reply(resources: WorkerResources, task_id: uuid.UUID) -> None:
    """Stream the tutor's answer for one chat task to the learner, then store and publish the result."""
    await execute(resources, task_id, lambda run: _stream_answer(resources, run), result_type=EnvelopeType.CHAT_RESULT)


def _prompt_for(resources: WorkerResources, run: TaskRun) -> ChatMessages:
    settings = resources.settings
    request = run.task.input
    with resources.sessions() as session:
        turns = repository.turns_before_task(
            session, run.task.participant_id, run.task.task_id, settings.chat_history_turns
        )
    exercise = all_exercises().get(str(request.get("content_id"))) if request.get("mode") == "test" else None
    return build_prompt(request, turns, exercise, history_chars=settings.chat_history_chars)


async def _stream_answer(resources: WorkerResources, run: TaskRun) -> None:
    settings = resources.settings
    provider = resources.chat_provider
    prompt = _prompt_for(resources, run)
    model = (
        "offline"
        if provider.offline
        else choose_model(
            prompt,
            threshold_chars=settings.llm_routing_threshold_chars,
            fast=settings.llm_model_fast,
            strong=settings.llm_model_strong,
        )
    )
    usage: dict[str, Any] = {}

    async def stream_once(attempt: int) -> list[str]:
        if attempt > 1 or run.resumed:
            # A try (or an earlier execution) broke off mid-answer: the client drops what it showed.
            run.publish(EnvelopeType.CHAT_DELTA, {"delta": "", "reset": True})
        usage.clear()
        pieces: list[str] = []
        pending: list[str] = []
        last_flush = time.monotonic()
        async for piece in provider.stream(prompt, model=model, usage=usage):
            pieces.append(piece)
            pending.append(piece)
            # Coalesce: at most one envelope per CHAT_DELTA_INTERVAL_MS, whatever the model's pace.
            if (time.monotonic() - last_flush) * 1000 >= settings.chat_delta_interval_ms:
                run.publish(EnvelopeType.CHAT_DELTA, {"delta": "".join(pending)})
                pending.clear()
                last_flush = time.monotonic()
        if pending:
            run.publish(EnvelopeType.CHAT_DELTA, {"delta": "".join(pending)})
        return pieces

    try:
        async with asyncio.timeout(settings.chat_soft_time_limit_s):
            pieces = await call_with_retries(
                stream_once, run.retry_policy, on_retry=run.announce_retry, exhausted_code="llm_unavailable"
            )
    except TimeoutError:
        logger.warning("chat reply timed out")
        error = {"code": "timeout", "message": "the tutor took too long to answer; please try again"}
        run.finish(EnvelopeType.CHAT_RESULT, TaskState.FAILURE, {}, error=error)
        return

    answer = "".join(pieces)
    result = {
        "message": answer,
        "model": model,
        "usage": usage or None,
        "raw_prompt_to_llm": prompt if settings.chat_expose_prompt else None,
    }

    def store_answer(session: Session) -> None:
        repository.add_message(
            session,
            run.task.participant_id,
            run.task.task_id,
            ChatRole.ASSISTANT,
            answer,
            model=model,
            usage=usage or None,
            raw_prompt_to_llm=prompt,
        )

    if run.finish(EnvelopeType.CHAT_RESULT, TaskState.SUCCESS, result, also_write=store_answer):
        count_tokens(resources, model, usage)
