"""The STAMP Session-Reflector (RFC 8762 §4.3, RFC 8972, RFC 9503).

A :class:`Reflector` owns one UDP socket (in a network namespace if
configured) and one thread that answers every valid Session-Sender packet:

* **Modes.** Unauthenticated, or authenticated when a key is configured (the
  base packet's HMAC must verify, else the packet is dropped and counted in
  ``dropped_auth``). Stateless (the reply's Sequence Number is the sender's)
  or stateful (RFC 8762 §4.3.1: per test session a counter that starts at 0
  and is incremented by one for each reflected packet; a session is the
  sender's address and port, the local address and port, and the SSID).
* **Timestamps.** Receive Timestamp t2 = the kernel's receive timestamp of the
  datagram (software, CLOCK_REALTIME; the user-space clock after ``recvmsg``
  if the kernel gave none). Timestamp t3 = the clock read after everything
  else is ready (the reply is built, the return route is installed), just
  before the base HMAC (authenticated mode) and ``sendmsg``. Format NTP by
  default (PTP if configured); the Error Estimate reflects the kernel's
  clock state (adjtimex).
* **Echo.** Session-Sender fields are copied; Session-Sender TTL is the
  TTL / Hop Limit the packet arrived with (0 if the kernel did not say);
  SSID is copied; the reply has the size of the request (the TLVs are
  reflected in place, trailing padding is copied unchanged: octets after the
  base packet that do not start like a TLV, see
  :func:`srv6pm.stamp.tlv.parse_sent`). An unauthenticated test packet of
  14 to 43 octets (a TWAMP-Light sender, RFC 8762 §4.6) is answered as if
  zero-filled to 44 octets: with a 44-octet reply.
* **TLVs** (RFC 8972 §4): HMAC TLV verified first when present, or when
  authenticated and TLVs other than Extra Padding are present; on failure
  every TLV is copied with I = 1 and none is acted upon. Extra Padding,
  HMAC, Class of Service, Direct Measurement, Destination Node Address and
  Return Path are understood (U = 0); any other TLV is copied with U = 1.
  A malformed TLV gets M = 1 and processing stops; the rest of the packet
  is copied unchanged.
* **Class of Service** (RFC 8972 §4.4): DSCP2 and ECN get the DSCP and ECN
  the test packet arrived with; the reply is sent with DSCP1 (ECN 0), RP
  stays 0 (no local policy refuses a DSCP). U = 1 if the kernel did not say
  what the packet's Traffic Class was (then the reply's DSCP is the socket's).
* **Direct Measurement** (RFC 8972 §4.5): R_RxC = the test packets carrying
  the TLV that this session sent here, this one included; R_TxC = the
  replies to them sent, this one included (a reply that cannot be sent is
  not counted). A session is keyed as for stateful mode; its counters start
  at 0 and are forgotten like its sequence counter (bounded, idle expiry).
* **Destination Node Address** (RFC 9503 §3): U = 1 unless the address is the
  one the packet was sent to (or the bound address).
* **Return Path** (RFC 9503 §4, first one only): a Control Code without the
  Reply Request flag suppresses the reply; an SRv6 Segment List makes the
  reply travel through those segments, then to the sender (the reply
  carries an SRH, see :mod:`srv6pm.stamp.srh`; if the last segment is the
  sender's own address it is not repeated); a Return Address is honoured
  only with ``honour_return_address`` (an open reflector that sends replies
  wherever a packet asks is an amplification tool); an SR-MPLS Label Stack
  cannot be honoured. The Return Path TLV has U = 0 when everything in it
  was honoured, U = 1 otherwise (sub-TLVs: U = 0 for those used).
* **Robustness.** Anything wrong with a packet is a
  :class:`~srv6pm.stamp.errors.StampError`, counted and dropped; an
  unexpected exception is counted in ``internal_errors`` and logged, and the
  loop goes on. Packet-level events are logged at DEBUG only.

:meth:`Reflector.handle` is the whole per-packet decision without sockets
(used by the tests and the fuzzer); :meth:`Reflector.start` /
:meth:`Reflector.stop` run the socket loop in a thread, :meth:`Reflector.run`
in the calling thread.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
import dataclasses
from dataclasses import dataclass, replace
from typing import Callable, Protocol

from srv6pm.stamp import tlv as tlvmod
from srv6pm.stamp import udp
from srv6pm.stamp.errors import AuthenticationError, StampError
from srv6pm.stamp.protocol import STAMP_PORT
from srv6pm.stamp.packet import ReflectorPacket, SenderPacket, pad_short
from srv6pm.stamp.srh import MAX_SEGMENTS, StickyRoute
from srv6pm.stamp.timestamp import ClockState, ErrorEstimate, TimestampFormat, encode, local_clock
from srv6pm.stamp.tlv import ClassOfService, DirectMeasurement, ReturnPath, SubTlvType, Tlv, TlvList, TlvType

__all__ = ["DEFAULT_PORT", "TIMESTAMP_KINDS", "Reflector", "ReflectorConfig", "ReflectorStats", "Reply",
           "SessionTable"]

log = logging.getLogger("srv6pm.stamp.reflector")

DEFAULT_PORT = STAMP_PORT
TIMESTAMP_KINDS = (udp.KIND_KERNEL, udp.KIND_USER)  # how this reflector takes (t2, t3); t2 falls back to "user"
RECV_BUFFER = 65536
BURST = 64              # datagrams handled per wake-up before checking for stop
CLOCK_REFRESH_S = 60.0  # how often the Error Estimate is re-read from the kernel


@dataclass(frozen=True)
class ReflectorConfig:
    """What a reflector does. ``port`` 0 picks a free port (see :attr:`Reflector.address`)."""

    bind: str = "::"
    port: int = DEFAULT_PORT
    key: bytes | None = None
    stateful: bool = False
    netns: str | None = None
    timestamp_format: TimestampFormat = TimestampFormat.NTP
    honour_return_address: bool = False
    max_sessions: int = 10_000
    session_idle_s: float = 300.0
    rcvbuf: int = 4 * 1024 * 1024

    def __post_init__(self):
        try:
            udp.family_of(self.bind)
        except ValueError:
            raise ValueError(f"bind address {self.bind!r} is not an IPv4 or IPv6 address") from None
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} not in 0..65535")
        if self.max_sessions < 1 or not self.session_idle_s > 0:
            raise ValueError("max_sessions must be >= 1 and session_idle_s > 0")

    @classmethod
    def from_message(cls, message, *, key: bytes | None = None, netns: str | None = None) -> "ReflectorConfig":
        """The reflector of a southbound ``StampReflector`` message normalised by
        :func:`srv6pm.southbound.validate.stamp_reflector` (its port filled in); ``key`` is the content
        of its ``auth_key_file`` (the caller reads it). The backend is the caller's to choose."""
        return cls(bind=message.bind, port=message.port, key=key, stateful=message.stateful, netns=netns)

    def __repr__(self) -> str:  # never print the key
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__dataclass_fields__ if k != "key")
        return f"ReflectorConfig({fields}, key={'set' if self.key else None})"


