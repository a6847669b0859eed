"""The web app in a real browser: chat, exercises, navigation mid-stream, restarts, escaping, drafts."""

import asyncio
import re

import pytest
from playwright.async_api import Dialog, Page, Route, expect

from app.exercises.repository import all_exercises
from tests.e2e.conftest import screenshot
from tests.e2e.helpers import ASSISTANT, ask, register
from tests.support.stack import ApiServer


async def test_chat_streams_piece_by_piece_and_survives_a_reload(page: Page) -> None:
    await page.goto("/login.html")
    await screenshot(page, "1-login")
    username = await register(page)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url("/login.html")
    await page.goto("/chat.html")
    await expect(page).to_have_url("/login.html?next=%2Fchat.html")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill("wrong password!")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#auth-error")).to_have_text("wrong username or password")
    await page.get_by_label("Password").fill("correct horse battery")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url("/chat.html")
    await ask(page, "How do I centre a div?")
    answer = page.locator(ASSISTANT).last
    await expect(answer).to_contain_text("Built-in tutor")
    partial = await answer.inner_text()
    assert "more specific hint" not in partial, "the answer should still be arriving"
    await expect(answer).to_contain_text("more specific hint", timeout=15_000)
    await screenshot(page, "3-chat")
    await page.reload()
    await expect(page.locator("#messages li.user")).to_have_text(["How do I centre a div?"])
    await expect(page.locator(ASSISTANT)).to_have_count(1)
    await expect(page.locator(ASSISTANT)).to_contain_text("more specific hint")
    await page.goto("/dashboard.html")
    latest = page.locator("#tasks tbody tr").first.locator("td")
    await expect(latest.nth(0)).to_have_text("Asked: How do I centre a div?")
    await expect(latest.nth(1)).to_have_text("Answered")


async def test_an_answer_thinks_then_can_be_stopped_and_asked_again(page: Page) -> None:
    await register(page)
    await page.goto("/chat.html")
    # How each answer looks the moment it appears (the offline tutor's first piece is quick).
    await page.evaluate(
        """() => { window.appeared = [];
        new MutationObserver((changes) => { for (const change of changes) for (const node of change.addedNodes)
          if (node.classList?.contains('assistant'))
            window.appeared.push([node.dataset.status, node.querySelector('.body').textContent]);
        }).observe(document.getElementById('messages'), { childList: true }); }"""
    )
    await ask(page, "Tell me about flexbox")
    answer = page.locator(ASSISTANT).last
    await expect(answer).to_contain_text("Built-in tutor")  # the first pieces, then Stop
    assert await page.evaluate("window.appeared") == [["thinking…", ""]]
    await expect(answer).not_to_have_attribute("data-status", "thinking…")
    await answer.get_by_role("button", name="Stop").click()
    await expect(answer).to_have_attribute("data-status", "stopped")
    kept = await answer.locator(".body").inner_text()
    assert kept and "more specific hint" not in kept, "what streamed stays; the rest never comes"
    latest = (
        await page.evaluate(
            "fetch('/api/tasks?kind=chat&limit=1', {headers: {Authorization: 'Bearer ' + JSON.parse(localStorage.getItem('taskwire.session')).access_token}}).then(r => r.json())"
        )
    )[0]
    assert latest["state"] == "CANCELLED"
    await answer.get_by_role("button", name="Ask again").click()
    await expect(page.locator("#messages li.user")).to_have_text(["Tell me about flexbox", "Tell me about flexbox"])
    await expect(page.locator(ASSISTANT).last).to_contain_text("more specific hint", timeout=15_000)
    await expect(page.locator("#announce")).to_contain_text("more specific hint")


