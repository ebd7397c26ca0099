"""STAMP timestamps (NTP 64-bit, PTPv2 truncated) and the Error Estimate field, against hand-computed values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srv6pm.stamp.errors import StampError, TimestampError
from srv6pm.stamp.timestamp import (
    NTP_UNIX_OFFSET_S, ErrorEstimate, TimestampFormat, decode, encode, local_clock, ntp_from_unix_ns,
    ptp_from_unix_ns, unix_ns_from_ntp, unix_ns_from_ptp,
)

T = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z


def test_ntp_vector():
    # seconds since 1900: 1_700_000_000 + 2_208_988_800 = 3_908_988_800 = 0xE8FE6F80
    # fraction: 0.123456789 * 2**32 = 530_242_871.22 -> 530_242_871 = 0x1F9ADD37
    assert NTP_UNIX_OFFSET_S == 2_208_988_800
    assert ntp_from_unix_ns(T) == 0xE8FE6F80_1F9ADD37
    assert unix_ns_from_ntp(0xE8FE6F80_1F9ADD37, pivot_ns=T) == T
    # the NTP epoch and the Unix epoch
    assert ntp_from_unix_ns(0) == 2_208_988_800 << 32
    assert unix_ns_from_ntp(0x83AA7E80_00000000, pivot_ns=0) == 0
    # half a second is fraction 0x80000000
    assert ntp_from_unix_ns(500_000_000) & 0xFFFFFFFF == 0x80000000


def test_ptp_vector():
    # TAI = UTC + 37 s: 1_700_000_037 = 0x6553F125 seconds, 123_456_789 = 0x075BCD15 ns
    assert ptp_from_unix_ns(T) == 0x6553F125_075BCD15
    assert unix_ns_from_ptp(0x6553F125_075BCD15, pivot_ns=T) == T
    assert ptp_from_unix_ns(T, tai_utc=0) == (1_700_000_000 << 32) | 123_456_789


def test_ptp_nanoseconds_must_be_below_one_second():
    with pytest.raises(TimestampError, match="nanoseconds"):
        unix_ns_from_ptp((5 << 32) | 1_000_000_000)
    assert isinstance(TimestampError("x"), StampError)


def test_format_selects_conversion():
    assert encode(T, TimestampFormat.NTP) == ntp_from_unix_ns(T)
    assert encode(T, TimestampFormat.PTP) == ptp_from_unix_ns(T)
    assert decode(encode(T, TimestampFormat.PTP), TimestampFormat.PTP, T) == T


def test_ntp_era_rollover_2036():
    # 2036-02-07T06:28:16Z is NTP era 1 second 0
    rollover_unix_s = (1 << 32) - NTP_UNIX_OFFSET_S
    after = (rollover_unix_s + 10) * 10**9
    value = ntp_from_unix_ns(after)
    assert value >> 32 == 10
    assert unix_ns_from_ntp(value, pivot_ns=after) == after
    assert unix_ns_from_ntp(value, pivot_ns=after - 20 * 10**9) == after  # a pivot before the rollover
    before = (rollover_unix_s - 10) * 10**9
    assert unix_ns_from_ntp(ntp_from_unix_ns(before), pivot_ns=after) == before


@settings(database=None)
@given(st.integers(min_value=0, max_value=4_000_000_000 * 10**9))
def test_ntp_round_trip_is_exact(ns):
    assert unix_ns_from_ntp(ntp_from_unix_ns(ns), pivot_ns=ns) == ns


@settings(database=None)
@given(st.integers(min_value=0, max_value=4_000_000_000 * 10**9))
def test_ptp_round_trip_is_exact(ns):
    assert unix_ns_from_ptp(ptp_from_unix_ns(ns), pivot_ns=ns) == ns


@settings(database=None)
@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_decoding_any_64_bit_value_never_raises_other_errors(value):
    for fmt in TimestampFormat:
        try:
            decode(value, fmt, T)
        except TimestampError:
            assert fmt is TimestampFormat.PTP


def test_error_estimate_bits():
    # |S|Z| Scale (6) | Multiplier (8) |
    ee = ErrorEstimate(synchronized=True, format=TimestampFormat.PTP, scale=0x3F, multiplier=0xFF)
    assert ee.value == 0xFFFF and ee.pack() == b"\xff\xff"
    assert ErrorEstimate(True, TimestampFormat.NTP, 0, 0).pack() == b"\x80\x00"      # S only
    assert ErrorEstimate(False, TimestampFormat.PTP, 0, 0).pack() == b"\x40\x00"     # Z only
    assert ErrorEstimate(False, TimestampFormat.NTP, 0x21, 0).pack() == b"\x21\x00"  # scale in the low 6 bits
    assert ErrorEstimate(False, TimestampFormat.NTP, 0, 0x2A).pack() == b"\x00\x2a"  # multiplier: 2nd octet
    decoded = ErrorEstimate.unpack(b"\x85\x2a")
    assert (decoded.synchronized, decoded.format, decoded.scale, decoded.multiplier) == (True, TimestampFormat.NTP,
                                                                                        5, 42)
    assert ErrorEstimate.unpack(b"\x40\x01").format is TimestampFormat.PTP


def test_error_estimate_value():
    # error = multiplier * 2**(scale - 32) s
    assert ErrorEstimate(scale=32, multiplier=1).error_ns == 1e9
    assert ErrorEstimate(scale=0, multiplier=1).error_ns == pytest.approx(0.2328, rel=1e-3)
    assert ErrorEstimate(scale=1, multiplier=0).error_ns is None  # multiplier 0 is invalid (RFC 4656)
    for error in (0, 1, 999, 10**3, 10**6, 123_456_789, 16 * 10**9):
        ee = ErrorEstimate.for_error(error, synchronized=True)
        assert ee.error_ns >= error and ee.multiplier >= 1
        if ee.scale > 0:  # the smallest representable: one scale step finer cannot hold it
            assert ee.multiplier * 2 > 255 or ee.multiplier * 2.0 ** (ee.scale - 33) * 1e9 < error
    with pytest.raises(ValueError):
        ErrorEstimate(scale=64)
    with pytest.raises(ValueError):
        ErrorEstimate(multiplier=256)


def test_local_clock_is_readable():
    state = local_clock()
    assert state.error_ns > 0 and state.tai_utc >= 0
