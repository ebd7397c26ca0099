"""The STAMP Session-Sender (RFC 8762 §4.2): test packets out, :class:`Sample` objects back.

A :class:`Sender` sends ``count`` test packets (or until :meth:`Sender.stop`)
every ``interval`` seconds to a Session-Reflector and turns each into one
:class:`Sample`: the four timestamps when the reply came back within
``timeout`` seconds of the send, or ``lost=True`` otherwise. Replies are
matched to requests by the echoed Session-Sender Sequence Number (and SSID).

* **Forward path.** With ``segments``, every test packet carries an SRv6
  Segment Routing Header (the socket's sticky IPV6_RTHDR option, see
  :mod:`srv6pm.stamp.srh`): it visits the segments in order, then the
  reflector.
* **Backward path.** With ``return_segments``, every test packet carries a
  Return Path TLV with an SRv6 Segment List sub-TLV (RFC 9503); a reflector
  that honours it sends the reply through those segments (``Sample.return_path``
  says whether it did: the reply's Return Path TLV has U = 0).
* **Timestamps.** t1: the kernel's software transmit timestamp of the test
  packet (``"software-tx"``, from the socket error queue) when available,
  else the clock read just before ``sendmsg`` (``"user"``; that reading is
  also what the packet's Timestamp field carries). t4: the kernel's receive
  timestamp of the reply (``"kernel"``, else ``"user"``). t2, t3: from the
  reply, as the reflector wrote them, decoded with the Z bit of the
  reflector's Error Estimate; their kind is ``"remote"`` (STAMP does not say
  how the peer took them) unless ``reflector_timestamps`` states it, e.g.
  ``("kernel", "user")`` for srv6pm's own reflector
  (:data:`srv6pm.stamp.reflector.TIMESTAMP_KINDS`).
* **Per-direction loss.** With ``direct_measurement``, every test packet
  carries a Direct Measurement TLV (RFC 8972 §4.5) whose S_TxC counts the
  test packets sent so far, this one included; a reflector that fills it in
  (U = 0) returns its receive and transmit counters, which the sample
  carries (``sender_tx``, ``reflector_rx``, ``reflector_tx``). Otherwise
  they are None.
* **DSCP.** With ``dscp``, test packets are sent with that DSCP and carry a
  Class of Service TLV (RFC 8972 §4.4) asking for the same DSCP on the reply;
  the sample says what DSCP the test packet had at the reflector
  (``dscp_at_reflector``, ``dscp_remarked``) and the reply had here
  (``reply_dscp``, ``reply_dscp_remarked``; None where the reflector did not
  fill the TLV in or refused DSCP1).
* **SSID.** A reflector that does not implement RFC 8972 returns the SSID as
  zero (§3). Such a reply still counts (the sample is not lost): the sender
  logs once that the reflector ignores the SSID and goes on, or, with
  ``stop_if_ssid_ignored``, ends the session with :class:`SsidIgnored`.
* **Impossible timestamps.** A reply whose t2 or t3 lies outside t1..t4 by
  more than the two clocks' stated errors (the Error Estimates; 1 s for one
  that states none), or whose t3 is before t2, is a sample with
  ``impossible_timestamps`` set (a reflector writing another epoch or
  format than it says, a clock stepped): it is not lost, but its one-way
  delays mean nothing.
* **Size.** ``size`` is the UDP payload of each test packet: the base packet
  (44 octets, 112 authenticated) plus TLVs, filled up with an Extra Padding
  TLV (so ``size`` is either the minimum or at least 4 octets more).
* **Authentication.** With ``key``, the authenticated layout (HMAC over the
  base packet) and, when TLVs other than Extra Padding are present, an HMAC
  TLV; replies whose HMACs do not verify are counted and ignored.

* **Liveness.** With ``liveness`` (:class:`~srv6pm.stamp.liveness.LivenessSettings`)
  the sender also watches the path (:mod:`srv6pm.stamp.liveness`): each test
  packet is a reply or, :func:`~srv6pm.stamp.liveness.miss_timeout` after its
  send without one (or when it cannot be sent), a miss; every declaration of
  the path down or up again is passed at once to ``on_liveness`` (in the
  session's thread, so it must not block) and :attr:`Sender.path_state` says the
  current state. The path starts unknown; until the first decision a test
  packet is a miss only after the reply timeout (``timeout``), also one that
  could not be sent, and when the first reply comes, the packets sent before
  its own are left out: probes sent while the path's routes are still being
  set up raise nothing if the path answers within the reply timeout, and a
  path that never answers is declared down after the usual ``down_after``
  misses.

Use :meth:`Sender.samples` (an iterator, in the calling thread) or
:meth:`Sender.run` (a callback per sample); :meth:`Sender.stop` may be called
from any thread. The sockets live in ``netns`` if given. :meth:`Sender.open`
sets the socket up beforehand, so that the kernel's refusals (a source address
the node lacks, a missing namespace) come from that call; :meth:`Sender.close`
releases a sender that will not run.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import math
import os
import select
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from srv6pm.errors import OperationError
from srv6pm.netns import NetnsError
from srv6pm.stamp import tlv as tlvmod
from srv6pm.stamp import udp
from srv6pm.stamp.liveness import Change, LivenessSettings, PathState, miss_timeout
from srv6pm.stamp.errors import AuthenticationError, StampError
from srv6pm.stamp.protocol import DEFAULT_TIMEOUT_S, STAMP_PORT
from srv6pm.stamp.packet import ReflectorPacket, SenderPacket, base_size
from srv6pm.stamp.srh import MAX_SEGMENTS, StickyRoute
from srv6pm.stamp.timestamp import ErrorEstimate, TimestampFormat, decode, encode, local_clock
from srv6pm.stamp.tlv import (
    FLAG_I, FLAG_M, FLAG_U, ClassOfService, DirectMeasurement, ReturnPath, Srv6SegmentList, Tlv, TlvList, TlvType,
)

__all__ = ["DEFAULT_PORT", "Sample", "Sender", "SenderConfig", "SenderStats", "SsidIgnored", "summarize"]

log = logging.getLogger("srv6pm.stamp.sender")

DEFAULT_PORT = STAMP_PORT
KIND_REMOTE = "remote"
RECV_BUFFER = 65536
MAX_SIZE = 65507
UNSTATED_ERROR_NS = 1_000_000_000  # the error of a clock whose Error Estimate states none (multiplier 0)


class SsidIgnored(OperationError):
    """The reflector returned SSID 0 for a session with an SSID and ``stop_if_ssid_ignored`` is set:
    the session ends with this (``str()`` says so)."""


def _ip(what: str, text) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{what} address {text!r} is not an IPv4 or IPv6 address") from None


@dataclass(frozen=True)
class SenderConfig:
    """One STAMP test session. ``count`` None: send until stopped.

    Raises ``ValueError`` naming the field for anything unusable (addresses,
    segments with IPv4, sizes, non-positive interval/timeout).
    """

    dest: str
    port: int = DEFAULT_PORT
    session: str = "stamp"
    source: str | None = None
    count: int | None = 10
    interval: float = 1.0
    size: int | None = None
    segments: tuple[ipaddress.IPv6Address, ...] = ()
    return_segments: tuple[ipaddress.IPv6Address, ...] = ()
    key: bytes | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    netns: str | None = None
    ssid: int = 0
    timestamp_format: TimestampFormat = TimestampFormat.NTP
    reflector_timestamps: tuple[str, str] = (KIND_REMOTE, KIND_REMOTE)
    liveness: LivenessSettings | None = None  # None: the path is not watched
    direct_measurement: bool = False
    dscp: int | None = None
    stop_if_ssid_ignored: bool = False

    def __post_init__(self):
        dest = _ip("destination", self.dest)
        object.__setattr__(self, "dest", str(dest))
        if self.source is not None:
            source = _ip("source", self.source)
            if source.version != dest.version:
                raise ValueError(f"source {self.source} and destination {self.dest} are not the same IP version")
            object.__setattr__(self, "source", str(source))
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} not in 1..65535")
        if self.count is not None and self.count < 0:
            raise ValueError("count must not be negative")
        if not (self.interval > 0 and math.isfinite(self.interval)):
            raise ValueError("interval must be a positive number of seconds")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ValueError("timeout must be a positive number of seconds")
        if not 0 <= self.ssid <= 0xFFFF:
            raise ValueError("SSID must be 0..65535 (0: none)")
        if self.stop_if_ssid_ignored and not self.ssid:
            raise ValueError("stop_if_ssid_ignored needs an SSID: without one no reply can ignore it")
        if self.dscp is not None and not 0 <= self.dscp <= 63:
            raise ValueError(f"DSCP {self.dscp} not in 0..63")
        for name in ("segments", "return_segments"):
            try:
                segs = tuple(ipaddress.IPv6Address(s) for s in getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"{name.replace('_', ' ')}: {exc}") from None
            if segs and dest.version != 6:
                raise ValueError(f"{name.replace('_', ' ')} need an IPv6 destination (SRv6)")
            if len(segs) > MAX_SEGMENTS - 1:
                raise ValueError(f"at most {MAX_SEGMENTS - 1} {name.replace('_', ' ')}")
            object.__setattr__(self, name, segs)
        minimum = self.minimum_size
        if self.size is not None:
            if self.size < minimum:
                raise ValueError(f"size {self.size} is below the minimum of {minimum} octets for these options")
            if 0 < self.size - minimum < tlvmod.HEADER_LEN:
                raise ValueError(f"size {self.size}: padding needs at least {tlvmod.HEADER_LEN} octets "
                                 f"(use {minimum} or at least {minimum + tlvmod.HEADER_LEN})")
            if self.size > MAX_SIZE:
                raise ValueError(f"size {self.size} exceeds the largest UDP payload ({MAX_SIZE})")

    @classmethod
    def from_session(cls, message, *, key: bytes | None = None, netns: str | None = None) -> "SenderConfig":
        """The sender of a southbound ``StampSession`` message, field for field: it sends until stopped,
        ``rate`` packets a second, ``liveness`` watched with the message's counts.

        The message must be normalised by :func:`srv6pm.southbound.validate.stamp_session`, which
        fills in every default (port, timeout, liveness counts); nothing is defaulted here, and an
        unnormalised message (port 0, timeout 0) is refused by the checks above. ``key`` is the
        content of the message's ``auth_key_file`` (the caller reads it), ``netns`` where to send from.
        """
        return cls(dest=message.destination, port=message.port, session=message.name,
                   source=message.source or None, count=None, interval=1.0 / message.rate,
                   segments=tuple(message.segments), return_segments=tuple(message.return_segments), key=key,
                   timeout=message.timeout_s, netns=netns, ssid=message.ssid,
                   direct_measurement=message.direct_measurement,
                   dscp=message.dscp if message.HasField("dscp") else None,
                   stop_if_ssid_ignored=message.stop_if_ssid_ignored,
                   liveness=(LivenessSettings(message.liveness_down_after, message.liveness_up_after)
                             if message.liveness else None))

    def __repr__(self) -> str:  # never print the key
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__dataclass_fields__ if k != "key")
        return f"SenderConfig({fields}, key={'set' if self.key else None})"

    def _tlvs(self) -> tuple[Tlv, ...]:
        out: list[Tlv] = []
        if self.dscp is not None:
            out.append(ClassOfService(self.dscp).to_tlv())
        if self.direct_measurement:
            out.append(DirectMeasurement(0).to_tlv())  # S_TxC is set per packet (Sender._tlvs_for)
        if self.return_segments:
            out.append(ReturnPath.build(Srv6SegmentList(self.return_segments)).to_tlv())
        if out and self.key is not None:
            out.append(tlvmod.hmac_placeholder())
        return tuple(out)

    @property
    def minimum_size(self) -> int:
        """UDP payload octets of a test packet without padding."""
        return base_size(self.key is not None) + sum(t.size for t in self._tlvs())

    def tlvs(self) -> TlvList:
        """The TLVs of every test packet (HMAC TLV value filled in at pack time), padded to ``size``."""
        out = list(self._tlvs())
        if self.size is not None and self.size > self.minimum_size:
            out.append(tlvmod.extra_padding(self.size - self.minimum_size))
        return TlvList(tuple(out))


@dataclass(frozen=True)
class Sample:
    """The outcome of one test packet. Times are Unix ns; ``None`` when lost or unknown.

    ``ttl`` is the TTL / Hop Limit the test packet had at the reflector
    (as the reflector reported it; 0 = unknown), ``reply_ttl`` the one the
    reply had here. ``return_path`` is None when no return path was asked
    for, else whether the reflector honoured it. ``sender_tx``,
    ``reflector_rx``, ``reflector_tx``: the Direct Measurement counters of
    the reply (None unless the reflector filled them in). ``dscp``: the DSCP
    the test packet was sent with (None: not set); ``dscp_at_reflector``,
    ``reply_dscp``, ``reply_dscp_remarked``: see the module documentation.
    ``impossible_timestamps``: t2/t3 cannot be right (module documentation);
    the one-way delays are then None.
    """

    session: str
    seq: int
    lost: bool
    t1: int | None = None
    t2: int | None = None
    t3: int | None = None
    t4: int | None = None
    t1_kind: str | None = None
    t2_kind: str | None = None
    t3_kind: str | None = None
    t4_kind: str | None = None
    ttl: int | None = None
    reply_ttl: int | None = None
    sender_error: ErrorEstimate | None = None
    reflector_error: ErrorEstimate | None = None
    reflector_seq: int | None = None
    return_path: bool | None = None
    size: int | None = None
    sender_tx: int | None = None
    reflector_rx: int | None = None
    reflector_tx: int | None = None
    dscp: int | None = None
    dscp_at_reflector: int | None = None
    reply_dscp: int | None = None
    reply_dscp_remarked: bool | None = None
    impossible_timestamps: bool = False

    @property
    def dscp_remarked(self) -> bool | None:
        """Whether the test packet reached the reflector with another DSCP than it was sent with."""
        if self.dscp is None or self.dscp_at_reflector is None:
            return None
        return self.dscp_at_reflector != self.dscp

    def _times(self) -> tuple[int, int, int, int]:
        """t1, t2, t3, t4 of a sample that is not lost (only a reply makes one, and it sets all four)."""
        t1, t2, t3, t4 = self.t1, self.t2, self.t3, self.t4
        assert t1 is not None and t2 is not None and t3 is not None and t4 is not None, \
            "a Sample that is not lost is built from a reply, with all four timestamps"
        return t1, t2, t3, t4

    @property
    def forward_ns(self) -> int | None:
        if self.lost or self.impossible_timestamps:
            return None
        t1, t2, _, _ = self._times()
        return t2 - t1

    @property
    def backward_ns(self) -> int | None:
        if self.lost or self.impossible_timestamps:
            return None
        _, _, t3, t4 = self._times()
        return t4 - t3

    @property
    def round_trip_ns(self) -> int | None:
        if self.lost:
            return None
        t1, t2, t3, t4 = self._times()
        if t3 < t2:
            return None
        return (t4 - t1) - (t3 - t2)

    @property
    def timestamps(self) -> dict:
        """How each timestamp was taken: ``{"t1": "software-tx", "t2": ..., "t3": ..., "t4": "kernel"}``."""
        kinds = {"t1": self.t1_kind, "t2": self.t2_kind, "t3": self.t3_kind, "t4": self.t4_kind}
        return {name: kind for name, kind in kinds.items() if kind is not None}

    def to_dict(self) -> dict:
        """Plain JSON-able data with the ``srv6pm.stamp`` fields (session, seq, t1..t4, lost, timestamps,
        ttl, reflector_seq; t2..t4 None when lost; the RFC 8972 ones and impossible_timestamps only when
        known / set) and details (reply_ttl, error estimates, return_path, size)."""
        return {
            "session": self.session, "seq": self.seq, "t1": self.t1, "t2": self.t2, "t3": self.t3, "t4": self.t4,
            "lost": self.lost, "timestamps": self.timestamps, "ttl": self.ttl, "reflector_seq": self.reflector_seq,
            "reply_ttl": self.reply_ttl,
            "sender_error": self.sender_error.to_dict() if self.sender_error else None,
            "reflector_error": self.reflector_error.to_dict() if self.reflector_error else None,
            "return_path": self.return_path, "size": self.size,
            **{name: value for name, value in (
                ("sender_tx", self.sender_tx), ("reflector_rx", self.reflector_rx),
                ("reflector_tx", self.reflector_tx), ("dscp", self.dscp),
                ("dscp_at_reflector", self.dscp_at_reflector), ("dscp_remarked", self.dscp_remarked),
                ("reply_dscp", self.reply_dscp), ("reply_dscp_remarked", self.reply_dscp_remarked),
                ("impossible_timestamps", self.impossible_timestamps or None)) if value is not None},
        }


@dataclass(frozen=True)
class SenderStats:
    """Counters of a sender (a snapshot)."""

    sent: int = 0
    received: int = 0
    lost: int = 0
    send_errors: int = 0
    late_replies: int = 0
    bad_replies: int = 0
    auth_failures: int = 0
    tx_software_timestamps: int = 0
    ssid_ignored: int = 0
    impossible_timestamps: int = 0


@dataclass
class _Pending:
    seq: int
    t1_user: int
    deadline: float
    t1_tx: int | None = None
    miss_at: float = math.inf  # liveness: a miss from then on (monotonic s)
    sent_at: float = 0.0  # liveness: when it was sent, or its send failed (monotonic s)
    missed: bool = False  # liveness: counted as a miss (or left out: sent before the first reply)
    answered: bool = False  # liveness: counted as a reply


class Sender:
    """A Session-Sender for one test session (see the module documentation)."""

    def __init__(self, config: SenderConfig, *, clock: Callable[[], int] = time.time_ns,
                 on_liveness: Callable[[Change], None] | None = None):
        self.config = config
        self._path = PathState(config.liveness) if config.liveness is not None else None
        self._on_liveness = on_liveness
        self._miss_after = miss_timeout(config.interval, config.timeout)
        self._watching: collections.deque[_Pending] = collections.deque()  # liveness: sent, in miss_at order
        self._clock = clock
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._counts = dict.fromkeys(SenderStats.__dataclass_fields__, 0)
        self._sock: socket.socket | None = None
        self._started = False
        self._tlvs = config.tlvs()
        self._return_path_requested = bool(config.return_segments)
        self._dm_index = next((i for i, t in enumerate(self._tlvs.tlvs) if t.type == TlvType.DIRECT_MEASUREMENT), None)

    def stop(self) -> None:
        """End the session: no more packets are sent; the iterator ends promptly (pending ones are dropped)."""
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def stats(self) -> SenderStats:
        return SenderStats(**self._counts)

    @property
    def path_up(self) -> bool | None:
        """Whether the watched path is up; None when the session does not watch it or nothing is decided yet."""
        return None if self._path is None else self._path.up

    @property
    def path_state(self) -> str | None:
        """``"unknown"`` (nothing decided yet), ``"up"`` or ``"down"``; None when the session does not watch it."""
        return None if self._path is None else self._path.state

    def _miss_timeout(self) -> float:
        """Liveness: seconds after its send at which a packet is a miss now (the reply timeout until the first
        decision)."""
        return self.config.timeout if self._path is not None and self._path.up is None else self._miss_after

    def run(self, on_sample: Callable[[Sample], None]) -> SenderStats:
        """Run the session, calling ``on_sample`` for each sample; returns the final counters."""
        for sample in self.samples():
            on_sample(sample)
        return self.stats()

    def open(self) -> None:
        """Set up the session's socket now, in the calling thread.

        The socket is bound to ``source`` (or the wildcard address) inside
        ``netns`` and, with ``segments``, carries their SRH; :meth:`samples`
        then sends from this very socket. So a setting the kernel refuses (an
        address the node does not have, a missing namespace, a segment list it
        rejects) is reported here, before the session runs, instead of ending
        the session later in its own thread.

        Raises :class:`StampError` whose message gives the kernel's reason
        (the original exception is chained); the sender should then be closed
        (:meth:`close`). Calling ``open`` on an open sender does nothing.
        Optional: :meth:`samples` opens the socket itself if this was not called.
        """
        if self._started or self._wake_r < 0:
            raise StampError("sender: open() after the session ran or the sender was closed")
        if self._sock is not None:
            return
        try:
            self._sock = self._open()
        except (OSError, NetnsError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
            cfg = self.config
            where = f"source {cfg.source}" if cfg.source else "wildcard source"
            if cfg.netns:
                where += f", netns {cfg.netns}"
            raise StampError(f"cannot open the session's socket ({where}): {reason}") from exc

    def close(self) -> None:
        """Release the socket and wake-up pipe of a sender that will not run; idempotent.

        If :meth:`samples` already started, this is :meth:`stop`: the run
        releases everything itself when it ends.
        """
        if self._started:
            self.stop()
            return
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._close_wake()

    def _close_wake(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = -1

    def _open(self) -> socket.socket:
        cfg = self.config
        family = udp.family_of(cfg.dest)
        bind = cfg.source or ("::" if family == socket.AF_INET6 else "0.0.0.0")
        sock = udp.open_socket(bind, 0, netns=cfg.netns, tx_timestamps=True, v6only=True)
        try:
            if cfg.dscp is not None:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, udp.IPV6_TCLASS, cfg.dscp << 2)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, udp.IP_TOS, cfg.dscp << 2)
            if cfg.segments:
                StickyRoute(sock).use(cfg.segments, cfg.dest)
        except OSError:
            sock.close()
            raise
        return sock

    def samples(self) -> Iterator[Sample]:
        """Run the session in the calling thread, yielding one :class:`Sample` per test packet in
        completion order. Uses the socket :meth:`open` set up; without it, opens one and raises
        ``OSError`` / :class:`srv6pm.netns.NetnsError` if that fails. Afterwards, send errors are
        counted (the packet is reported lost). A Sender runs one session: call this (or :meth:`run`)
        once."""
        cfg = self.config
        if self._started or self._wake_r < 0:
            raise StampError("sender: a Sender runs one session, and this one ran or was closed")
        self._started = True
        try:
            sock = self._sock if self._sock is not None else self._open()
        except BaseException:
            self._close_wake()
            raise
        self._sock = sock
        state = local_clock()
        sender_ee = ErrorEstimate.for_error(state.error_ns, state.synchronized, cfg.timestamp_format)
        tai_utc = state.tai_utc
        pending: dict[int, _Pending] = {}
        by_tskey: dict[int, int] = {}
        tskey = 0
        seq = 0
        next_send = time.monotonic()
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLERR)
        poller.register(self._wake_r, select.POLLIN)
        log.info("session started", extra={"session": cfg.session, "dest": cfg.dest, "port": cfg.port,
                                           "segments": ",".join(map(str, cfg.segments)),
                                           "return_segments": ",".join(map(str, cfg.return_segments))})
        try:
            while not self._stop.is_set():
                more_to_send = cfg.count is None or seq < cfg.count
                if not more_to_send and not pending and not any(
                        not (p.answered or p.missed) for p in self._watching):  # sends that failed while unknown
                    break
                now = time.monotonic()
                if more_to_send and now >= next_send:
                    t1_user = self._clock()
                    packet = SenderPacket(seq, encode(t1_user, cfg.timestamp_format, tai_utc), sender_ee, cfg.ssid,
                                          self._tlvs_for(self._counts["sent"] + 1))
                    payload = packet.pack(cfg.key)
                    try:
                        sock.sendto(payload, (cfg.dest, cfg.port))
                        self._counts["sent"] += 1
                        sent_at = time.monotonic()
                        pending[seq] = _Pending(seq, t1_user, sent_at + cfg.timeout, sent_at=sent_at,
                                                miss_at=sent_at + self._miss_timeout())
                        if self._path is not None:
                            self._watching.append(pending[seq])
                        by_tskey[tskey] = seq
                        tskey = (tskey + 1) & 0xFFFFFFFF
                    except OSError as exc:
                        self._counts["send_errors"] += 1
                        log.debug("send failed", extra={"session": cfg.session, "seq": seq,
                                                        "reason": exc.strerror or str(exc)})
                        if self._path is not None and self._path.up is None:  # a miss once the reply timeout is over
                            failed_at = time.monotonic()
                            self._watching.append(_Pending(seq, t1_user, math.inf, sent_at=failed_at,
                                                           miss_at=failed_at + cfg.timeout))
                        else:
                            self._miss()
                        yield self._lost(seq, t1_user, "user", sender_ee, len(payload))
                    seq = (seq + 1) & 0xFFFFFFFF
                    next_send += cfg.interval
                    if next_send < now:  # fell behind (e.g. a slow consumer): do not burst to catch up
                        next_send = now + cfg.interval
                    self._read_tx(sock, pending, by_tskey)
                    continue
                if self._watching and self._watching[0].miss_at <= now:
                    # a miss is due: first take the replies that are already here (after a stall of this
                    # thread they may be waiting in the socket), so that none is counted as a miss
                    self._read_tx(sock, pending, by_tskey)
                    yield from self._read_replies(sock, pending, sender_ee, tai_utc)
                    self._watch()
                yield from self._expire(pending, sender_ee)
                waits = [1.0]
                if pending:
                    waits.append(min(p.deadline for p in pending.values()) - now)
                if self._watching:
                    waits.append(self._watching[0].miss_at - now)
                if more_to_send:
                    waits.append(next_send - now)
                timeout_ms = max(0, math.ceil(min(waits) * 1000))
                for fd, _events in poller.poll(timeout_ms):
                    if fd == self._wake_r:
                        continue
                    self._read_tx(sock, pending, by_tskey)
                    yield from self._read_replies(sock, pending, sender_ee, tai_utc)
        finally:
            sock.close()
            self._sock = None
            self._close_wake()
            log.info("session ended", extra={"session": cfg.session, **self._counts})

    # -- helpers ------------------------------------------------------------------------
    def _tlvs_for(self, sender_tx: int) -> TlvList:
        """The TLVs of the next test packet: S_TxC = ``sender_tx`` (packets sent, this one included)."""
        if self._dm_index is None:
            return self._tlvs
        tlvs = list(self._tlvs.tlvs)
        tlvs[self._dm_index] = DirectMeasurement(sender_tx & 0xFFFFFFFF).to_tlv()
        return TlvList(tuple(tlvs), self._tlvs.rest)
    def _read_tx(self, sock: socket.socket, pending: dict[int, _Pending], by_tskey: dict[int, int]) -> None:
        try:
            stamps = udp.read_tx_timestamps(sock)
        except OSError:
            return
        for key, stamp in stamps:
            seq = by_tskey.pop(key, None)
            if seq is not None and seq in pending:
                pending[seq].t1_tx = stamp
                self._counts["tx_software_timestamps"] += 1
        if len(by_tskey) > 4096:  # stamps that never came: forget the oldest
            for key in sorted(by_tskey)[:len(by_tskey) - 4096]:
                by_tskey.pop(key, None)

    def _watch(self) -> None:
        """Liveness: count the packets whose miss time has come without a reply as misses, in send order.

        Afterwards the first packet still watched (if any) is the next one that can become a miss.
        """
        now = time.monotonic()
        while self._watching:
            p = self._watching[0]
            if p.answered or p.missed:
                self._watching.popleft()
            elif p.miss_at <= now:
                self._watching.popleft()
                p.missed = True
                self._miss()
            else:
                break

    def _miss(self) -> None:
        if self._path is not None:
            unknown = self._path.up is None
            self._report(self._path.miss(self._clock()))
            if unknown and self._path.up is not None:
                self._decided(None)

    def _decided(self, answered: _Pending | None) -> None:
        """Liveness: the first decision was made (on the reply to ``answered``, or on misses: None).

        The packets sent before ``answered`` are left out (they went while the path was being set up);
        the others still watched become misses at the usual liveness timeout from now on.
        """
        kept = []
        before = answered is not None
        for p in self._watching:
            if p is answered:
                before = False
            elif before:
                p.missed = True  # left out: neither a miss nor a reply
                continue
            p.miss_at = min(p.miss_at, p.sent_at + self._miss_after)
            kept.append(p)
        self._watching.clear()
        self._watching.extend(kept)

    def _report(self, change: Change | None) -> None:
        if change is None:
            return
        log.info("path up" if change.up else "path down",
                 extra={"session": self.config.session, "count": change.count})
        if self._on_liveness is not None:
            self._on_liveness(change)

    def _lost(self, seq: int, t1: int, kind: str, sender_ee: ErrorEstimate, size: int) -> Sample:
        self._counts["lost"] += 1
        return Sample(self.config.session, seq, True, t1=t1, t1_kind=kind, sender_error=sender_ee,
                      return_path=None, size=size)

    def _expire(self, pending: dict[int, _Pending], sender_ee: ErrorEstimate) -> Iterator[Sample]:
        now = time.monotonic()
        for seq in [s for s, p in pending.items() if p.deadline <= now]:
            p = pending.pop(seq)
            if not p.missed:
                p.missed = True
                self._miss()
            t1, kind = (p.t1_tx, udp.KIND_SOFTWARE_TX) if p.t1_tx is not None else (p.t1_user, udp.KIND_USER)
            yield self._lost(seq, t1, kind, sender_ee, self._tlvs.size + base_size(self.config.key is not None))

    def _read_replies(self, sock: socket.socket, pending: dict[int, _Pending], sender_ee: ErrorEstimate,
                      tai_utc: int) -> Iterator[Sample]:
        cfg = self.config
        while True:
            try:
                rx = udp.receive(sock, RECV_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                sample = self._match(rx, pending, sender_ee, tai_utc)
            except AuthenticationError:
                self._counts["auth_failures"] += 1
                continue
            except SsidIgnored:
                raise
            except StampError as exc:
                self._counts["bad_replies"] += 1
                log.debug("bad reply", extra={"session": cfg.session, "reason": str(exc)})
                continue
            if sample is not None:
                self._counts["received"] += 1
                yield sample

    def _match(self, rx: udp.Received, pending: dict[int, _Pending], sender_ee: ErrorEstimate,
               tai_utc: int) -> Sample | None:
        cfg = self.config
        if rx.source[1] != cfg.port:
            raise StampError(f"reply from port {rx.source[1]}, not {cfg.port}")
        reply = ReflectorPacket.unpack(rx.data, cfg.key)
        if cfg.ssid and reply.ssid != cfg.ssid:
            if reply.ssid:
                raise StampError(f"reply for SSID {reply.ssid}, not {cfg.ssid}")
            self._ssid_ignored()
        p = pending.pop(reply.sender_seq, None)
        if p is None:
            self._counts["late_replies"] += 1
            return None
        if self._path is not None and not p.missed:
            p.answered = True
            unknown = self._path.up is None
            self._report(self._path.reply(rx.rx_ns, self._clock()))
            if unknown:
                self._decided(p)
        return_path = None
        if self._return_path_requested:
            tlvs = reply.tlvs.tlvs
            integrity = cfg.key is None or tlvmod.verify(tlvs, reply.seq_field, cfg.key)
            if cfg.key is not None and not integrity:
                self._counts["auth_failures"] += 1
            rp = next((t for t in tlvs if t.type == TlvType.RETURN_PATH), None)
            return_path = bool(integrity and rp is not None and not (rp.flags & (tlvmod.FLAG_U | tlvmod.FLAG_M
                                                                                | tlvmod.FLAG_I)))
        fmt = reply.error_estimate.format
        t4 = rx.rx_ns
        t2 = decode(reply.receive_timestamp, fmt, t4, tai_utc)
        t3 = decode(reply.timestamp, fmt, t4, tai_utc)
        t1, kind = (p.t1_tx, udp.KIND_SOFTWARE_TX) if p.t1_tx is not None else (p.t1_user, udp.KIND_USER)
        t2_kind, t3_kind = cfg.reflector_timestamps
        impossible = impossible_timestamps(t1, t2, t3, t4, sender_ee, reply.error_estimate)
        if impossible:
            self._counts["impossible_timestamps"] += 1
        return Sample(cfg.session, p.seq, False, t1, t2, t3, t4, kind, t2_kind, t3_kind, rx.rx_kind,
                      ttl=reply.sender_ttl, reply_ttl=rx.ttl, sender_error=sender_ee,
                      reflector_error=reply.error_estimate, reflector_seq=reply.seq, return_path=return_path,
                      size=len(rx.data), **self._reply_tlvs(reply, rx), impossible_timestamps=impossible)

    def _ssid_ignored(self) -> None:
        cfg = self.config
        self._counts["ssid_ignored"] += 1
        if cfg.stop_if_ssid_ignored:
            raise SsidIgnored(f"the reflector at {cfg.dest} returns SSID 0 for SSID {cfg.ssid}: it does not "
                              "implement RFC 8972 (stop_if_ssid_ignored is set)")
        if self._counts["ssid_ignored"] == 1:
            log.warning("the reflector ignores the SSID (returns 0: no RFC 8972); measuring on",
                        extra={"session": cfg.session, "dest": cfg.dest, "ssid": cfg.ssid})

    def _reply_tlvs(self, reply: ReflectorPacket, rx: udp.Received) -> dict:
        """The Sample fields that the reply's Direct Measurement and Class of Service TLVs give."""
        cfg = self.config
        out: dict = {}
        if cfg.direct_measurement or cfg.dscp is not None:
            filled = {t.type: t for t in reply.tlvs.tlvs if not t.flags & (FLAG_U | FLAG_M | FLAG_I)}
            if cfg.key is not None and not tlvmod.verify(reply.tlvs.tlvs, reply.seq_field, cfg.key):
                filled = {}
            dm = filled.get(TlvType.DIRECT_MEASUREMENT)
            if cfg.direct_measurement and dm is not None:
                try:
                    counts = DirectMeasurement.from_tlv(dm)
                except StampError:
                    counts = None
                if counts is not None:
                    out.update(sender_tx=counts.sender_tx, reflector_rx=counts.reflector_rx,
                               reflector_tx=counts.reflector_tx)
            if cfg.dscp is not None:
                out["dscp"] = cfg.dscp
                cos_tlv = filled.get(TlvType.CLASS_OF_SERVICE)
                try:
                    cos = ClassOfService.from_tlv(cos_tlv) if cos_tlv is not None else None
                except StampError:
                    cos = None
                if cos is not None:
                    out["dscp_at_reflector"] = cos.dscp2
                    if rx.tclass is not None:
                        out["reply_dscp"] = rx.tclass >> 2
                        out["reply_dscp_remarked"] = None if cos.rp else rx.tclass >> 2 != cos.dscp1
        return out