async def test_a_question_asked_in_one_tab_shows_in_the_other_before_its_answer(page: Page) -> None:
    await register(page)
    await page.goto("/chat.html")
    other = await page.context.new_page()
    await other.goto("/chat.html")
    await expect(other.locator("#ws-state")).to_have_attribute("data-state", "OPEN")
    await ask(page, "Asked in the first tab")
    await expect(other.locator("#messages li.user")).to_have_text(["Asked in the first tab"])
    await expect(other.locator(ASSISTANT).last).to_contain_text("more specific hint", timeout=15_000)
    order = await other.evaluate("[...document.querySelectorAll('#messages > li')].map(li => li.className)")
    assert order == ["user", "assistant"], order


async def test_navigating_away_mid_stream_and_back_shows_the_answer_once(page: Page) -> None:
    await register(page)
    await page.goto("/chat.html")
    await ask(page, "Tell me about flexbox")
    await expect(page.locator(ASSISTANT).last).to_contain_text("Built-in tutor")
    await page.get_by_role("link", name="Dashboard").click()
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "OPEN")
    await page.get_by_role("link", name="Chat").click()
    await expect(page.locator(ASSISTANT)).to_have_count(1)
    answer = page.locator(ASSISTANT).first
    await expect(answer).to_contain_text("more specific hint", timeout=15_000)
    text = await answer.inner_text()
    assert text.count("Built-in tutor") == 1 and text.count("Let's reason it out together") == 1, text
    assert text.startswith("Built-in tutor"), "the whole answer, from its start"


async def test_model_text_is_shown_as_text_never_run(page: Page) -> None:
    await register(page)
    await page.goto("/chat.html")
    await ask(page, "<img src=x onerror=alert(1)> <script>alert(2)</script> **bold**")
    answer = page.locator(ASSISTANT).last
    await expect(answer).to_contain_text("more specific hint", timeout=15_000)
    await expect(answer).to_contain_text("<img src=x onerror=alert(1)>")
    await expect(answer).to_contain_text("<script>alert(2)</script>")
    assert await page.locator("#messages img, #messages script").count() == 0
    assert page.dialogs == [], "no dialog may fire"  # type: ignore[attr-defined]


MODEL_ANSWER = """## Why your list is empty

Intro:
- first, check the selector
  - nested: `#items` needs the `#`
- then the [MDN page on querySelector](https://developer.mozilla.org/docs/Web/API/Document/querySelector)

1. one
2. two

| property | value |
|---|---|
| display | flex |

```js
const list = document.querySelector("#items");
```

[bad link](javascript:alert(1)) <img src=x onerror=alert(2)>
"""


async def test_model_markdown_renders_headings_links_nested_lists_tables_and_code_safely(page: Page) -> None:
    await register(page)
    await page.goto("/chat.html")
    await page.evaluate(
        """async (text) => {
          const { renderMarkdown } = await import('/js/markdown.js');
          const box = document.createElement('div');
          box.id = 'rendered';
          const { addCopyButtons } = await import('/js/markdown.js');
          box.innerHTML = renderMarkdown(text);
          addCopyButtons(box, text);
          document.body.append(box);
        }""",
        MODEL_ANSWER,
    )
    box = page.locator("#rendered")
    await expect(box.locator("h2")).to_have_text("Why your list is empty")
    await expect(box.locator("ul > li > ul > li")).to_contain_text("nested:")
    await expect(box.locator("ol > li")).to_have_count(2)
    await expect(box.locator("table td").first).to_have_text("display")
    await expect(box.locator("pre code")).to_contain_text('document.querySelector("#items")')
    await expect(box.locator("pre code .hljs-keyword").first).to_have_text("const")  # highlighted
    await expect(box.locator("pre .copy")).to_have_text("Copy")
    await screenshot(page, "6-markdown")
    # While an answer streams, its last block may still be open: no Copy button until it closes.
    buttons = await page.evaluate(
        r"""async () => {
          const { addCopyButtons, renderMarkdown } = await import('/js/markdown.js');
          const box = document.createElement('div');
          const open = 'Try:\n```js\nlet a = 1;\n```\nthen\n```js\nlet b';
          box.innerHTML = renderMarkdown(open);
          addCopyButtons(box, open);
          const before = box.querySelectorAll('.copy').length;
          box.innerHTML = renderMarkdown(open + ' = 2;\n```');
          addCopyButtons(box, open + ' = 2;\n```');
          return [before, box.querySelectorAll('.copy').length];
        }"""
    )
    assert buttons == [1, 2], buttons
    link = box.locator("a", has_text="MDN page")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")
    assert await box.locator("a[href^='javascript']").count() == 0
    assert await box.locator("img").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]


