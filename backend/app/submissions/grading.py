"""One grading: a learner's page loaded in its own browser context and its checkpoints read.

Runs inside a grading lane (lane.py), whose browser has no network at all. The page is hostile.
What it can do is bounded here: the document is served once by the browser itself (a request
for that one URL is fulfilled; nothing else is intercepted, so a flood of requests is never a
callback), blocking dialogs and the console are replaced before its code runs by stand-ins that
report a bounded number of times (an `alert` loop would otherwise be one browser event per
call), page errors and failed requests are kept up to a count, after which nobody listens, and
every value is read in an isolated world the page's JavaScript cannot reach. Style expectations
are normalised in a page of our own (lane.py), so the learner's CSS cannot move them.
"""

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from playwright.async_api import BrowserContext, CDPSession, Page
from playwright.async_api import Error as PlaywrightError

from app.exercises.schemas import Action, AssertStyle, CodeFiles, Exercise, InteractionCheckpoint
from app.submissions.checks import READER_JS, ValueCheck, reader_spec, verdict
from app.submissions.lanes import ProgressReporter

PAGE_URL = "http://sandbox.taskwire.invalid/"
ACTION_TIMEOUT_MS = 2000
MAX_PAGE_ERRORS = 10
MAX_BLOCKED_KEPT = 20  # failed requests listed
MAX_BLOCKED_COUNTED = 1000  # failed requests counted; past it nobody listens (the count says "or more")
MAX_DIALOG_SAMPLES = 5

# Turns a style check's expected value into the browser's computed form, away from the learner's page.
StyleNormaliser = Callable[[dict[str, Any]], Awaitable[str]]

_DIALOG_BINDING = "__taskwireDialog"
# Blocking dialogs cost a browser round trip each: replace them (and the console, whose every
# call is a browser event too) before learner code runs. The stand-ins report the first few
# dialogs with their text, then only the running count, once per turn of the page's event
# loop: a finite burst of 10,000 alerts is counted exactly, an endless loop costs five events.
_STANDINS_JS = f"""
(() => {{
  for (const name of Object.keys(console)) {{
    if (typeof console[name] === 'function') console[name] = () => undefined;
  }}
  window.print = () => undefined;
  const report = window.{_DIALOG_BINDING};
  try {{ delete window.{_DIALOG_BINDING}; }} catch (e) {{}}
  if (typeof report !== 'function') return;
  const schedule = queueMicrotask.bind(window);
  let count = 0, sampled = 0, flushing = false;
  const flush = () => {{ flushing = false; report(JSON.stringify({{count}})); }};
  const standIn = (kind, answer) => function (message) {{
    count++;
    if (sampled < {MAX_DIALOG_SAMPLES}) {{
      sampled++;
      try {{ report(JSON.stringify({{count, sample: kind + ': ' + String(message).slice(0, 100)}})); }} catch (e) {{}}
    }} else if (!flushing) {{
      flushing = true;
      schedule(flush);
    }}
    return answer;
  }};
  window.alert = standIn('alert', undefined);
  window.confirm = standIn('confirm', false);
  window.prompt = standIn('prompt', null);
}})();
"""

_SCRIPT_END = re.compile(r"</(script)", re.IGNORECASE)
_STYLE_END = re.compile(r"</(style)", re.IGNORECASE)


class PageCrashed(Exception):
    """The learner's page crashed its renderer (out of memory, most often)."""


def compose_page(code: CodeFiles) -> str:
    """One HTML document from the three editors; style and script cannot close their own tags early."""
    css = _STYLE_END.sub(r"<\\/\1", code.css)
    js = _SCRIPT_END.sub(r"<\\/\1", code.js)
    html = code.html
    style, script = f"<style>{css}</style>", f"<script>{js}</script>"
    lowered = html.lower()
    head_end = lowered.find("</head>")
    html = html[:head_end] + style + html[head_end:] if head_end >= 0 else style + html
    body_end = html.lower().rfind("</body>")
    return html[:body_end] + script + html[body_end:] if body_end >= 0 else html + script


