"""A grading lane: one Chromium that grades one learner's page at a time, in a process tree of its own.

The worker (sandbox.py) starts it as `python -m app.submissions.lane '<config>'`, inside the
namespaces isolation.py found (no network device, own PIDs, a private tmpfs), and never imports
it: Playwright, Node and Chromium live here, so whatever a learner's page makes them do — a
flood of requests, sockets, frames or errors — costs this lane and nobody else, and the worker
ends all of it at once by killing the lane. Memory and disk are bounded by the kernel: every
process here inherits an address-space-data limit (RLIMIT_DATA) and a file-size limit, and the
browser's profile, temporary files and shared memory live in the tmpfs.

Protocol: one JSON job per line on stdin (`{"exercise", "code"}`); on the pipe that was stdout,
one JSON message per line: `ready` once, then per job `accepted` (its browser context is
open), any number of `progress`, and one of `graded` or `error`, with `clean` (the page's
context closed in time). fd 1 itself is pointed at stderr, so nothing Chromium or Node print
can break a message.
"""

import asyncio
import contextlib
import json
import os
import resource
import sys
from typing import IO, Any

from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from playwright.async_api import Error as PlaywrightError

from app.exercises.schemas import CodeFiles, Exercise
from app.submissions.checks import NORMALISE_JS
from app.submissions.chromium import first_line
from app.submissions.grading import Grading, PageCrashed
from app.submissions.isolation import mount_tmpfs
from app.submissions.lanes import LaneConfig

MAX_JOB_BYTES = 16 * 1024 * 1024
CLOSE_TIMEOUT_S = 1.0
# Chromium's own guards on top of the namespaces: nothing resolves, nothing phones home.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    # The grading page and the grader's own reference page; a page cannot fan out into more.
    "--renderer-process-limit=2",
]
# Without a network namespace every request goes to a proxy that is not there, loopback
# included (`<-loopback>` removes Chromium's implicit bypass), so none reaches a service.
NO_NAMESPACE_ARGS = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
# Playwright turns these off for test automation; against a hostile page they stay on.
KEPT_DEFAULTS = ["--disable-popup-blocking", "--disable-ipc-flooding-protection"]


class Messages:
    """The lane's answers to the worker, one JSON object per line."""

    def __init__(self, stream: IO[str]):
        self._stream = stream

    def send(self, **message: Any) -> None:
        """Write one message and flush it."""
        self._stream.write(json.dumps(message, separators=(",", ":")) + "\n")
        self._stream.flush()


class ReferencePage:
    """A blank page of the grader's own, where style expectations are put in computed form."""

    def __init__(self, browser: Browser):
        self._browser = browser
        self._page: Page | None = None

    async def open(self) -> Page:
        """The page, opened when it is not (at the lane's start, so no grading pays for it)."""
        if self._page is None or self._page.is_closed():
            context = await self._browser.new_context()
            self._page = await context.new_page()
        return self._page

    async def normalise(self, spec: dict[str, Any]) -> str:
        """The expected value of a style check as the browser computes it."""
        return str(await (await self.open()).evaluate(NORMALISE_JS, spec))


def bound_resources(config: LaneConfig) -> None:
    """Kernel limits every process of the lane inherits: private memory, file size, no core dumps."""
    memory = config.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    disk = config.disk_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (disk, disk))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def private_tmp(config: LaneConfig) -> None:
    """Make the lane's TMPDIR a size-bounded tmpfs in its own mount namespace, where there is one."""
    if config.namespaces:
        mount_tmpfs(config.tmp_dir, config.disk_mb)


async def launch(config: LaneConfig) -> tuple[Any, Browser]:
    """Playwright and this lane's Chromium."""
    playwright = await async_playwright().start()
    args = [*CHROMIUM_ARGS, f"--js-flags=--max-old-space-size={config.js_heap_mb}"]
    if not config.namespaces:
        args += NO_NAMESPACE_ARGS
    if os.geteuid() == 0:  # root (or root of a user namespace) cannot use Chromium's own sandbox
        args.append("--no-sandbox")
    browser = await playwright.chromium.launch(
        executable_path=config.chromium_path, args=args, ignore_default_args=KEPT_DEFAULTS
    )
    return playwright, browser


async def grade_one(browser: Browser, reference: ReferencePage, job: dict[str, Any], out: Messages) -> bool:
    """Grade one job and answer it; False when this lane should not grade again."""
    exercise = Exercise.model_validate(job["exercise"])
    code = CodeFiles.model_validate(job["code"])
    try:
        context = await browser.new_context(
            service_workers="block", viewport={"width": 1280, "height": 800}, accept_downloads=False
        )
    except PlaywrightError as exc:  # the browser went before the page came: not the learner's doing
        out.send(error={"code": "lane_broken", "message": first_line(str(exc))}, clean=False)
        return False
    out.send(accepted=True)  # from here on, a lane that ends mid-job ended under the learner's page
    grading = Grading(context, reference.normalise)
    answer: dict[str, Any]
    try:
        graded = await grading.run(exercise, code, lambda *step: out.send(progress=step))
        answer = {"graded": graded}
    except PageCrashed:
        answer = {"error": {"code": "page_crashed"}}
    except PlaywrightError as exc:
        crashed = grading.crashed or not browser.is_connected()
        answer = (
            {"error": {"code": "page_crashed"}}
            if crashed
            else {"error": {"code": "sandbox_error", "message": first_line(str(exc))}}
        )
    clean = await close_in_time(context) and browser.is_connected() and not grading.crashed
    out.send(**answer, clean=clean)
    return clean


async def close_in_time(context: BrowserContext) -> bool:
    """Close a grading's context; False when it would not close within CLOSE_TIMEOUT_S."""
    try:
        await asyncio.wait_for(context.close(), CLOSE_TIMEOUT_S)
    except (TimeoutError, PlaywrightError):
        return False
    return True


async def serve(config: LaneConfig, out: Messages) -> int:
    """Start the browser, then grade each job read from stdin until stdin ends."""
    try:
        playwright, browser = await launch(config)
    except PlaywrightError as exc:
        out.send(failed=f"Chromium at {config.chromium_path} did not start: {first_line(str(exc))}")
        return 1
    reader = asyncio.StreamReader(limit=MAX_JOB_BYTES)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    reference = ReferencePage(browser)
    await reference.open()
    out.send(ready={"pid": os.getpid(), "browser": browser.version})
    # A browser that goes while the lane waits for work ends the lane, so the worker sees it gone.
    gone = asyncio.Event()
    browser.on("disconnected", lambda _: gone.set())
    try:
        while line := await _next_job(reader, gone):
            if not await grade_one(browser, reference, json.loads(line), out):
                break  # the worker kills a lane that did not end clean; leave first
    finally:
        with contextlib.suppress(PlaywrightError):
            await browser.close()
        with contextlib.suppress(Exception):
            await playwright.stop()
    return 0


async def _next_job(reader: asyncio.StreamReader, gone: asyncio.Event) -> bytes:
    """The next job line; empty when stdin ends or the browser is gone first."""
    reading = asyncio.ensure_future(reader.readline())
    waiting = asyncio.ensure_future(gone.wait())
    await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if reading.done():
        return reading.result()
    reading.cancel()
    return b""


def main() -> int:
    """The lane process's entry point."""
    config = LaneConfig(**json.loads(sys.argv[1]))
    out = Messages(os.fdopen(os.dup(1), "w", encoding="utf-8"))
    os.dup2(2, 1)
    bound_resources(config)
    private_tmp(config)
    return asyncio.run(serve(config, out))


if __name__ == "__main__":
    sys.exit(main())
