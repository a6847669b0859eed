from app.chat.prompt import TUTOR_SYSTEM_PROMPT, build_prompt, choose_model
from app.exercises.repository import all_exercises
from app.models import ChatMessage


def _turn(role: str, content: str) -> ChatMessage:
    return ChatMessage(role=role, content=content)


def test_the_prompt_has_the_tutor_the_recent_turns_and_the_question_with_its_code() -> None:
    history = [
        _turn("user", "old question " * 50),
        _turn("assistant", "old answer"),
        _turn("user", "recent"),
        _turn("assistant", "reply"),
    ]
    request = {
        "message": "Why is my button not blue?",
        "code_context": {"html": "<button>Go</button>", "css": "button { colour: blue; }", "js": ""},
        "test_results": {"passed": False, "failed": ["The button is blue"]},
    }
    messages = build_prompt(request, history, None, history_chars=100)
    assert messages[0] == {"role": "system", "content": TUTOR_SYSTEM_PROMPT}
    assert "Guide, do not solve" in TUTOR_SYSTEM_PROMPT and "language the learner writes in" in TUTOR_SYSTEM_PROMPT
    # Only the turns that fit the character budget, newest kept, in order.
    assert [m["content"] for m in messages[1:-1]] == ["old answer", "recent", "reply"]
    question = messages[-1]
    assert question["role"] == "user" and question["content"].startswith("Why is my button not blue?")
    assert "```css\nbutton { colour: blue; }\n```" in question["content"]
    assert "The button is blue" in question["content"]
    assert "[My JS]" not in question["content"], "empty editors are left out"


def test_test_mode_describes_the_exercise_but_never_its_answer() -> None:
    exercise = all_exercises()["js-click-counter"]
    messages = build_prompt({"message": "help", "mode": "test"}, [], exercise, history_chars=1000)
    system = messages[0]["content"]
    assert exercise.title in system and exercise.checkpoints[1].feedback in system
    full_prompt = "".join(m["content"] for m in messages)
    assert exercise.answer.js not in full_prompt
    assert "count.textContent = String(Number(count.textContent) + 1)" not in full_prompt


def test_routing_sends_short_questions_to_the_fast_model() -> None:
    short = build_prompt({"message": "hi"}, [], None, history_chars=0)
    long = build_prompt({"message": "help", "code_context": {"html": "x" * 2000}}, [], None, history_chars=0)
    assert choose_model(short, threshold_chars=1000, fast="fast-m", strong="strong-m") == "fast-m"
    assert choose_model(long, threshold_chars=1000, fast="fast-m", strong="strong-m") == "strong-m"
