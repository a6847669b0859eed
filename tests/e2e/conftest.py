"""End-to-end: Playwright driving the system Chromium against real API, worker and Redis processes."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Dialog, Page, async_playwright, expect

from app.core.embedded_redis import EmbeddedRedis
from tests.conftest import with_own_database
from tests.support.fake_llm import API_KEY, FakeLLM, FakeLLMServer
from tests.support.stack import ApiServer, Worker, make_operator

# Waits, not assertions: a two-core CI machine running Chromium, the API and a worker at once
# can take longer than Playwright's default 5 s to show a result.
expect.set_options(timeout=15_000)

OPERATOR = "e2e-operator"
OPERATOR_PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@pytest.fixture(scope="session")
def e2e_env(
    stack_env: dict[str, str], redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    env = with_own_database(stack_env, tmp_path_factory.mktemp("e2e-db"))
    # Slow enough to watch an answer stream in (about 3 s).
    return {
        **env,
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/4",
        "LLM_OFFLINE_DELAY_MS": "40",
        "ADMIN_USERNAMES": OPERATOR,  # reserved: nobody registers it over HTTP
        "OPS_PUSH_INTERVAL_S": "0.5",
    }


@pytest.fixture(scope="session")
def app_server(e2e_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    server = ApiServer("api-e2e", e2e_env, log_dir)
    make_operator(e2e_env, OPERATOR, OPERATOR_PASSWORD)  # test_ops_page.py signs in as this operator
    yield server
    server.stop()


@pytest.fixture(scope="session")
def app_worker(e2e_env: dict[str, str], log_dir: Path) -> Iterator[Worker]:
    worker = Worker("worker-e2e", e2e_env, log_dir)
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    """The one allowed fake: a local OpenAI-compatible server the tests script answers for."""
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture(scope="module")
def llm_server(
    e2e_env: dict[str, str], llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory, log_dir: Path
) -> Iterator[ApiServer]:
    """An API and a worker whose tutor is a language model (the fake), with a database of their own."""
    env = {
        **with_own_database(e2e_env, tmp_path_factory.mktemp("e2e-llm-db")),
        "REDIS_URL": e2e_env["REDIS_URL"].rsplit("/", 1)[0] + "/13",
        "LLM_BASE_URL": llm.base_url,
        "LLM_API_KEY": API_KEY,
    }
    server = ApiServer("api-e2e-llm", env, log_dir)
    worker = Worker("worker-e2e-llm", env, log_dir, queues="chat")
    yield server
    worker.stop()
    server.stop()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser, app_server: ApiServer, app_worker: Worker) -> AsyncIterator[Page]:
    async for page in _page_of(browser, app_server):
        yield page


@pytest.fixture
async def llm_page(browser: Browser, llm_server: ApiServer) -> AsyncIterator[Page]:
    """A page of the stack whose tutor is the (fake) language model."""
    async for page in _page_of(browser, llm_server):
        yield page


async def _page_of(browser: Browser, server: ApiServer) -> AsyncIterator[Page]:
    context = await browser.new_context(base_url=server.base_url, viewport={"width": 1200, "height": 850})
    page = await context.new_page()
    page.dialogs = []  # type: ignore[attr-defined]

    async def record_and_dismiss(dialog: Dialog) -> None:
        page.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        await dialog.dismiss()

    # A test that answers dialogs itself removes this first (page.remove_listener).
    page.record_and_dismiss = record_and_dismiss  # type: ignore[attr-defined]
    page.on("dialog", record_and_dismiss)
    page.page_errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: page.page_errors.append(str(error)))  # type: ignore[attr-defined]
    yield page
    await context.close()


async def screenshot(page: Page, name: str) -> None:
    """Save a screenshot of the page for the test artifacts (never committed)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
