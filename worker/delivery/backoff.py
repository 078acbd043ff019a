"""When to try a failed delivery again: exponential backoff with full jitter."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based).

    The ceiling doubles each attempt from ``base`` up to ``cap``; the delay is drawn
    between half the ceiling and the ceiling, so many deliveries failed by one outage do
    not all come back at the same instant, yet none comes back much sooner than planned.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, got {attempt}")
    ceiling = min(cap, base * 2 ** min(attempt - 1, 62))
    return (rng or random).uniform(ceiling / 2, ceiling)