@dataclass
class ReflectorStats:
    """Counters since the reflector started. :meth:`Reflector.stats` returns a copy (a snapshot)."""

    received: int = 0
    reflected: int = 0
    dropped_malformed: int = 0
    dropped_auth: int = 0
    no_reply_requested: int = 0
    tlv_integrity_failed: int = 0
    return_path_srv6: int = 0
    return_path_refused: int = 0
    send_errors: int = 0
    internal_errors: int = 0
    sessions: int = 0
    rx_kernel_timestamps: int = 0
    rx_user_timestamps: int = 0
    kernel_reflected: int = 0   # eBPF backend: of ``reflected``, answered in the kernel
    kernel_passed: int = 0      # eBPF backend: test packets the kernel handed to the socket (in ``received``)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Reply:
    """What to send back for one packet: ``packet`` (its Timestamp is set at send time) to
    ``destination``, from ``source`` (None: the kernel's choice), through ``waypoints`` (SRv6
    segments before the destination). ``fallback_tlvs`` are the TLVs to send instead if the
    segment list cannot be installed (Return Path flagged U = 1). ``tclass``: the Traffic Class /
    TOS to send with (Class of Service TLV; None: the socket's). ``counted``: the session whose
    Direct Measurement transmit counter counts this reply once it is sent (None: no such TLV)."""

    packet: ReflectorPacket
    destination: tuple[str, int]
    source: str | None = None
    waypoints: tuple[ipaddress.IPv6Address, ...] = ()
    fallback_tlvs: TlvList | None = None
    tclass: int | None = None
    counted: tuple | None = None


@dataclass
class _TlvOutcome:
    tlvs: TlvList
    suppress: bool = False
    waypoints: tuple[ipaddress.IPv6Address, ...] = ()
    destination: str | None = None
    fallback: TlvList | None = None
    tclass: int | None = None
    counted: tuple | None = None