async def test_an_exercise_is_graded_live_with_feedback(page: Page) -> None:
    exercise = all_exercises()["css-colours"]
    await register(page)
    await screenshot(page, "2-dashboard")
    await page.get_by_role("link", name=exercise.title).click()
    await expect(page.get_by_role("heading", name=exercise.title)).to_be_visible()
    # Record every value the page gives the progress bar, even two set within one animation frame.
    await page.evaluate(
        """() => { window.progressSeen = []; const bar = document.getElementById('progress');
        const original = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, 'value');
        Object.defineProperty(bar, 'value', { get() { return original.get.call(this); },
          set(v) { original.set.call(this, v); window.progressSeen.push(Number(v)); } }); }"""
    )
    await page.get_by_role("button", name="Submit for grading").click()
    await expect(page.locator("#result-message")).to_have_text(
        f"1 of {len(exercise.checkpoints)} checks passed.", timeout=30_000
    )
    seen = await page.evaluate("window.progressSeen")
    assert any(0 < value < 1 for value in seen), f"the bar should move through steps: {sorted(set(seen))}"
    failing = page.locator('#checkpoints li[data-passed="false"]')
    await expect(failing).to_have_count(2)
    await expect(failing.first).to_contain_text(exercise.checkpoints[0].feedback)

    await page.get_by_label("CSS").fill(exercise.answer.css)
    await page.get_by_role("button", name="Submit for grading").click()
    await expect(page.locator("#result-message")).to_have_text(
        f"All {len(exercise.checkpoints)} checks passed!", timeout=30_000
    )
    await expect(page.locator('#checkpoints li[data-passed="true"]')).to_have_count(len(exercise.checkpoints))
    await screenshot(page, "4-exercise")
    await page.goto("/dashboard.html")
    await expect(page.locator(".cards li", has_text=exercise.title).locator(".status")).to_have_text("✓ passed")
    # Recent work in the learner's words: the exercise's title and how it went, not ids and states.
    rows = page.locator("#tasks tbody tr")
    total = len(exercise.checkpoints)
    await expect(rows.first.locator("td").nth(0)).to_have_text(exercise.title)
    await expect(rows.first.locator("td").nth(1)).to_have_text(f"Passed: all {total} checks")
    await expect(rows.nth(1).locator("td").nth(1)).to_have_text(f"1 of {total} checks passed")
    await page.locator("#tasks a").first.click()
    await expect(page.locator("#title")).to_have_text(exercise.title)
    await expect(page.locator("#outcome")).to_have_text(f"Passed: all {total} checks")
    await expect(page.locator("#state")).not_to_be_visible()  # the raw view waits behind a toggle
    await page.get_by_text("Details for the curious").click()
    await expect(page.locator("#state")).to_have_text("SUCCESS")
    await screenshot(page, "5-task")


