"""Session-Sender and Session-Reflector over real UDP sockets on loopback (no root needed)."""

from __future__ import annotations

import os
import random
import socket
import threading
import time

import pytest

from srv6pm.stamp.errors import StampError
from srv6pm.stamp.packet import SenderPacket
from srv6pm.stamp.reflector import TIMESTAMP_KINDS, Reflector, ReflectorConfig
from srv6pm.stamp.sender import Sender, SenderConfig, summarize
from srv6pm.stamp.timestamp import TimestampFormat
from srv6pm.stamp.tlv import TlvList, extra_padding

KEY = bytes.fromhex("3f6c2a9e0b7d41c8a5e2f09b6d3c7a1e5f8b2d4c6a0e9f1b3d5c7e9a1b3d5f70")


def run(reflector: Reflector, **kw) -> tuple[list, Sender]:
    config = SenderConfig(dest=reflector.address[0], port=reflector.address[1], session="t",
                          **{"count": 5, "interval": 0.01, "timeout": 1.0, **kw})
    sender = Sender(config)
    return list(sender.samples()), sender


def assert_ordered(samples):
    for s in samples:
        assert not s.lost
        assert s.t1 <= s.t2 <= s.t3 <= s.t4, s  # one clock: causality holds
        assert s.round_trip_ns > 0 and s.round_trip_ns <= s.t4 - s.t1


def test_unauthenticated_session():
    with Reflector(ReflectorConfig(bind="::1", port=0)) as r:
        samples, sender = run(r, size=200, reflector_timestamps=TIMESTAMP_KINDS)
    stats = r.stats()  # after close(): the loop thread has finished counting
    assert [s.seq for s in samples] == [0, 1, 2, 3, 4]
    assert_ordered(samples)
    s = samples[0]
    assert s.t1_kind == "software-tx" and s.t4_kind == "kernel"
    assert s.timestamps == {"t1": "software-tx", "t2": "kernel", "t3": "user", "t4": "kernel"}
    assert s.ttl == 64 and s.reply_ttl == 64 and s.size == 200
    assert stats.reflected == 5 and stats.rx_kernel_timestamps == 5
    assert sender.stats().tx_software_timestamps == 5
    record = s.to_dict()
    assert {k: record[k] for k in ("session", "seq", "lost")} == {"session": "t", "seq": 0, "lost": False}
    assert all(isinstance(record[t], int) for t in ("t1", "t2", "t3", "t4"))


def test_authenticated_session_and_wrong_key_is_counted():
    with Reflector(ReflectorConfig(bind="::1", port=0, key=KEY)) as r:
        good, _ = run(r, key=KEY, return_segments=("::1",))
        bad, sender = run(r, key=bytes(32), count=3, timeout=0.3)
    stats = r.stats()  # after close(): the loop thread has finished counting
    assert_ordered(good)
    assert all(s.size == 112 + 24 + 20 for s in good)  # base + Return Path TLV + HMAC TLV
    assert all(s.return_path for s in good)
    assert all(s.lost for s in bad) and len(bad) == 3
    assert stats.dropped_auth == 3 and stats.reflected == 5
    # an unauthenticated sender against an authenticated reflector: too short, dropped as malformed
    with Reflector(ReflectorConfig(bind="::1", port=0, key=KEY)) as r:
        plain, _ = run(r, count=2, timeout=0.3)
        assert all(s.lost for s in plain) and r.stats().dropped_malformed == 2


def test_stateful_reflector_numbers_the_session():
    with Reflector(ReflectorConfig(bind="::1", port=0, stateful=True)) as r:
        first, _ = run(r, count=3)
        second, _ = run(r, count=2)  # another source port: another session
    assert [s.reflector_seq for s in first] == [0, 1, 2]
    assert [s.reflector_seq for s in second] == [0, 1]


def test_ptp_reflector_and_ipv4():
    with Reflector(ReflectorConfig(bind="127.0.0.1", port=0, timestamp_format=TimestampFormat.PTP)) as r:
        samples, _ = run(r, count=3)
    assert_ordered(samples)
    assert samples[0].reflector_error.format is TimestampFormat.PTP and samples[0].ttl == 64


def test_callback_and_stop_from_another_thread():
    with Reflector(ReflectorConfig(bind="::1", port=0)) as r:
        sender = Sender(SenderConfig(dest="::1", port=r.address[1], count=None, interval=0.01))
        got = []
        timer = threading.Timer(0.3, sender.stop)
        timer.start()
        started = time.monotonic()
        stats = sender.run(got.append)
        assert time.monotonic() - started < 2
    assert len(got) >= 5 and stats.sent >= 5
    summary = summarize(got)
    assert summary["sent"] == len(got) and summary["round_trip_us"]["min"] > 0


