"""The built-in tutor: hints from the exercise's checks, more specific each time the question comes back."""

from app.chat.builtin_tutor import BADGE, MORE, compose_reply, context_for
from app.chat.llm import OfflineProvider
from app.chat.repository import Turn
from app.exercises.repository import all_exercises

EXERCISE = all_exercises()["css-colours"]
QUESTION = f'I\'m working on "{EXERCISE.title}". Can you give me a hint?'


def _result(*failed: str, errors: list[str] | None = None) -> dict[str, object]:
    checkpoints = [{"name": c.name, "passed": c.name not in failed, "feedback": "forged"} for c in EXERCISE.checkpoints]
    return {"passed": not failed, "checkpoints": checkpoints, "details": {"page_errors": errors or []}}


def _reply(results: object, asked_before: int = 0, question: str = QUESTION) -> str:
    history = [Turn("user", question.upper() + " "), Turn("assistant", "…")] * asked_before
    request = {"message": question, "mode": "test", "content_id": EXERCISE.id, "test_results": results}
    return compose_reply(context_for(request, EXERCISE, history))


def test_the_first_answer_names_the_failing_check_and_asks_rather_than_tells() -> None:
    first, second = EXERCISE.checkpoints[0], EXERCISE.checkpoints[1]
    reply = _reply(_result(first.name, second.name))
    assert reply.startswith(BADGE) and reply.endswith(MORE)
    assert f"“{first.name}”" in reply and "?" in reply
    assert first.feedback not in reply, "Socratic first: the check's own hint comes on the second ask"
    assert "LLM_BASE_URL" not in reply, "configuring a model is the operator's business"


def test_asking_again_climbs_the_ladder_to_every_failing_check() -> None:
    first, second = EXERCISE.checkpoints[0], EXERCISE.checkpoints[1]
    results = _result(first.name, second.name)
    again = _reply(results, asked_before=1)
    assert first.feedback in again and second.feedback not in again and again.endswith(MORE)
    third = _reply(results, asked_before=2)
    assert first.feedback in third and second.feedback in third
    assert "most specific hint" in third and MORE not in third
    assert _reply(results, asked_before=5) == third, "the ladder stops at its top"
    assert EXERCISE.answer.css.strip().splitlines()[0] not in third, "never the solution"


def test_hints_come_from_the_exercise_not_from_what_the_learner_sent() -> None:
    reply = _reply(_result(EXERCISE.checkpoints[0].name), asked_before=2)
    assert "forged" not in reply and EXERCISE.checkpoints[0].feedback in reply


def test_a_javascript_error_comes_first_and_is_explained_on_the_next_ask() -> None:
    error = "TypeError: Cannot read properties of null (reading `addEventListener`)"
    results = _result(EXERCISE.checkpoints[0].name, errors=[error])
    first = _reply(results)
    assert "Cannot read properties of null (reading 'addEventListener')" in first, "quoted, backticks defused"
    assert "querySelector" not in first
    assert "querySelector" in _reply(results, asked_before=1)


def test_all_checks_passing_is_celebrated() -> None:
    assert "Every check of" in _reply(_result())


def test_a_question_without_an_exercise_gets_questions_back_then_steps() -> None:
    request = {"message": "Why is my   list not showing?"}
    first = compose_reply(context_for(request, None, []))
    assert "Why is my list not showing?" in first and "1. What did you expect" in first
    again = compose_reply(context_for(request, None, [Turn("user", "why is my list not showing")]))
    assert "Make the problem smaller" in again


def test_untrusted_results_of_any_shape_are_ignored_not_fatal() -> None:
    for results in (
        None,
        [],
        "x",
        {"checkpoints": "no"},
        {"checkpoints": [1, None, {"passed": "yes"}]},
        {"details": 3},
    ):
        assert _reply(results).startswith(BADGE)


async def test_the_reply_streams_word_by_word_and_adds_up() -> None:
    reply = _reply(_result(EXERCISE.checkpoints[0].name))
    pieces = [piece async for piece in OfflineProvider(delay_ms=0).stream_text(reply)]
    assert len(pieces) > 10 and "".join(pieces) == reply
