"""Client-side test helpers shared by the client tests."""
from __future__ import annotations

from megafs.retry import RetryPolicy


def fast_retry(give_up: float = 30.0) -> RetryPolicy:
    """Retries of 20 ms doubling to 0.3 s, giving up after ``give_up`` seconds."""
    return RetryPolicy(initial=0.02, cap=0.3, give_up_after=give_up)
