"""One grading: a learner's page loaded in its own offline browser context and its checkpoints read.

The page is hostile. What it can do is bounded here: every request but its own document is
refused, blocking dialogs and the console are replaced before its code runs by stand-ins that
report a bounded number of times (an `alert` loop would otherwise flood the worker with one
browser event per call), page errors are kept up to a count, and every value is read in an
isolated world the page's JavaScript cannot reach. Style expectations are normalised in a page
of our own (sandbox.py), so the learner's CSS cannot move them.
"""

import asyncio
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

PAGE_URL = "http://sandbox.taskwire.invalid/"
ACTION_TIMEOUT_MS = 2000
MAX_PAGE_ERRORS = 10
MAX_BLOCKED_KEPT = 20
MAX_DIALOG_SAMPLES = 5

ProgressReporter = Callable[[str, str, float], None]
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
    """One submission's page in its own context; `run` grades it, `kill` ends its renderer."""

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
            "dialogs": self.dialog_count,
            "dialog_samples": self.dialog_samples,
            "page_errors": self.page_errors,
        }
        return {"checkpoints": results, "details": details}

    async def kill(self) -> None:
        """End the page's renderer whatever its JavaScript is doing; only this grading's process dies."""
        if self._driver is None or self.crashed:
            return
        # Page.crash is answered by the renderer it kills: its reply never comes.
        with contextlib.suppress(TimeoutError, PlaywrightError):
            await asyncio.wait_for(self._driver.send("Page.crash"), timeout=0.5)

    async def _open(self, document: str) -> Page:
        async def route(route: Any) -> None:
            if route.request.url == PAGE_URL:
                await route.fulfill(status=200, body=document, content_type="text/html; charset=utf-8")
            else:
                self.blocked_count += 1
                if len(self.blocked) < MAX_BLOCKED_KEPT:
                    self.blocked.append(route.request.url[:200])
                await route.abort("blockedbyclient")

        context = self.context
        await context.route("**/*", route)
        with contextlib.suppress(AttributeError):  # Playwright < 1.48 has no WebSocket routing
            await context.route_web_socket("**/*", lambda ws: ws.close())
        await context.add_init_script(_STANDINS_JS)
        page = self._page = await context.new_page()
        page.on("crash", self._on_crash)
        page.on("dialog", self._on_dialog)
        page.on("pageerror", self._on_page_error)
        # The binding needs Runtime enabled on this session; with the console stubbed, what else
        # it hears is rare (uncaught exceptions, new frames).
        driver = self._driver = await context.new_cdp_session(page)
        driver.on("Runtime.bindingCalled", self._on_binding)
        await driver.send("Runtime.enable")
        await driver.send("Runtime.addBinding", {"name": _DIALOG_BINDING})
        return page

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
        except PlaywrightError:
            self._raise_if_crashed()
            return False
        if isinstance(check, AssertStyle) and isinstance(read, dict):  # its expectation is normalised apart
            read = [read.get("actual"), await self._normalise_style({**read, "expected": check.value})]
        return verdict(check, read)


_pending_dismissals: set[asyncio.Task[None]] = set()


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
