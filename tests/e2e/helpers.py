"""What the browser tests do over and over: register a learner, ask the tutor."""

import uuid

from playwright.async_api import Page, expect

ASSISTANT = "#messages li.assistant"


async def register(page: Page) -> str:
    """A new learner, signed in on the dashboard with a live connection; their username."""
    username = f"e2e{uuid.uuid4().hex[:10]}"
    await page.goto("/login.html")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill("correct horse battery")
    await page.get_by_role("button", name="Register").click()
    await expect(page).to_have_url("/dashboard.html")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "OPEN")
    return username


async def ask(page: Page, question: str) -> None:
    """Send a question from the chat page."""
    await page.get_by_label("Your question").fill(question)
    await page.get_by_role("button", name="Send").click()
