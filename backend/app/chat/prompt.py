"""What the tutor model is told: a Socratic system prompt, recent conversation, the learner's code."""

import json
from collections.abc import Sequence
from typing import Any, Protocol

from app.chat.llm import ChatMessages
from app.exercises.schemas import Exercise

TUTOR_SYSTEM_PROMPT = """You are a patient programming tutor for beginners learning HTML, CSS and JavaScript.
- Guide, do not solve: ask a question or give one hint that moves the learner one step forward.
  Never hand over a complete solution or rewrite their code for them.
- Be concrete: point at the part of their code or the failing check that matters, quoting at most a line or two.
- Keep answers short, friendly and encouraging.
- Answer in the language the learner writes in."""

_CONTEXT_FIELD_CHARS = 20_000


class PastTurn(Protocol):
    """An earlier message of the conversation: a stored row, or the worker's lighter tuple."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


def build_prompt(
    request: dict[str, Any],
    history: Sequence[PastTurn],
    exercise: Exercise | None,
    *,
    history_chars: int,
) -> ChatMessages:
    """The messages for one learner question: system prompt (+ exercise), recent turns, the question."""
    system = TUTOR_SYSTEM_PROMPT
    if exercise is not None:
        # The learner is being tested: describe the task and what the checks look for, never the answer.
        checks = "\n".join(f"- {c.name}: {c.feedback}" for c in exercise.checkpoints)
        system += (
            f'\n\nThe learner is working on the exercise "{exercise.title}":\n{exercise.description_md}\n'
            f"Its checks, with the hint shown when one fails:\n{checks}\n"
            "Do not write the solution for them."
        )
    messages: ChatMessages = [{"role": "system", "content": system}]
    messages += _recent_turns(history, history_chars)
    messages.append({"role": "user", "content": _question_with_context(request)})
    return messages


def routing_size(messages: ChatMessages) -> int:
    """How much the model must read for this question: the question with its code and results."""
    return len(messages[-1]["content"])


def choose_model(messages: ChatMessages, *, threshold_chars: int, fast: str, strong: str) -> str:
    """Short questions go to the fast model, long ones (with much code) to the strong one."""
    return fast if routing_size(messages) < threshold_chars else strong


def _recent_turns(history: Sequence[PastTurn], budget: int) -> ChatMessages:
    """The newest turns (history is oldest first) that fit in `budget` characters."""
    kept: ChatMessages = []
    for message in reversed(history):
        if len(message.content) > budget:
            break
        budget -= len(message.content)
        kept.append({"role": message.role, "content": message.content})
    return kept[::-1]


def _question_with_context(request: dict[str, Any]) -> str:
    parts = [str(request["message"])]
    code = request.get("code_context") or {}
    for language in ("html", "css", "js"):
        source = str(code.get(language) or "")[:_CONTEXT_FIELD_CHARS]
        if source.strip():
            parts.append(f"[My {language.upper()}]\n```{language}\n{source}\n```")
    if request.get("test_results"):
        results = json.dumps(request["test_results"], ensure_ascii=False)[:_CONTEXT_FIELD_CHARS]
        parts.append(f"[My test results]\n{results}")
    return "\n\n".join(parts)