class _Table:
    """Per-session counters (``width`` of them, from 0), bounded (LRU) and forgotten when idle."""

    def __init__(self, limit: int, idle_s: float, width: int = 1):
        self.limit, self.idle_ns, self.width = limit, int(idle_s * 1e9), width
        self._table: OrderedDict[tuple, list[int]] = OrderedDict()  # key -> [counters..., last_seen_ns]

    def entry(self, key: tuple, now_ns: int) -> list[int]:
        """The live counters of ``key`` (new ones at 0 for a new or idle session), seen now."""
        entry = self._table.get(key)
        if entry is None or now_ns - entry[-1] > self.idle_ns:
            entry = [0] * self.width + [now_ns]
            self._table[key] = entry
            while len(self._table) > self.limit:
                self._table.popitem(last=False)
        else:
            self._table.move_to_end(key)
        entry[-1] = now_ns
        return entry

    def __len__(self) -> int:
        return len(self._table)


class _Sessions(_Table):
    """Stateful sequence counters."""

    def next_seq(self, key: tuple, now_ns: int) -> int:
        entry = self.entry(key, now_ns)
        seq = entry[0]
        entry[0] = (seq + 1) & 0xFFFFFFFF
        return seq


class _DirectCounts(_Table):
    """Direct Measurement counters per session: [received, sent]."""

    def __init__(self, limit: int, idle_s: float):
        super().__init__(limit, idle_s, width=2)

    def received(self, key: tuple, now_ns: int) -> tuple[int, int]:
        """Count one test packet of ``key``; (R_RxC, R_TxC) for its reply, both this one included."""
        entry = self.entry(key, now_ns)
        entry[0] = (entry[0] + 1) & 0xFFFFFFFF
        return entry[0], (entry[1] + 1) & 0xFFFFFFFF

    def sent(self, key: tuple) -> None:
        """Count one reply of ``key`` as sent (if the session is still kept)."""
        entry = self._table.get(key)
        if entry is not None:
            entry[1] = (entry[1] + 1) & 0xFFFFFFFF


class SessionTable(Protocol):
    """Where stateful mode keeps its per-session counters (see :class:`_Sessions`)."""

    def next_seq(self, key: tuple, now_ns: int) -> int:
        """The session ``key``'s next Sequence Number (0 for a new or idle session), counted."""

    def __len__(self) -> int:
        """How many sessions are kept."""


