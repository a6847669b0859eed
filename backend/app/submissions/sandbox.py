"""The Chromium pool and checkpoint evaluation: a learner's page graded in a fresh, offline browser context."""

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from app.exercises.schemas import Action, CodeFiles, Exercise, InteractionCheckpoint
from app.submissions.checks import READER_JS, ValueCheck, reader_spec, verdict
from app.tasks.errors import PermanentError

logger = logging.getLogger(__name__)

PAGE_URL = "http://sandbox.taskwire.invalid/"
ACTION_TIMEOUT_MS = 2000
# Everything but our own fulfilled page is refused by routing; these make sure nothing that
# escapes routing (WebSockets, WebRTC, prefetches) can resolve or reach a network either.
_CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
]

ProgressReporter = Callable[[str, str, float], None]

_DIALOG_BINDING = "__taskwireDialog"
# Blocking dialogs cost a browser round trip each (10,000 alerts would outlast any time
# limit): replace them before learner code runs with stand-ins that report through a CDP
# binding, which is then removed from the page's reach. Real dialog events stay the fallback.
_DIALOG_STANDINS_JS = f"""
(() => {{
  const report = window.{_DIALOG_BINDING};
  try {{ delete window.{_DIALOG_BINDING}; }} catch (e) {{}}
  if (typeof report !== 'function') return;
  const standIn = (kind, answer) => function (message) {{
    try {{ report(kind + ': ' + String(message).slice(0, 100)); }} catch (e) {{}}
    return answer;
  }};
  window.alert = standIn('alert', undefined);
  window.confirm = standIn('confirm', false);
  window.prompt = standIn('prompt', null);
}})();
"""


@dataclass
class GradeReport:
    """The outcome of grading one submission."""

    passed: bool
    message: str
    checkpoints: list[dict[str, Any]]
    details: dict[str, Any] = field(default_factory=dict)

    def as_result(self) -> dict[str, Any]:
        """The `submission_result` data and stored result."""
        return {
            "passed": self.passed,
            "message": self.message,
            "details": self.details,
            "checkpoints": self.checkpoints,
        }


def compose_page(code: CodeFiles) -> str:
    """One HTML document from the three editors; style and script cannot close their own tags early."""
    css = code.css.replace("</style", "<\\/style")
    js = code.js.replace("</script", "<\\/script")
    html = code.html
    style, script = f"<style>{css}</style>", f"<script>{js}</script>"
    lowered = html.lower()
    head_end = lowered.find("</head>")
    html = html[:head_end] + style + html[head_end:] if head_end >= 0 else style + html
    body_end = html.lower().rfind("</body>")
    return html[:body_end] + script + html[body_end:] if body_end >= 0 else html + script


