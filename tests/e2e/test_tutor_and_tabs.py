"""The tutor as a learner meets it, in a real browser: a model's Markdown streamed in, the built-in
tutor's hints, and one WebSocket shared by all tabs of a browser, handed over when its tab closes."""

from playwright.async_api import Page, WebSocket, expect

from app.exercises.repository import all_exercises
from tests.e2e.conftest import screenshot
from tests.e2e.helpers import ASSISTANT, ask, register
from tests.support.fake_llm import FakeLLM, Scenario

MARKDOWN_ANSWER = """## Centring a box

Read [the MDN guide](https://developer.mozilla.org/en-US/docs/Web/CSS/justify-content) first. Steps:

- Make the parent a flex container:
  - `display: flex`
  - `justify-content: center`
- Check it in the preview.

```css
.parent {
  display: flex;
  justify-content: center;
}
```

Does the box move?"""


async def test_a_streamed_model_answer_renders_heading_link_nested_list_and_code(llm_page: Page, llm: FakeLLM) -> None:
    page = llm_page
    await register(page)
    await page.goto("/chat.html")
    llm.script(Scenario(text=MARKDOWN_ANSWER, piece_chars=4, delay_s=0.02))
    await ask(page, "How do I centre a box?")
    answer = page.locator(ASSISTANT).last
    # While the fence is still open the block is being written: no Copy button yet.
    await expect(answer.locator("pre")).to_have_count(1)
    if "Does the box move?" not in await answer.inner_text():
        await expect(answer.get_by_role("button", name="Copy")).to_have_count(0)
    await expect(answer).to_contain_text("Does the box move?")
    await expect(answer.get_by_role("heading", name="Centring a box")).to_be_visible()
    link = answer.get_by_role("link", name="the MDN guide")
    await expect(link).to_have_attribute("href", "https://developer.mozilla.org/en-US/docs/Web/CSS/justify-content")
    await expect(answer.locator("ul ul li")).to_have_text(["display: flex", "justify-content: center"])
    code = answer.locator("pre code")
    await expect(code).to_contain_text("justify-content: center;")
    assert await code.locator("span[class^='hljs-']").count() > 0, "the code is highlighted"
    await expect(answer.get_by_role("button", name="Copy")).to_be_visible()
    assert llm.requests, "the real httpx client reached the model"
    await screenshot(page, "3-chat-markdown")


async def test_the_built_in_tutor_names_the_failing_check_and_climbs_its_ladder(page: Page) -> None:
    exercise = all_exercises()["css-colours"]
    await register(page)
    await page.goto(f"/exercise.html?id={exercise.id}")
    await page.get_by_role("button", name="Submit for grading").click()
    await expect(page.locator("#result-message")).to_contain_text("checks passed", timeout=30_000)
    first_failing = exercise.checkpoints[0]
    await page.get_by_role("button", name="Ask the tutor about this").click()
    await expect(page).to_have_url("/chat.html")
    answer = page.locator(ASSISTANT).last
    await expect(answer).to_contain_text("more specific hint", timeout=15_000)
    await expect(answer).to_contain_text("Built-in tutor")
    await expect(answer).to_contain_text(f"“{first_failing.name}”")
    assert "LLM_BASE_URL" not in await answer.inner_text(), "the operator's business stays in the log"
    # Asked again: the check's own hint.
    await page.goto(f"/exercise.html?id={exercise.id}")
    await expect(page.locator("#result-message")).to_contain_text("checks passed")
    await page.get_by_role("button", name="Ask the tutor about this").click()
    await expect(page.locator(ASSISTANT).last).to_contain_text(first_failing.feedback, timeout=15_000)


async def test_two_tabs_share_one_socket_and_the_second_takes_over_losing_nothing(page: Page) -> None:
    await register(page)
    sockets: dict[str, list[WebSocket]] = {"first": [], "second": []}
    page.on("websocket", lambda ws: sockets["first"].append(ws))
    await page.goto("/chat.html")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "OPEN")
    second = await page.context.new_page()
    second.on("websocket", lambda ws: sockets["second"].append(ws))
    await second.goto("/chat.html")
    await expect(second.locator("#ws-state")).to_have_text("Live")
    # Everything the second tab's page is given, in order, from before the question.
    await second.evaluate(
        """() => { window.delivered = [];
        window.taskwireClient.subscribe('*', (f) => { if (f.id) window.delivered.push([f.id, f.type, f.data]); }); }"""
    )
    assert len(sockets["first"]) == 1 and sockets["second"] == [], "the first tab's socket serves both"

    await ask(second, "Why does my list not show?")
    answer = second.locator(ASSISTANT).last
    await expect(answer).to_contain_text("Built-in tutor")  # streaming has begun; now its socket goes
    await page.close()
    await expect(answer).to_contain_text("more specific hint", timeout=20_000)
    assert len(sockets["second"]) == 1, "the second tab took the socket over"
    await expect(second.locator("#ws-state")).to_have_text("Live")

    delivered = await second.evaluate("window.delivered")
    ids = [frame_id for frame_id, _, _ in delivered]
    assert len(ids) == len(set(ids)), "nothing delivered twice"
    deltas = "".join(data["delta"] for _, kind, data in delivered if kind == "chat_delta")
    results = [data for _, kind, data in delivered if kind == "chat_result"]
    assert len(results) == 1 and deltas == results[0]["message"], "every piece arrived, once, in order"