async def test_the_grade_comes_into_view_with_the_pages_errors_and_returns_after_a_reload(page: Page) -> None:
    await page.set_viewport_size({"width": 1280, "height": 800})
    await register(page)
    await page.goto("/exercise.html?id=js-click-counter")
    await page.get_by_label("JavaScript").fill(
        "document.querySelector('#nothing-here').addEventListener('click', () => {});"
    )
    await page.get_by_role("button", name="Submit for grading").click()
    result = page.locator("#result-message")
    await expect(result).to_contain_text("checks passed", timeout=30_000)
    await expect(result).to_be_in_viewport()
    await expect(result).to_be_focused()
    note = page.locator("#checkpoints li.page-note.error")
    await expect(note).to_contain_text("Cannot read properties of null")
    await expect(note).to_contain_text("querySelector")
    shown = await result.inner_text()
    await page.reload()
    await expect(page.locator("#result-message")).to_have_text(shown)
    await expect(page.locator("#progress-message")).to_contain_text("Your last attempt")
    await expect(page.locator("#checkpoints li.page-note.error")).to_contain_text("Cannot read properties of null")


async def test_reset_asks_before_throwing_the_draft_away(page: Page) -> None:
    await register(page)
    await page.goto("/exercise.html?id=html-first-page")
    await page.get_by_label("HTML").fill("<h1>My work</h1>")

    async def answer_no(dialog: Dialog) -> None:
        await dialog.dismiss()

    async def answer_yes(dialog: Dialog) -> None:
        await dialog.accept()

    page.remove_listener("dialog", page.record_and_dismiss)  # type: ignore[attr-defined]
    page.once("dialog", answer_no)
    await page.get_by_role("button", name="Reset to start code").click()
    await expect(page.get_by_label("HTML")).to_have_text("<h1>My work</h1>")
    page.once("dialog", answer_yes)
    await page.get_by_role("button", name="Reset to start code").click()
    start = all_exercises()["html-first-page"].start_code.html
    await expect(page.get_by_label("HTML")).to_have_text(" ".join(start.split()))


@pytest.mark.parametrize("path", ["/login.html", "/dashboard.html", "/chat.html", "/exercise.html?id=css-flex-row"])
async def test_every_page_fits_a_375_px_screen(page: Page, path: str) -> None:
    await register(page)
    await page.set_viewport_size({"width": 375, "height": 740})
    await page.goto(path)
    await page.wait_for_load_state("networkidle")
    await screenshot(page, "375" + path.split("?")[0].replace("/", "-").removesuffix(".html"))
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"{path} is {width} px wide at 375"
    if path != "/login.html":
        box = await page.get_by_role("button", name="Sign out").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, box


async def test_the_badge_says_connecting_then_live_never_offline_on_load(page: Page) -> None:
    await register(page)
    await page.add_init_script(
        """document.addEventListener('DOMContentLoaded', () => {
          const badge = document.getElementById('ws-state');
          window.badgeSeen = [badge.textContent];
          new MutationObserver(() => window.badgeSeen.push(badge.textContent))
            .observe(badge, { childList: true, characterData: true, subtree: true });
        });"""
    )
    await page.reload()
    await expect(page.locator("#ws-state")).to_have_text("Live")
    seen = await page.evaluate("window.badgeSeen")
    assert seen[0] == "Connecting…" and not any(text.startswith("Offline") for text in seen), seen


async def test_sign_in_never_leads_to_another_site(page: Page) -> None:
    # Issue 15, hole 6: `next` is followed only within this origin, however it is spelled.
    username = await register(page)
    origin = page.url.split("/dashboard.html")[0]
    for sneaky in (
        "/%5Cevil.example/",
        "//evil.example/",
        "https://evil.example/",
        "/%5C%5Cevil.example",
        "javascript:alert(1)",
        # Issue 25, finding 3: dot segments that leave a path of "//evil.example/".
        "/.//evil.example/",
        "/..//evil.example/",
        "/%2E//evil.example/",
        "/a/..//evil.example/",
        "/.%5C/evil.example/",
    ):
        await page.get_by_role("button", name="Sign out").click()
        await page.goto(f"/login.html?next={sneaky}")
        await page.get_by_label("Username").fill(username)
        await page.get_by_label("Password").fill("correct horse battery")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(f"{origin}/dashboard.html")


