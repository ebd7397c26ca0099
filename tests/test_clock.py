import pytest

from srv6pm.clock import PeriodClock, rfc3339


def test_period_index_and_colour_follow_unix_time():
    clock = PeriodClock(2)
    assert clock.period_ns == 2_000_000_000
    assert clock.period_at(0) == 0
    assert clock.period_at(1_999_999_999) == 0
    assert clock.period_at(2_000_000_000) == 1
    k = clock.period_at(1_764_000_001_000_000_000)
    assert k == 882_000_000
    assert clock.colour(k) == 0 and clock.colour(k + 1) == 1


def test_guard_time_is_the_middle_of_the_next_period():
    clock = PeriodClock(10)
    assert clock.start_ns(5) == 50 * 10**9
    assert clock.guard_ns(5) == 65 * 10**9
    assert clock.period_at(clock.guard_ns(5)) == 6


def test_fractional_periods_are_exact_in_nanoseconds():
    clock = PeriodClock(0.5)
    assert clock.period_ns == 500_000_000
    assert clock.start_ns(3) == 1_500_000_000


@pytest.mark.parametrize("bad", [0, -1, 0.0000001])
def test_invalid_periods_are_refused(bad):
    with pytest.raises(ValueError):
        PeriodClock(bad)


def test_rfc3339_utc():
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1_500_000_000) == "1970-01-01T00:00:01.5Z"
    assert PeriodClock(2).start_rfc3339(882_000_000) == "2025-11-24T16:00:00Z"
