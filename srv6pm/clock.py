"""The alternate-marking period clock (RFC 9341, conventions of DESIGN.md).

Time is cut into periods of length T. Period ``k`` covers
``[k*T, (k+1)*T)`` in Unix time; its colour is ``k mod 2``. The block of
period ``k`` is read at the *guard time*, the middle of period ``k+1``, when
every packet marked in period ``k`` has long reached the far end while the
other colour is being marked.

All arithmetic is on integer nanoseconds so that periods never drift and a
period index computed on two machines with synchronised clocks agrees.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property, lru_cache
from datetime import datetime, timezone

__all__ = ["PeriodClock", "period_clock", "rfc3339"]

NS_PER_S = 1_000_000_000
MAX_PERIOD_S = 366 * 86_400


@dataclass(frozen=True)
class PeriodClock:
    """Period arithmetic for a period of ``period_s`` seconds (> 0, ns resolution)."""

    period_s: float

    def __post_init__(self):
        if not self.period_s > 0:
            raise ValueError(f"period must be positive, got {self.period_s!r}")
        if not self.period_s <= MAX_PERIOD_S:  # beyond: no measurement period (and 1e300 s has no ns)
            raise ValueError(f"period must be at most {MAX_PERIOD_S} s (a year), got {self.period_s!r} s")
        if self.period_ns < 1_000_000:
            raise ValueError(f"period must be at least 1 ms, got {self.period_s!r} s")

    @cached_property  # frozen: computed once, kept in the instance's __dict__
    def period_ns(self) -> int:
        return round(self.period_s * NS_PER_S)

    def period_at(self, t_ns: int) -> int:
        """Index ``k`` of the period that contains Unix time ``t_ns``."""
        return t_ns // self.period_ns

    def current(self) -> int:
        return self.period_at(time.time_ns())

    @staticmethod
    def colour(k: int) -> int:
        """Colour (0 or 1) of period ``k``."""
        return k % 2

    def start_ns(self, k: int) -> int:
        """Unix time in ns at which period ``k`` starts."""
        return k * self.period_ns

    def guard_ns(self, k: int) -> int:
        """Unix time in ns at which the block of period ``k`` is read (middle of ``k+1``)."""
        return (k + 1) * self.period_ns + self.period_ns // 2

    def start_rfc3339(self, k: int) -> str:
        return _rfc3339_cached(self.start_ns(k))


@lru_cache(maxsize=4096)
def _rfc3339_cached(t_ns: int) -> str:
    """rfc3339 for period starts: thousands of results share each one."""
    return rfc3339(t_ns)


@lru_cache(maxsize=64)
def period_clock(period_s: float) -> "PeriodClock":
    """The PeriodClock of ``period_s``, made once (the processor needs one per result)."""
    return PeriodClock(period_s)


def rfc3339(t_ns: int) -> str:
    """RFC 3339 UTC text for Unix time ``t_ns``, with as many fractional digits as needed (up to ns)."""
    seconds, ns = divmod(t_ns, NS_PER_S)
    base = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if ns:
        base += "." + f"{ns:09d}".rstrip("0")
    return base + "Z"