async def test_the_preview_keeps_an_upper_case_script_end_tag_inside_the_script(page: Page) -> None:
    await register(page)
    await page.goto("/exercise.html?id=html-first-page")
    await page.get_by_label("HTML").fill('<p id="out">waiting</p>')
    await page.get_by_label("JavaScript").fill(
        "document.getElementById('out').textContent = ['ran whole', '</SCRIPT><h2 id=\"escaped\">out</h2>'][0];"
    )
    preview = page.frame_locator("#preview")
    await expect(preview.locator("#out")).to_have_text("ran whole")
    await expect(preview.locator("#escaped")).to_have_count(0)


async def test_the_editor_is_a_code_editor_tab_indents_and_esc_tab_leaves(page: Page) -> None:
    await register(page)
    await page.goto("/exercise.html?id=js-click-counter")
    editor = page.get_by_label("JavaScript")
    await editor.fill("if (true) {")
    await editor.press("End")
    await editor.press("Enter")
    await editor.press("Tab")
    await editor.type("x = 1;")
    # Still in the editor after Tab: the line is indented, with line numbers and highlighting beside it.
    await expect(editor).to_be_focused()
    lines = await page.locator("#code-js .cm-line").all_inner_texts()
    assert lines[1].startswith(("  ", "\t")) and lines[1].strip() == "x = 1;", lines
    await expect(page.locator("#code-js .cm-lineNumbers")).to_contain_text("2")
    assert await page.locator("#code-js .cm-line span[class]").count() > 0, "tokens are highlighted"
    # Esc, then Tab within 2 s, leaves (with a completion list open, the first Esc closes it).
    await editor.press("Escape")
    await editor.press("Escape")
    await page.keyboard.press("Tab")
    await expect(editor).not_to_be_focused()


async def test_the_preview_survives_an_endless_loop_and_runs_the_fix(page: Page) -> None:
    await register(page)
    await page.goto("/exercise.html?id=html-first-page")
    await page.get_by_label("HTML").fill('<p id="out">waiting</p>')
    await page.get_by_label("JavaScript").fill("let n = 0;\nwhile (true) { n++; }")
    note = page.locator("#preview-note")
    await expect(note).to_contain_text("stopped a loop (line 2)", timeout=10_000)
    # The page is still the learner's: typing works and the fixed code runs in the preview.
    await page.get_by_label("JavaScript").fill(
        "let n = 0;\nwhile (n < 3) { n++; }\ndocument.getElementById('out').textContent = 'n=' + n;"
    )
    await expect(page.frame_locator("#preview").locator("#out")).to_have_text("n=3", timeout=10_000)
    await expect(note).to_have_text("")
    # A loop in a <script> of the HTML is guarded too.
    await page.get_by_label("JavaScript").fill("")
    await page.get_by_label("HTML").fill('<p id="out">waiting</p>\n<script>\nfor (;;) {}\n</script>')
    await expect(note).to_contain_text("stopped a loop (line 3)", timeout=10_000)
    await page.get_by_label("HTML").fill('<p id="out">after</p>')
    await expect(page.frame_locator("#preview").locator("#out")).to_have_text("after", timeout=10_000)


# Issue 25: ways a page's own code switched the preview's loop guard off and froze the tab.
GUARD_EVASIONS = {
    "the guard replaced": "for (const k of Object.getOwnPropertyNames(window)) if (k.startsWith('__taskwire')) "
    "{ try { window[k] = () => {}; } catch (e) {} }\nwhile (true) {}",
    "the guard shadowed": "function spin() { const __taskwireLoopGuard = () => {}; while (true) {} }\nspin();",
    "the clock stopped": "performance.now = () => 0; Performance.prototype.now = () => 0; Date.now = () => 0;"
    "\nwhile (true) {}",
    "the channel cut": "MessagePort.prototype.postMessage = () => {}; window.MessageChannel = function () {};"
    "\nwhile (true) {}",
    "the stop caught": "for (;;) {\n  try { while (true) {} } catch (e) {}\n}",
    "a handler's loop": "",  # in the HTML below
}


