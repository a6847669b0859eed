"""The tutor against an OpenAI-compatible server (a local fake on loopback): streaming, routing,
retries, failures — through the real httpx client in a real worker."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.embedded_redis import EmbeddedRedis
from tests.conftest import with_own_database
from tests.support.client import open_socket, register
from tests.support.fake_llm import API_KEY, FakeLLM, FakeLLMServer, Scenario
from tests.support.stack import ApiServer, Worker
from tests.support.waiting import frames_until

FAST, STRONG = "tutor-fast", "tutor-strong"


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture(scope="module")
def llm_stack(
    llm: FakeLLM,
    stack_env: dict[str, str],
    redis_server: EmbeddedRedis,
    tmp_path_factory: pytest.TempPathFactory,
    log_dir: Path,
) -> Iterator[ApiServer]:
    env = {
        **with_own_database(stack_env, tmp_path_factory.mktemp("llm-db")),
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/3",
        "LLM_BASE_URL": llm.base_url,
        "LLM_API_KEY": API_KEY,
        "LLM_MODEL_FAST": FAST,
        "LLM_MODEL_STRONG": STRONG,
        "TASK_RETRY_ATTEMPTS": "3",
        "TASK_RETRY_BASE_DELAY_S": "0.05",
    }
    api = ApiServer("api-llm", env, log_dir)
    worker = Worker("worker-llm", env, log_dir)
    yield api
    worker.stop()
    api.stop()


@pytest.fixture
async def session(llm_stack: ApiServer) -> Any:
    async with httpx.AsyncClient(base_url=llm_stack.base_url, timeout=10) as http:
        account = await register(http)
        ws, _ = await open_socket(llm_stack.ws_url, account)
        async with ws:
            yield http, account, ws


async def _ask(session: Any, message: str, **extra: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    http, account, ws = session
    response = await http.post("/ai/chat2", json={"message": message, **extra}, headers=account.headers)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    frames = await frames_until(
        ws, lambda f: f["type"] == "chat_result" and f["task_id"] == task_id, timeout_s=30, what="the chat result"
    )
    status = (await http.get(f"/api/tasks/{task_id}", headers=account.headers)).json()
    return [f for f in frames if f["task_id"] == task_id], status


def _answer_after_last_reset(frames: list[dict[str, Any]]) -> str:
    deltas = [f["data"] for f in frames if f["type"] == "chat_delta"]
    last_reset = max((i for i, d in enumerate(deltas) if d.get("reset")), default=-1)
    return "".join(d["delta"] for d in deltas[last_reset + 1 :])


async def test_chinese_and_emoji_stream_intact_from_the_fast_model(llm: FakeLLM, session: Any) -> None:
    text = "你好！我们一起看看 <div> 为什么没有居中。🎉👩‍💻 试试 display: flex；然后呢？"
    llm.script(Scenario(text=text, piece_chars=2, split_characters=True))
    frames, status = await _ask(session, "为什么我的 div 没有居中？")
    result = frames[-1]["data"]
    assert result["message"] == text and _answer_after_last_reset(frames) == text
    assert result["model"] == FAST and status["state"] == "SUCCESS"
    assert result["usage"]["prompt_tokens"] == 42
    assert result["raw_prompt_to_llm"] is None, "the prompt is only exposed when CHAT_EXPOSE_PROMPT is set"
    sent = llm.requests[-1]["body"]
    assert sent["model"] == FAST and sent["stream"] is True
    assert sent["messages"][-1]["content"] == "为什么我的 div 没有居中？"
    assert len([f for f in frames if f["type"] == "chat_delta"]) < len(text) / 2, "deltas are coalesced"


async def test_long_questions_go_to_the_strong_model(llm: FakeLLM, session: Any) -> None:
    llm.script(Scenario(text="Let's look at your code."))
    frames, _ = await _ask(session, "Why does this fail?", code_context={"html": "<p>hi</p>" * 200})
    assert llm.requests[-1]["body"]["model"] == STRONG and frames[-1]["data"]["model"] == STRONG


async def test_rate_limits_and_server_errors_are_retried_and_announced(llm: FakeLLM, session: Any) -> None:
    llm.script(Scenario(kind="429", retry_after_s=1), Scenario(kind="500"), Scenario(text="Third time lucky."))
    frames, status = await _ask(session, "retry me")
    retrying = [f["data"] for f in frames if f["type"] == "task_status" and f["data"]["state"] == "RETRYING"]
    assert [r["reason"] for r in retrying] == ["llm_rate_limited", "llm_server_error"]
    assert retrying[0]["retry_in_s"] >= 1, "Retry-After is honoured"
    assert frames[-1]["data"]["message"] == "Third time lucky." and status["state"] == "SUCCESS"
    assert len(llm.requests) == 3


async def test_a_stream_broken_half_way_is_restarted_and_the_client_told_to_reset(llm: FakeLLM, session: Any) -> None:
    text = "A complete answer that arrives on the second try."
    # Long enough before the drop that coalesced deltas were already shown.
    llm.script(Scenario(kind="disconnect", text=text, delay_s=0.03, disconnect_after=8), Scenario(text=text))
    frames, status = await _ask(session, "break the stream")
    deltas = [f["data"] for f in frames if f["type"] == "chat_delta"]
    reset_at = next(i for i, d in enumerate(deltas) if d.get("reset"))
    assert reset_at > 0, "some text was shown before the stream broke"
    assert _answer_after_last_reset(frames) == text == frames[-1]["data"]["message"]
    assert status["state"] == "SUCCESS"


async def test_a_refused_key_fails_at_once_with_llm_auth_failed(llm: FakeLLM, session: Any) -> None:
    llm.script()
    llm.expected_key = "a-rotated-key"
    try:
        frames, status = await _ask(session, "who am I?")
    finally:
        llm.expected_key = API_KEY
    assert frames[-1]["error"]["code"] == "llm_auth_failed" and status["state"] == "FAILURE"
    assert len(llm.requests) == 1, "no retry for a refused key"
    assert API_KEY not in str(frames)


async def test_a_model_that_stays_down_ends_llm_unavailable(llm: FakeLLM, session: Any) -> None:
    llm.script(Scenario(kind="500"), Scenario(kind="500"), Scenario(kind="500"))
    frames, status = await _ask(session, "anyone there?")
    assert frames[-1]["error"]["code"] == "llm_unavailable" and status["error"]["code"] == "llm_unavailable"
    assert len(llm.requests) == 3


async def test_the_conversation_is_kept_and_sent_back_to_the_model(llm: FakeLLM, session: Any) -> None:
    llm.script(Scenario(text="First answer."), Scenario(text="Second answer."))
    await _ask(session, "first question")
    await _ask(session, "second question")
    second = llm.requests[-1]["body"]["messages"]
    assert [(m["role"], m["content"]) for m in second[1:]][-3:] == [
        ("user", "first question"),
        ("assistant", "First answer."),
        ("user", "second question"),
    ]
    http, account, _ = session
    page = (await http.get("/api/chat/history?limit=3", headers=account.headers)).json()
    assert [(m["role"], m["content"]) for m in page["messages"]] == [
        ("assistant", "First answer."),
        ("user", "second question"),
        ("assistant", "Second answer."),
    ]
    older = (await http.get(f"/api/chat/history?before={page['next_before']}", headers=account.headers)).json()
    assert [(m["role"], m["content"]) for m in older["messages"]] == [("user", "first question")]
    assert older["next_before"] is None
