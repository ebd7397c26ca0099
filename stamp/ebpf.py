"""The eBPF Session-Reflector: ``bpf/reflector.bpf.c`` answers in the kernel, the socket reflector the rest.

:class:`EbpfReflector` has the interface of :class:`~srv6pm.stamp.reflector.Reflector`
(``open``/``start``/``run``/``stop``/``close``, :meth:`~EbpfReflector.stats`,
``address``, a context manager) and is one, plus the program: it binds the
same socket as the socket backend (every test packet the program passes up
is answered there, exactly as without the program), then loads the program
with the one loader of the product (:mod:`srv6pm.bpf`), writes its settings
and attaches it to every interface of the namespace except ``lo``. Read the C
source's header for what the kernel answers and what it passes up. Maps are
pinned under ``/sys/fs/bpf/srv6pm-stamp/<instance>/`` while it runs:

* ``settings``    one slot: the address and port, stateful/PTP/authenticated
  flags, the Error Estimate, and the clock offsets (CLOCK_TAI - CLOCK_REALTIME
  as the kernel keeps it, TAI - UTC for PTP, the NTP epoch); rewritten every
  ``REFRESH_S`` from one :func:`~srv6pm.stamp.timestamp.local_clock` reading
  that the socket path uses too, so both paths stamp alike;
* ``sessions``    LRU hash of the stateful counters, ``max_sessions`` entries,
  shared with the socket path (:class:`MapSessions`); eviction is the
  kernel's approximate LRU, an idle session starts at 0 after
  ``session_idle_s``;
* ``counters``    per-CPU: received, reflected, through SRv6, no reply
  requested, and passed up by reason (:data:`COUNTERS`);
* ``hop_limits``  ifindex -> the Hop Limit a socket's packet gets there
  (``net.ipv6.conf.<if>.hop_limit``);
* ``routes``      the replies' routes (``bpf_fib_lookup`` costs more than the rest
  of a reply when caches are cold), each valid while the settings' route
  generation is the one it was found in, for ``ROUTE_TTL_S`` at most: this
  object bumps the generation at every rtnetlink link, address, route, rule
  or neighbour event of the namespace, so a change reaches the kernel path
  within the milliseconds it takes to read the event.

Attachment (``attach``): ``xdp`` (native, driver mode), ``xdp-generic``,
``tc`` (clsact ingress, before the exporter's counting filter), or ``auto``:
tc on veth, native XDP elsewhere, tc where XDP cannot attach. Checked on
kernel 6.18: native XDP on a veth answers only if the *peer* veth runs an XDP
program too (otherwise XDP_TX frames are dropped), and both XDP modes pass up
test packets that a local socket sent over veth, because they still carry a
partial (offloaded) UDP checksum that XDP cannot tell from a corrupt one; tc
answers those (its checksum update is right for both kinds), and can send a
reply out of another interface than the request's, which XDP_TX cannot. The
kernel's route lookup for replies (``bpf_fib_lookup``) needs IPv6 forwarding
on the interface: where it is off, every test packet is answered in user
space (a warning says so at start).

What a kernel reply does not pass through: netfilter (nftables rules on
input, output or postrouting never see the test packets the program answers,
nor their replies) and the socket layer (``ss`` shows no traffic).

One eBPF reflector per network namespace: a second one would take over the
first's hooks. A reflector killed with SIGKILL leaves its program attached;
the next one of the same instance replaces it.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import select
import socket
import struct
import threading
import time
from pathlib import Path

from srv6pm import bpf
from srv6pm.netns import NetnsThread
from srv6pm.stamp import udp
from srv6pm.stamp.reflector import Reflector, ReflectorConfig, ReflectorStats
from srv6pm.stamp.timestamp import NS, NTP_UNIX_OFFSET_S, ClockState, ErrorEstimate, TimestampFormat, local_clock

__all__ = ["ATTACH_MODES", "COUNTERS", "OBJECT", "PIN_ROOT", "EbpfReflector", "MapSessions", "kernel_tai_offset_s"]

log = logging.getLogger("srv6pm.stamp.ebpf")

OBJECT = bpf.object_path(Path(__file__).parent / "bpf", "reflector")
PIN_ROOT = Path(bpf.BPFFS) / "srv6pm-stamp"
PINNED = ("settings", "sessions", "counters", "hop_limits")
ATTACH_MODES = ("auto", "xdp", "xdp-generic", "tc")
XDP_PROGRAM, TC_PROGRAM = "stamp_reflect_xdp", "stamp_reflect_tc"
PROGRAM_NAME_LEN = 15  # the kernel keeps this much of a program's name
TC_HANDLE = 0x5A6C     # tc ingress slot (handle, priority): before the exporter's (0x5A6D)
TC_PRIORITY = 0x5A6C
REFRESH_S = 10.0       # clock offsets, Error Estimate and new interfaces
ROUTE_TTL_S = 1.0      # the longest a cached reply route is used, events or not
EVENT_WAIT_S = 0.2     # how long the refresher waits for a routing event at a time
# rtnetlink groups whose events can change a reply's route: RTMGRP_LINK, RTMGRP_NEIGH,
# RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE and RTNLGRP_IPV6_RULE (19)
ROUTING_GROUPS = 0x1 | 0x4 | 0x100 | 0x400 | (1 << 18)
DEFAULT_HOP_LIMIT = 64
# the C program's enum refl_counter, in order
COUNTERS = ("received", "reflected", "return_path_srv6", "no_reply_requested", "passed_authenticated",
            "passed_tlv", "passed_malformed", "passed_checksum", "passed_route", "passed_headers")
CFG_ENABLED, CFG_STATEFUL, CFG_PTP, CFG_BIND_ANY, CFG_AUTHENTICATED = 1, 2, 4, 8, 16

_SETTINGS = struct.Struct("<16s2s2sIQQQQQQ")  # struct refl_settings
_SESSION_KEY = struct.Struct("<16s16s2s2s")  # struct refl_session_key (ports and SSID in network order)
_SESSION = struct.Struct("<IIQ")             # struct refl_session
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_BE16 = struct.Struct("!H")


def kernel_tai_offset_s() -> int:
    """CLOCK_TAI - CLOCK_REALTIME in whole seconds: the TAI offset the kernel applies (0 until chrony,
    ntpd or ptp4l sets it), which the program subtracts from bpf_ktime_get_tai_ns() to get UTC."""
    return round((time.clock_gettime_ns(time.CLOCK_TAI) - time.time_ns()) / NS)


def _address16(text: str | None) -> bytes:
    """16 octets of an address (IPv4 as IPv4-mapped; None: all zero), as the program keys sessions."""
    if not text:
        return bytes(16)
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if address.version == 4:
        address = ipaddress.IPv6Address(f"::ffff:{address}")
    return address.packed


class MapSessions:
    """The stateful counters in the program's ``sessions`` map, for the socket path
    (a :class:`~srv6pm.stamp.reflector.SessionTable`).

    The kernel increments atomically; this side reads and writes back, so a
    packet answered here and one answered in the kernel for the same session
    at the same instant could get one number twice (the kernel answers every
    packet of a session except the few it passes up, so in practice they do
    not meet). Idle time is measured on CLOCK_TAI, the program's clock.
    """

    def __init__(self, sessions: bpf.Map, idle_s: float):
        self._map = sessions
        self._idle_ns = int(idle_s * NS)

    def next_seq(self, key: tuple, now_ns: int) -> int:
        source, sport, destination, _lport, ssid = key
        k = _SESSION_KEY.pack(_address16(source), _address16(destination), _BE16.pack(sport), _BE16.pack(ssid))
        now = time.clock_gettime_ns(time.CLOCK_TAI)
        value = self._map.lookup(k)
        seq = 0
        if value is not None:
            following, _pad, seen = _SESSION.unpack(value)
            if now - seen <= self._idle_ns:
                seq = following
        self._map.update(k, _SESSION.pack((seq + 1) & 0xFFFFFFFF, 0, now))
        return seq

    def __len__(self) -> int:
        return len(self._map.keys())


class EbpfReflector:
    """The STAMP Session-Reflector with the eBPF fast path (see the module docstring).

    ``instance`` names the pin folder (the exporter uses its node name).
    Creating the object checks the arguments only; :meth:`open` raises
    :class:`srv6pm.bpf.BpfUnavailable` / :class:`srv6pm.bpf.VerifierError`
    when the program cannot run here, :class:`srv6pm.bpf.BpfError` when it
    cannot be attached, and what :meth:`Reflector.open` raises; then nothing
    is left behind. Thread safe like :class:`Reflector`.
    """

    def __init__(self, config: ReflectorConfig, *, instance: str, attach: str = "auto",
                 obj_path: str | Path = OBJECT, pin_root: Path = PIN_ROOT):
        if attach not in ATTACH_MODES:
            raise ValueError(f"attach must be one of {', '.join(ATTACH_MODES)}, got {attach!r}")
        if udp.family_of(config.bind) != socket.AF_INET6:
            raise ValueError(f"the ebpf reflector answers IPv6 test packets: bind an IPv6 address or '::', not "
                             f"{config.bind!r} (or use the socket reflector)")
        if not instance or "/" in instance or instance in (".", ".."):
            raise ValueError(f"invalid instance name {instance!r}")
        self.config = config
        self.attach = attach
        self.instance = instance
        self._obj_path = Path(obj_path)
        self._pins = pin_root / instance
        self._lock = threading.RLock()
        self._obj: bpf.BpfObject | None = None
        self._reflector: Reflector | None = None
        self._thread: NetnsThread | None = None
        self._attached: dict[int, str] = {}  # ifindex -> "xdp", "xdp-generic" or "tc"
        self._state: ClockState | None = None
        self._refresher: threading.Thread | None = None
        self._stopping = threading.Event()
        self._final = ReflectorStats()  # the figures at the last close()
        self._events: socket.socket | None = None  # rtnetlink, routing changes of the namespace
        self._generation = 0

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int] | None:
        return self._reflector.address if self._reflector is not None else None

    def open(self) -> None:
        """Bind the socket, load the program, write its settings, attach it everywhere (idempotent)."""
        with self._lock:
            if self._obj is not None:
                return
            bpf.check_support(self._obj_path)
            try:
                obj = bpf.BpfObject(self._obj_path, pin_dir=self._pins, pin=PINNED,
                                    max_entries={"sessions": self.config.max_sessions})
            except BaseException:
                bpf.unpin(self._pins)  # the folder it made for the pins
                raise
            try:
                self._obj = obj
                self._state = local_clock()
                self._reflector = Reflector(self.config,
                                            sessions=MapSessions(obj.map("sessions"), self.config.session_idle_s),
                                            clock_state=self._clock)
                self._reflector.open()  # pass-ups have a socket before the program answers anything
                # maps pinned by a reflector that was killed are reused: its counts and routes are not ours
                counters = obj.map("counters")
                for index in range(len(COUNTERS)):
                    counters.update(_U32.pack(index), bytes(8))
                self._generation = time.monotonic_ns()
                self._write_settings()
                self._thread = NetnsThread(self.config.netns, thread_name=f"stamp-bpf-{self.instance}")
                self._events = self._thread.call(_routing_events)
                self._attach_new()
            except BaseException:
                self._teardown()
                raise
            self._stopping.clear()
            self._refresher = threading.Thread(target=self._refresh_loop, name="stamp-bpf-refresh", daemon=True)
            self._refresher.start()
        log.info("ebpf reflector attached", extra={"instance": self.instance, "netns": self.config.netns,
                                                   "interfaces": sorted(set(self._attached.values()))})

    def _clock(self) -> ClockState:
        """The clock state last read (the socket reflector's ``clock_state``; open() reads it first)."""
        assert self._state is not None
        return self._state

    def start(self) -> "EbpfReflector":
        """Open, and serve what the kernel passes up in a background thread; returns self."""
        self.open()
        assert self._reflector is not None  # made by open()
        self._reflector.start()
        return self

    def run(self) -> None:
        """Open, and serve what the kernel passes up in the calling thread until :meth:`stop`."""
        self.open()
        assert self._reflector is not None  # made by open()
        self._reflector.run()

    def stop(self) -> None:
        """Ask the socket loop to end (returns at once; :meth:`close` detaches and waits)."""
        reflector = self._reflector
        if reflector is not None:
            reflector.stop()

    def close(self, timeout: float = 5.0) -> None:
        """Detach the program everywhere, close the socket, remove the pins; idempotent."""
        self._stopping.set()
        refresher = self._refresher
        if refresher is not None and refresher is not threading.current_thread():
            refresher.join(timeout)
        with self._lock:
            self._refresher = None
            self._teardown(timeout)

    def _teardown(self, timeout: float = 5.0) -> None:
        try:
            if self._thread is not None and self._obj is not None:
                self._detach_all()
        finally:
            if self._reflector is not None:
                self._final = self.stats()
                self._reflector.close(timeout)
                self._reflector = None
            if self._events is not None:
                self._events.close()
                self._events = None
            if self._thread is not None:
                self._thread.close()
                self._thread = None
            if self._obj is not None:
                self._obj.close()
                self._obj = None
                bpf.unpin(self._pins)

    def __enter__(self) -> "EbpfReflector":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def attachments(self) -> dict[str, int]:
        """How many interfaces have the program, by hook: ``{"tc": 2}``, ``{"xdp": 1, "tc": 1}``."""
        with self._lock:
            out: dict[str, int] = {}
            for how in self._attached.values():
                out[how] = out.get(how, 0) + 1
            return out

    # -- counters -----------------------------------------------------------------------
    def kernel_counters(self) -> dict[str, int]:
        """The program's counters (:data:`COUNTERS`), summed over CPUs; zeros when not open."""
        with self._lock:
            if self._obj is None:
                return dict.fromkeys(COUNTERS, 0)
            counters = self._obj.map("counters")
            ncpu = bpf.possible_cpus()
            out = {}
            for index, name in enumerate(COUNTERS):
                raw = counters.lookup(_U32.pack(index)) or bytes(8 * ncpu)
                out[name] = sum(_U64.unpack_from(raw, 8 * cpu)[0] for cpu in range(ncpu))
            return out

    def stats(self) -> ReflectorStats:
        """Both paths' counters as one :class:`ReflectorStats`: a test packet the kernel answered (or
        dropped for lack of a reply request) counts as received and reflected like one the socket
        answered; ``kernel_reflected`` and ``kernel_passed`` say how the work was shared. After
        :meth:`close`, the last figures."""
        with self._lock:
            if self._reflector is None:
                return self._final
            user = self._reflector.stats()
            k = self.kernel_counters()
        passed = sum(v for name, v in k.items() if name.startswith("passed_"))
        return ReflectorStats(**{
            **user.to_dict(),
            "received": user.received + k["reflected"] + k["no_reply_requested"],
            "reflected": user.reflected + k["reflected"],
            "no_reply_requested": user.no_reply_requested + k["no_reply_requested"],
            "return_path_srv6": user.return_path_srv6 + k["return_path_srv6"],
            "kernel_reflected": k["reflected"], "kernel_passed": passed})

    # -- settings and attachment ----------------------------------------------------------
    def _write_settings(self) -> None:
        config, state = self.config, self._state
        assert state is not None and self._obj is not None and self.address is not None  # open() made them
        ptp = config.timestamp_format is TimestampFormat.PTP
        ee = ErrorEstimate.for_error(state.error_ns, state.synchronized, config.timestamp_format)
        bind = ipaddress.IPv6Address(config.bind)
        flags = CFG_ENABLED | (CFG_STATEFUL if config.stateful else 0) | (CFG_PTP if ptp else 0)
        flags |= CFG_BIND_ANY if bind.is_unspecified else 0
        flags |= CFG_AUTHENTICATED if config.key is not None else 0
        value = _SETTINGS.pack(bind.packed, _BE16.pack(self.address[1]), _BE16.pack(ee.value), flags,
                               kernel_tai_offset_s() * NS, state.tai_utc * NS, NTP_UNIX_OFFSET_S * NS,
                               int(config.session_idle_s * NS), self._generation, int(ROUTE_TTL_S * NS))
        self._obj.map("settings").update(_U32.pack(0), value)

    def _refresh_loop(self) -> None:
        """Until close(): a new route generation at every routing event, new clock settings and interfaces
        every REFRESH_S."""
        events = self._events
        assert events is not None  # open() subscribes before starting this thread
        due = time.monotonic() + REFRESH_S
        while not self._stopping.is_set():
            changed = bool(select.select([events], [], [], EVENT_WAIT_S)[0])
            if changed:
                _drain(events)
            try:
                with self._lock:
                    if self._obj is None:
                        return
                    if time.monotonic() >= due:
                        self._state = local_clock()
                        self._attach_new()
                        due = time.monotonic() + REFRESH_S
                        changed = True
                    if changed:
                        self._generation += 1
                        self._write_settings()
            except Exception as exc:  # keep serving with the old settings; say why
                log.warning("ebpf reflector refresh failed", extra={"instance": self.instance, "error": str(exc)})

    def _attach_new(self) -> None:
        """Attach to every interface of the namespace that has not got the program yet (lo excepted)."""
        assert self._obj is not None and self._thread is not None  # open() made them
        xdp_fd, tc_fd = self._obj.program_fd(XDP_PROGRAM), self._obj.program_fd(TC_PROGRAM)
        hop_limits = self._obj.map("hop_limits")
        mode, attached = self.attach, self._attached

        def run() -> tuple[dict[int, str], list[str]]:
            done: dict[int, str] = {}
            no_forwarding = []
            for index, name in socket.if_nameindex():
                if name == "lo" or index in attached:
                    continue
                done[index] = _attach_one(index, name, mode, xdp_fd, tc_fd)
                hop_limits.update(_U32.pack(index), _U32.pack(_sysctl(name, "hop_limit", DEFAULT_HOP_LIMIT)))
                if not _sysctl(name, "forwarding", 0):
                    no_forwarding.append(name)
            return done, no_forwarding

        done, no_forwarding = self._thread.call(run)
        attached.update(done)
        if no_forwarding:
            log.warning("IPv6 forwarding is off: the kernel cannot route replies there (bpf_fib_lookup needs "
                        "net.ipv6.conf.<if>.forwarding = 1), so their test packets are answered in user space",
                        extra={"instance": self.instance, "interfaces": no_forwarding})

    def _detach_all(self) -> None:
        attached = dict(self._attached)
        assert self._thread is not None  # _teardown() calls this only with the thread

        def run() -> None:
            present = {index for index, _ in socket.if_nameindex()}
            for index, how in attached.items():
                if index not in present:
                    continue
                if how == "tc":
                    bpf.tc_detach(index, "ingress", handle=TC_HANDLE, priority=TC_PRIORITY)
                else:
                    bpf.xdp_detach(index, "native" if how == "xdp" else "generic",
                                   name=XDP_PROGRAM[:PROGRAM_NAME_LEN])

        self._thread.call(run)
        self._attached.clear()


def _attach_one(index: int, name: str, mode: str, xdp_fd: int, tc_fd: int) -> str:
    """Attach to one interface (in the calling thread's namespace) as ``mode`` says; what was done."""
    mine = XDP_PROGRAM[:PROGRAM_NAME_LEN]
    if mode == "auto" and _link_kind(index) != "veth":
        try:
            bpf.xdp_attach(index, xdp_fd, "native", replace=mine)
            return "xdp"
        except bpf.BpfError as exc:
            log.info("native XDP cannot attach: tc ingress instead", extra={"interface": name, "error": str(exc)})
    if mode in ("xdp", "xdp-generic"):
        bpf.xdp_attach(index, xdp_fd, "native" if mode == "xdp" else "generic", replace=mine)
        return mode
    bpf.tc_attach(index, "ingress", tc_fd, handle=TC_HANDLE, priority=TC_PRIORITY)
    return "tc"


def _routing_events() -> socket.socket:
    """A non-blocking rtnetlink socket of the calling thread's namespace, subscribed to ROUTING_GROUPS."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, ROUTING_GROUPS))
    except BaseException:
        sock.close()
        raise
    return sock


def _drain(sock: socket.socket) -> None:
    """Read every queued event (their content does not matter: any of them may change a route)."""
    while True:
        try:
            sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:  # ENOBUFS: events were lost, which is a change too
                return


def _link_kind(index: int) -> str | None:
    """The rtnetlink link kind of an interface ("veth", "bridge", ...; None for a plain device)."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        links = ipr.get_links(index)
    info = links[0].get_attr("IFLA_LINKINFO") if links else None
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _sysctl(ifname: str, key: str, default: int) -> int:
    """``net.ipv6.conf.<ifname>.<key>`` of the calling thread's namespace, or ``default``."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/{key}", encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return default
