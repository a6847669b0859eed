import pytest

from app.tasks.errors import PermanentError, TransientError
from app.tasks.retry import RetryPolicy, call_with_retries


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(attempts=6, base_delay_s=1, max_delay_s=8)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8)]:
        delays = [policy.delay_s(attempt) for _ in range(200)]
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > 0, "jittered"


def test_retry_after_is_honoured_but_capped() -> None:
    policy = RetryPolicy(attempts=3, base_delay_s=0.1, max_delay_s=1)
    assert policy.delay_s(1, retry_after_s=7) == 7
    assert policy.delay_s(1, retry_after_s=3600) == 60


async def test_transient_failures_are_retried_then_succeed() -> None:
    calls: list[int] = []
    retries: list[tuple[int, float, str]] = []

    async def flaky(attempt: int) -> str:
        calls.append(attempt)
        if attempt < 3:
            raise TransientError("llm_rate_limited", "slow down", retry_after_s=0.01 * attempt)
        return "answer"

    result = await call_with_retries(
        flaky,
        RetryPolicy(attempts=4, base_delay_s=0.001, max_delay_s=0.01),
        on_retry=lambda n, delay, error: retries.append((n, delay, error.code)),
        exhausted_code="llm_unavailable",
    )
    assert result == "answer" and calls == [1, 2, 3]
    assert [(n, code) for n, _, code in retries] == [(2, "llm_rate_limited"), (3, "llm_rate_limited")]
    assert retries[1][1] >= 0.02, "Retry-After wins over a shorter backoff"


async def test_exhausted_retries_become_a_permanent_error_with_the_given_code() -> None:
    async def always_down(attempt: int) -> None:
        raise TransientError("llm_server_error", f"503 on try {attempt}")

    with pytest.raises(PermanentError) as failure:
        await call_with_retries(
            always_down,
            RetryPolicy(attempts=3, base_delay_s=0),
            on_retry=lambda *_: None,
            exhausted_code="llm_unavailable",
        )
    assert failure.value.code == "llm_unavailable" and "3 tries" in failure.value.message


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def broken(attempt: int) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        await call_with_retries(broken, RetryPolicy(), on_retry=lambda *_: None, exhausted_code="x")
    assert calls == 1
