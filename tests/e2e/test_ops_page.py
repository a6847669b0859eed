"""The ops page in a real browser: live figures as a learner's tasks run, and a cancel (issue 17)."""

import httpx
from playwright.async_api import Dialog, Page, expect

from tests.e2e.conftest import OPERATOR, OPERATOR_PASSWORD, screenshot
from tests.support.client import register as register_learner
from tests.support.stack import ApiServer

# A page whose script never yields: its grading runs until the sandbox's time limit, or a cancel.
STUCK = {"html": "<p>hi</p>", "css": "", "js": "while (true) {}"}


async def _sign_in_as_operator(page: Page) -> None:
    await page.goto("/login.html")
    await page.get_by_label("Username").fill(OPERATOR)
    await page.get_by_label("Password").fill(OPERATOR_PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url("/dashboard.html")


async def test_the_ops_page_updates_live_as_tasks_run_and_cancels_one(page: Page, app_server: ApiServer) -> None:
    await _sign_in_as_operator(page)
    overview_reads: list[str] = []
    page.on("request", lambda r: overview_reads.append(r.url) if "/api/ops/overview" in r.url else None)
    await page.goto("/ops")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "OPEN")
    await expect(page.locator('#kinds tr[data-kind="chat"]')).to_contain_text("yes")
    await expect(page.locator('#kinds tr[data-kind="submission"]')).to_contain_text("yes")
    await expect(page.locator("#workers tbody tr")).to_have_count(2)
    await expect(page.locator("#replicas tbody tr")).to_contain_text("listening")

    async with httpx.AsyncClient(base_url=app_server.base_url, timeout=10) as http:
        learner = await register_learner(http)
        asked = await http.post("/ai/chat2", json={"message": "what is a div?"}, headers=learner.headers)
        chat_id = asked.json()["task_id"]
        row = page.locator(f'#unfinished tr[data-task-id="{chat_id}"]')
        await expect(row).to_be_visible(timeout=10_000)
        await expect(row).to_have_count(0, timeout=30_000)  # answered: off the list
        await expect(page.locator('#kinds tr[data-kind="chat"]')).to_contain_text("SUCCESS")

        graded = await http.post(
            "/submit-test2", json={"exercise_id": "js-greeting", "code": STUCK}, headers=learner.headers
        )
        grade_id = graded.json()["task_id"]
        stuck = page.locator(f'#unfinished tr[data-task-id="{grade_id}"]')
        await expect(stuck).to_be_visible(timeout=10_000)
        await screenshot(page, "7-ops")

        page.remove_listener("dialog", page.record_and_dismiss)  # type: ignore[attr-defined]
        questions: list[str] = []

        async def accept(dialog: Dialog) -> None:
            questions.append(dialog.message)
            await dialog.accept()

        page.on("dialog", accept)
        await stuck.get_by_role("button", name="Cancel").click()
        await expect(stuck).to_have_count(0, timeout=10_000)
        assert questions and "They will see it cancelled" in questions[0]
        status = (await http.get(f"/api/tasks/{grade_id}", headers=learner.headers)).json()
        assert status["state"] == "CANCELLED"

    assert len(overview_reads) == 1, (
        f"the page read the overview once and took every update from its socket: {overview_reads}"
    )
    assert page.page_errors == []  # type: ignore[attr-defined]


async def test_a_learner_is_told_the_ops_page_is_not_for_them(page: Page) -> None:
    from tests.e2e.helpers import register

    await register(page)
    await page.goto("/ops")
    await expect(page.locator("#ops-denied")).to_contain_text("for Taskwire's operators")
    await expect(page.locator("#workers tbody tr")).to_have_count(0)
