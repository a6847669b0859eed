import pytest

from app.metrics.latency import quantile


def test_quantile_interpolates_within_its_bucket_as_prometheus_does() -> None:
    # 10 observations: 4 at ≤0.1 s, 4 more at ≤0.5 s, 2 more at ≤1 s.
    buckets = [("0.1", 4.0), ("0.5", 8.0), ("1.0", 10.0), ("+Inf", 10.0)]
    assert quantile(0.4, buckets) == pytest.approx(0.1)
    assert quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (1 / 4))
    assert quantile(0.9, buckets) == pytest.approx(0.5 + 0.5 * (1 / 2))
    assert quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * (1.9 / 2))


def test_quantile_of_nothing_is_none_and_past_the_last_bound_is_that_bound() -> None:
    assert quantile(0.5, [("0.1", 0.0), ("+Inf", 0.0)]) is None
    assert quantile(0.95, [("0.1", 1.0), ("60.0", 1.0), ("+Inf", 5.0)]) == 60.0
