"""What a starting process claims before it does anything slow: its port, and its data folder.

Both fail at once with one line that names the cause, instead of a bind error buried mid-log
after the app has started (uvicorn then hung and ignored SIGTERM) or two embedded Redis servers
writing one append-only file.
"""

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path


class ClaimRefused(Exception):
    """The port or the data folder is taken; the message says which and what to do."""


def claim_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, for the server to listen on; ClaimRefused when it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: a port whose last connections linger in TIME_WAIT is free to use again.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ClaimRefused(
                f"port {port} on {host} is already in use (another Taskwire, or another program): "
                f"stop it, or choose another port with --port (make run PORT=...)"
            ) from None
        raise ClaimRefused(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(False)
    return sock


def check_port_free(host: str, port: int) -> None:
    """ClaimRefused when host:port cannot be listened on (for a parent that starts the server later)."""
    claim_port(host, port).close()


@contextlib.contextmanager
def hold_data_dir(data_dir: Path) -> Iterator[None]:
    """Hold DATA_DIR for this process; ClaimRefused when another `taskwire run` holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "taskwire.lock"
    # The kernel lets go of the lock when the process ends, however it ends: no stale lock files.
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise ClaimRefused(
                f"{data_dir.resolve()} is in use by another `taskwire run` ({holder}): stop it, "
                "or give this one its own DATA_DIR"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        yield
