"""Password hashing with a bounded number of argon2 runs at once.

argon2 is slow on purpose (about 50 ms of a core and 64 MiB each): unbounded, a burst of
sign-ins queues hundreds of them on the default thread pool and every request waits behind all
of them (30 s was measured). A few at a time keep each one fast; a request that cannot get a
turn within the wait is told to come back (503 `busy`) instead of waiting on.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from anyio import to_thread

from app.core.errors import ServiceUnavailable
from app.core.security import hash_password, verify_password


class HashingBusy(ServiceUnavailable):
    code = "busy"


class PasswordHashing:
    """argon2 off the event loop, `concurrency` runs at once, waiting at most `wait_s` for a turn."""

    def __init__(self, *, concurrency: int, wait_s: float):
        self._turns = asyncio.Semaphore(concurrency)
        self._wait_s = wait_s

    async def hash(self, password: str) -> str:
        """The password's argon2id hash."""
        async with self._turn():
            return await to_thread.run_sync(hash_password, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Whether the password matches (in the same time when there is no hash)."""
        async with self._turn():
            return await to_thread.run_sync(verify_password, password, password_hash)

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._wait_s):
                await self._turns.acquire()
        except TimeoutError:
            raise HashingBusy(
                "signing in is busy right now; please try again in a few seconds", headers={"Retry-After": "2"}
            ) from None
        try:
            yield
        finally:
            self._turns.release()