@pytest.mark.parametrize("evasion", sorted(GUARD_EVASIONS))
async def test_the_preview_loop_guard_cannot_be_switched_off_by_the_page(page: Page, evasion: str) -> None:
    await register(page)
    await page.goto("/exercise.html?id=html-first-page")
    html = '<p id="out">waiting</p>'
    if evasion == "a handler's loop":
        html += '\n<img src="data:," onerror="let n = 0; while (n >= 0) { n++; }">'
    await page.get_by_label("HTML").fill(html)
    await page.get_by_label("JavaScript").fill(GUARD_EVASIONS[evasion])
    await expect(page.locator("#preview-note")).to_contain_text("stopped a loop", timeout=10_000)
    # Still the learner's tab: the fixed code runs.
    await page.get_by_label("HTML").fill('<p id="out">waiting</p>')
    await page.get_by_label("JavaScript").fill("document.getElementById('out').textContent = 'fixed';")
    await expect(page.frame_locator("#preview").locator("#out")).to_have_text("fixed", timeout=10_000)


async def test_code_in_strings_does_not_run_in_the_preview(page: Page) -> None:
    # eval, new Function and setTimeout("…") would run loops no guard was put in: the page's
    # CSP (no 'unsafe-eval') refuses them.
    await register(page)
    await page.goto("/exercise.html?id=html-first-page")
    await page.get_by_label("HTML").fill('<p id="out">waiting</p>')
    await page.get_by_label("JavaScript").fill(
        "let seen = [];\nfor (const run of [() => eval('1'), () => new Function('return 1')()]) "
        "{ try { run(); seen.push('ran'); } catch (e) { seen.push(e.name); } }\n"
        "document.getElementById('out').textContent = seen.join(' ');"
    )
    await expect(page.frame_locator("#preview").locator("#out")).to_have_text("EvalError EvalError")


async def _slow_exercise_load(route: Route) -> None:
    await asyncio.sleep(1)
    await route.continue_()


async def test_a_draft_survives_a_reload(page: Page) -> None:
    await register(page)
    # A slow exercise load must not let early typing be overwritten by the start code.
    await page.route("**/api/exercises/*", _slow_exercise_load)
    await page.goto("/exercise.html?id=html-first-page")
    await expect(page.get_by_label("HTML")).not_to_be_editable()
    await expect(page.get_by_label("HTML")).to_be_editable()
    await page.get_by_label("HTML").fill("<h1>My draft</h1>")
    await page.unroute("**/api/exercises/*")
    await expect(page.locator("#draft-state")).to_have_text("Draft saved on this device.")
    await page.reload()
    await expect(page.get_by_label("HTML")).to_have_text("<h1>My draft</h1>")
    await expect(page.locator("#draft-state")).to_have_text("Restored your draft.")


async def test_a_restarted_replica_is_reconnected_to_and_the_result_shown(page: Page, app_server: ApiServer) -> None:
    await register(page)
    await page.goto("/chat.html")
    await ask(page, "Are you still there after a restart?")
    await expect(page.locator(ASSISTANT).last).to_contain_text("Built-in tutor")
    app_server.stop()
    try:
        await expect(page.locator("#ws-state")).not_to_have_attribute("data-state", "OPEN", timeout=10_000)
        await expect(page.locator("#ws-state")).to_have_text(
            re.compile("^(Reconnecting…|Offline — your work is saved)$")
        )
    finally:
        app_server.start_again()  # same port: the page's own reconnects find it
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "OPEN", timeout=30_000)
    answer = page.locator(ASSISTANT).last
    await expect(answer).to_contain_text("more specific hint", timeout=30_000)
    assert (await answer.inner_text()).count("Built-in tutor") == 1
