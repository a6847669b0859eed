"""The worker's handle on one grading lane (lane.py): start it, hand it a job, read its answer, end it.

The lane is a child process tree the worker never shares a pipe or a callback with beyond its
own lines: a job in, a bounded number of lines out (a `progress` per checkpoint and one answer,
each at most MAX_MESSAGE_BYTES), whatever the learner's page does. Ending a lane is a SIGKILL by
PID: in namespaces, of the process whose death makes the kernel kill every process in the lane's
PID namespace; without them, of every process of its tree.
"""

import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from app.core.processes import die_with_parent
from app.submissions.isolation import Isolation, kill_tree, tree_of

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
STDERR_TAIL_BYTES = 4096
CLOSE_WAIT_S = 3.0

ProgressReporter = Callable[[str, str, float], None]


@dataclass(frozen=True)
class LaneConfig:
    """What the worker tells a lane when it starts it."""

    chromium_path: str
    js_heap_mb: int
    memory_mb: int
    disk_mb: int
    tmp_dir: str
    namespaces: bool

    def to_arg(self) -> str:
        """The config as the lane's one command-line argument."""
        return json.dumps(asdict(self))


def lane_environment(tmp_dir: str) -> dict[str, str]:
    """A lane's whole environment: none of the worker's (its secrets stay out of the sandbox).

    Node puts the browser's profile under TMPDIR, and Chromium its shared memory; the lane's
    Python finds the same modules as this one.
    """
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join(path for path in sys.path if path),
        "HOME": tmp_dir,
        "TMPDIR": tmp_dir,
        "LANG": "C.UTF-8",
    }


def _prepare_child(yielding: bool) -> None:
    # In the lane's first process, before exec: it dies with the thread that started it, and a
    # spare runs on what CPU the gradings leave (its children inherit both).
    die_with_parent(signal.SIGKILL)
    if yielding:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


class LaneFailed(Exception):
    """The lane could not start, or ended (or broke its protocol) before answering."""


class LaneBroken(LaneFailed):
    """The lane was gone, or its browser was, before the job's page was opened: the next lane can grade it."""


