"""The Session-Sender's RFC 8972 parts over real UDP sockets on loopback (no root needed).

Direct Measurement (§4.5) and Class of Service (§4.4) TLVs against srv6pm's own
reflector, through a real UDP relay that drops chosen test packets or replies
and re-marks the DSCP; and the corner cases against hand-built reflectors that
answer with bytes laid out here per RFC 8762 §4.3.1: a reflector that does not
implement RFC 8972 (SSID returned as zero, §3), and one whose timestamps are
in the wrong epoch.
"""

from __future__ import annotations

import select
import socket
import struct
import threading

import pytest

from srv6pm import records
from srv6pm.stamp import udp
from srv6pm.stamp.reflector import Reflector, ReflectorConfig
from srv6pm.stamp.sender import Sender, SenderConfig, SsidIgnored, impossible_timestamps, summarize
from srv6pm.stamp.timestamp import ErrorEstimate, TimestampFormat, ntp_from_unix_ns

NINE_YEARS_S = 9 * 365 * 86400


class Relay:
    """A UDP relay between a sender and a reflector: ``drop_forward`` / ``drop_backward`` are
    Session-Sender sequence numbers whose test packet / reply it does not pass on; ``remark`` is the
    DSCP it forwards test packets with (None: the one they came with is not kept, the socket's 0)."""

    def __init__(self, reflector: tuple[str, int], *, drop_forward=(), drop_backward=(), remark: int | None = None):
        self.reflector = reflector
        self.drop_forward, self.drop_backward = set(drop_forward), set(drop_backward)
        self.front = udp.open_socket("::1", 0)
        self.back = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.back.bind(("::1", 0))
        if remark is not None:
            self.back.setsockopt(socket.IPPROTO_IPV6, udp.IPV6_TCLASS, remark << 2)
        self.address = self.front.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sender = None
        while not self._stop.is_set():
            ready, _, _ = select.select([self.front, self.back], [], [], 0.05)
            if self.front in ready:
                rx = udp.receive(self.front, 65536)
                sender = rx.source
                if struct.unpack_from("!I", rx.data)[0] not in self.drop_forward:
                    self.back.sendto(rx.data, self.reflector)
            if self.back in ready:
                data = self.back.recv(65536)
                if sender is not None and struct.unpack_from("!I", data, 24)[0] not in self.drop_backward:
                    self.front.sendto(data, sender)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.front.close()
        self.back.close()


def run(address, **kw) -> tuple[list, Sender]:
    config = SenderConfig(dest=address[0], port=address[1], session="t",
                          **{"count": 6, "interval": 0.02, "timeout": 0.5, **kw})
    sender = Sender(config)
    return sorted(sender.samples(), key=lambda s: s.seq), sender


def test_direct_measurement_counters_tell_forward_from_backward_loss():
    with Reflector(ReflectorConfig(bind="::1", port=0)) as r:
        relay = Relay(r.address, drop_forward={2}, drop_backward={4})
        try:
            samples, _ = run(relay.address, direct_measurement=True)
        finally:
            relay.close()
    assert [s.lost for s in samples] == [False, False, True, False, True, False]
    got = [(s.seq, s.sender_tx, s.reflector_rx, s.reflector_tx) for s in samples if not s.lost]
    # S_TxC counts what the sender sent, R_RxC what reached the reflector (not seq 2), R_TxC its replies
    assert got == [(0, 1, 1, 1), (1, 2, 2, 2), (3, 4, 3, 3), (5, 6, 5, 5)]
    assert all(s.sender_tx is None for s in samples if s.lost)
    for s in samples:
        records.validate(records.STAMP, {"v": 1, "period_s": 1.0, **s.to_dict()})


def test_without_direct_measurement_there_are_no_counters():
    with Reflector(ReflectorConfig(bind="::1", port=0)) as r:
        samples, _ = run(r.address, count=2)
    assert [s.sender_tx for s in samples] == [None, None] and "reflector_rx" not in samples[0].to_dict()


def test_class_of_service_reports_re_marking():
    with Reflector(ReflectorConfig(bind="::1", port=0)) as r:
        straight, _ = run(r.address, count=2, dscp=10)
        relay = Relay(r.address, remark=0)
        try:
            remarked, _ = run(relay.address, count=2, dscp=10)
        finally:
            relay.close()
    for s in straight:
        assert (s.dscp, s.dscp_at_reflector, s.dscp_remarked) == (10, 10, False)
        assert (s.reply_dscp, s.reply_dscp_remarked) == (10, False)  # the reflector answered with DSCP1
    for s in remarked:
        assert (s.dscp, s.dscp_at_reflector, s.dscp_remarked) == (10, 0, True)
        assert s.to_dict()["dscp_remarked"] is True
        records.validate(records.STAMP, {"v": 1, "period_s": 1.0, **s.to_dict()})


# -- hand-built reflectors ------------------------------------------------------------------

_REFLECTOR_OPEN = struct.Struct("!IQHHQIQH2xB3x")  # RFC 8762 §4.3.1, 44 octets


