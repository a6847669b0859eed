"""The Chromium pool: one browser per worker process, a fresh offline context per grading.

No learner's page may fail, slow or starve another learner's grading: each learner has at most
`per_learner` gradings in the pool at once (the rest wait their turn without holding a slot);
a grading's time limit includes closing its page, and a page that does not close is killed
alone (its renderer crashed on purpose) rather than the browser restarted under everyone;
the renderer's JavaScript heap is capped, so a memory bomb ends its own page quickly.
Failures the page caused are the learner's (`timeout`, `page_crashed`), told with a hint.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from app.exercises.schemas import CodeFiles, Exercise
from app.submissions.checks import NORMALISE_JS
from app.submissions.chromium import chromium_missing, first_line
from app.submissions.grading import Grading, PageCrashed, ProgressReporter
from app.tasks.errors import PermanentError

logger = logging.getLogger(__name__)

CLEANUP_S = 2.0
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


class LearnerTurns:
    """At most `per_learner` gradings of one learner at a time; the others wait in line."""

    def __init__(self, per_learner: int):
        self._per_learner = per_learner
        self._lines: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, learner: str, until: float) -> AsyncIterator[None]:
        """Hold one of the learner's turns for the block; TimeoutError if none is free by `until` (loop time)."""
        semaphore, users = self._lines.setdefault(learner, (asyncio.Semaphore(self._per_learner), [0]))
        users[0] += 1
        try:
            async with asyncio.timeout_at(until):
                await semaphore.acquire()
            try:
                yield
            finally:
                semaphore.release()
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._lines[learner]


