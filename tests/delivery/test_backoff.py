"""Retry delays: doubling from the base, capped, jittered within the upper half."""

from __future__ import annotations

import random

import pytest

from worker.delivery.backoff import retry_delay


def test_delays_double_then_stop_at_the_cap() -> None:
    rng = random.Random(3)
    for attempt, ceiling in [(1, 5.0), (2, 10.0), (3, 20.0), (8, 300.0), (60, 300.0)]:
        delays = [retry_delay(attempt, base=5.0, cap=300.0, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10, "jittered, not all at one instant"


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError, match="attempt"):
        retry_delay(0, base=1.0, cap=2.0)
