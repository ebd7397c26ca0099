"""Path liveness of a STAMP session: consecutive misses declare the path down, consecutive replies up.

A session that watches its path gives every test packet one outcome, as
soon as it is known: a *reply* (the reply arrived within the liveness
timeout) or a *miss* (it did not, or the packet could not be sent). The
liveness timeout is :func:`miss_timeout`: ``TIMEOUT_INTERVALS`` probe
intervals after the send, or the session's reply timeout if that is
shorter. A reply that comes later still gives a delay sample, but for
liveness that packet stays a miss.

:class:`PathState` counts the outcomes in the order they become known.
The path starts *unknown*: nothing is decided until the first reply, which
makes it up without a declaration (a path that answers from the start
reports nothing), or until ``down_after`` consecutive misses, which declare
it down as they would later (a path that never answers is reported down
after the usual number of misses). Once decided, ``down_after`` consecutive
misses declare an up path down at once, and ``up_after`` consecutive
replies a down path up again. Each declaration is one :class:`Change`; no
declaration says "unknown", so the records made of them keep their two
values (down, up again).

The sender gives the outcomes of the start a longer timeout (see
:mod:`srv6pm.stamp.sender`): until the first decision a test packet is a
miss only once the session's reply timeout has passed without a reply, and
the packets sent before the first one answered count for nothing. So a
path whose routes are still being set up when its first probes leave, and
which answers within the reply timeout, goes from unknown to up and reports
nothing; one that never answers is declared down after ``down_after``
misses, the first of them one reply timeout after the session started.

So with probes every ``interval`` seconds the path is declared down at the
latest ``(down_after + TIMEOUT_INTERVALS) * interval`` after the last reply
was sent (60 ms with the defaults at 10 ms), and sooner by the round-trip time
from the last reply's arrival.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_DOWN_AFTER", "DEFAULT_UP_AFTER", "MAX_COUNT", "TIMEOUT_INTERVALS", "Change", "LivenessSettings",
           "PathState", "miss_timeout"]

DEFAULT_DOWN_AFTER = 3
DEFAULT_UP_AFTER = 3
MAX_COUNT = 1000
TIMEOUT_INTERVALS = 3


def miss_timeout(interval: float, reply_timeout: float) -> float:
    """Seconds after its send at which a test packet without a reply is a miss."""
    return min(TIMEOUT_INTERVALS * interval, reply_timeout)


@dataclass(frozen=True)
class LivenessSettings:
    """How a session watches its path; ``ValueError`` naming the field if a count is not 1..MAX_COUNT."""

    down_after: int = DEFAULT_DOWN_AFTER  # consecutive test packets without a reply that declare the path down
    up_after: int = DEFAULT_UP_AFTER  # consecutive replies that declare a down path up again

    def __post_init__(self):
        for name in ("down_after", "up_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
                raise ValueError(f"liveness {name} {value!r} not in 1..{MAX_COUNT}")


@dataclass(frozen=True)
class Change:
    """The path was declared down (``up`` False) or up again (``up`` True).

    ``count`` is the run of consecutive misses (down) or replies (up) that
    made it, ``threshold`` the setting it reached. ``time_ns`` is when it was
    declared and ``last_reply_ns`` the arrival of the last reply before it
    (None: no reply yet in this session); both Unix ns on the sender's clock.
    """

    up: bool
    count: int
    threshold: int
    time_ns: int
    last_reply_ns: int | None


class PathState:
    """The miss/reply state machine of one session (see the module documentation). Not thread safe."""

    def __init__(self, settings: LivenessSettings):
        self.settings = settings
        self.up: bool | None = None  # None: unknown, nothing decided yet
        self.last_reply_ns: int | None = None
        self._run = 0  # consecutive outcomes against the current state (while unknown: misses)

    @property
    def state(self) -> str:
        """``"unknown"`` (nothing decided yet), ``"up"`` or ``"down"``."""
        return "unknown" if self.up is None else "up" if self.up else "down"

    def reply(self, arrived_ns: int, now_ns: int) -> Change | None:
        """A test packet was answered in time (arrived at ``arrived_ns``); the change it makes, if any."""
        self.last_reply_ns = arrived_ns
        if self.up is None:  # the first decision: up, which is not declared (the path never was down)
            self.up = True
        if self.up:
            self._run = 0
            return None
        self._run += 1
        if self._run < self.settings.up_after:
            return None
        return self._change(True, self.settings.up_after, now_ns)

    def miss(self, now_ns: int) -> Change | None:
        """A test packet was not answered in time (or not sent); the change it makes, if any."""
        if self.up is False:
            self._run = 0
            return None
        self._run += 1
        if self._run < self.settings.down_after:
            return None
        return self._change(False, self.settings.down_after, now_ns)

    def _change(self, up: bool, threshold: int, now_ns: int) -> Change:
        self.up = up
        count, self._run = self._run, 0
        return Change(up=up, count=count, threshold=threshold, time_ns=now_ns, last_reply_ns=self.last_reply_ns)