def test_no_reflector_means_lost_after_timeout():
    free = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    free.bind(("::1", 0))
    port = free.getsockname()[1]
    free.close()
    samples = list(Sender(SenderConfig(dest="::1", port=port, count=3, interval=0.01, timeout=0.2)).samples())
    assert [s.lost for s in samples] == [True, True, True]
    assert samples[0].to_dict()["t2"] is None and samples[0].t1 is not None
    assert summarize(samples)["forward_us"] is None


def test_reflector_keeps_answering_during_a_garbage_flood():
    with Reflector(ReflectorConfig(bind="::1", port=0, key=KEY)) as r:
        stop = threading.Event()
        flooded = [0]

        def flood():
            rng = random.Random(1)
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            junk = [rng.randbytes(rng.randrange(200)) for _ in range(50)]
            junk.append(SenderPacket(1, 1).pack(bytes(32)))        # wrong key
            junk.append(SenderPacket(1, 1).pack(KEY)[:100])        # truncated
            while not stop.is_set():
                for payload in junk:
                    s.sendto(payload, r.address)
                    flooded[0] += 1
                time.sleep(0.001)
            s.close()

        thread = threading.Thread(target=flood)
        thread.start()
        try:
            samples, _ = run(r, key=KEY, count=40, interval=0.02, timeout=2.0,
                             size=300)
        finally:
            stop.set()
            thread.join()
        time.sleep(0.2)
    stats = r.stats()  # after close(): the loop thread has finished counting
    assert flooded[0] > 2000
    assert [s.lost for s in samples] == [False] * 40
    assert stats.internal_errors == 0 and stats.dropped_auth + stats.dropped_malformed > 2000


@pytest.mark.parametrize("kw, message", [
    ({"dest": "x"}, "destination address 'x'"),
    ({"dest": "10.0.0.1", "segments": ("fc00::1",)}, "IPv6 destination"),
    ({"dest": "::1", "source": "127.0.0.1"}, "not the same IP version"),
    ({"dest": "::1", "size": 45}, "padding needs at least 4"),
    ({"dest": "::1", "size": 40}, "below the minimum of 44"),
    ({"dest": "::1", "interval": 0}, "interval"),
    ({"dest": "::1", "key": KEY, "return_segments": ("fc00::1",), "size": 150}, "below the minimum of 156"),
])
def test_sender_config_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        SenderConfig(**kw)


def test_padding_reaches_the_configured_size():
    config = SenderConfig(dest="::1", size=1500)
    assert config.tlvs().size + 44 == 1500
    assert SenderPacket(0, 0, tlvs=config.tlvs()).pack().__len__() == 1500
    assert SenderConfig(dest="::1").tlvs() == TlvList()
    assert len(extra_padding(4).pack()) == 4


def test_samples_fit_the_srv6pm_stamp_schema():
    """Sample.to_dict() plus the pipeline's own fields (v, period_s) is a valid srv6pm.stamp record."""
    from srv6pm import records
    with Reflector(ReflectorConfig(bind="::1", port=0)) as r:
        ok, _ = run(r, count=2, reflector_timestamps=TIMESTAMP_KINDS)
    free = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    free.bind(("::1", 0))
    lost = list(Sender(SenderConfig(dest="::1", port=free.getsockname()[1], count=1, timeout=0.1)).samples())
    free.close()
    for sample in ok + lost:
        records.validate(records.STAMP, {"v": 1, "period_s": 1.0, **sample.to_dict()})


def _sockets() -> set[str]:
    """The sockets this process holds, as /proc/self/fd links (``socket:[inode]``)."""
    links = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the listing's own descriptor, already closed
    return {link for link in links if link.startswith("socket:")}


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_open_sets_up_the_socket_the_session_then_uses():
    with Reflector(ReflectorConfig(bind="::1", port=0)) as r:
        sender = Sender(SenderConfig(dest="::1", port=r.address[1], source="::1", count=3, interval=0.01))
        before = _sockets()
        sender.open()
        opened = _sockets() - before
        assert len(opened) == 1
        sender.open()  # again: nothing new
        assert _sockets() - before == opened
        samples = []
        for sample in sender.samples():
            if not samples:
                assert _sockets() - before == opened  # sends from the very socket open() set up
            samples.append(sample)
    assert [s.lost for s in samples] == [False] * 3
    assert not opened & _sockets()  # the run closed it


def test_open_reports_the_kernels_refusal_and_close_releases_everything():
    fds = _fd_count()
    sender = Sender(SenderConfig(dest="::1", source="fc00:9::9"))  # an address this host lacks
    with pytest.raises(StampError, match=r"^cannot open the session's socket \(source fc00:9::9\): "
                                         r"Cannot assign requested address$"):
        sender.open()
    sender.close()
    sender.close()  # idempotent
    assert _fd_count() == fds
    with pytest.raises(StampError, match="closed"):
        sender.open()
    opened = Sender(SenderConfig(dest="::1"))
    opened.open()
    opened.close()  # an opened sender that never runs
    assert _fd_count() == fds