class Reflector:
    """A Session-Reflector. Thread safe: :meth:`stats` and :meth:`stop` may be called from any thread.

    ``clock`` returns Unix ns (tests inject one). ``sessions`` replaces the
    in-process table of stateful counters (the eBPF backend passes the
    kernel's, so that both paths number one session in one sequence); a key
    is ``(source address, source port, local address, local port, SSID)``.
    ``clock_state`` replaces the kernel clock reading that the Error Estimate
    and the PTP offset come from (called once per packet when given; without
    it the reflector reads :func:`local_clock` every ``CLOCK_REFRESH_S``).
    Creating the object opens nothing; :meth:`open` (called by
    :meth:`start`/:meth:`run`) binds the socket and raises ``OSError`` /
    :class:`srv6pm.netns.NetnsError` if it cannot.
    """

    def __init__(self, config: ReflectorConfig, *, clock: Callable[[], int] = time.time_ns,
                 sessions: SessionTable | None = None, clock_state: Callable[[], ClockState] | None = None):
        self.config = config
        self._clock = clock
        self._counters = ReflectorStats()
        self._sessions = sessions if sessions is not None else _Sessions(config.max_sessions, config.session_idle_s)
        self._direct = _DirectCounts(config.max_sessions, config.session_idle_s)
        self._clock_state = clock_state
        self._state: ClockState | None = None
        self._sock: socket.socket | None = None
        self._route: StickyRoute | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._ee: ErrorEstimate | None = None
        self._ee_at = 0.0
        self._tai_utc = 37
        self._internal_logged = 0
        self._bound_any = ipaddress.ip_address(config.bind).is_unspecified
        self._ipv6 = udp.family_of(config.bind) == socket.AF_INET6
        self.address: tuple[str, int] | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def open(self) -> None:
        """Bind the socket (idempotent)."""
        with self._lock:
            if self._sock is not None:
                return
            sock = udp.open_socket(self.config.bind, self.config.port, netns=self.config.netns,
                                   rcvbuf=self.config.rcvbuf)
            self._sock = sock
            self._route = StickyRoute(sock) if sock.family == socket.AF_INET6 else None
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            name = sock.getsockname()
            self.address = (name[0], name[1])
            self._error_estimate()
        log.info("reflector listening", extra={"address": name[0], "port": name[1], "netns": self.config.netns,
                                               "authenticated": self.config.key is not None,
                                               "stateful": self.config.stateful})

    def start(self) -> "Reflector":
        """Open and serve in a background thread; returns self."""
        self.open()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="stamp-reflector", daemon=True)
                self._thread.start()
        return self

    def run(self) -> None:
        """Open and serve in the calling thread until :meth:`stop`."""
        self.open()
        self._serve()

    def stop(self) -> None:
        """Ask the loop to end (returns at once; :meth:`close` waits)."""
        self._stopping.set()
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def close(self, timeout: float = 5.0) -> None:
        """Stop, wait for the thread, close the socket; idempotent."""
        self.stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
        log.info("reflector stopped", extra=self.stats().to_dict())

    def __enter__(self) -> "Reflector":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def stats(self) -> ReflectorStats:
        return dataclasses.replace(self._counters, sessions=len(self._sessions))

    # -- per packet ---------------------------------------------------------------------
    def _error_estimate(self) -> ErrorEstimate:
        if self._clock_state is not None:
            state = self._clock_state()
            if state != self._state:
                self._use(state)
            assert self._ee is not None, "_state starts as None, so the first call ran _use(), which sets _ee"
            return self._ee
        now = time.monotonic()
        if self._ee is None or now - self._ee_at > CLOCK_REFRESH_S:
            self._use(local_clock())
            self._ee_at = now
        assert self._ee is not None, "set by _use() above when it was None"
        return self._ee

    def _use(self, state: ClockState) -> None:
        self._ee = ErrorEstimate.for_error(state.error_ns, state.synchronized, self.config.timestamp_format)
        self._tai_utc = state.tai_utc
        self._state = state

    def handle(self, rx: udp.Received) -> Reply | None:
        """Decide the reply to datagram ``rx``: a :class:`Reply`, or None when no reply is requested.

        Raises :class:`StampError` (malformed / not authentic) and nothing
        else for any input; counts nothing (the loop does).
        """
        if rx.truncated:
            raise StampError(f"datagram larger than {RECV_BUFFER} octets")
        key = self.config.key
        request = SenderPacket.unpack(rx.data if key is not None else pad_short(rx.data), key)
        outcome = self._reflect_tlvs(request, rx)
        if outcome.suppress:
            return None
        if self.config.stateful:
            seq = self._sessions.next_seq(self._session(request, rx), rx.rx_ns)
        else:
            seq = request.seq
        ee = self._error_estimate()
        packet = ReflectorPacket(
            seq=seq, timestamp=0, error_estimate=ee,
            receive_timestamp=encode(rx.rx_ns, ee.format, self._tai_utc),
            sender_seq=request.seq, sender_timestamp=request.timestamp,
            sender_error_estimate=request.error_estimate,
            sender_ttl=rx.ttl if rx.ttl is not None and 0 <= rx.ttl <= 255 else 0,
            ssid=request.ssid, tlvs=self._signed(outcome.tlvs, seq))
        fallback = self._signed(outcome.fallback, seq) if outcome.fallback is not None else None
        destination = (outcome.destination or rx.source[0], rx.source[1])
        source = rx.destination if self._wildcard() else None
        return Reply(packet, destination, source, outcome.waypoints, fallback, outcome.tclass, outcome.counted)

    def _session(self, request: SenderPacket, rx: udp.Received) -> tuple:
        return (rx.source[0], rx.source[1], rx.destination, self.address[1] if self.address else None, request.ssid)

    def _signed(self, tlvs: TlvList, seq: int) -> TlvList:
        key = self.config.key
        if key is None or not any(t.type == TlvType.HMAC for t in tlvs.tlvs):
            return tlvs
        signed = tlvmod.sign(tlvs.tlvs, struct.pack("!I", seq), key)
        return TlvList(signed, tlvs.rest, tlvs.malformed)

    def _wildcard(self) -> bool:
        return self._bound_any

    def _reflect_tlvs(self, request: SenderPacket, rx: udp.Received) -> _TlvOutcome:
        area = request.tlvs
        if not area.tlvs:
            return _TlvOutcome(area)  # nothing, or zero padding / a fragment: copied as received
        tlvs = area.tlvs
        needs_hmac = self.config.key is not None or any(t.type == TlvType.HMAC for t in tlvs)
        if needs_hmac and not tlvmod.verify(tlvs, request.seq_field, self.config.key):
            flagged = tuple(t.with_flags(i=True) for t in tlvs)
            return _TlvOutcome(TlvList(flagged, area.rest, area.malformed))
        out: list[Tlv] = []
        outcome = _TlvOutcome(area)
        seen_return_path = False
        for index, t in enumerate(tlvs):
            if t.length is not None:  # cut short by the end of the packet: M was set by the parser
                out.extend(tlvs[index:])
                break
            try:
                if t.type in (TlvType.EXTRA_PADDING, TlvType.HMAC):
                    if t.type == TlvType.HMAC and len(t.value) != tlvmod.HMAC_LEN:
                        raise StampError("HMAC TLV length is not 16")
                    out.append(t.with_flags(u=False, m=False, i=False))
                elif t.type == TlvType.CLASS_OF_SERVICE:
                    out.append(self._class_of_service(ClassOfService.from_tlv(t), t, rx, outcome))
                elif t.type == TlvType.DIRECT_MEASUREMENT:
                    asked = DirectMeasurement.from_tlv(t)
                    if outcome.counted is None:
                        outcome.counted = self._session(request, rx)
                    received, sent = self._direct.received(outcome.counted, rx.rx_ns)
                    out.append(replace(asked, reflector_rx=received, reflector_tx=sent).to_tlv(flags=0))
                elif t.type == TlvType.DESTINATION_NODE_ADDRESS:
                    wanted = tlvmod.DestinationNodeAddress.from_tlv(t).address
                    out.append(t.with_flags(u=not self._is_local(wanted, rx), m=False, i=False))
                elif t.type == TlvType.RETURN_PATH and not seen_return_path:
                    seen_return_path = True
                    out.append(self._return_path(ReturnPath.from_tlv(t), t, rx, outcome))
                else:  # not understood (or a second Return Path TLV, which is ignored): copied, U = 1
                    out.append(t.with_flags(u=True))
            except StampError:  # malformed value: M = 1, stop processing, copy the rest
                out.append(t.with_flags(m=True))
                out.extend(tlvs[index + 1:])
                outcome.suppress = False
                outcome.waypoints, outcome.destination, outcome.fallback = (), None, None
                outcome.tclass = outcome.counted = None
                break
        outcome.tlvs = TlvList(tuple(out), area.rest, area.malformed)
        if outcome.waypoints:  # in case the SRH cannot be installed: the Return Path flagged U = 1
            outcome.fallback = TlvList(tuple(t.with_flags(u=True) if t.type == TlvType.RETURN_PATH else t
                                             for t in out), area.rest, area.malformed)
        return outcome

    @staticmethod
    def _class_of_service(cos: ClassOfService, raw: Tlv, rx: udp.Received, outcome: _TlvOutcome) -> Tlv:
        if rx.tclass is None:  # what the packet arrived with is not known: cannot fill it in
            return raw.with_flags(u=True)
        if outcome.tclass is None:  # the first one decides the reply's DSCP
            outcome.tclass = cos.dscp1 << 2
        return replace(cos, dscp2=rx.tclass >> 2, ecn=rx.tclass & 0x3, rp=0).to_tlv(flags=0)

    def _is_local(self, address, rx: udp.Received) -> bool:
        candidates = {rx.destination, None if self._wildcard() else self.config.bind}
        for text in candidates:
            if text is None:
                continue
            try:
                mine = ipaddress.ip_address(text)
            except ValueError:
                continue
            if isinstance(mine, ipaddress.IPv6Address) and mine.ipv4_mapped is not None:
                mine = mine.ipv4_mapped
            if mine == address:
                return True
        return False

    def _return_path(self, path: ReturnPath, raw: Tlv, rx: udp.Received, outcome: _TlvOutcome) -> Tlv:
        control = path.control_code
        if control is not None:  # RFC 9503 §4.1.1: other sub-TLVs are ignored
            outcome.suppress = not control.reply_requested
            return path.with_sub_flags({SubTlvType.CONTROL_CODE}).to_tlv(flags=0)
        used: set[int] = set()
        refused = False
        address = path.return_address
        if address is not None:
            if self.config.honour_return_address:
                outcome.destination = str(address.address)
                used.add(SubTlvType.RETURN_ADDRESS)
            else:
                refused = True
        segments = path.srv6_segment_list
        if segments is not None:
            final = ipaddress.ip_address(outcome.destination or rx.source[0])
            waypoints = tuple(segments.segments)
            if waypoints and waypoints[-1] == final:
                waypoints = waypoints[:-1]
            if (self._ipv6 and isinstance(final, ipaddress.IPv6Address) and final.ipv4_mapped is None
                    and len(waypoints) <= MAX_SEGMENTS - 1):
                outcome.waypoints = waypoints
                used.add(SubTlvType.SRV6_SEGMENT_LIST)
            else:
                refused = True
        if path.sr_mpls_label_stack is not None or any(s.type not in used for s in path.sub_tlvs):
            refused = True
        return path.with_sub_flags(used).to_tlv(flags=tlvmod.FLAG_U if refused else 0)

    # -- the socket loop ----------------------------------------------------------------
    def _serve(self) -> None:
        sock = self._sock
        if sock is None:
            raise RuntimeError("reflector is not open")
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping.is_set():
            try:
                poller.poll(1000)
            except InterruptedError:
                continue
            for _ in range(BURST):
                if self._stopping.is_set():
                    break
                try:
                    rx = udp.receive(sock, RECV_BUFFER)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if self._stopping.is_set() or exc.errno == errno.EBADF:
                        return
                    self._internal(exc)
                    break
                self._one(rx, sock)

    def _one(self, rx: udp.Received, sock: socket.socket) -> None:
        """Answer one received packet through ``sock`` (the socket it came in on), counting the outcome."""
        c = self._counters
        c.received += 1
        if rx.rx_kind == udp.KIND_KERNEL:
            c.rx_kernel_timestamps += 1
        else:
            c.rx_user_timestamps += 1
        try:
            reply = self.handle(rx)
        except AuthenticationError as exc:
            c.dropped_auth += 1
            log.debug("dropped packet", extra={"reason": str(exc), "peer": rx.source[0], "port": rx.source[1]})
            return
        except StampError as exc:
            c.dropped_malformed += 1
            log.debug("dropped packet", extra={"reason": str(exc), "peer": rx.source[0], "port": rx.source[1]})
            return
        except Exception as exc:  # a bug: count it, keep serving
            self._internal(exc)
            return
        if reply is None:
            c.no_reply_requested += 1
            return
        if any(t.integrity_failed for t in reply.packet.tlvs.tlvs):
            c.tlv_integrity_failed += 1
        if any(t.type == TlvType.RETURN_PATH and t.unrecognized for t in reply.packet.tlvs.tlvs):
            c.return_path_refused += 1
        try:
            self._send(reply, sock)
        except OSError as exc:
            c.send_errors += 1
            log.debug("cannot send reply", extra={"reason": exc.strerror or str(exc), "peer": reply.destination[0]})
        except Exception as exc:
            self._internal(exc)

    def _send(self, reply: Reply, sock: socket.socket) -> None:
        route = self._route
        packet, waypoints = reply.packet, reply.waypoints
        if route is not None:
            try:
                route.use(waypoints, reply.destination[0])
            except OSError as exc:
                if not waypoints:
                    raise
                log.debug("cannot install return SRH", extra={"reason": exc.strerror or str(exc)})
                route.clear()
                waypoints = ()
                packet = replace(packet, tlvs=reply.fallback_tlvs or packet.tlvs)
                self._counters.return_path_refused += 1
        ancillary = self._source_ancillary(reply.source, sock.family)
        if reply.tclass is not None:
            ancillary += udp.tclass_ancillary(reply.destination[0], reply.tclass)
        now = self._clock()  # t3: as late as possible
        payload = packet.pack(self.config.key, timestamp=encode(now, packet.error_estimate.format, self._tai_utc))
        sock.sendmsg([payload], ancillary, 0, reply.destination)
        if reply.counted is not None:
            self._direct.sent(reply.counted)
        self._counters.reflected += 1
        if waypoints:
            self._counters.return_path_srv6 += 1

    @staticmethod
    def _source_ancillary(source: str | None, family: int) -> list:
        if source is None:
            return []
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return []
        if family == socket.AF_INET6 and address.version == 6:
            return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, address.packed + struct.pack("=I", 0))]
        if family == socket.AF_INET and address.version == 4:
            return [(socket.IPPROTO_IP, udp.IP_PKTINFO, struct.pack("=I", 0) + address.packed + bytes(4))]
        return []

    def _internal(self, exc: BaseException) -> None:
        self._counters.internal_errors += 1
        self._internal_logged += 1
        if self._internal_logged <= 10:
            log.error("unexpected error in the reflector loop", exc_info=exc,
                      extra={"count": self._counters.internal_errors})
