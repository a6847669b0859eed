"""The tutor's handler (worker side): the prompt from the conversation, the model's answer streamed, the answer kept."""

import functools
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Connection

from app.chat import builtin_tutor, repository
from app.chat.keys import TOKENS_KEY
from app.chat.llm import ChatMessages, ChatProvider, OfflineProvider, OpenAICompatibleProvider
from app.chat.prompt import build_prompt, choose_model
from app.chat.repository import Turn
from app.chat.schemas import ChatRequest
from app.core.config import Settings
from app.exercises.repository import all_exercises
from app.exercises.schemas import Exercise
from app.models import ChatRole
from app.tasks.contract import HandlerResources, Job, Outcome
from app.tasks.retry import RetryPolicy, call_with_retries

logger = logging.getLogger(__name__)


def create_provider(settings: Settings) -> ChatProvider | OfflineProvider:
    """The configured OpenAI-compatible model, or the built-in tutor when none is."""
    if settings.llm_base_url:
        return OpenAICompatibleProvider(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            connect_timeout_s=settings.llm_connect_timeout_s,
            read_timeout_s=settings.llm_read_timeout_s,
            max_connections=settings.chat_concurrency,
        )
    logger.warning("no language model configured (LLM_BASE_URL is empty): the built-in tutor answers")
    return OfflineProvider(delay_ms=settings.llm_offline_delay_ms)


class ChatAnswerer:
    """Answers learner questions; one per worker process, sharing one LLM connection pool."""

    def __init__(self, resources: HandlerResources):
        self._settings = resources.settings
        self._provider = create_provider(resources.settings)
        self._retry = RetryPolicy(
            self._settings.task_retry_attempts,
            self._settings.task_retry_base_delay_s,
            self._settings.task_retry_max_delay_s,
        )

    def prepare(self, connection: Connection, task_id: uuid.UUID, participant_id: uuid.UUID) -> list[Turn]:
        """The conversation so far (read in the runner's claim transaction)."""
        return repository.turns_before_task(connection, participant_id, task_id, self._settings.chat_history_turns)

    async def __call__(self, job: Job[ChatRequest]) -> Outcome:
        """Stream the answer to the learner; the Outcome stores it with the prompt it came from."""
        settings = self._settings
        prompt = self._prompt_for(job)
        model = "offline" if isinstance(self._provider, OfflineProvider) else self._model_for(prompt)
        usage: dict[str, Any] = {}

        async def stream_once(attempt: int) -> list[str]:
            if attempt > 1 or job.resumed:
                # A try (or an earlier execution) broke off mid-answer: the client drops what it showed.
                job.report.reset()
            usage.clear()
            pieces: list[str] = []
            async for piece in self._pieces(job, prompt, model, usage):
                pieces.append(piece)
                job.report.delta(piece)
            return pieces

        pieces = await call_with_retries(
            stream_once, self._retry, on_retry=job.report.retrying, exhausted_code="llm_unavailable"
        )
        answer = "".join(pieces)
        result = {
            "message": answer,
            "model": model,
            "usage": usage or None,
            "raw_prompt_to_llm": prompt if settings.chat_expose_prompt else None,
        }
        tokens = {
            f"{model}:{kind}": usage[kind]
            for kind in ("prompt_tokens", "completion_tokens")
            if isinstance(usage.get(kind), int)
        }
        return Outcome(
            result=result,
            persist=functools.partial(_store_answer, job=job, answer=answer, model=model, usage=usage, prompt=prompt),
            tallies={TOKENS_KEY: tokens} if tokens else {},
        )

    async def aclose(self) -> None:
        """Close the LLM connection pool."""
        if isinstance(self._provider, OpenAICompatibleProvider):
            await self._provider.aclose()

    def _pieces(
        self, job: Job[ChatRequest], prompt: ChatMessages, model: str, usage: dict[str, Any]
    ) -> AsyncIterator[str]:
        if isinstance(self._provider, OfflineProvider):
            context = builtin_tutor.context_for(job.input.model_dump(mode="json"), _exercise_of(job), job.prepared)
            return self._provider.stream_text(builtin_tutor.compose_reply(context))
        return self._provider.stream(prompt, model=model, usage=usage)

    def _prompt_for(self, job: Job[ChatRequest]) -> ChatMessages:
        turns: list[Turn] = job.prepared
        return build_prompt(
            job.input.model_dump(mode="json"), turns, _exercise_of(job), history_chars=self._settings.chat_history_chars
        )

    def _model_for(self, prompt: ChatMessages) -> str:
        settings = self._settings
        return choose_model(
            prompt,
            threshold_chars=settings.llm_routing_threshold_chars,
            fast=settings.llm_model_fast,
            strong=settings.llm_model_strong,
        )


def _exercise_of(job: Job[ChatRequest]) -> Exercise | None:
    """The exercise a question in test mode is about."""
    request = job.input
    return all_exercises().get(str(request.content_id)) if request.mode == "test" else None


def _store_answer(
    connection: Connection,
    *,
    job: Job[ChatRequest],
    answer: str,
    model: str,
    usage: dict[str, Any],
    prompt: ChatMessages,
) -> None:
    repository.add_message(
        connection,
        job.participant_id,
        job.task_id,
        ChatRole.ASSISTANT,
        answer,
        model=model,
        usage=usage or None,
        raw_prompt_to_llm=prompt,
    )