class Grading:
    """One submission's page in its own context; `run` grades it."""

    def __init__(self, context: BrowserContext, normalise_style: StyleNormaliser):
        self.context = context
        self._normalise_style = normalise_style
        self._page: Page | None = None
        self._driver: CDPSession | None = None
        self.crashed = False
        self.blocked: list[str] = []
        self.blocked_count = 0
        self.dialog_count = 0
        self.dialog_samples: list[str] = []
        self.page_errors: list[str] = []
        self._served = False

    async def run(self, exercise: Exercise, code: CodeFiles, report: ProgressReporter) -> dict[str, Any]:
        """Load the page and check every checkpoint; returns the checkpoints and the page's details.

        Raises PageCrashed when the renderer died under the page.
        """
        started = time.monotonic()
        try:
            page = await self._open(compose_page(code))
            report("preparing", "Loading your page", 0.0)
            await page.goto(PAGE_URL, wait_until="load")
            results: list[dict[str, Any]] = []
            total = len(exercise.checkpoints)
            for index, checkpoint in enumerate(exercise.checkpoints, start=1):
                passed = await self._run_checkpoint(page, checkpoint)
                self._raise_if_crashed()
                results.append({"name": checkpoint.name, "passed": passed, "feedback": checkpoint.feedback})
                report("sandbox_evaluation", f"Checked {index} of {total}: {checkpoint.name}", index / total)
        except PlaywrightError as exc:
            if self.crashed or "crashed" in str(exc).lower():
                raise PageCrashed() from None
            raise
        details = {
            "duration_ms": round((time.monotonic() - started) * 1000),
            "blocked_requests": self.blocked,
            "blocked_request_count": self.blocked_count,
            "blocked_request_count_capped": self.blocked_count >= MAX_BLOCKED_COUNTED,
            "dialogs": self.dialog_count,
            "dialog_samples": self.dialog_samples,
            "page_errors": self.page_errors,
        }
        return {"checkpoints": results, "details": details}

    async def _open(self, document: str) -> Page:
        context = self.context
        await context.add_init_script(_STANDINS_JS)
        page = self._page = await context.new_page()
        page.on("crash", self._on_crash)
        page.on("dialog", self._on_dialog)
        page.on("pageerror", self._on_page_error)
        page.on("requestfailed", self._on_request_failed)
        # The binding needs Runtime enabled on this session; with the console stubbed, what else
        # it hears is rare (uncaught exceptions, new frames).
        driver = self._driver = await context.new_cdp_session(page)
        driver.on("Runtime.bindingCalled", self._on_binding)
        driver.on("Fetch.requestPaused", lambda event: self._serve(event, document))
        await driver.send("Runtime.enable")
        await driver.send("Runtime.addBinding", {"name": _DIALOG_BINDING})
        # The browser pauses only a request for the page's own URL: every other request goes
        # on to a network that is not there and fails in the browser, with no round trip here.
        await driver.send("Fetch.enable", {"patterns": [{"urlPattern": PAGE_URL, "requestStage": "Request"}]})
        return page

    def _serve(self, event: dict[str, Any], document: str) -> None:
        task = asyncio.ensure_future(self._answer_paused(str(event["requestId"]), document))
        _pending_answers.add(task)
        task.add_done_callback(_pending_answers.discard)

    async def _answer_paused(self, request_id: str, document: str) -> None:
        """The first request for the page's URL gets the document; any later one (an iframe of it) fails."""
        driver = self._driver
        if driver is None:
            return
        with contextlib.suppress(PlaywrightError):
            if self._served:
                await driver.send("Fetch.failRequest", {"requestId": request_id, "errorReason": "BlockedByClient"})
                return
            self._served = True
            body = base64.b64encode(document.encode("utf-8")).decode("ascii")
            headers = [{"name": "Content-Type", "value": "text/html; charset=utf-8"}]
            await driver.send(
                "Fetch.fulfillRequest",
                {"requestId": request_id, "responseCode": 200, "responseHeaders": headers, "body": body},
            )
            await driver.send("Fetch.disable")

    def _on_crash(self, _page: Page) -> None:
        self.crashed = True

    def _raise_if_crashed(self) -> None:
        if self.crashed:
            raise PageCrashed()

    def _on_binding(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            call = json.loads(str(event.get("payload", "")))
            self.dialog_count = max(self.dialog_count, int(call["count"]))
            if "sample" in call and len(self.dialog_samples) < MAX_DIALOG_SAMPLES:
                self.dialog_samples.append(str(call["sample"])[:120])

    def _on_dialog(self, dialog: Any) -> None:
        # The fallback for a dialog the stand-ins did not catch (one opened before they ran).
        self.dialog_count += 1
        if len(self.dialog_samples) < MAX_DIALOG_SAMPLES:
            self.dialog_samples.append(f"{dialog.type}: {dialog.message[:100]}")
        task = asyncio.ensure_future(dialog.dismiss())
        _pending_dismissals.add(task)
        task.add_done_callback(_pending_dismissals.discard)

    def _on_request_failed(self, request: Any) -> None:
        self.blocked_count += 1
        if len(self.blocked) < MAX_BLOCKED_KEPT:
            self.blocked.append(str(request.url)[:200])
        if self.blocked_count >= MAX_BLOCKED_COUNTED and self._page is not None:
            # Playwright stops forwarding an event nobody listens to: a flood costs no more.
            self._page.remove_listener("requestfailed", self._on_request_failed)

    def _on_page_error(self, error: Any) -> None:
        self.page_errors.append(str(error)[:300])
        if len(self.page_errors) >= MAX_PAGE_ERRORS and self._page is not None:
            # Playwright stops forwarding an event nobody listens to: a throwing loop costs no more.
            self._page.remove_listener("pageerror", self._on_page_error)

    async def _run_checkpoint(self, page: Page, checkpoint: Any) -> bool:
        if isinstance(checkpoint, InteractionCheckpoint):
            for action in checkpoint.actions:
                if not await _perform(page, action):
                    return False
            return await self._check(page, checkpoint.then)
        return await self._check(page, checkpoint)

    async def _check(self, page: Page, check: ValueCheck) -> bool:
        """Read the value in a fresh isolated world, then judge it here."""
        try:
            read = await _read_isolated(page, self.context, reader_spec(check))
        except PlaywrightError as exc:
            # The page's renderer (or the lane's browser, out of memory) may be gone before its
            # crash event arrives: that is a crash, not a failed check.
            browser = self.context.browser
            if (
                "crashed" in str(exc).lower()
                or page.is_closed()
                or (browser is not None and not browser.is_connected())
            ):
                self.crashed = True
            self._raise_if_crashed()
            return False
        if isinstance(check, AssertStyle) and isinstance(read, dict):  # its expectation is normalised apart
            read = [read.get("actual"), await self._normalise_style({**read, "expected": check.value})]
        return verdict(check, read)


_pending_dismissals: set[asyncio.Task[None]] = set()
_pending_answers: set[asyncio.Task[None]] = set()


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
        elif action.action == "fill":
            await target.fill(action.text or "", timeout=ACTION_TIMEOUT_MS)
        else:
            await target.press_sequentially(action.text or "", timeout=ACTION_TIMEOUT_MS)
    except PlaywrightError:
        return False
    return True


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
        with contextlib.suppress(PlaywrightError):
            await cdp.detach()
    if "exceptionDetails" in response:
        return None
    return response["result"].get("value")
