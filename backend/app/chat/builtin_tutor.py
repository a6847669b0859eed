"""The built-in tutor: with no language model configured, a hint ladder from what the system knows.

It answers from the exercise (its topic, its checks and their feedback), the result the learner
attached (which checks failed, the page's JavaScript errors) and the conversation: the first
answer to a question asks (Socratic), the same question again gets the check's own hint, a
third time every failing check and the place to look. It never gives the solution, and says
plainly that it is the built-in tutor. Telling the operator to configure a model is the log's job.
"""

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.chat.prompt import PastTurn
from app.exercises.schemas import Exercise

BADGE = "**Built-in tutor** — no language model is connected, so my hints come from your exercise's checks."
MORE = "Ask me again for a more specific hint."
LAST_RUNG = 2
_SHOWN_CHARS = 200

_WHERE_TO_LOOK = {
    "html": "Which element should show that, and is it in your HTML, spelled the way the task asks?",
    "css": "Which selector should reach that element, and does your rule really match it?",
    "javascript": "Which line of your JavaScript should make that happen, and does it ever run?",
}
_ERROR_HINTS = [
    (
        re.compile(r"Cannot read propert(y|ies) of (null|undefined)", re.I),
        "Something your code looked for was not there: a querySelector or getElementById that found nothing.",
    ),
    (re.compile(r"is not defined", re.I), "A name is used that was never defined: check its spelling and case."),
    (re.compile(r"is not a function", re.I), "Something is called like a function but is not one."),
    (
        re.compile(r"SyntaxError|Unexpected token|Unexpected end of input", re.I),
        "The browser could not read your JavaScript: look for a missing bracket, quote or comma.",
    ),
]


@dataclass(frozen=True)
class FailingCheck:
    """A check the learner's last attempt did not pass, with the exercise's own hint for it."""

    name: str
    feedback: str


@dataclass(frozen=True)
class TutorContext:
    """What the built-in tutor knows about one question."""

    question: str
    exercise: Exercise | None = None
    failing: list[FailingCheck] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    graded: bool = False  # the learner attached a result (which may have no failing checks)
    rung: int = 0  # 0 for a new question, more each time the same one was asked before


def context_for(request: dict[str, Any], exercise: Exercise | None, history: Sequence[PastTurn]) -> TutorContext:
    """The tutor's context from the request as sent (untrusted), the exercise and earlier turns."""
    question = str(request.get("message") or "")
    results = request.get("test_results")
    results = results if isinstance(results, dict) else {}
    failing: list[FailingCheck] = []
    reported = results.get("checkpoints")
    if exercise is not None and isinstance(reported, list):
        # Only which checks failed is taken from the learner; names and hints come from the exercise.
        failed_names = {c.get("name") for c in reported if isinstance(c, dict) and c.get("passed") is False}
        failing = [FailingCheck(c.name, c.feedback) for c in exercise.checkpoints if c.name in failed_names]
    details = results.get("details")
    errors = details.get("page_errors") if isinstance(details, dict) else None
    # Shown inside `code`: a backtick of the learner's would end it.
    page_errors = [_shorten(str(e).replace("`", "'")) for e in errors[:3]] if isinstance(errors, list) else []
    asked = _normalised(question)
    rung = sum(1 for turn in history if turn.role == "user" and _normalised(turn.content) == asked)
    return TutorContext(
        question=question,
        exercise=exercise,
        failing=failing,
        page_errors=page_errors,
        graded=isinstance(reported, list),
        rung=min(rung, LAST_RUNG),
    )


def compose_reply(context: TutorContext) -> str:
    """The built-in tutor's answer, in Markdown."""
    if context.exercise is None:
        body = _free_question(context)
    elif context.graded and not context.failing and not context.page_errors:
        body = [
            f"Every check of “{context.exercise.title}” passes — well done!",
            "Want to go further? Change one thing on purpose (a colour, a word, an event) and predict "
            "what the preview will show before you look.",
        ]
    else:
        body = _exercise_hint(context, context.exercise)
    closing = (
        MORE
        if context.rung < LAST_RUNG
        else "That is the most specific hint I have: change one thing, then submit again."
    )
    return "\n\n".join([BADGE, *body, closing])


def _exercise_hint(context: TutorContext, exercise: Exercise) -> list[str]:
    where = _WHERE_TO_LOOK[exercise.topic]
    if context.page_errors and context.rung == 0:
        error = context.page_errors[0]
        return [
            f"Your JavaScript stopped with an error before the checks could see your page: `{error}`",
            "Which line does that come from, and what was it trying to use?",
        ]
    if not context.failing:
        return [
            f"You are working on “{exercise.title}”. Submit your page once, so I can see which checks still fail.",
            where,
        ]
    first = context.failing[0]
    if context.rung == 0:
        return [f"The check “{first.name}” is not passing yet.", "What do you expect it to look for? " + where]
    if context.rung == 1:
        lines = [f"The check “{first.name}” says: {first.feedback}"]
        for error in context.page_errors[:1]:
            lines.append(f"Your page also reports `{error}`. {_error_hint(error)}".rstrip())
        lines.append(where)
        return lines
    lines = ["Here is every check still failing, with its hint:"]
    lines += [f"- **{check.name}**: {check.feedback}" for check in context.failing]
    lines += [f"- Your page's error: `{error}`. {_error_hint(error)}".rstrip() for error in context.page_errors]
    lines.append("Read the exercise's description again next to your code, one check at a time.")
    return lines


def _free_question(context: TutorContext) -> list[str]:
    shown = _shorten(" ".join(context.question.split()))
    if context.rung == 0:
        return [
            f"You asked: “{shown}”",
            "Let's reason it out together:\n"
            "1. What did you expect the page to do, and what does it do instead?\n"
            "2. Which part — the HTML structure, a CSS rule or a line of JavaScript — controls that?",
        ]
    if context.rung == 1:
        return [
            f"Still stuck on “{shown}”? Make the problem smaller:",
            "- Remove everything that is not needed to show it, then put things back one at a time.\n"
            "- Check the spelling of every id, class and name: upper and lower case count.",
        ]
    return [
        f"About “{shown}”: open an exercise and use **Ask the tutor about this** after submitting —",
        "then I can see which checks fail and point at the exact one.",
    ]


def _error_hint(error: str) -> str:
    return next((hint for pattern, hint in _ERROR_HINTS if pattern.search(error)), "")


def _normalised(text: str) -> str:
    # The same question asked again, whatever its case, spacing or punctuation.
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def _shorten(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