class HandBuilt:
    """A one-socket reflector that answers every test packet with ``answer(request, t2_ns)`` bytes."""

    def __init__(self, answer):
        self.sock = udp.open_socket("::1", 0)
        self.sock.settimeout(0.05)
        self.address = self.sock.getsockname()[:2]
        self.answer = answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                rx = udp.receive(self.sock, 65536)
            except (BlockingIOError, socket.timeout):
                continue
            self.sock.sendto(self.answer(rx.data, rx.rx_ns), rx.source)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def rfc8762_reply(request: bytes, t2_ns: int, *, ssid: int | None = None, shift_s: int = 0) -> bytes:
    """A Session-Reflector packet for ``request``: SSID ``ssid`` (None: copied), NTP timestamps shifted by
    ``shift_s`` seconds (a reflector writing another epoch than it says)."""
    seq, ts, ee, sender_ssid = struct.unpack_from("!IQHH", request)
    stamp = ntp_from_unix_ns(t2_ns + shift_s * 1_000_000_000)
    own_ee = ErrorEstimate(True, TimestampFormat.NTP, 0, 10).value  # S = 1, about 2.3 ns
    return _REFLECTOR_OPEN.pack(seq, stamp, own_ee, sender_ssid if ssid is None else ssid, stamp, seq, ts, ee, 64)


def test_zero_ssid_replies_are_samples_and_logged_once(caplog):
    old = HandBuilt(lambda data, t2: rfc8762_reply(data, t2, ssid=0))
    try:
        with caplog.at_level("WARNING", logger="srv6pm.stamp.sender"):
            samples, sender = run(old.address, count=4, ssid=77)
    finally:
        old.close()
    assert [s.lost for s in samples] == [False] * 4
    assert sender.stats().ssid_ignored == 4 and sender.stats().bad_replies == 0
    assert len([r for r in caplog.records if "ignores the SSID" in r.getMessage()]) == 1


def test_zero_ssid_can_stop_the_session():
    old = HandBuilt(lambda data, t2: rfc8762_reply(data, t2, ssid=0))
    try:
        sender = Sender(SenderConfig(dest=old.address[0], port=old.address[1], session="t", count=4,
                                     interval=0.02, timeout=0.5, ssid=77, stop_if_ssid_ignored=True))
        with pytest.raises(SsidIgnored, match="returns SSID 0"):
            list(sender.samples())
    finally:
        old.close()
    # another SSID than the session's (not zero) is still a bad reply, not a sample
    other = HandBuilt(lambda data, t2: rfc8762_reply(data, t2, ssid=78))
    try:
        samples, sender = run(other.address, count=2, ssid=77, timeout=0.2)
    finally:
        other.close()
    assert all(s.lost for s in samples) and sender.stats().bad_replies == 2


def test_timestamps_of_another_epoch_are_flagged_not_delays():
    wrong = HandBuilt(lambda data, t2: rfc8762_reply(data, t2, shift_s=-NINE_YEARS_S))
    try:
        samples, sender = run(wrong.address, count=3)
    finally:
        wrong.close()
    assert all(not s.lost and s.impossible_timestamps for s in samples)
    assert all(s.forward_ns is None and s.backward_ns is None for s in samples)
    assert all(s.round_trip_ns is not None and s.round_trip_ns > 0 for s in samples)  # t3 - t2 is still right
    assert sender.stats().impossible_timestamps == 3
    assert summarize(samples)["forward_us"] is None
    with Reflector(ReflectorConfig(bind="::1", port=0)) as r:
        good, _ = run(r.address, count=2)
    assert not any(s.impossible_timestamps for s in good)


def test_impossible_timestamps_rule():
    ee = ErrorEstimate(True, TimestampFormat.NTP, 0, 0x10)  # 2**-28 s, about 3.7 ns
    unstated = ErrorEstimate(False, TimestampFormat.NTP, 0, 0)  # multiplier 0: no error stated
    assert not impossible_timestamps(100, 200, 300, 400, ee, ee)
    assert not impossible_timestamps(100, 95, 300, 400, ee, ee)          # within the stated error
    assert impossible_timestamps(100, 80, 300, 400, ee, ee)              # t2 before t1 beyond it
    assert impossible_timestamps(100, 200, 420, 400, ee, ee)             # t3 after t4 beyond it
    assert impossible_timestamps(100, 300, 200, 400, ee, ee)             # t3 before t2
    assert not impossible_timestamps(10**9, 1, 2, 10**9 + 10, ee, unstated)  # 1 s allowed for unstated


def test_direct_measurement_in_authenticated_mode():
    key = bytes(range(32))
    with Reflector(ReflectorConfig(bind="::1", port=0, key=key, stateful=True)) as r:
        samples, sender = run(r.address, count=3, key=key, direct_measurement=True, dscp=18)
    assert [(s.sender_tx, s.reflector_rx, s.reflector_tx) for s in samples] == [(1, 1, 1), (2, 2, 2), (3, 3, 3)]
    assert [s.dscp_at_reflector for s in samples] == [18] * 3  # the HMAC TLV verified after the reflector filled
    assert sender.stats().auth_failures == 0
