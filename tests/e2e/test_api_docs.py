"""`/docs` and `/redoc` render in a real browser with every file from the app itself (issue 17)."""

import pytest
from playwright.async_api import ConsoleMessage, Page, Request, expect


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_the_api_docs_render_with_no_network_and_nothing_blocked(page: Page, path: str) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    problems: list[str] = []
    page.on("console", lambda message: _note_problem(message, problems))

    async def only_the_app(route: object) -> None:
        request: Request = route.request  # type: ignore[attr-defined]
        if request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
            await route.continue_()  # type: ignore[attr-defined]
        else:
            await route.abort()  # type: ignore[attr-defined]

    await page.route("**/*", only_the_app)
    await page.goto(path)
    await expect(page.get_by_role("heading", name="Taskwire").first).to_be_visible()
    await expect(page.get_by_text("/ai/chat2").first).to_be_visible()  # the operations, read from /openapi.json
    outside = [url for url in requested if not url.startswith(("http://127.0.0.1", "data:", "blob:"))]
    assert outside == [], f"{path} asked for files elsewhere: {outside}"
    assert problems == [], problems


def _note_problem(message: ConsoleMessage, problems: list[str]) -> None:
    if message.type == "error" or "Content Security Policy" in message.text:
        problems.append(message.text)