class SandboxPool:
    """Long-lived Chromium, a fresh context per submission, at most `max_concurrency` at once."""

    def __init__(
        self,
        *,
        chromium_path: str,
        max_concurrency: int,
        queue_timeout_s: float,
        timeout_s: float,
        per_learner: int = 1,
        js_heap_mb: int = 256,
    ):
        self._chromium_path = chromium_path
        self._max = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._turns = LearnerTurns(per_learner)
        self._queue_timeout_s = queue_timeout_s
        self._timeout_s = timeout_s
        # Part of the time limit kept for closing the page, so that a grading never outlasts it.
        self._cleanup_s = min(CLEANUP_S, timeout_s / 5)
        self._js_heap_mb = js_heap_mb
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._reference: Page | None = None
        self._launch_lock = asyncio.Lock()
        self._closing: set[asyncio.Future[None]] = set()
        self.active = 0
        self.peak = 0
        self.launches = 0
        self.kills = 0
        self._launch_error: str | None = None  # why the last launch failed, until one succeeds

    def unavailable(self) -> str | None:
        """Why grading cannot run here (no Chromium at the path, or its last launch failed), else None."""
        return chromium_missing(self._chromium_path) or self._launch_error

    async def grade(
        self, exercise: Exercise, code: CodeFiles, report: ProgressReporter, *, learner: str = ""
    ) -> GradeReport:
        """Grade a submission; raises PermanentError `sandbox_busy`, `timeout` or `page_crashed` when it cannot."""
        until = asyncio.get_running_loop().time() + self._queue_timeout_s
        try:
            async with self._turns.turn(learner, until), self._slot(until):
                return await self._grade_in_time(exercise, code, report)
        except TimeoutError:  # waiting for a turn or a slot; a grading's own timeout is a PermanentError
            raise PermanentError("sandbox_busy", "every grading slot stayed busy; please submit again") from None

    @contextlib.asynccontextmanager
    async def _slot(self, until: float) -> AsyncIterator[None]:
        async with asyncio.timeout_at(until):
            await self._slots.acquire()
        self.active += 1
        self.peak = max(self.peak, self.active)
        logger.info("sandbox context opened", extra={"active": self.active, "limit": self._max})
        try:
            yield
        finally:
            self.active -= 1
            self._slots.release()

    async def _grade_in_time(self, exercise: Exercise, code: CodeFiles, report: ProgressReporter) -> GradeReport:
        browser = await self._browser_ready()
        context = await browser.new_context(service_workers="block", viewport={"width": 1280, "height": 800})
        # The learner's time starts now: launching (or relaunching) our browser is not theirs to pay.
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        grading = Grading(context, self._normalise_style)
        try:
            async with asyncio.timeout_at(deadline - self._cleanup_s):
                graded = await grading.run(exercise, code, report)
        except TimeoutError:
            raise PermanentError(
                "timeout",
                f"your page did not finish within {self._timeout_s:g} s. Is there a loop that never ends, "
                "or one that calls alert() or adds elements again and again?",
            ) from None
        except PageCrashed:
            raise PermanentError(
                "page_crashed",
                "your page crashed the browser tab, most often by using too much memory "
                "(a loop that keeps adding to an array or to the page?)",
            ) from None
        finally:
            await self._dispose(grading, deadline)
        checkpoints = graded["checkpoints"]
        passed_count = sum(c["passed"] for c in checkpoints)
        total = len(checkpoints)
        all_passed = passed_count == total
        message = f"All {total} checks passed!" if all_passed else f"{passed_count} of {total} checks passed."
        return GradeReport(all_passed, message, checkpoints, graded["details"])

    async def close(self) -> None:
        """Stop the browser and Playwright."""
        for closing in list(self._closing):
            closing.cancel()
        if self._browser is not None:
            with contextlib.suppress(PlaywrightError):
                await self._browser.close()
        if self._playwright is not None:
            await self._playwright.stop()
        self._browser = self._playwright = self._reference = None

    async def _browser_ready(self) -> Browser:
        async with self._launch_lock:
            if self._browser is None or not self._browser.is_connected():
                if self._playwright is None:
                    self._playwright = await async_playwright().start()
                # Root cannot use Chromium's own sandbox; everywhere else it stays on.
                args = [
                    *_CHROMIUM_ARGS,
                    f"--js-flags=--max-old-space-size={self._js_heap_mb}",
                    *(["--no-sandbox"] if os.geteuid() == 0 else []),
                ]
                try:
                    self._browser = await self._playwright.chromium.launch(
                        executable_path=self._chromium_path, args=args
                    )
                except PlaywrightError as exc:
                    logger.error("could not start Chromium", extra={"path": self._chromium_path, "error": str(exc)})
                    self._launch_error = f"Chromium at {self._chromium_path} did not start: {first_line(str(exc))}"
                    raise PermanentError(
                        "sandbox_unavailable", "grading is unavailable right now (no browser could be started)"
                    ) from None
                self._reference = None
                self._launch_error = None
                self.launches += 1
                logger.info("sandbox browser launched", extra={"launches": self.launches})
            return self._browser

    async def _normalise_style(self, spec: dict[str, Any]) -> str:
        """The expected value of a style check in computed form, read in a page no learner's code reaches."""
        async with self._launch_lock:
            page = self._reference
            if page is None or page.is_closed():
                browser = self._browser
                if browser is None:
                    raise PlaywrightError("the browser is gone")
                context = await browser.new_context()
                page = self._reference = await context.new_page()
        return str(await page.evaluate(NORMALISE_JS, spec))

    async def _dispose(self, grading: Grading, deadline: float) -> None:
        """Close the grading's context by the deadline; a page that will not close is killed alone."""
        loop = asyncio.get_running_loop()
        closing = asyncio.ensure_future(grading.context.close())
        try:
            await asyncio.wait_for(asyncio.shield(closing), timeout=max(0.1, (deadline - loop.time()) / 2))
            return
        except (TimeoutError, PlaywrightError):
            pass
        self.kills += 1
        logger.warning("a learner's page did not close; killing its renderer", extra={"kills": self.kills})
        await grading.kill()
        try:
            await asyncio.wait_for(asyncio.shield(closing), timeout=max(0.1, deadline - loop.time()))
        except (TimeoutError, PlaywrightError):
            # Let it finish in the background: the slot is given back on time either way.
            self._closing.add(closing)
            closing.add_done_callback(self._forget_closing)

    def _forget_closing(self, closing: "asyncio.Future[None]") -> None:
        self._closing.discard(closing)
        if not closing.cancelled() and closing.exception() is not None:
            logger.warning("a killed page's context failed to close", extra={"error": str(closing.exception())})
