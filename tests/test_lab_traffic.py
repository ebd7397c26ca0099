"""The lab's test traffic leaves with its flow's DSCP: checked on loopback by a real receiving socket
(IPV6_RECVTCLASS), without namespaces."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys

import pytest

from srv6pm.lab import traffic
from srv6pm.lab.arrivals import Arrivals


def receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
    sock.settimeout(2.0)
    return sock


def traffic_classes(sock: socket.socket, count: int) -> list[int]:
    """The IPv6 traffic class of the next ``count`` datagrams on ``sock``."""
    out = []
    for _ in range(count):
        _data, ancillary, _flags, _addr = sock.recvmsg(2048, socket.CMSG_SPACE(4))
        (tclass,) = [struct.unpack("i", data[:4])[0] for level, kind, data in ancillary
                     if (level, kind) == (socket.IPPROTO_IPV6, socket.IPV6_TCLASS)]
        out.append(tclass)
    return out


@pytest.mark.parametrize("dscp", [0, 11, 46, 63])
def test_the_socket_sends_dscp_shifted_into_the_traffic_class(dscp):
    with receiver() as rx, traffic.open_socket(dscp=dscp) as tx:
        assert tx.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS) == dscp << 2
        tx.sendto(b"x", rx.getsockname()[:2])
        assert traffic_classes(rx, 1) == [dscp << 2]  # ECN bits 0


def test_send_marks_every_packet_and_says_so():
    with receiver() as rx:
        summary = traffic.send("::1", rate=200, port=rx.getsockname()[1], src="::1", flow="f1", duration=0.1,
                               dscp=46)
        assert summary["dscp"] == 46 and summary["sent"] in (20, 21) and summary["errors"] == 0
        assert traffic_classes(rx, summary["sent"]) == [46 << 2] * summary["sent"]


def test_dscp_out_of_range_is_refused():
    with pytest.raises(ValueError, match="dscp 64 not in 0..63"):
        traffic.open_socket(dscp=64)
    proc = subprocess.run([sys.executable, "-m", "srv6pm.lab.traffic", "--dst", "::1", "--rate", "1", "--dscp", "64"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "--dscp must be 0..63" in proc.stderr


def test_arrivals_say_how_many_of_the_flow_s_packets_came_with_each_dscp():
    assert Arrivals("f1", {46: 1000}).lines() == ["f1 arrived dscp 46: 1000 of 1000"]
    split = Arrivals("f2", {15: 480, 11: 520})
    assert split.total == 1000
    assert split.lines() == ["f2 arrived dscp 11: 520 of 1000", "f2 arrived dscp 15: 480 of 1000"]
    assert Arrivals("f3").lines() == ["f3 arrived: none"]


def flow_of(payload: bytes) -> str:
    return payload[traffic.HEADER.size:].rstrip(b"\x00").decode()


def test_one_generator_sends_every_flow_with_its_own_dscp_and_counts_each():
    with receiver() as rx:
        port = rx.getsockname()[1]
        flows = [traffic.FlowSpec("f1", "::1", 300, "::1", 46, port=port),
                 traffic.FlowSpec("f2", "::1", 100, "::1", 0, port=port)]
        counts = traffic.send_all(flows, duration=0.2)
        sent = {name: c["sent"] for name, c in counts["flows"].items()}
        assert sent == {"f1": 60, "f2": 20}  # packets 0..59 and 0..19 are due within 0.2 s
        assert all(c["errors"] == c["skipped"] == 0 and c["due"] == c["sent"] for c in counts["flows"].values())
        seen = {}
        for _ in range(80):
            data, ancillary, _flags, _addr = rx.recvmsg(2048, socket.CMSG_SPACE(4))
            (tclass,) = [struct.unpack("i", d[:4])[0] for level, kind, d in ancillary
                         if (level, kind) == (socket.IPPROTO_IPV6, socket.IPV6_TCLASS)]
            seen.setdefault(flow_of(data), set()).add(tclass)
        assert seen == {"f1": {46 << 2}, "f2": {0}}


def test_a_flows_file_with_a_bad_entry_is_refused_naming_it(tmp_path):
    path = tmp_path / "flows.json"
    path.write_text('[{"name": "f1", "dst": "::1", "rate": 10}, {"name": "f2", "dst": "::1", "rate": 10, "dscp": 99}]')
    proc = subprocess.run([sys.executable, "-m", "srv6pm.lab.traffic", "--flows", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and f"{path}: flow 1: dscp 99 not in 0..63" in proc.stderr


def test_a_flow_is_below_its_rate_when_it_sent_under_95_percent_of_its_due_packets():
    from srv6pm.lab.rates import RateWatch, record
    counts = lambda sent, due: {"rate": 1000.0, "sent": sent, "due": due, "errors": 0, "skipped": 0}  # noqa: E731
    assert record("f1", counts(950, 1001), 1.0)["reached"]
    assert not record("f1", counts(900, 1001), 1.0)["reached"]
    assert record("f1", counts(0, 1), 0.0)["reached"]  # the packet in flight at the instant of the report
    watch = RateWatch()
    assert watch.update({"seconds": 1.0, "flows": {"f1": counts(1000, 1001)}}) == []
    (fell,) = watch.update({"seconds": 2.0, "flows": {"f1": counts(1200, 2001)}})
    assert (fell["reached"], fell["sent_rate"]) == (False, 600.0)
    assert watch.update({"seconds": 3.0, "flows": {"f1": counts(1500, 3001)}}) == []  # still below: no new row
    (back,) = watch.update({"seconds": 30.0, "flows": {"f1": counts(29_000, 30_001)}})
    assert back["reached"]
    assert [r["flow"] for r in watch.final({"seconds": 31.0, "flows": {"f1": counts(30_000, 31_001)}})] == ["f1"]


def test_a_flow_whose_sends_fail_is_reported_below_its_rate_from_the_generator_s_own_report(tmp_path):
    """The whole chain without namespaces: the generator's --report file, then the verdict. Sends to an
    IPv4-mapped address from a socket bound to ::1 are refused by the kernel (ENETUNREACH), so that flow
    sends nothing however fast the machine is."""
    from srv6pm.lab.rates import RateWatch
    with receiver() as rx:
        flows, report = tmp_path / "flows.json", tmp_path / "sent.json"
        flows.write_text(json.dumps([
            {"name": "ok", "src": "::1", "dst": "::1", "rate": 50, "port": rx.getsockname()[1]},
            {"name": "stuck", "src": "::1", "dst": "::ffff:127.0.0.1", "rate": 50}]))
        proc = subprocess.run([sys.executable, "-m", "srv6pm.lab.traffic", "--flows", str(flows), "--report",
                               str(report), "--duration", "0.5"], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
    counts = json.loads(report.read_text())
    assert json.loads(proc.stdout) == counts
    assert counts["flows"]["ok"]["sent"] == 25 and counts["flows"]["stuck"]["sent"] == 0
    assert counts["flows"]["stuck"]["errors"] == 25
    verdicts = {r["flow"]: r["reached"] for r in RateWatch().final(counts)}
    assert verdicts == {"ok": True, "stuck": False}
