"""The grading pool: at most `max_concurrency` lanes, each a browser in a process tree of its own.

No learner's page may fail, slow or outlive another learner's grading, and the operating system
enforces it rather than callbacks: every grading runs in a lane (lane.py) walled off by
namespaces where the host allows (isolation.py) — no network, own PIDs, bounded memory and disk
— and whatever its page does reaches this process as a bounded number of lines. A grading that
runs past its time, crashes, or leaves its page unclosed has its whole lane killed by PID, and a
fresh one takes its place. Each learner has at most `per_learner` gradings in the pool at once
(the rest wait their turn without holding a slot). Failures the page caused are the learner's
(`timeout`, `page_crashed`), told with a hint.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from app.exercises.schemas import CodeFiles, Exercise
from app.submissions.chromium import chromium_missing
from app.submissions.isolation import Isolation, IsolationSetting, detect_isolation, may_raise_priority
from app.submissions.lanes import Lane, LaneBroken, LaneFailed, ProgressReporter
from app.tasks.errors import PermanentError

logger = logging.getLogger(__name__)

LANE_START_TIMEOUT_S = 60.0
# A lane grades this many pages, then is replaced: whatever slowly builds up in a browser goes with it.
LANE_MAX_GRADINGS = 200
# Lanes a grading may try when one fails before its page opens (not the learner's doing).
LANE_ATTEMPTS = 3
# A grading still running after this long (most finish well within it) yields the CPU to the
# others: its lane's threads run only when no other wants the CPU, so a page that floods or
# spins its browser slows itself, not the learners next to it.
OVERTIME_S = 1.5


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
    """Grading lanes, a fresh browser context per submission, at most `max_concurrency` at once."""

    def __init__(
        self,
        *,
        chromium_path: str,
        max_concurrency: int,
        queue_timeout_s: float,
        timeout_s: float,
        per_learner: int = 1,
        js_heap_mb: int = 256,
        memory_mb: int = 1024,
        disk_mb: int = 256,
        isolation: IsolationSetting = "auto",
        lane_idle_s: float = 600,
    ):
        self._chromium_path = chromium_path
        self._max = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._turns = LearnerTurns(per_learner)
        self._queue_timeout_s = queue_timeout_s
        self._timeout_s = timeout_s
        self._lane_config = {
            "chromium_path": chromium_path,
            "js_heap_mb": js_heap_mb,
            "memory_mb": memory_mb,
            "disk_mb": disk_mb,
        }
        self._isolation_setting = isolation
        # Found once, here (a probe of a few ms, made where the worker builds its handlers, off
        # its event loop), so the worker's heartbeat says at once when grading cannot run.
        self._isolation = detect_isolation(isolation)
        level = logging.INFO if self._isolation.namespaces else logging.WARNING
        logger.log(level, "grading lanes are isolated by %s", self._isolation.describe())
        self._lane_idle_s = lane_idle_s
        # Spares start under SCHED_IDLE, out of the gradings' way, only where their priority can
        # be taken back when one is put to work (CAP_SYS_NICE); elsewhere lanes start when needed.
        self._warm_spares = may_raise_priority()
        self._idle: list[Lane] = []
        self._busy: set[Lane] = set()
        # Lanes alive or starting: never more than `max_concurrency`, so memory is bounded too.
        self._lanes = 0
        self._lane_freed = asyncio.Condition()
        self._spares: set[asyncio.Task[None]] = set()  # lanes starting for the next grading
        self._spare_starting: Lane | None = None
        self._background: set[asyncio.Task[None]] = set()  # lanes closing
        self._closed = False
        self.active = 0
        self.peak = 0
        self.launches = 0
        self.kills = 0
        self._launch_error: str | None = None  # why the last start failed, until one succeeds

    def unavailable(self) -> str | None:
        """Why grading cannot run here (no Chromium, no required isolation, a failed start), else None."""
        if missing := chromium_missing(self._chromium_path):
            return missing
        if self._isolation_setting == "namespaces" and not self._isolation.namespaces:
            return f"SANDBOX_ISOLATION=namespaces, but {self._isolation.reason}"
        return self._launch_error

    @property
    def isolation(self) -> Isolation:
        """How lanes are walled off here."""
        return self._isolation

    async def grade(
        self, exercise: Exercise, code: CodeFiles, report: ProgressReporter, *, learner: str = ""
    ) -> GradeReport:
        """Grade a submission; raises PermanentError `sandbox_busy`, `timeout` or `page_crashed` when it cannot."""
        until = asyncio.get_running_loop().time() + self._queue_timeout_s
        try:
            async with self._turns.turn(learner, until), self._slot(until):
                for _ in range(LANE_ATTEMPTS - 1):
                    with contextlib.suppress(LaneBroken):  # the lane failed, not the page: another one
                        return await self._grade_on(await self._take_lane(), exercise, code, report)
                try:
                    return await self._grade_on(await self._take_lane(), exercise, code, report)
                except LaneBroken:
                    raise PermanentError(
                        "sandbox_unavailable", "grading is unavailable right now (the browser keeps failing)"
                    ) from None
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

    async def _grade_on(self, lane: Lane, exercise: Exercise, code: CodeFiles, report: ProgressReporter) -> GradeReport:
        self._busy.add(lane)
        job = {"exercise": exercise.model_dump(mode="json"), "code": code.model_dump()}
        # The learner's time starts now: starting (or restarting) a lane is not theirs to pay.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        overtime = loop.call_later(min(OVERTIME_S, self._timeout_s / 4), lane.yield_cpu)
        try:
            async with asyncio.timeout_at(deadline):
                answer = await lane.grade(job, report)
        except TimeoutError:
            await self._end_lane(lane, "its page ran past the time limit")
            raise PermanentError(
                "timeout",
                f"your page did not finish within {self._timeout_s:g} s. Is there a loop that never ends, "
                "or one that calls alert() or adds elements again and again?",
            ) from None
        except LaneBroken as exc:
            await self._end_lane(lane, f"it broke before the page opened: {exc}")
            raise
        except LaneFailed as exc:
            await self._end_lane(lane, f"it failed: {exc}")
            raise _crashed() from None
        except BaseException:  # cancelled: nothing of the page may outlive its grading
            await asyncio.shield(self._end_lane(lane, "its grading was cancelled"))
            raise
        finally:
            overtime.cancel()
        error = answer.get("error") or {}
        # Without the right to take its CPU share back (not root), an overtime lane is replaced.
        restored = not lane.yielding or lane.yield_cpu(idle=False)
        if not answer.get("clean"):
            crashed = error.get("code") == "page_crashed"
            await self._end_lane(lane, "its page crashed" if crashed else "its page did not close in time")
        elif not restored or lane.gradings >= LANE_MAX_GRADINGS:
            self._busy.discard(lane)
            self._in_background(self._retire(lane))
        else:
            await self._keep(lane)
        if error:
            if error.get("code") == "page_crashed":
                raise _crashed()
            raise RuntimeError(f"the grading lane failed: {error.get('message', error)}")
        return _report(answer["graded"])

    async def _take_lane(self) -> Lane:
        """An idle lane, or a new one while there are fewer than `max_concurrency`; else wait for one."""
        while True:
            while self._idle:
                lane = self._idle.pop()
                if lane.idle_timer is not None:
                    lane.idle_timer.cancel()
                if lane.alive and (not lane.yielding or lane.yield_cpu(idle=False)):
                    if self._warm_spares:
                        self._start_spare()
                    return lane
                await self._end_lane(lane, "it had ended while idle")
            if self._spare_starting is not None:
                # A grading is waiting for it now: it starts at full speed, and this waits for it
                # (it is ahead of any lane started from here).
                self._spare_starting.yield_cpu(idle=False)
            elif self._lanes < self._max:
                lane = await self._start_lane()
                if self._warm_spares:
                    self._start_spare()
                return lane
            # A spare is on its way, or every lane exists (one closing): wait for a lane.
            async with self._lane_freed:
                await self._lane_freed.wait_for(
                    lambda: bool(self._idle) or (self._spare_starting is None and self._lanes < self._max)
                )

    async def _start_lane(self, *, spare: bool = False) -> Lane:
        if self._isolation_setting == "namespaces" and not self._isolation.namespaces:
            raise PermanentError("sandbox_unavailable", "grading is unavailable right now (no isolation)")
        self._lanes += 1
        try:
            lane = await Lane.spawn(self._isolation, self._lane_config, yielding=spare and self._warm_spares)
            if spare:
                self._spare_starting = lane
            try:
                await lane.ready(LANE_START_TIMEOUT_S)
            finally:
                if spare:
                    self._spare_starting = None
        except (LaneFailed, OSError) as exc:
            await self._lane_gone()
            logger.error("could not start a grading lane", extra={"path": self._chromium_path, "error": str(exc)})
            self._launch_error = f"the grading browser at {self._chromium_path} did not start: {exc}"
            raise PermanentError(
                "sandbox_unavailable", "grading is unavailable right now (no browser could be started)"
            ) from None
        except BaseException:
            await asyncio.shield(self._lane_gone())
            raise
        self._launch_error = None
        self.launches += 1
        logger.info("sandbox browser launched", extra={"launches": self.launches, "lane": lane.pid})
        return lane

    def _start_spare(self) -> None:
        """Start a lane in the background for the next grading, when none is idle or starting."""
        if not self._closed and not self._idle and not self._spares and self._lanes < self._max:
            spare = asyncio.ensure_future(self._warm_spare())
            self._spares.add(spare)
            spare.add_done_callback(self._spares.discard)

    async def _warm_spare(self) -> None:
        with contextlib.suppress(PermanentError):
            lane = await self._start_lane(spare=True)
            if self._closed:
                await self._retire(lane)
            else:
                await self._keep(lane)

    async def _keep(self, lane: Lane) -> None:
        self._busy.discard(lane)
        self._idle.append(lane)
        lane.idle_timer = asyncio.get_running_loop().call_later(self._lane_idle_s, self._retire_idle, lane)
        async with self._lane_freed:
            self._lane_freed.notify()

    def _retire_idle(self, lane: Lane) -> None:
        if lane in self._idle:
            self._idle.remove(lane)
            self._in_background(self._retire(lane))

    async def _retire(self, lane: Lane) -> None:
        """Close a lane that did nothing wrong (idle too long, due, or not to be kept)."""
        try:
            await lane.close()
        finally:
            await self._lane_gone()

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _end_lane(self, lane: Lane, why: str) -> None:
        """Kill a lane whole, by PID; a fresh one is started behind it."""
        self._busy.discard(lane)
        self.kills += 1
        logger.warning(
            "ending a grading lane: %s",
            why,
            extra={"lane": lane.pid, "kills": self.kills, "stderr": lane.stderr_tail()[-500:]},
        )
        try:
            await lane.kill()
        finally:
            await self._lane_gone()
        # A replacement: the grading this lane served is over, so it starts out of anyone's way
        # even where spares cannot start yielding.
        self._start_spare()

    async def _lane_gone(self) -> None:
        self._lanes -= 1
        async with self._lane_freed:
            self._lane_freed.notify()

    async def close(self) -> None:
        """End every lane and its browser."""
        self._closed = True
        for spare in list(self._spares):
            spare.cancel()  # a lane cancelled while it starts is killed (Lane.start)
        lanes, self._idle = [*self._idle, *self._busy], []
        self._busy.clear()
        await asyncio.gather(
            *(lane.close() for lane in lanes), *self._spares, *self._background, return_exceptions=True
        )


def _crashed() -> PermanentError:
    return PermanentError(
        "page_crashed",
        "your page crashed the browser tab, most often by using too much memory "
        "(a loop that keeps adding to an array or to the page?)",
    )


def _report(graded: dict[str, Any]) -> GradeReport:
    checkpoints = graded["checkpoints"]
    passed_count = sum(bool(c["passed"]) for c in checkpoints)
    total = len(checkpoints)
    all_passed = passed_count == total
    message = f"All {total} checks passed!" if all_passed else f"{passed_count} of {total} checks passed."
    return GradeReport(all_passed, message, checkpoints, graded["details"])
