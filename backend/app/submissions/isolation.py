"""What the host offers to wall a grading lane off: namespaces when it can, a process tree when it cannot.

A lane (lane.py) runs in new network, PID and mount namespaces made by util-linux `unshare`:
no network device at all (so no request, WebSocket or UDP packet of a learner's page reaches
any network, and none costs the worker a callback), a PID namespace whose processes the kernel
kills together when its first one dies, and a private size-bounded tmpfs for the browser's
profile and temporary files. As root that needs nothing more; other users need unprivileged
user namespaces (`--user --map-root-user`). Where neither works (a container without the right,
another OS), `SANDBOX_ISOLATION=auto` falls back to a plain process tree, killed by PID, with
the network refused by Chromium's own switches, and says so; `namespaces` refuses to grade.
"""

import contextlib
import ctypes
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Literal

import psutil

logger = logging.getLogger(__name__)

IsolationSetting = Literal["auto", "namespaces", "process"]

# A /proc of the lane's own: Chromium looks itself up there by the PID it sees (a host /proc
# slowed a crash report to 5 s). A container that masks /proc paths refuses it: then without.
_NAMESPACES = ("--net", "--pid", "--fork", "--mount", "--mount-proc", "--kill-child")
_NAMESPACES_HOST_PROC = ("--net", "--pid", "--fork", "--mount", "--kill-child")
MS_NOSUID, MS_NODEV = 2, 4


@dataclass(frozen=True)
class Isolation:
    """How lanes are started here: the command put before the lane's own, and what it walls off."""

    prefix: tuple[str, ...]
    namespaces: bool
    # Why namespaces are not used (None when they are).
    reason: str | None = None

    def describe(self) -> str:
        """One line for logs and the ops page."""
        if self.namespaces:
            return "namespaces (no network, own PIDs, private tmpfs)"
        return f"process tree only ({self.reason})"


def detect_isolation(setting: IsolationSetting) -> Isolation:
    """The strongest isolation this host allows, within what SANDBOX_ISOLATION asks for."""
    if setting == "process":
        return Isolation((), namespaces=False, reason="SANDBOX_ISOLATION=process")
    unshare = shutil.which("unshare")
    if unshare is None:
        return Isolation((), namespaces=False, reason="no unshare command (util-linux)")
    tries: list[tuple[str, ...]] = [(unshare, *_NAMESPACES)] if os.geteuid() == 0 else []
    tries.append((unshare, "--user", "--map-root-user", *_NAMESPACES))
    tries.append((unshare, "--user", "--map-root-user", *_NAMESPACES_HOST_PROC))
    why = ""
    with tempfile.TemporaryDirectory(prefix="taskwire-probe-") as target:
        # The lane's own first step, a tmpfs mount: a container may allow the namespaces and not that.
        probe = f"from app.submissions.isolation import mount_tmpfs; mount_tmpfs({target!r}, 1)"
        for prefix in tries:
            try:
                done = subprocess.run(
                    [*prefix, "--", sys.executable, "-c", probe],
                    capture_output=True,
                    timeout=20,
                    check=False,
                    text=True,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                why = str(exc)
                continue
            if done.returncode == 0:
                return Isolation((*prefix, "--"), namespaces=True)
            why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:200]
    return Isolation((), namespaces=False, reason=f"namespaces refused here: {why}")


def mount_tmpfs(path: str, size_mb: int) -> None:
    """Mount a tmpfs of at most `size_mb` on `path` (in this process's mount namespace); OSError if refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"size={size_mb}m,mode=0700".encode()
    if libc.mount(b"taskwire-lane", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount tmpfs on {path}: {os.strerror(errno)}")


def kill_tree(pid: int) -> int:
    """SIGKILL a process and every descendant, each by PID; how many were signalled."""
    try:
        root = psutil.Process(pid)
        family = [*root.children(recursive=True), root]
    except psutil.Error:
        return 0
    killed = 0
    for process in family:
        with contextlib.suppress(psutil.Error):
            process.kill()
            killed += 1
    return killed


def tree_of(pid: int) -> list[psutil.Process]:
    """A process and its descendants that are still alive (empty once it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


CAP_SYS_NICE = 23


def may_raise_priority() -> bool:
    """Whether this process may take a thread back from SCHED_IDLE (CAP_SYS_NICE; root has it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    except (OSError, ValueError):
        pass
    return False