def impossible_timestamps(t1: int, t2: int, t3: int, t4: int, sender: ErrorEstimate,
                          reflector: ErrorEstimate) -> bool:
    """True if t2, t3 cannot have been taken between t1 and t4: ``t1 - e <= t2 <= t3 <= t4 + e`` fails,
    where ``e`` is the sum of the two clocks' stated errors (:data:`UNSTATED_ERROR_NS` for one that
    states none)."""
    error = sum(UNSTATED_ERROR_NS if ee.error_ns is None else ee.error_ns for ee in (sender, reflector))
    return not (t1 - error <= t2 <= t3 <= t4 + error)


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"min": min(values), "mean": statistics.fmean(values), "max": max(values)}


def summarize(samples: Iterable[Sample]) -> dict:
    """Counts and min/mean/max of forward, backward and round-trip delay in µs (None without replies)."""
    samples = list(samples)
    ok = [s for s in samples if not s.lost]
    out: dict[str, int | dict | None] = {"sent": len(samples), "received": len(ok), "lost": len(samples) - len(ok)}
    for name, attr in (("forward_us", "forward_ns"), ("backward_us", "backward_ns"),
                       ("round_trip_us", "round_trip_ns")):
        out[name] = _stats([getattr(s, attr) / 1000 for s in ok if getattr(s, attr) is not None])
    return out
