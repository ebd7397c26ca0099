"""srv6pm.consume.ConsumeLoop.retry: the waits between attempts (the consumer is not used by retry)."""

from __future__ import annotations

import logging
import threading

import pytest
from prometheus_client import CollectorRegistry

from srv6pm import metrics
from srv6pm.consume import FIRST_DELAY_S, ConsumeLoop, Stopped
from srv6pm.influx import StoreError
from srv6pm.waiting import Waiting


class Recorded(threading.Event):
    """A stop event that records each wait asked of it and returns at once (not stopping)."""

    def __init__(self):
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return False


def loop(stopping: threading.Event) -> ConsumeLoop:
    log = logging.getLogger("test.consume")
    return ConsumeLoop(None, Waiting("test", log, metrics.Metrics(CollectorRegistry())), log, poll_ms=100,
                       retry_max_s=1.0, stopping=stopping)


def failing(errors: list[Exception]):
    def action():
        if errors:
            raise errors.pop(0)
        return "stored"
    return action


def test_retry_doubles_its_waits_up_to_the_maximum():
    stopping = Recorded()
    errors: list[Exception] = [StoreError("down") for _ in range(5)]
    assert loop(stopping).retry(failing(errors), StoreError, "influxdb") == "stored"
    assert stopping.waits == [FIRST_DELAY_S, 2 * FIRST_DELAY_S, 4 * FIRST_DELAY_S, 1.0, 1.0]


def test_retry_waits_at_least_what_the_failure_says():
    """InfluxDB's Retry-After (StoreError.retry_after_s) is honoured; a shorter one does not shorten the wait."""
    stopping = Recorded()
    errors: list[Exception] = [StoreError("busy", status=429, retry_after_s=7.0),
                               StoreError("busy", status=429, retry_after_s=0.01), StoreError("down")]
    assert loop(stopping).retry(failing(errors), StoreError, "influxdb") == "stored"
    assert stopping.waits == [7.0, 2 * FIRST_DELAY_S, 4 * FIRST_DELAY_S]


def test_retry_gives_up_when_stopping():
    stopping = threading.Event()
    stopping.set()
    with pytest.raises(Stopped):
        loop(stopping).retry(failing([StoreError("down")]), StoreError, "influxdb")
