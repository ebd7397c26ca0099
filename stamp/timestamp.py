"""STAMP timestamps: the two 64-bit wire formats and the Error Estimate field.

RFC 8762 §4.2.1 carries every timestamp as 8 octets in one of two formats,
selected by the Z bit of the Error Estimate that accompanies it:

* ``Z = 0``, NTP 64-bit (RFC 5905, the default): 32 bits of seconds since
  1900-01-01 00:00:00 UTC and 32 bits of binary fraction of a second.
* ``Z = 1``, PTPv2 truncated (IEEE 1588): 32 bits of seconds and 32 bits of
  nanoseconds (``< 10**9``) since the PTP epoch 1970-01-01 00:00:00 TAI.

Inside srv6pm every time is an integer of nanoseconds since the Unix epoch
(UTC, like ``time.time_ns()``). The conversions here are exact for NTP (its
resolution, 2**-32 s, is finer than 1 ns, so ns -> NTP -> ns is the identity)
and for PTP. PTP counts TAI seconds: converting adds ``tai_utc`` seconds
(TAI - UTC, 37 s since 2017, or the kernel's value when it knows it, see
:func:`tai_utc_offset`).

Both wire formats have a 32-bit seconds field that wraps (NTP in 2036, PTP
in 2106). Decoding picks the era that puts the result closest to a reference
time (default: now), so timestamps within ~68 years of it decode correctly.

The Error Estimate (RFC 8762 §4.2.1, defined by RFC 4656 §4.1.2, Z by RFC 8186
§2.3) is 16 bits ``S|Z|Scale(6)|Multiplier(8)``; the error is
``Multiplier * 2**(Scale - 32)`` seconds, and S = 1 says the clock is
synchronised to UTC by an external source. See :class:`ErrorEstimate`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import time
from dataclasses import dataclass
from enum import IntEnum

from srv6pm.stamp.errors import TimestampError

__all__ = [
    "ErrorEstimate", "NTP_UNIX_OFFSET_S", "TAI_UTC_S", "TimestampFormat",
    "ClockState", "decode", "encode", "local_clock", "local_error_estimate", "ntp_from_unix_ns",
    "ptp_from_unix_ns", "tai_utc_offset", "unix_ns_from_ntp", "unix_ns_from_ptp",
]

NS = 1_000_000_000
NTP_UNIX_OFFSET_S = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01 (RFC 5905)
TAI_UTC_S = 37                      # TAI - UTC since 2017-01-01 (IERS Bulletin C)
_NTP_ERA = 1 << 64                  # one NTP era as a 32.32 fixed-point value
_PTP_ERA_S = 1 << 32
U64 = (1 << 64) - 1


class TimestampFormat(IntEnum):
    """Wire format of a timestamp: the value of the Z bit (RFC 8186 §2.3)."""

    NTP = 0
    PTP = 1


def ntp_from_unix_ns(unix_ns: int) -> int:
    """The NTP 64-bit value (seconds << 32 | fraction) of Unix time ``unix_ns``, rounded to nearest."""
    fixed = ((unix_ns + NTP_UNIX_OFFSET_S * NS) << 32)
    value = (fixed + NS // 2) // NS
    return value % _NTP_ERA


def unix_ns_from_ntp(value: int, pivot_ns: int | None = None) -> int:
    """Unix ns of the NTP 64-bit ``value``, in the NTP era closest to ``pivot_ns`` (default: now).

    The all-zero value means "no time" in NTP but is still converted (to
    1900/2036); callers that care check for 0 themselves.
    """
    if not 0 <= value <= U64:
        raise TimestampError(f"NTP timestamp {value!r} is not a 64-bit unsigned value")
    pivot = _now_ns() if pivot_ns is None else pivot_ns
    pivot_fixed = ((pivot + NTP_UNIX_OFFSET_S * NS) << 32) // NS
    era = (pivot_fixed - value + _NTP_ERA // 2) // _NTP_ERA
    fixed = value + era * _NTP_ERA
    return (fixed * NS + (1 << 31)) // (1 << 32) - NTP_UNIX_OFFSET_S * NS


def ptp_from_unix_ns(unix_ns: int, tai_utc: int = TAI_UTC_S) -> int:
    """The PTPv2 truncated value (seconds << 32 | nanoseconds) of Unix time ``unix_ns``."""
    tai_ns = unix_ns + tai_utc * NS
    seconds, nanos = divmod(tai_ns, NS)
    return ((seconds % _PTP_ERA_S) << 32) | nanos


def unix_ns_from_ptp(value: int, pivot_ns: int | None = None, tai_utc: int = TAI_UTC_S) -> int:
    """Unix ns of the PTPv2 truncated ``value``, in the era closest to ``pivot_ns`` (default: now).

    Raises :class:`TimestampError` if the nanoseconds field is not below 10**9.
    """
    if not 0 <= value <= U64:
        raise TimestampError(f"PTP timestamp {value!r} is not a 64-bit unsigned value")
    seconds, nanos = value >> 32, value & 0xFFFFFFFF
    if nanos >= NS:
        raise TimestampError(f"PTP timestamp nanoseconds field {nanos} is not below 10**9")
    pivot = _now_ns() if pivot_ns is None else pivot_ns
    pivot_s = (pivot + tai_utc * NS) // NS
    era = (pivot_s - seconds + _PTP_ERA_S // 2) // _PTP_ERA_S
    return (seconds + era * _PTP_ERA_S) * NS + nanos - tai_utc * NS


def encode(unix_ns: int, fmt: TimestampFormat, tai_utc: int = TAI_UTC_S) -> int:
    """The 64-bit wire value of ``unix_ns`` in format ``fmt``."""
    if fmt is TimestampFormat.PTP:
        return ptp_from_unix_ns(unix_ns, tai_utc)
    return ntp_from_unix_ns(unix_ns)


def decode(value: int, fmt: TimestampFormat, pivot_ns: int | None = None, tai_utc: int = TAI_UTC_S) -> int:
    """Unix ns of the 64-bit wire ``value`` in format ``fmt``; :class:`TimestampError` if invalid."""
    if fmt is TimestampFormat.PTP:
        return unix_ns_from_ptp(value, pivot_ns, tai_utc)
    return unix_ns_from_ntp(value, pivot_ns)


def _now_ns() -> int:
    return time.time_ns()


_EE = struct.Struct("!H")
_SCALE_MAX = 63
_MULTIPLIER_MAX = 255


@dataclass(frozen=True)
class ErrorEstimate:
    """The 16-bit Error Estimate field ``S|Z|Scale|Multiplier`` (RFC 8762 §4.2.1, RFC 4656 §4.1.2).

    ``synchronized`` is S, ``format`` is Z, ``scale`` (0..63) and
    ``multiplier`` (0..255) give the error ``multiplier * 2**(scale-32)`` s.
    RFC 4656 says the multiplier MUST NOT be zero; such a field is still
    representable here (a reflector copies it verbatim) but :attr:`error_ns`
    is ``None`` for it.
    """

    synchronized: bool = False
    format: TimestampFormat = TimestampFormat.NTP
    scale: int = 0
    multiplier: int = 1

    def __post_init__(self):
        if not 0 <= self.scale <= _SCALE_MAX:
            raise ValueError(f"error estimate scale {self.scale} not in 0..{_SCALE_MAX}")
        if not 0 <= self.multiplier <= _MULTIPLIER_MAX:
            raise ValueError(f"error estimate multiplier {self.multiplier} not in 0..{_MULTIPLIER_MAX}")
        object.__setattr__(self, "format", TimestampFormat(self.format))

    @property
    def value(self) -> int:
        """The field as a 16-bit integer."""
        return (int(self.synchronized) << 15) | (int(self.format) << 14) | (self.scale << 8) | self.multiplier

    @classmethod
    def from_value(cls, value: int) -> "ErrorEstimate":
        """Decode a 16-bit field (never fails for 0..65535)."""
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"error estimate {value!r} is not a 16-bit value")
        return cls(bool(value >> 15), TimestampFormat((value >> 14) & 1), (value >> 8) & 0x3F, value & 0xFF)

    def pack(self) -> bytes:
        return _EE.pack(self.value)

    @classmethod
    def unpack(cls, data: bytes) -> "ErrorEstimate":
        return cls.from_value(_EE.unpack(data)[0])

    @property
    def error_ns(self) -> float | None:
        """The estimated error in nanoseconds, or ``None`` if the multiplier is 0 (invalid)."""
        if self.multiplier == 0:
            return None
        return self.multiplier * 2.0 ** (self.scale - 32) * NS

    @classmethod
    def for_error(cls, error_ns: float, synchronized: bool,
                  fmt: TimestampFormat = TimestampFormat.NTP) -> "ErrorEstimate":
        """The smallest representable estimate that is at least ``error_ns`` (saturating at the largest)."""
        error_s = max(float(error_ns), 0.0) / NS
        for scale in range(_SCALE_MAX + 1):
            unit = 2.0 ** (scale - 32)
            multiplier = max(1, -int(-error_s // unit))  # ceil, at least 1
            if multiplier <= _MULTIPLIER_MAX:
                return cls(synchronized, fmt, scale, multiplier)
        return cls(synchronized, fmt, _SCALE_MAX, _MULTIPLIER_MAX)

    def to_dict(self) -> dict:
        """Plain data for records: ``{"s": 0|1, "z": 0|1, "scale", "multiplier", "error_ns"}``."""
        return {"s": int(self.synchronized), "z": int(self.format), "scale": self.scale,
                "multiplier": self.multiplier, "error_ns": self.error_ns}


# -- the local clock ------------------------------------------------------------

class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # struct timex of <sys/timex.h> (glibc, Linux): natural alignment matches the kernel's.
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int), ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


_STA_UNSYNC = 0x0040
_TIME_ERROR = 5
_UNSYNC_ERROR_NS = 1_000_000_000  # reported when the kernel gives no usable figure


@dataclass(frozen=True)
class ClockState:
    """What the kernel says about CLOCK_REALTIME (adjtimex(2), read only)."""

    synchronized: bool
    error_ns: int      # esterror when synchronized, else maxerror (both from the kernel, µs -> ns)
    tai_utc: int       # TAI - UTC in seconds (kernel value if set, else TAI_UTC_S)


_libc = None


def _adjtimex():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return _libc.adjtimex


def local_clock() -> ClockState:
    """Read the kernel's clock state; never fails (falls back to "unsynchronised, 1 s")."""
    try:
        tx = _Timex()
        state = _adjtimex()(ctypes.byref(tx))
    except (OSError, AttributeError, TypeError):
        return ClockState(False, _UNSYNC_ERROR_NS, TAI_UTC_S)
    if state < 0:
        return ClockState(False, _UNSYNC_ERROR_NS, TAI_UTC_S)
    synced = state != _TIME_ERROR and not (tx.status & _STA_UNSYNC)
    micros = tx.esterror if synced else tx.maxerror
    error_ns = micros * 1000 if micros > 0 else _UNSYNC_ERROR_NS
    return ClockState(synced, error_ns, tx.tai if tx.tai > 0 else TAI_UTC_S)


def tai_utc_offset() -> int:
    """TAI - UTC in seconds: the kernel's value when set (by chrony/ntpd/ptp4l), else 37."""
    return local_clock().tai_utc


def local_error_estimate(fmt: TimestampFormat = TimestampFormat.NTP) -> ErrorEstimate:
    """The Error Estimate for timestamps taken from this host's CLOCK_REALTIME in format ``fmt``."""
    state = local_clock()
    return ErrorEstimate.for_error(state.error_ns, state.synchronized, fmt)
