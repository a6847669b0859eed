"""Retrying transient failures inside one execution: exponential backoff, jitter, Retry-After."""

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from app.tasks.errors import PermanentError, TransientError

T = TypeVar("T")

# However long a server asks us to wait, a learner should not wait longer than this per try.
RETRY_AFTER_CAP_S = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """How many tries, and how long to wait between them."""

    attempts: int = 4
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def delay_s(self, failed_attempt: int, retry_after_s: float | None = None) -> float:
        """The wait after try number `failed_attempt` (1-based): full-jitter-ish exponential backoff."""
        backoff = min(self.max_delay_s, self.base_delay_s * 2.0 ** (failed_attempt - 1))
        jittered = backoff * random.uniform(0.5, 1.0)
        if retry_after_s is not None:
            return min(max(jittered, retry_after_s), RETRY_AFTER_CAP_S)
        return jittered


async def call_with_retries(
    operation: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, float, TransientError], None],
    exhausted_code: str,
) -> T:
    """Run `operation(attempt)` until it succeeds; after the last TransientError raise PermanentError.

    `on_retry(next_attempt, delay_s, error)` runs before each wait (to tell the user).
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return await operation(attempt)
        except TransientError as error:
            if attempt == policy.attempts:
                raise PermanentError(exhausted_code, f"gave up after {attempt} tries: {error.message}") from error
            delay = policy.delay_s(attempt, error.retry_after_s)
            on_retry(attempt + 1, delay, error)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")