class SandboxPool:
    """Long-lived Chromium, a fresh context per submission, at most `max_concurrency` at once."""

    def __init__(self, *, chromium_path: str, max_concurrency: int, queue_timeout_s: float, timeout_s: float):
        self._chromium_path = chromium_path
        self._max = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._queue_timeout_s = queue_timeout_s
        self._timeout_s = timeout_s
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._launch_lock = asyncio.Lock()
        self.active = 0
        self.peak = 0
        self.launches = 0

    async def grade(self, exercise: Exercise, code: CodeFiles, report: ProgressReporter) -> GradeReport:
        """Grade a submission; raises PermanentError `sandbox_busy` or `timeout` when it cannot."""
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self._queue_timeout_s)
        except TimeoutError:
            raise PermanentError("sandbox_busy", "every grading slot stayed busy; please submit again") from None
        self.active += 1
        self.peak = max(self.peak, self.active)
        logger.info("sandbox context opened", extra={"active": self.active, "limit": self._max})
        try:
            browser = await self._browser_ready()
            context = await browser.new_context(service_workers="block", viewport={"width": 1280, "height": 800})
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await _grade_in(context, exercise, code, report)
            except TimeoutError:
                raise PermanentError("timeout", f"your page did not finish within {self._timeout_s:g} s") from None
            finally:
                await self._dispose(context)
        finally:
            self.active -= 1
            self._slots.release()

    async def close(self) -> None:
        """Stop the browser and Playwright."""
        if self._browser is not None:
            with contextlib.suppress(PlaywrightError):
                await self._browser.close()
        if self._playwright is not None:
            await self._playwright.stop()
        self._browser = self._playwright = None

    async def _browser_ready(self) -> Browser:
        async with self._launch_lock:
            if self._browser is None or not self._browser.is_connected():
                if self._playwright is None:
                    self._playwright = await async_playwright().start()
                # Root cannot use Chromium's own sandbox; everywhere else it stays on.
                args = [*_CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
                try:
                    self._browser = await self._playwright.chromium.launch(
                        executable_path=self._chromium_path, args=args
                    )
                except PlaywrightError as exc:
                    logger.error("could not start Chromium", extra={"path": self._chromium_path, "error": str(exc)})
                    raise PermanentError(
                        "sandbox_unavailable", "grading is unavailable right now (no browser could be started)"
                    ) from None
                self.launches += 1
                logger.info("sandbox browser launched", extra={"launches": self.launches})
            return self._browser

    async def _dispose(self, context: BrowserContext) -> None:
        try:
            async with asyncio.timeout(5):
                await context.close()
        except (TimeoutError, PlaywrightError):
            # A renderer stuck in learner code can hold a context: replace the whole browser.
            logger.warning("sandbox context did not close; restarting the browser")
            browser, self._browser = self._browser, None
            if browser is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await browser.close()


async def _grade_in(
    context: BrowserContext, exercise: Exercise, code: CodeFiles, report: ProgressReporter
) -> GradeReport:
    started = time.monotonic()
    blocked: list[str] = []
    dialogs: list[str] = []
    page_errors: list[str] = []
    document = compose_page(code)

    async def route(route: Any) -> None:
        if route.request.url == PAGE_URL:
            await route.fulfill(status=200, body=document, content_type="text/html; charset=utf-8")
        else:
            blocked.append(route.request.url[:200])
            await route.abort("blockedbyclient")

    await context.route("**/*", route)
    with contextlib.suppress(AttributeError):  # Playwright < 1.48 has no WebSocket routing
        await context.route_web_socket("**/*", lambda ws: ws.close())
    await context.add_init_script(_DIALOG_STANDINS_JS)
    page = await context.new_page()
    page.on("dialog", lambda dialog: _dismiss(dialog, dialogs))
    driver = await context.new_cdp_session(page)
    driver.on("Runtime.bindingCalled", lambda event: dialogs.append(str(event.get("payload", ""))[:120]))
    await driver.send("Runtime.enable")
    await driver.send("Runtime.addBinding", {"name": _DIALOG_BINDING})
    page.on("pageerror", lambda error: page_errors.append(str(error)[:300]))

    report("preparing", "Loading your page", 0.0)
    await page.goto(PAGE_URL, wait_until="load")
    results: list[dict[str, Any]] = []
    total = len(exercise.checkpoints)
    for index, checkpoint in enumerate(exercise.checkpoints, start=1):
        passed = await _run_checkpoint(page, context, checkpoint)
        results.append({"name": checkpoint.name, "passed": passed, "feedback": checkpoint.feedback})
        report("sandbox_evaluation", f"Checked {index} of {total}: {checkpoint.name}", index / total)

    passed_count = sum(r["passed"] for r in results)
    all_passed = passed_count == total
    message = f"All {total} checks passed!" if all_passed else f"{passed_count} of {total} checks passed."
    details = {
        "duration_ms": round((time.monotonic() - started) * 1000),
        "blocked_requests": blocked[:20],
        "blocked_request_count": len(blocked),
        "dialogs": len(dialogs),
        "dialog_samples": dialogs[:5],
        "page_errors": page_errors[:10],
    }
    return GradeReport(all_passed, message, results, details)


_pending_dismissals: set[asyncio.Task[None]] = set()


def _dismiss(dialog: Any, record: list[str]) -> None:
    record.append(f"{dialog.type}: {dialog.message[:100]}")
    task = asyncio.ensure_future(dialog.dismiss())
    _pending_dismissals.add(task)
    task.add_done_callback(_pending_dismissals.discard)


async def _run_checkpoint(page: Page, context: BrowserContext, checkpoint: Any) -> bool:
    if isinstance(checkpoint, InteractionCheckpoint):
        for action in checkpoint.actions:
            if not await _perform(page, action):
                return False
        return await _check(page, context, checkpoint.then)
    return await _check(page, context, checkpoint)


async def _perform(page: Page, action: Action) -> bool:
    """Do one user action with real input events; False when the target is missing or unusable."""
    target = page.locator(action.selector).first
    try:
        if action.action == "click":
            await target.click(timeout=ACTION_TIMEOUT_MS)
        elif action.action == "hover":
            await target.hover(timeout=ACTION_TIMEOUT_MS)
        elif action.action == "focus":
            await target.focus(timeout=ACTION_TIMEOUT_MS)
        else:
            await target.press_sequentially(action.text or "", timeout=ACTION_TIMEOUT_MS)
    except PlaywrightError:
        return False
    return True


async def _check(page: Page, context: BrowserContext, check: ValueCheck) -> bool:
    """Read the value in a fresh isolated world, then judge it here."""
    try:
        read = await _read_isolated(page, context, reader_spec(check))
    except PlaywrightError:
        return False
    return verdict(check, read)


async def _read_isolated(page: Page, context: BrowserContext, spec: dict[str, Any]) -> Any:
    cdp = await context.new_cdp_session(page)
    try:
        tree = await cdp.send("Page.getFrameTree")
        world = await cdp.send(
            "Page.createIsolatedWorld", {"frameId": tree["frameTree"]["frame"]["id"], "worldName": "taskwire-grader"}
        )
        response = await cdp.send(
            "Runtime.evaluate",
            {
                "expression": f"({READER_JS})({json.dumps(spec)})",
                "contextId": world["executionContextId"],
                "returnByValue": True,
                "awaitPromise": True,
            },
        )
    finally:
        await cdp.detach()
    if "exceptionDetails" in response:
        return None
    return response["result"].get("value")