class Lane:
    """One lane process and the pipes to it."""

    def __init__(self, process: asyncio.subprocess.Process, tmp_dir: str):
        self._process = process
        self._tmp_dir = tmp_dir
        self._stderr_tail: collections.deque[bytes] = collections.deque()
        self._stderr_kept = 0
        self._draining = asyncio.ensure_future(self._drain_stderr())
        self.gradings = 0
        self.yielding = False
        self.idle_timer: asyncio.TimerHandle | None = None

    @classmethod
    async def spawn(cls, isolation: Isolation, config: dict[str, Any], *, yielding: bool = False) -> "Lane":
        """A lane process, started; `ready` waits for its browser.

        `yielding`: every process of the lane starts under SCHED_IDLE (a spare, started while
        gradings run), to be taken back with `yield_cpu(idle=False)` when it is put to work.
        """
        tmp_dir = tempfile.mkdtemp(prefix="taskwire-lane-")
        lane_config = LaneConfig(**config, tmp_dir=tmp_dir, namespaces=isolation.namespaces)
        process = await asyncio.create_subprocess_exec(
            *isolation.prefix,
            sys.executable,
            "-m",
            "app.submissions.lane",
            lane_config.to_arg(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=MAX_MESSAGE_BYTES,
            env=lane_environment(tmp_dir),
            start_new_session=True,  # a Ctrl-C to the worker's terminal is the worker's to handle
            preexec_fn=functools.partial(_prepare_child, yielding),
        )
        lane = cls(process, tmp_dir)
        lane.yielding = yielding
        return lane

    async def ready(self, timeout_s: float) -> None:
        """Wait for the lane's browser; the lane is killed and LaneFailed (with the reason) raised
        if it did not come up in time."""
        try:
            async with asyncio.timeout(timeout_s):
                first = await self._next_message()
        except (TimeoutError, LaneFailed) as exc:
            await self.kill()
            raise LaneFailed(f"the grading browser did not start: {exc or 'timed out'}") from None
        except BaseException:
            await self.kill()
            raise
        if "ready" not in first:
            await self.kill()
            raise LaneFailed(str(first.get("failed", first))[:300])

    @property
    def pid(self) -> int:
        """The lane's outermost process (unshare's, in namespaces)."""
        return self._process.pid

    @property
    def alive(self) -> bool:
        """Whether the lane process is still running."""
        return self._process.returncode is None

    def yield_cpu(self, idle: bool = True) -> bool:
        """Put every thread of the lane under SCHED_IDLE (or back under SCHED_OTHER); False where not allowed.

        Scheduling is per thread on Linux, and a new thread inherits its creator's policy, so a
        browser that keeps starting threads keeps yielding. Going idle is always allowed; coming
        back needs CAP_SYS_NICE (root has it).
        """
        policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
        allowed = True
        for process in tree_of(self.pid):
            with contextlib.suppress(psutil.Error):
                for thread in process.threads():
                    try:
                        os.sched_setscheduler(thread.id, policy, os.sched_param(0))
                    except PermissionError:
                        allowed = False
                    except OSError:
                        pass  # the thread ended meanwhile
        self.yielding = idle or not allowed
        return allowed

    async def grade(self, job: dict[str, Any], report: ProgressReporter) -> dict[str, Any]:
        """Send one job; report its progress; return the lane's answer (`graded` or `error`, and `clean`)."""
        stdin = self._process.stdin
        if stdin is None or not self.alive:
            raise LaneBroken("the lane is gone")
        self.gradings += 1
        try:
            stdin.write(json.dumps(job, separators=(",", ":")).encode() + b"\n")
            await stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise LaneBroken(f"the lane did not take the job: {exc}") from None
        accepted = False
        while True:
            try:
                message = await self._next_message()
            except LaneFailed as exc:
                raise (exc if accepted else LaneBroken(str(exc))) from None
            if message.get("error", {}).get("code") == "lane_broken":
                raise LaneBroken(str(message["error"].get("message", "its browser is gone")))
            if "accepted" in message:
                accepted = True
            elif "progress" in message:
                stage, text, fraction = message["progress"]
                report(str(stage), str(text), float(fraction))
            elif "graded" in message or "error" in message:
                return message
            else:
                raise LaneFailed(f"unexpected message from the lane: {str(message)[:200]}")

    async def close(self) -> None:
        """Let the lane finish (its stdin ends, its browser closes); killed if it takes too long."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._process.wait(), CLOSE_WAIT_S)
        await self.kill()

    async def kill(self) -> None:
        """End every process of the lane now, each by PID, and remove its temporary folder."""
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        if self._process.stdin is not None:
            self._process.stdin.close()
        kill_tree(self.pid)
        with contextlib.suppress(ProcessLookupError):
            await self._process.wait()
        self._draining.cancel()
        await asyncio.to_thread(shutil.rmtree, self._tmp_dir, True)

    def stderr_tail(self) -> str:
        """The last few KiB the lane wrote to stderr (its Python's errors, Node's and Chromium's)."""
        return b"".join(self._stderr_tail).decode("utf-8", "replace")[-STDERR_TAIL_BYTES:]

    async def _next_message(self) -> dict[str, Any]:
        stdout = self._process.stdout
        if stdout is None:
            raise LaneFailed("no pipe from the lane")
        try:
            line = await stdout.readline()
        except (ValueError, asyncio.LimitOverrunError):
            raise LaneFailed("a message from the lane was too long") from None
        if not line:
            raise LaneFailed(f"the lane ended: {self.stderr_tail()[-300:] or 'no message'}")
        try:
            message = json.loads(line)
        except ValueError:
            raise LaneFailed("the lane sent something that is not JSON") from None
        if not isinstance(message, dict):
            raise LaneFailed("the lane sent something that is not a message")
        return message

    async def _drain_stderr(self) -> None:
        # Read in chunks, keep the tail: a chatty lane costs a read per 64 KiB, never a line each.
        stderr = self._process.stderr
        if stderr is None:
            return
        while chunk := await stderr.read(65536):
            self._stderr_tail.append(chunk)
            self._stderr_kept += len(chunk)
            while self._stderr_kept - len(self._stderr_tail[0]) >= STDERR_TAIL_BYTES:
                self._stderr_kept -= len(self._stderr_tail.popleft())
