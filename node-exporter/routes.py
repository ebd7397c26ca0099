"""SRv6 routes of the node exporter: local SIDs (seg6local) and encap policies (seg6), through netlink.

One :class:`Routes` per data-plane namespace. Every route it makes is an IPv6
route in table main (254) with the rtnetlink protocol number
:data:`RTPROT_SRV6PM` (77, unassigned in ``linux/rtnetlink.h``), so srv6pm's
routes are recognisable (``ip -6 route show proto 77``) and never confused
with routes that others made:

* a local SID ``S`` is the route ``S/128 encap seg6local action <behaviour>
  dev <device>`` (End; End.X ``nh6``; End.DT6 ``table``; End.DX6 ``nh6``);
* a policy is the route ``<destination> encap seg6 mode encap|inline segs
  <segments> dev <device>``; with no device, the device of the route towards
  the first segment (a route lookup when the policy is applied).

With ``reserve`` (the eBPF data plane, :class:`Routes`), an ``encap`` policy's SRH ends in
8 octets of padding, two PadN TLVs of 4 octets each (:data:`RESERVED_TLV`; RFC 8754
§2.1.1 allows PadN lengths 0 to 5 and any number of padding TLVs; Hdr Ext Len one
more): the room where ``altmark_mark`` writes the Alternate-Marking option of a
monitored flow's packets without changing their length (see
``bpf/altmark.bpf.c``). Every SRv6 node ignores padding TLVs; the packets of flows
not monitored keep them. It is part of the route compared on reading back (key
``tlvs`` of the encap, the octets after the Segment List, as hex; absent when
there are none), so switching a node's data plane replaces its routes.

Segment lists are in path order in this module's interface. pyroute2 writes
``segs`` verbatim into the SRH's Segment List, which holds the path in reverse
(Segment List[0] is the last segment), so they are reversed on the way in and
out; for ``inline`` pyroute2 also puts the ``::`` placeholder of the final
destination at Segment List[0], which is dropped on the way out.

Applying is idempotent: the kernel's route for that destination is read
first; if it is identical nothing is done (``False``); if it differs, it is
replaced in one netlink request (``NLM_F_REPLACE``), so the kernel never holds
neither. A route to the same destination that srv6pm did not make (another
protocol number) is never replaced: :class:`RouteError`. Removing deletes only
srv6pm's route and answers ``False`` when there is none.

Reading "the routes to this prefix" stays cheap with a full routing table
(:class:`_MainTable`): the kernel can filter a route dump by table, protocol,
type and device (strict checking, ``NETLINK_GET_STRICT_CHK``) but not by
destination, and an ``RTM_GETROUTE`` is a lookup (the longest match over all
tables, one route), which could neither see a second route to the prefix with
another metric nor ignore a more specific one. So the dump of table main is
read over a plain rtnetlink socket and only the messages whose destination is
exactly the prefix are decoded; srv6pm's own routes (for reading, removing,
:meth:`Routes.dump`) come from a dump the kernel filters to protocol 77.

Many policies at once (:meth:`Routes.apply_policies`, what ``ApplyBatch``
uses) go to the kernel in bulk over that same socket: their ``RTM_NEWROUTE``
requests, framed here (:func:`_policy_request`, the bytes pyroute2 would
send), up to :data:`_BULK` in one ``send``, each asking for its own
acknowledgement, which are read after it; every route is still its own change
with its own answer (the kernel handles the messages of one send one after
another and acknowledges each), so one refusal refuses that route only.

Everything runs in one worker thread inside the namespace
(:class:`srv6pm.netns.NetnsThread`), which also serialises the netlink socket.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import itertools
import os
import socket
import threading
import time
from socket import AF_INET6
from typing import Any, cast

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from srv6pm import srv6
from srv6pm.errors import OperationError
from srv6pm.netlink import (
    NETLINK_CAP_ACK,
    NETLINK_GET_STRICT_CHK,
    NETLINK_ROUTE,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    RTA_DST,
    RTA_ENCAP,
    RTA_ENCAP_TYPE,
    RTA_OIF,
    RTA_TABLE,
    RT_TABLE_MAIN,
    RTM_GETROUTE,
    RTM_NEWROUTE,
    SOL_NETLINK,
    CStruct,
    NlAttr,
    NlMsgErr,
    NlMsgHdr,
    RtMsg,
    Scalar,
    align,
    nla,
)
from srv6pm.netns import NetnsThread
from srv6pm.southbound.v1 import southbound_pb2 as pb

__all__ = ["RTPROT_SRV6PM", "MAIN_TABLE", "RESERVED_TLV", "RouteError", "Routes"]

RTPROT_SRV6PM = 77
MAIN_TABLE = RT_TABLE_MAIN  # every route srv6pm makes is in table main
_ENCAP_SEG6, _ENCAP_SEG6LOCAL = 5, 7  # lwtunnel_encap_types

# seg6local actions (linux/seg6_local.h) and the behaviours of the API.
_ACTIONS = {pb.SID_BEHAVIOR_END: (1, "End"), pb.SID_BEHAVIOR_END_X: (2, "End.X"),
            pb.SID_BEHAVIOR_END_DX6: (5, "End.DX6"), pb.SID_BEHAVIOR_END_DT6: (7, "End.DT6")}
_ACTION_NAMES = {number: name for number, name in _ACTIONS.values()}
_MODES = {pb.ENCAP_MODE_UNSPECIFIED: "encap", pb.ENCAP_MODE_ENCAP: "encap", pb.ENCAP_MODE_INLINE: "inline"}


# rtnetlink: the structures and constants are srv6pm.netlink's; what only the routes need is declared here.
_RTM_DST_LEN = NlMsgHdr.size + RtMsg.offset("dst_len")  # offsets of route message fields in a message
_RTM_TABLE = NlMsgHdr.size + RtMsg.offset("table")
_RTM_PROTOCOL = NlMsgHdr.size + RtMsg.offset("protocol")
_RTM_SEQ = NlMsgHdr.offset("seq")
_RT_SCOPE_UNIVERSE, _RTN_UNICAST = 0, 1
_U16, _U32 = Scalar("=H"), Scalar("=I")


class Seg6IptunnelEncap(CStruct):
    """struct seg6_iptunnel_encap (linux/seg6_iptunnel.h): the mode; the SRH follows."""
    fields = (("mode", "i"),)


class Ipv6SrHdr(CStruct):
    """struct ipv6_sr_hdr (linux/seg6.h, RFC 8754); the segment list follows, then the TLVs."""
    fields = (("nexthdr", "B"), ("hdrlen", "B"), ("type", "B"), ("segments_left", "B"), ("first_segment", "B"),
              ("flags", "B"), ("tag", "H"))


_SEG6_IPTUNNEL_SRH = 1
_SEG6_MODES = {"inline": 0, "encap": 1}
_SRH_TYPE = 4                           # Routing Type 4: Segment Routing Header
RESERVED_TLV = bytes([4, 2, 0, 0]) * 2  # two PadN of 2 zero octets (RFC 8754 2.1.1): the eBPF data plane's room
_BULK = 128                             # route requests per send: their acks fit the default receive buffer
# A seg6 route's state takes per-CPU memory, allocated atomically: thousands of routes in a burst exhaust what
# the per-CPU allocator has ready (ENOMEM, "percpu: allocation failed, atomic=1" in the kernel's log) until its
# worker makes more, within milliseconds. A bulk change sends the routes refused so again after these pauses (s).
_ENOMEM_PAUSES = (0.01, 0.05, 0.2)
_RECV_BUFFER = 256 * 1024               # a dump part is at most 32 KiB
_DUMP_ATTEMPTS = 5                      # dumps interrupted by concurrent route changes are repeated
_unpack_header, _unpack_attr = NlMsgHdr.struct.unpack_from, NlAttr.struct.unpack_from  # the hot loops' own names
_unpack_error = NlMsgErr.struct.unpack_from


def _policy_request(dst: str, oif: int, mode: str, segments: list[str], *, replace: bool,
                    reserve: bool = False) -> bytes:
    """The ``RTM_NEWROUTE`` request (sequence number and port 0) for ``dst encap seg6 mode <mode> segs
    <segments> dev <oif>`` in table main, protocol 77, asking for an acknowledgement; ``replace``: replacing
    the route there (``NLM_F_REPLACE``), else only creating one (``NLM_F_EXCL``). ``segments`` in path order;
    ``reserve``: the SRH ends in :data:`RESERVED_TLV` (mode ``encap`` only).
    Without it, the same bytes as pyroute2's ``IPRoute.route("add"|"replace", ...)`` with that encap (a test
    compares them)."""
    net = ipaddress.IPv6Network(dst)
    srh = _srh(mode, tuple(segments), reserve)
    body = (RtMsg.pack(family=AF_INET6, dst_len=net.prefixlen, table=MAIN_TABLE, protocol=RTPROT_SRV6PM,
                       scope=_RT_SCOPE_UNIVERSE, type=_RTN_UNICAST)
            + nla(RTA_DST, net.network_address.packed) + nla(RTA_OIF, _U32.encode(oif))
            + nla(RTA_TABLE, _U32.encode(MAIN_TABLE))
            + nla(RTA_ENCAP, nla(_SEG6_IPTUNNEL_SRH, srh))
            + nla(RTA_ENCAP_TYPE, _U16.encode(_ENCAP_SEG6)))
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
    return NlMsgHdr.pack(len=NlMsgHdr.size + len(body), type=RTM_NEWROUTE, flags=flags) + body


@functools.lru_cache(maxsize=256)
def _srh(mode: str, segments: tuple[str, ...], reserve: bool) -> bytes:
    """The seg6 encap attribute's value (mode, then the SRH) for ``segments`` in path order; with ``reserve``,
    ending in :data:`RESERVED_TLV`: the same for every policy of a path, so made once (ten thousand policies
    over one path are ten thousand requests)."""
    srh_segments = [ipaddress.IPv6Address(s).packed for s in reversed(segments)]
    if mode == "inline":
        srh_segments.insert(0, bytes(16))  # Segment List[0]: the final destination, filled in per packet
    last = len(srh_segments) - 1
    tlvs = RESERVED_TLV if reserve and mode == "encap" else b""
    return (Seg6IptunnelEncap.pack(mode=_SEG6_MODES[mode])
            + Ipv6SrHdr.pack(hdrlen=2 * len(srh_segments) + len(tlvs) // 8, type=_SRH_TYPE, segments_left=last,
                             first_segment=last)
            + b"".join(srh_segments) + tlvs)


class RouteError(OperationError, RuntimeError):
    """The kernel refused a route change (or a device is missing).

    ``str()`` is ``"<what>: <reason>"`` where ``reason`` is the kernel's
    (``os.strerror`` of its error code); ``code`` is that errno and
    ``object`` the message the change was for.
    """

    def __init__(self, what: str, reason: str, *, code: int = 0, obj=None):
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason
        self.code = code
        self.object = obj


def _addr(text: str) -> str:
    return str(ipaddress.IPv6Address(text))


def _sid_text(sid: pb.LocalSid) -> str:
    behaviour = _ACTIONS.get(sid.behavior, (0, f"behavior {sid.behavior}"))[1]
    extra = f" nh6 {sid.nexthop}" if sid.nexthop else f" table {sid.table}" if sid.table else ""
    return f"local SID {sid.sid} ({behaviour}{extra} dev {sid.device})"


def _policy_text(policy: pb.Policy) -> str:
    return (f"policy {policy.name} ({policy.destination} encap seg6 mode {_MODES.get(policy.mode, '?')} "
            f"segs {','.join(policy.segments)}{' dev ' + policy.device if policy.device else ''})")


def _key(dst: str) -> tuple[int, bytes]:
    """The key of prefix ``dst`` in :meth:`_MainTable.by_prefix`."""
    net = ipaddress.IPv6Network(dst)
    return net.prefixlen, net.network_address.packed


class _MainTable:
    """IPv6 routes of table main, read (and changed in bulk) over a rtnetlink socket of its own (create it in
    the namespace).

    :meth:`routes` answers the routes whose destination is exactly a prefix,
    decoded by pyroute2 (the same messages ``IPRoute.route("dump")`` gives),
    optionally only those of one protocol. Messages of other destinations are
    skipped by their header and ``RTA_DST`` without being decoded. The table
    and protocol are also asked of the kernel (strict checking); both are
    checked here again, so a kernel that ignores the filter gives the same
    answer, only slower. Raises :class:`NetlinkError` with the kernel's error.
    :meth:`change` sends route requests in bulk and reads each one's acknowledgement.
    Not thread safe (:class:`Routes` calls it from its worker thread only).
    """

    def __init__(self):
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            self._sock.bind((0, 0))
            try:
                self._sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            except OSError:
                pass  # older than Linux 4.20: unfiltered dumps, filtered below
            try:  # an error acknowledgement without a copy of the request
                self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            except OSError:
                pass
        except BaseException:
            self._sock.close()
            raise
        self._buffer = bytearray(_RECV_BUFFER)
        self._seq = itertools.count(1)

    def close(self) -> None:
        self._sock.close()

    def routes(self, dst: str | None, protocol: int = 0) -> list:
        """Routes of table main to exactly prefix ``dst`` (None: to anywhere); with ``protocol``, only its."""
        net = ipaddress.IPv6Network(dst) if dst is not None else None
        return [_decoded(raw) for raw in self._read(net.prefixlen if net else None,
                                                   net.network_address.packed if net else None, protocol)]

    def by_prefix(self) -> dict[tuple[int, bytes], list[bytes]]:
        """Every route of table main, NOT decoded (:func:`_decoded` decodes one), by its destination:
        (prefix length, the 16 octets of its address)."""
        out: dict[tuple[int, bytes], list[bytes]] = {}
        for raw in self._read(None, None, 0):
            out.setdefault((raw[_RTM_DST_LEN], self._dst(raw, 0, len(raw))), []).append(raw)
        return out

    def _read(self, dst_len: int | None, dst: bytes | None, protocol: int) -> list[bytes]:
        for _ in range(_DUMP_ATTEMPTS):
            found, consistent = self._dump(dst_len, dst, protocol)
            if consistent:
                return found
        raise NetlinkError(errno.EAGAIN, "the route dump was interrupted by route changes every time")

    def change(self, requests: list[bytes]) -> list[int | None]:
        """Send ``requests`` (netlink messages asking for an acknowledgement; their sequence numbers are set
        here) in ONE ``send``; each one's outcome in order: 0 done, else the kernel's errno; None where its
        acknowledgement was lost (the receive buffer overran: keep to :data:`_BULK` requests or fewer).

        The kernel handles the messages of one send one after another within the call, each on its own (a
        refused one does not stop the next), and acknowledges each; so when ``send`` returns, every
        acknowledgement is queued on the socket (or was dropped), and they are read without waiting."""
        seqs, data = [], bytearray()
        for request in requests:
            seq = next(self._seq) & 0xFFFFFFFF
            seqs.append(seq)
            start = len(data)
            data += request
            _U32.s.pack_into(data, start + _RTM_SEQ, seq)  # nlmsg_seq
        outcome: dict[int, int] = {}
        self._sock.send(data)
        buf = self._buffer
        while len(outcome) < len(seqs):
            try:
                size = self._sock.recv_into(buf, 0, socket.MSG_DONTWAIT | socket.MSG_TRUNC)
            except BlockingIOError:
                break  # nothing more: those not answered were dropped
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    continue  # some were dropped; read the rest
                raise
            offset, size = 0, min(size, len(buf))
            while offset + NlMsgHdr.size <= size:
                length, kind, _flags, msg_seq, _pid = _unpack_header(buf, offset)
                if length < NlMsgHdr.size:
                    break
                if kind == NLMSG_ERROR:
                    outcome[msg_seq] = -_unpack_error(buf, offset + NlMsgHdr.size)[0]
                offset += align(length)
        return [outcome.get(seq) for seq in seqs]

    def _dump(self, dst_len: int | None, dst: bytes | None, protocol: int) -> tuple[list[bytes], bool]:
        seq = next(self._seq) & 0xFFFFFFFF
        request = RtMsg.pack(family=AF_INET6, table=MAIN_TABLE, protocol=protocol)
        self._sock.send(NlMsgHdr.pack(len=NlMsgHdr.size + len(request), type=RTM_GETROUTE,
                                      flags=NLM_F_REQUEST | NLM_F_DUMP, seq=seq) + request)
        found: list[bytes] = []
        buf, consistent = self._buffer, True
        while True:
            size = self._sock.recv_into(buf, 0, socket.MSG_TRUNC)
            if size > len(buf):
                raise NetlinkError(errno.EMSGSIZE, f"route dump part of {size} bytes exceeds the buffer")
            offset = 0
            while offset + NlMsgHdr.size <= size:
                length, kind, flags, msg_seq, _pid = _unpack_header(buf, offset)
                if length < NlMsgHdr.size or offset + length > size:
                    raise NetlinkError(errno.EBADMSG, "malformed rtnetlink message in the route dump")
                start, offset = offset, offset + align(length)
                if msg_seq != seq:
                    continue  # left over from an earlier request that was abandoned
                if flags & NLM_F_DUMP_INTR:
                    consistent = False
                if kind == NLMSG_DONE:
                    return found, consistent
                if kind == NLMSG_ERROR:
                    code = -_unpack_error(buf, start + NlMsgHdr.size)[0]
                    raise NetlinkError(code, os.strerror(code))
                if (buf[start + _RTM_TABLE] != MAIN_TABLE or (protocol and buf[start + _RTM_PROTOCOL] != protocol)
                        or (dst is not None and (buf[start + _RTM_DST_LEN] != dst_len or self._dst(buf, start, length) != dst))):
                    continue
                found.append(bytes(buf[start:start + length]))

    @staticmethod
    def _dst(buf, start: int, length: int) -> bytes:
        """The destination address (``RTA_DST``; none: ``::``) of the route message at ``start``."""
        end, attr = start + length, start + NlMsgHdr.size + RtMsg.size
        while attr + NlAttr.size <= end:
            attr_len, attr_type = _unpack_attr(buf, attr)
            if attr_len < NlAttr.size:
                break
            if attr_type == RTA_DST:
                return bytes(buf[attr + NlAttr.size:attr + attr_len])
            attr += align(attr_len)
        return bytes(16)


def _decoded(raw: bytes) -> rtmsg:
    """A route message, decoded by pyroute2."""
    message = rtmsg(raw)
    message.decode()
    return message


class Routes:
    """srv6pm's SRv6 routes in network namespace ``netns`` (None: the current one); with ``reserve``
    (the eBPF data plane), the SRH of every ``encap`` policy ends in :data:`RESERVED_TLV` (``inline``
    ones are not marked).

    Thread safe (calls are serialised in the namespace's worker thread).
    Raises :class:`srv6pm.netns.NetnsError` if the namespace does not exist.
    """

    def __init__(self, netns: str | None = None, *, reserve: bool = False):
        self.netns = netns
        self.reserve = reserve
        # Within batch(): the thread that holds the batch, and table main by prefix (None: not read yet)
        self._batch_thread: int | None = None
        self._batch_routes: dict[tuple[int, bytes], list[bytes] | None] | None = None
        self._thread = NetnsThread(netns, thread_name=f"routes-{netns or '(current)'}")
        try:
            self._ipr: IPRoute = self._thread.call(IPRoute)
            try:
                self._main: _MainTable = self._thread.call(_MainTable)
            except BaseException:
                self._thread.call(self._ipr.close)
                raise
        except BaseException:
            self._thread.close()
            raise

    def close(self) -> None:
        """Close the netlink sockets and the worker thread; idempotent. Routes stay in the kernel."""
        if not self._thread.closed:
            try:
                self._thread.call(self._main.close)
                self._thread.call(self._ipr.close)
            finally:
                self._thread.close()

    def __enter__(self) -> "Routes":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- kernel access (all in the worker thread) ------------------------------------
    def _call(self, what: str, obj, fn, *args, **kw):
        try:
            return self._thread.call(fn, *args, **kw)
        except NetlinkError as exc:
            code = abs(exc.code) if isinstance(exc.code, int) else 0
            reason = (srv6.explain(code) if "encap" in kw else None) or (os.strerror(code) if code else str(exc))
            raise RouteError(what, reason, code=code, obj=obj) from None

    def _ifindex(self, what: str, obj, name: str) -> int:
        found = self._call(what, obj, self._ipr.link_lookup, ifname=name)
        if not found:
            raise RouteError(what, f"device {name!r}: {os.strerror(errno.ENODEV)}", code=errno.ENODEV, obj=obj)
        return found[0]

    def _ifname(self, index: int | None) -> str | None:
        if index is None:
            return None
        links = self._thread.call(self._ipr.link, "get", index=index)
        return links[0].get("ifname") if links else None

    @contextlib.contextmanager
    def batch(self):
        """Within: the routes to a prefix come from ONE reading of table main, taken at the first question, not
        from a reading of the whole table per question (an ApplyBatch of 10,000 policies read the table 10,000
        times: quadratic). A prefix this object changes meanwhile is asked of the kernel again. Only the thread
        that entered sees that reading (the caller holds the exporter's lock, as for every change); nested
        calls share it."""
        if self._batch_thread is not None:
            yield
            return
        self._batch_thread, self._batch_routes = threading.get_ident(), None
        try:
            yield
        finally:
            self._batch_thread = self._batch_routes = None

    def _routes_to(self, what: str, obj, dst: str | None, protocol: int = 0) -> list:
        """The kernel's routes of table main whose destination is exactly prefix ``dst`` (None: any),
        of ``protocol`` if given (0: all)."""
        if dst is None or self._batch_thread != threading.get_ident():
            return self._call(what, obj, self._main.routes, dst, protocol)
        if self._batch_routes is None:  # (a None in it only marks a prefix changed in the batch, later)
            self._batch_routes = dict(self._call(what, obj, self._main.by_prefix))
        key = _key(dst)
        held = self._batch_routes.get(key, [])
        if held is None:  # changed in this batch
            return self._call(what, obj, self._main.routes, dst, protocol)
        return [msg for msg in map(_decoded, held) if not protocol or msg["proto"] == protocol]

    def _changed(self, dst: str) -> None:
        """The route to ``dst`` was just changed: within a batch, ask the kernel about it again."""
        if self._batch_routes is not None and self._batch_thread == threading.get_ident():
            self._batch_routes[_key(dst)] = None

    def _current(self, what: str, obj, dst: str):
        """srv6pm's route to ``dst`` or None; RouteError if another protocol's route is there."""
        mine = None
        for msg in self._routes_to(what, obj, dst):
            if msg["proto"] != RTPROT_SRV6PM:
                raise RouteError(what, f"the kernel already has a route to {dst} that srv6pm did not make "
                                       f"(protocol {msg['proto']}); not replacing it", code=errno.EEXIST, obj=obj)
            mine = msg
        return mine

    @staticmethod
    def _spec(msg) -> dict:
        """A kernel route in the comparable form made by :meth:`_wanted_*`."""
        encap: dict[str, Any] = {}
        attrs = dict((msg.get("encap") or {}).get("attrs", []))
        if msg.get("encap_type") == _ENCAP_SEG6LOCAL:
            action = attrs.get("SEG6_LOCAL_ACTION")
            encap = {"type": "seg6local", "action": None if action is None else _ACTION_NAMES.get(action, action)}
            if "SEG6_LOCAL_NH6" in attrs:
                encap["nh6"] = _addr(attrs["SEG6_LOCAL_NH6"])
            if "SEG6_LOCAL_TABLE" in attrs:
                encap["table"] = attrs["SEG6_LOCAL_TABLE"]
        elif msg.get("encap_type") == _ENCAP_SEG6:
            srh = attrs.get("SEG6_IPTUNNEL_SRH", {})
            mode = srh.get("mode")
            segs = [_addr(s) for s in srh.get("segs", [])]
            tlvs = Routes._tlvs(srh, len(segs))
            if mode == "inline" and segs and segs[0] == "::":
                segs = segs[1:]
            encap = {"type": "seg6", "mode": mode, "segs": list(reversed(segs))}
            if tlvs:
                encap["tlvs"] = tlvs.hex()
        return {"oif": msg.get("oif"), "encap": encap}

    @staticmethod
    def _tlvs(srh, segments: int) -> bytes:
        """The octets of a decoded ``SEG6_IPTUNNEL_SRH`` after its ``segments`` segments (pyroute2 decodes
        only an HMAC TLV): Hdr Ext Len says where the SRH ends."""
        if not srh or "hdrlen" not in srh:
            return b""
        start = srh.offset + 16 + 16 * segments  # attribute header, encap mode, the SRH's 8 fixed octets
        return bytes(srh.data[start:srh.offset + 16 + 8 * srh["hdrlen"]])

    def _policy_encap(self, policy: pb.Policy) -> dict:
        """``policy``'s route encap in the form of :meth:`_spec`."""
        encap: dict[str, Any] = {"type": "seg6", "mode": _MODES[policy.mode], "segs": [_addr(s) for s in policy.segments]}
        if self.reserve and encap["mode"] == "encap":
            encap["tlvs"] = RESERVED_TLV.hex()
        return encap

    def _apply(self, what: str, obj, dst: str, oif: int, encap: dict) -> bool:
        current = self._current(what, obj, dst)
        wanted = {"oif": oif, "encap": encap}
        if current is not None and self._spec(current) == wanted:
            return False
        request = dict(encap)
        if request["type"] == "seg6":  # path order -> SRH order; a fresh list (pyroute2 edits it)
            request["segs"] = list(reversed(encap["segs"]))
        self._changed(dst)
        self._call(what, obj, self._ipr.route, "add" if current is None else "replace", dst=dst, oif=oif,
                   table=MAIN_TABLE, proto=RTPROT_SRV6PM, encap=request)
        return True

    def _remove(self, what: str, dst: str) -> bool:
        if not self._routes_to(what, None, dst, RTPROT_SRV6PM):
            return False
        self._changed(dst)
        try:
            self._call(what, None, self._ipr.route, "del", dst=dst, table=MAIN_TABLE, proto=RTPROT_SRV6PM)
        except RouteError as exc:
            if exc.code == errno.ESRCH:  # gone meanwhile
                return False
            raise
        return True

    # -- local SIDs -----------------------------------------------------------------
    def apply_local_sid(self, sid: pb.LocalSid) -> bool:
        """Make the kernel's route for ``sid`` (a validated ``LocalSid``) match it; True if it changed.

        :class:`RouteError` if the kernel refuses (the route stays as it was).
        """
        what = _sid_text(sid)
        action = _ACTIONS[sid.behavior][1]
        encap: dict = {"type": "seg6local", "action": action}
        if sid.behavior in (pb.SID_BEHAVIOR_END_X, pb.SID_BEHAVIOR_END_DX6):
            encap["nh6"] = _addr(sid.nexthop)
        if sid.behavior == pb.SID_BEHAVIOR_END_DT6:
            encap["table"] = sid.table  # validated: 0 became table main there (DEFAULTS)
        oif = self._ifindex(what, sid, sid.device)  # validated: empty became "lo" there (DEFAULTS)
        return self._apply(what, sid, f"{_addr(sid.sid)}/128", oif, encap)

    def remove_local_sid(self, sid: str) -> bool:
        """Delete srv6pm's route for SID ``sid``; False if there was none."""
        return self._remove(f"local SID {sid}", f"{_addr(sid)}/128")

    def local_sid_route(self, sid: str) -> dict | None:
        """srv6pm's route for SID ``sid`` as ``{"oif", "device", "encap"}`` (None: none)."""
        return self._read(f"{_addr(sid)}/128")

    # -- policies -------------------------------------------------------------------
    def policy_device(self, policy: pb.Policy) -> int:
        """The interface index a policy's route uses: its device, else the route towards its first segment."""
        what = _policy_text(policy)
        if policy.device:
            return self._ifindex(what, policy, policy.device)
        found = self._call(f"{what}: route lookup towards {policy.segments[0]}", policy, self._ipr.route, "get",
                           dst=policy.segments[0])
        oif = found[0].get("oif") if found else None
        if oif is None:
            raise RouteError(f"{what}: route lookup towards {policy.segments[0]}", os.strerror(errno.ENETUNREACH),
                             code=errno.ENETUNREACH, obj=policy)
        return oif

    def apply_policy(self, policy: pb.Policy) -> bool:
        """Make the kernel's route for ``policy`` (a validated ``Policy``) match it; True if it changed.

        :class:`RouteError` if the kernel refuses (the route stays as it was).
        """
        (answer,) = self.apply_policies([policy])  # one request framed here: pyroute2 cannot encode the TLV
        if isinstance(answer, RouteError):
            raise answer
        return answer

    def apply_policies(self, policies: list[pb.Policy]) -> list[bool | RouteError]:
        """:meth:`apply_policy` for each of ``policies`` (validated, each to another destination), the kernel's
        requests made in bulk (see the module documentation); one answer per policy, in order: True changed,
        False already so, or the :class:`RouteError` that refused it (its route stays as it was; the others
        are made regardless, as if applied one by one). A device's index is asked of the kernel once per call."""
        answers: list[bool | RouteError | None] = [None] * len(policies)
        pending: list[tuple[int, str, pb.Policy, str, dict, bytes]] = []
        oifs: dict[str, int] = {}
        for index, policy in enumerate(policies):
            what = _policy_text(policy)
            segments = list(policy.segments)  # validated: already in the form _addr and IPv6Network give
            dst = policy.destination
            try:
                oif = oifs.get(policy.device) if policy.device else None
                if oif is None:
                    oif = self.policy_device(policy)
                    if policy.device:
                        oifs[policy.device] = oif
                current = self._current(what, policy, dst)
            except RouteError as exc:
                answers[index] = exc
                continue
            wanted = {"oif": oif, "encap": self._policy_encap(policy)}
            if current is not None and self._spec(current) == wanted:
                answers[index] = False
                continue
            pending.append((index, what, policy, dst, wanted,
                            _policy_request(dst, oif, _MODES[policy.mode], segments, replace=current is not None,
                                            reserve=self.reserve)))
        for pause in (*_ENOMEM_PAUSES, None):
            again = []
            for start in range(0, len(pending), _BULK):
                part = pending[start:start + _BULK]
                for _index, _what, _policy, dst, _wanted, _request in part:
                    self._changed(dst)
                codes = self._call("policy routes", None, self._main.change, [request for *_, request in part])
                for entry, code in zip(part, codes, strict=True):
                    index, what, policy, dst, wanted, _request = entry
                    if code is None:  # its acknowledgement was lost: what the kernel holds says
                        try:
                            current = self._current(what, policy, dst)
                        except RouteError as exc:
                            answers[index] = exc
                            continue
                        code = 0 if current is not None and self._spec(current) == wanted else errno.ENOBUFS
                    if code == errno.ENOMEM and pause is not None:
                        again.append(entry)  # nothing was made: sent again after a pause
                        continue
                    answers[index] = True if code == 0 else RouteError(
                        what, srv6.explain(code) or os.strerror(code), code=code, obj=policy)  # seg6 routes
            if not again or pause is None:
                break
            time.sleep(pause)
            pending = again
        assert None not in answers, "every policy is answered above"
        return cast("list[bool | RouteError]", answers)

    def remove_policy(self, destination: str) -> bool:
        """Delete srv6pm's route to prefix ``destination``; False if there was none."""
        return self._remove(f"policy route {destination}", str(ipaddress.IPv6Network(destination)))

    def policy_route(self, destination: str) -> dict | None:
        """srv6pm's route to prefix ``destination`` as ``{"oif", "device", "encap"}`` (None: none)."""
        return self._read(str(ipaddress.IPv6Network(destination)))

    # -- reading ----------------------------------------------------------------------
    def _read(self, dst: str) -> dict | None:
        for msg in self._routes_to(f"route {dst}", None, dst, RTPROT_SRV6PM):
            spec = self._spec(msg)
            spec["device"] = self._ifname(spec["oif"])
            return spec
        return None

    def dump(self) -> list[dict]:
        """All of srv6pm's routes in the namespace, as ``{"dst", "oif", "device", "encap"}``, sorted by dst."""
        out = []
        for msg in self._routes_to("srv6pm's routes", None, None, RTPROT_SRV6PM):
            spec = self._spec(msg)
            spec["device"] = self._ifname(spec["oif"])
            spec["dst"] = f"{msg.get('dst') or '::'}/{msg['dst_len']}"
            out.append(spec)
        return sorted(out, key=lambda s: s["dst"])
