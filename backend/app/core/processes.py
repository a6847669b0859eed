"""Child-process helpers shared by `taskwire run` and the test harness."""

import ctypes
import os
import signal
import socket
import subprocess
import sys

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child before exec (Linux): `sig` reaches it when its parent dies, even by SIGKILL: nothing is orphaned."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)


def spawn(
    args: list[str], *, env: dict[str, str] | None = None, own_session: bool = True, **kwargs: object
) -> subprocess.Popen[bytes]:
    """Start a child that dies when we do, in its own session (Ctrl-C reaches only us) unless told otherwise."""
    return subprocess.Popen(args, env=env, start_new_session=own_session, preexec_fn=die_with_parent, **kwargs)  # type: ignore[call-overload, no-any-return]


def stop(process: subprocess.Popen[bytes], *, timeout_s: float = 15.0) -> int | None:
    """SIGTERM, wait for a graceful exit, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment with `overrides`, for a child process."""
    return {**os.environ, **overrides}
