"""A small NFQUEUE client that speaks nfnetlink directly, and the nf_tables rule that feeds it.

Two protocols of ``NETLINK_NETFILTER``, both on sockets created inside a
network namespace (:class:`srv6pm.netns.NetnsThread`), so that they talk to
that namespace's netfilter whichever thread uses them later:

* **nfnetlink_queue** (``NFNL_SUBSYS_QUEUE``, ``linux/netfilter/nfnetlink_queue.h``):
  :class:`NfQueue` binds one queue number, sets its copy mode, length limit
  and flags, receives ``NFQNL_MSG_PACKET`` messages and sends verdicts:
  :meth:`NfQueue.verdicts` sends one ``NFQNL_MSG_VERDICT`` per packet, many
  per system call; :meth:`NfQueue.verdict_batch` one ``NFQNL_MSG_VERDICT_BATCH``
  for every packet up to an id.
* **nf_tables** (``NFNL_SUBSYS_NFTABLES``): :func:`add_queue_rule` adds, in
  one transaction, a rule sending every packet that leaves one interface to
  a queue (creating its table and base chain if needed);
  :func:`remove_table_if_unused` removes that table once no rule is left,
  atomically. On the kernels of these machines this has to be done at the
  netlink level (see "Steering packets to a queue").

Every message is described as data, with the shared core's netlink codec
(:mod:`srv6pm.netlink`: the netlink and nfnetlink headers, the sockets):
:class:`~srv6pm.netlink.CStruct` subclasses mirror the C structures of
nfnetlink_queue and x_tables field by field (``nfqnl_msg_packet_hdr``,
``xt_NFQ_info_v3``, ...), and :class:`~srv6pm.netlink.AttrPolicy` tables map
attribute types to names and codecs, as pyroute2's ``nla_map`` does.

Choices (and why)
-----------------
* **Copy mode** ``NFQNL_COPY_META``: no payload is copied; a delay element
  needs only the packet id (``NFQA_PACKET_HDR``). ``copy_range`` > 0 selects
  ``NFQNL_COPY_PACKET`` with that many bytes (diagnostics, e.g. 40 for the
  IPv6 header); only then does the kernel also send the packet's length
  (``NFQA_CAP_LEN``), so :attr:`QueuedPacket.length` is 0 in META mode.
* **No fail-open** (``NFQA_CFG_F_FAIL_OPEN`` cleared explicitly) and no
  ``bypass`` flag on the rule: when the queue is full, the socket cannot take
  a message, or no program is bound, the kernel *drops* the packet instead
  of passing it undelayed. A delay element that silently stops delaying
  would falsify measurements; a drop is visible and counted: ``queue_dropped``
  / ``user_dropped`` in ``/proc/net/netfilter/nfnetlink_queue``
  (:meth:`NfQueue.kernel_stats`), and a socket overrun also reaches us as
  ``ENOBUFS`` (counted in :attr:`NfQueue.enobufs`, logged, never ignored;
  ``NETLINK_NO_ENOBUFS`` is left off).
* **GSO** (``NFQA_CFG_F_GSO``) on: GSO super-packets are queued whole rather
  than segmented first; a delay applies to them as a unit (no payload is
  copied, so checksum state does not matter). Conntrack, uid/gid and
  security-context attributes are off.
* **Queue length** (``NFQA_CFG_QUEUE_MAXLEN``) 65536 packets by default (the
  kernel's default, 1024, holds 20 ms of only 51 200 packets/s).
* **Receive buffer** 8 MiB (``SO_RCVBUFFORCE``): it only absorbs messages
  that arrive while the reader is busy; held packets stay in the kernel.

Kernel behaviour to know (kernel 6.18, checked)
----------------------------------------------
* nfnetlink_queue works inside network namespaces: queue numbers, bindings
  and ``/proc/net/netfilter/nfnetlink_queue`` are per namespace (read it from
  a thread inside the namespace: ``/proc/thread-self/net/...``).
* Binding a queue number that another socket holds fails with ``EPERM``
  (not ``EBUSY``).
* Unregistering **any** netfilter hook in a namespace -- deleting any
  nftables base chain, of any table -- makes the kernel drop every packet
  that every queue of that namespace holds (``nf_queue_nf_hook_drop``),
  without counting it anywhere. Deleting rules or non-base chains does not.
  :meth:`NfQueue.verdicts` makes the loss visible (:attr:`NfQueue.lost`), and
  the rules of :func:`add_queue_rule` share one base chain so that removing
  one of them never unregisters a hook.
* Unbinding (or closing the socket, or the process dying) drops every packet
  the queue still holds; :meth:`NfQueue.close` accepts them first.

Steering packets to a queue
---------------------------
nftables' ``queue`` statement needs the kernel's ``nft_queue`` expression,
which these kernels are built without (``CONFIG_NFT_QUEUE`` is not set:
``nft add rule ... queue num 5`` fails with "No such file or directory"),
and libnftables' JSON parser refuses xtables compat expressions
("unsupported xtables compat expression"). The kernel has
``CONFIG_NFT_COMPAT`` and the xtables ``NFQUEUE`` target, so
:func:`add_queue_rule` writes the rule that ``iptables-nft -j NFQUEUE``
would write: ``meta oifname == IF``, ``counter``, ``target NFQUEUE``
(revision 3: queue number, no bypass, no fan-out), with a comment naming it.
The compat target exists only for the ``ip`` and ``ip6`` families (not
``inet``), so there is one table per family. libnftables (and ``nft list
ruleset``) show the rule as ``xt target "NFQUEUE"`` (``nft`` adds a warning
that the table is "managed by iptables-nft") and list, find (by comment) and
delete it normally.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import time
from collections.abc import Iterable
from typing import NamedTuple

from srv6pm.errors import OperationError
from srv6pm.netlink import (
    BE32,
    BE32S,
    BE64,
    BYTES,
    NFNETLINK_V0,
    NFNL_SUBSYS_NFTABLES,
    NFNL_SUBSYS_QUEUE,
    NLM_F_ACK,
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_NONREC,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_NOOP,
    STRING,
    AttrPolicy,
    CStruct,
    Fixed,
    Nested,
    NetlinkError,
    NetlinkSocket,
    NfGenMsg,
    NlAttr,
    NlMsgErr,
    NlMsgHdr,
    nfnl_batch,
    nfnl_message,
    nla,
)
from srv6pm.netns import NetnsThread

__all__ = [
    "NFQNL_COPY_META",
    "NFQNL_COPY_PACKET",
    "NF_ACCEPT",
    "NF_DROP",
    "NetlinkError",
    "NfQueue",
    "NfQueueError",
    "QueuedPacket",
    "add_queue_rule",
    "queue_bindings",
    "remove_table_if_unused",
]

log = logging.getLogger("srv6pm.lab.nfqueue")

# ---------------------------------------------------------------- constants
# linux/netfilter.h
NF_DROP, NF_ACCEPT = 0, 1
NFPROTO_IPV4, NFPROTO_IPV6 = 2, 10
NF_INET_HOOKS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}

# linux/netfilter/nfnetlink_queue.h
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 1, 2, 3
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_NONE, NFQNL_COPY_META, NFQNL_COPY_PACKET = 0, 1, 2
NFQA_CFG_F_FAIL_OPEN = 1 << 0
NFQA_CFG_F_CONNTRACK = 1 << 1
NFQA_CFG_F_GSO = 1 << 2
NFQA_CFG_F_UID_GID = 1 << 3
NFQA_CFG_F_SECCTX = 1 << 4
NFQNL_QMAX_DEFAULT = 1024

# linux/netfilter/nf_tables.h
NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN, NFT_MSG_NEWRULE = 0, 2, 3, 5, 6
NFTNL_UDATA_RULE_COMMENT = 0
NFT_REG_1 = 1
NFT_META_OIFNAME = 7
NFT_CMP_EQ = 0
IFNAMSIZ = 16
# linux/netfilter/xt_NFQUEUE.h
NFQ_FLAG_BYPASS = 0x01


# ------------------------------------------------------- data structures
class NfqPacketHdr(CStruct):
    """struct nfqnl_msg_packet_hdr (packed)"""
    byte_order = "!"
    fields = (("packet_id", "I"), ("hw_protocol", "H"), ("hook", "B"))


class NfqPacketHw(CStruct):
    """struct nfqnl_msg_packet_hw"""
    byte_order = "!"
    fields = (("hw_addrlen", "H"), ("_pad", "H"), ("hw_addr", "8s"))


class NfqPacketTimestamp(CStruct):
    """struct nfqnl_msg_packet_timestamp"""
    byte_order = "!"
    fields = (("sec", "q"), ("usec", "q"))


class NfqVerdictHdr(CStruct):
    """struct nfqnl_msg_verdict_hdr"""
    byte_order = "!"
    fields = (("verdict", "I"), ("id", "I"))


class NfqConfigCmd(CStruct):
    """struct nfqnl_msg_config_cmd"""
    byte_order = "!"
    fields = (("command", "B"), ("_pad", "B"), ("pf", "H"))


class NfqConfigParams(CStruct):
    """struct nfqnl_msg_config_params (packed)"""
    byte_order = "!"
    fields = (("copy_range", "I"), ("copy_mode", "B"))


class XtNfqInfoV3(CStruct):
    """struct xt_NFQ_info_v3 (x_tables: host order), padded to XT_ALIGN (8)"""
    fields = (("queuenum", "H"), ("queues_total", "H"), ("flags", "H"), ("_align", "H"))


# nfnetlink_queue attribute tables (enum nfqnl_attr_type, enum nfqnl_attr_config)
NFQ_PACKET_ATTRS = AttrPolicy("nfqnl_attr_type", {
    1: ("packet_hdr", Fixed(NfqPacketHdr)),    # NFQA_PACKET_HDR
    2: ("verdict_hdr", Fixed(NfqVerdictHdr)),  # NFQA_VERDICT_HDR
    3: ("mark", BE32),                           # NFQA_MARK
    4: ("timestamp", Fixed(NfqPacketTimestamp)),
    5: ("indev", BE32),                          # NFQA_IFINDEX_INDEV
    6: ("outdev", BE32),                         # NFQA_IFINDEX_OUTDEV
    7: ("physindev", BE32),
    8: ("physoutdev", BE32),
    9: ("hwaddr", Fixed(NfqPacketHw)),
    10: ("payload", BYTES),                      # NFQA_PAYLOAD
    12: ("ct_info", BE32),
    13: ("cap_len", BE32),                       # NFQA_CAP_LEN: the packet's full length
    14: ("skb_info", BE32),
    16: ("uid", BE32),
    17: ("gid", BE32),
    21: ("priority", BE32),
    22: ("cgroup_classid", BE32),
})
NFQ_CONFIG_ATTRS = AttrPolicy("nfqnl_attr_config", {
    1: ("cmd", Fixed(NfqConfigCmd)),           # NFQA_CFG_CMD
    2: ("params", Fixed(NfqConfigParams)),     # NFQA_CFG_PARAMS
    3: ("queue_maxlen", BE32),                   # NFQA_CFG_QUEUE_MAXLEN
    4: ("mask", BE32),                           # NFQA_CFG_MASK
    5: ("flags", BE32),                          # NFQA_CFG_FLAGS
})
# nf_tables attribute tables (only what the queue rule needs)
NFT_DATA_ATTRS = AttrPolicy("nft_data_attributes", {1: ("value", BYTES)})
NFT_EXPR_DATA = {
    "meta": AttrPolicy("nft_meta_attributes", {1: ("dreg", BE32), 2: ("key", BE32)}),
    "cmp": AttrPolicy("nft_cmp_attributes", {1: ("sreg", BE32), 2: ("op", BE32), 3: ("data", Nested(NFT_DATA_ATTRS))}),
    "counter": AttrPolicy("nft_counter_attributes", {1: ("bytes", BE64), 2: ("packets", BE64)}),
    "target": AttrPolicy("nft_target_attributes", {1: ("name", STRING), 2: ("rev", BE32), 3: ("info", BYTES)}),
}


class _Expr:
    """One nf_tables expression ``(name, [(attr, value), ...])``: NFTA_EXPR_NAME, NFTA_EXPR_DATA."""

    nested = True

    def encode(self, value) -> bytes:
        name, attrs = value
        out = nla(1, STRING.encode(name))  # NFTA_EXPR_NAME
        if attrs:
            out += nla(2, NFT_EXPR_DATA[name].encode(attrs), nested=True)  # NFTA_EXPR_DATA
        return out


class _ListOf:
    """A list attribute: each value is one nested NFTA_LIST_ELEM encoded by ``elem``."""

    nested = True

    def __init__(self, elem):
        self.elem = elem

    def encode(self, values) -> bytes:
        return b"".join(nla(1, self.elem.encode(v), nested=True) for v in values)  # NFTA_LIST_ELEM


NFT_HOOK_ATTRS = AttrPolicy("nft_hook_attributes", {1: ("hooknum", BE32), 2: ("priority", BE32S)})
NFT_TABLE_ATTRS = AttrPolicy("nft_table_attributes", {1: ("name", STRING), 2: ("flags", BE32)})
NFT_CHAIN_ATTRS = AttrPolicy("nft_chain_attributes", {
    1: ("table", STRING), 3: ("name", STRING), 4: ("hook", Nested(NFT_HOOK_ATTRS)),
    5: ("policy", BE32), 7: ("type", STRING),
})
NFT_RULE_ATTRS = AttrPolicy("nft_rule_attributes", {
    1: ("table", STRING), 2: ("chain", STRING), 4: ("expressions", _ListOf(_Expr())), 7: ("userdata", BYTES),
})


class QueuedPacket(NamedTuple):
    """A packet the kernel handed to the queue; ``received_ns`` is CLOCK_MONOTONIC right after recv()."""

    queue: int
    id: int
    hook: int
    hw_protocol: int
    length: int          # the packet's length (NFQA_CAP_LEN, only in PACKET mode; else 0)
    outdev: int          # ifindex, 0 if none
    received_ns: int
    payload: bytes | None = None


# ----------------------------------------------------------------- NFQUEUE
class NfQueueError(OperationError, RuntimeError):
    """Binding or configuring a queue failed."""


_NFQ_PACKET_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
_NFQ_VERDICT_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
_PROC_QUEUE = "/proc/thread-self/net/netfilter/nfnetlink_queue"
_PROC_FIELDS = ("queue", "portid", "queue_total", "copy_mode", "copy_range", "queue_dropped",
                "user_dropped", "id_sequence")


class NfQueue:
    """A bound NFQUEUE in network namespace ``netns``: receive packets, send verdicts.

    The constructor opens the socket inside the namespace, binds queue
    ``queue`` and configures it (copy mode, ``maxlen``, flags: no fail-open,
    GSO on); :class:`NfQueueError` if the queue is taken by another socket
    (``EBUSY``) or anything else fails.

    Not thread safe: one thread receives and sends verdicts. Counters:
    ``received`` (packets), ``enobufs`` (socket overruns: the kernel dropped
    at least one packet; see :meth:`kernel_stats`), ``lost`` (packets given
    a verdict with :meth:`verdict`/:meth:`verdicts` that the kernel no longer
    held: it dropped them, see below), ``verdict_errors`` (every refused
    verdict, ``lost`` included). All are logged, at most once a second.

    The kernel drops, without counting them anywhere, all packets that every
    queue of a namespace holds whenever a netfilter hook is unregistered in
    that namespace (``nf_queue_nf_hook_drop``: deleting *any* nftables base
    chain, of any table, does it). Per-packet verdicts make such a loss
    visible: each verdict message carries the packet id as its sequence
    number, so the kernel's ``ENOENT`` names exactly the packet it lost.
    """

    def __init__(self, queue: int, *, netns: str | None = None, copy_range: int = 0,
                 maxlen: int = 65536, rcvbuf: int = 8 << 20, gso: bool = True):
        if not 0 <= queue <= 0xFFFF:
            raise ValueError(f"queue number must be 0..65535, got {queue}")
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self.queue = queue
        self.netns = netns
        self.received = 0
        self.enobufs = 0
        self.verdict_errors = 0
        self.lost = 0
        self._logged_errors = (0, 0.0)  # (verdict_errors when last logged, when)
        self.last_id: int | None = None
        self.verdicts_sent = 0
        self._closed = False
        self._pending: list[QueuedPacket] = []
        self._bound = False
        self._proc_fd: int | None = None
        try:
            self.nl = NetlinkSocket(netns, rcvbuf=rcvbuf)
        except OSError as exc:
            raise NfQueueError(f"{self._where()}: cannot open a NETLINK_NETFILTER socket: {exc}") from None
        try:
            self._proc_fd = self._open_proc()
            self._config([("cmd", {"command": NFQNL_CFG_CMD_BIND, "pf": 0})], "binding")
            self._bound = True
            mode = NFQNL_COPY_PACKET if copy_range > 0 else NFQNL_COPY_META
            mask = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO | NFQA_CFG_F_CONNTRACK | NFQA_CFG_F_UID_GID | NFQA_CFG_F_SECCTX
            self._config([
                ("params", {"copy_range": copy_range, "copy_mode": mode}),
                ("queue_maxlen", maxlen),
                ("mask", mask),
                ("flags", NFQA_CFG_F_GSO if gso else 0),
            ], "configuring")
        except BaseException:
            self.close(accept_pending=False)
            raise
        self._buf = bytearray(65536 + 4096 if copy_range > 0 else 16384)
        self._view = memoryview(self._buf)
        self.nl.sock.setblocking(False)

    def _where(self) -> str:
        return f"queue {self.queue} in " + (f"network namespace {self.netns!r}" if self.netns
                                             else "the current network namespace")

    def _open_proc(self) -> int | None:
        def op():
            try:
                return os.open(_PROC_QUEUE, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        if self.netns is None:
            return op()
        with NetnsThread(self.netns, thread_name=f"nfq-proc-{self.netns}") as t:
            return t.call(op)

    def _config(self, attrs, what: str) -> None:
        seq = self.nl.next_seq()
        msg = nfnl_message(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, socket.AF_UNSPEC,
                           self.queue, NFQ_CONFIG_ATTRS, attrs)
        try:
            self.nl.request([(seq, msg)], f"{what} {self._where()}", on_other=self._on_message)
        except NetlinkError as exc:
            # the kernel answers EPERM when another socket holds the queue number
            hint = " (another socket is bound to it)" if exc.errno in (errno.EPERM, errno.EBUSY) else ""
            raise NfQueueError(f"{exc.strerror}{hint}") from None
        except OSError as exc:
            raise NfQueueError(f"{what} {self._where()}: {exc}") from None

    def fileno(self) -> int:
        return self.nl.fileno()

    # -- receiving ---------------------------------------------------------
    def _on_message(self, buf, off: int, hdr, now: int) -> None:
        if hdr is None:  # ENOBUFS while waiting for an ACK
            self._note_enobufs()
            return
        if hdr.type == _NFQ_PACKET_TYPE:
            res_id = NfGenMsg.struct.unpack_from(buf, off + NlMsgHdr.size)[2]
            attrs = NFQ_PACKET_ATTRS.decode(buf, off + NlMsgHdr.size + NfGenMsg.size, off + hdr.len)
            ph = attrs.get("packet_hdr")
            if ph is None:
                log.warning("packet message without NFQA_PACKET_HDR ignored", extra={"queue": self.queue})
                return
            payload = attrs.get("payload")
            length = attrs.get("cap_len", len(payload) if payload is not None else 0)
            self.received += 1
            self.last_id = ph.packet_id
            self._pending.append(QueuedPacket(res_id, ph.packet_id, ph.hook, ph.hw_protocol, length,
                                              attrs.get("outdev", 0), now, payload))
        elif hdr.type == NLMSG_ERROR:
            code, text = NetlinkSocket.parse_error(buf, off, hdr)
            if code:
                echoed = NlMsgHdr.decode(buf, off + NlMsgHdr.size + NlMsgErr.size)
                self.verdict_errors += 1
                if code == errno.ENOENT and echoed.type == _NFQ_VERDICT_TYPE:
                    self.lost += 1
                self._log_errors(code, text, echoed)
        elif hdr.type not in (NLMSG_NOOP, NLMSG_DONE):
            log.debug("unexpected netlink message ignored", extra={"type": hdr.type, "queue": self.queue})

    def _log_errors(self, code: int, text: str, echoed) -> None:
        count, when = self._logged_errors
        now = time.monotonic()
        if now - when < 1.0:
            return
        self._logged_errors = (self.verdict_errors, now)
        if code == errno.ENOENT and echoed.type == _NFQ_VERDICT_TYPE:
            log.warning("the kernel no longer held packet(s) given a verdict: it dropped them (a netfilter hook "
                        "was removed in this namespace, or the queue was flushed)",
                        extra={"queue": self.queue, "netns": self.netns, "packet_id": echoed.seq,
                               "lost_total": self.lost})
        else:
            log.warning("the kernel refused a verdict", extra={
                "queue": self.queue, "netns": self.netns, "error": os.strerror(code), "detail": text,
                "errors_total": self.verdict_errors, "since_last_log": self.verdict_errors - count})

    def _note_enobufs(self) -> None:
        self.enobufs += 1
        stats = self.kernel_stats() or {}
        log.warning("NFQUEUE socket overrun (ENOBUFS): the kernel dropped packet(s) it could not deliver",
                    extra={"queue": self.queue, "netns": self.netns, "events": self.enobufs,
                           "kernel_user_dropped": stats.get("user_dropped")})

    def receive(self, limit: int = 4096) -> list[QueuedPacket]:
        """Every packet waiting on the socket now (at most ``limit``), without blocking.

        Each is stamped with CLOCK_MONOTONIC right after its recv(). A socket
        overrun (ENOBUFS) is counted in :attr:`enobufs`, logged, and reading goes on.
        """
        out, self._pending = self._pending, []
        sock, buf, view = self.nl.sock, self._buf, self._view
        decode = NlMsgHdr.struct.unpack_from
        on_message = self._on_message
        clock = time.monotonic_ns
        while len(out) + len(self._pending) < limit:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._note_enobufs()
                    continue
                if exc.errno == errno.EINTR:
                    continue
                raise
            now = clock()
            off = 0
            while off + 16 <= n:
                mlen, mtype, mflags, mseq, mpid = decode(buf, off)
                if mlen < 16 or off + mlen > n:
                    log.warning("truncated netlink message ignored", extra={"queue": self.queue, "bytes": n})
                    break
                on_message(view[:n], off, NlMsgHdr.Value(mlen, mtype, mflags, mseq, mpid), now)
                off += (mlen + 3) & ~3
        if self._pending:
            out += self._pending
            self._pending = []
        return out

    # -- verdicts ----------------------------------------------------------
    _VERDICT_LEN = NlMsgHdr.size + NfGenMsg.size + NlAttr.size + NfqVerdictHdr.size

    def _message(self, msg_type: int, seq: int, packet_id: int, verdict: int) -> bytes:
        return (NlMsgHdr.pack(len=self._VERDICT_LEN, type=(NFNL_SUBSYS_QUEUE << 8) | msg_type,
                              flags=NLM_F_REQUEST, seq=seq, pid=0)
                + NfGenMsg.pack(family=socket.AF_UNSPEC, version=NFNETLINK_V0, res_id=self.queue)
                + NlAttr.pack(len=NlAttr.size + NfqVerdictHdr.size, type=2)  # NFQA_VERDICT_HDR
                + NfqVerdictHdr.pack(verdict=verdict, id=packet_id))

    def _send(self, data: bytes) -> None:
        while True:
            try:
                self.nl.sock.send(data)
                return
            except BlockingIOError:  # momentarily out of socket memory: never skip a verdict
                select.select([], [self.nl.sock], [], 0.001)
            except InterruptedError:
                continue

    def verdicts(self, packet_ids, verdict: int = NF_ACCEPT, chunk: int = 256) -> None:
        """Give ``verdict`` to each packet of ``packet_ids``, in order, few system calls.

        One NFQNL_MSG_VERDICT per packet (sequence number = packet id, so a
        packet the kernel no longer holds is reported by id and counted in
        :attr:`lost`), up to ``chunk`` messages per send().
        """
        ids = list(packet_ids)
        for i in range(0, len(ids), chunk):
            part = ids[i:i + chunk]
            self._send(b"".join(self._message(NFQNL_MSG_VERDICT, pid, pid, verdict) for pid in part))
            self.verdicts_sent += len(part)

    def verdict(self, packet_id: int, verdict: int = NF_ACCEPT) -> None:
        """Give ``verdict`` to the one packet ``packet_id``."""
        self.verdicts([packet_id], verdict)

    def verdict_batch(self, max_id: int, verdict: int = NF_ACCEPT) -> None:
        """Give ``verdict`` to every packet still queued whose id is not after ``max_id`` (ids wrap).

        One message for many packets; a packet the kernel dropped meanwhile
        goes unnoticed (ENOENT only when none is left), so prefer :meth:`verdicts`.
        """
        self._send(self._message(NFQNL_MSG_VERDICT_BATCH, 0, max_id, verdict))
        self.verdicts_sent += 1

    # -- state -------------------------------------------------------------
    def kernel_stats(self) -> dict[str, int] | None:
        """This queue's line of ``/proc/net/netfilter/nfnetlink_queue`` in its namespace, or None.

        ``queue_total`` is the number of packets the kernel holds for us now;
        ``queue_dropped`` counts drops because the queue was full,
        ``user_dropped`` those the socket could not take (ENOBUFS).
        """
        if self._proc_fd is None:
            return None
        try:
            text = os.pread(self._proc_fd, 1 << 16, 0).decode()
        except OSError:
            return None
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 8 and parts[0].isdigit() and int(parts[0]) == self.queue:
                return dict(zip(_PROC_FIELDS, (int(p) for p in parts[:8]), strict=True))
        return None

    def close(self, accept_pending: bool = True) -> None:
        """Unbind and close; idempotent.

        Unbinding makes the kernel *drop* every packet it still holds for
        this queue, so with ``accept_pending`` (the default) every packet
        it still holds is accepted first (one batch verdict).
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._bound:
                held = (self.kernel_stats() or {}).get("queue_total", 1)
                if accept_pending and self.last_id is not None and held:
                    self.nl.sock.setblocking(True)
                    self.verdict_batch(self.last_id, NF_ACCEPT)
                seq = self.nl.next_seq()
                msg = nfnl_message(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq,
                                   socket.AF_UNSPEC, self.queue, NFQ_CONFIG_ATTRS,
                                   [("cmd", {"command": NFQNL_CFG_CMD_UNBIND, "pf": 0})])
                self.nl.sock.setblocking(True)
                try:
                    self.nl.request([(seq, msg)], f"unbinding {self._where()}", timeout=2.0,
                                    on_other=lambda *a: None)
                except OSError as exc:
                    log.warning("unbinding the queue failed (closing the socket unbinds it too)",
                                extra={"queue": self.queue, "netns": self.netns, "error": str(exc)})
        finally:
            self.nl.close()
            if self._proc_fd is not None:
                os.close(self._proc_fd)
                self._proc_fd = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> NfQueue:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------ steering packets to a queue
_FAMILIES = {"ip": NFPROTO_IPV4, "ip6": NFPROTO_IPV6}


def queue_rule_expressions(ifname: str, queue: int) -> list[tuple[str, list]]:
    """``meta oifname == ifname; counter; target NFQUEUE num queue`` (no bypass) as expressions."""
    name = ifname.encode()
    if not 0 < len(name) < IFNAMSIZ:
        raise ValueError(f"invalid interface name {ifname!r}")
    info = XtNfqInfoV3.pack(queuenum=queue, queues_total=1, flags=0)
    return [
        ("meta", [("dreg", NFT_REG_1), ("key", NFT_META_OIFNAME)]),
        ("cmp", [("sreg", NFT_REG_1), ("op", NFT_CMP_EQ), ("data", [("value", name.ljust(IFNAMSIZ, b"\0"))])]),
        ("counter", []),
        ("target", [("name", "NFQUEUE"), ("rev", 3), ("info", info)]),
    ]


def rule_comment(comment: str) -> bytes:
    """NFTA_RULE_USERDATA holding a comment, as libnftnl writes it (``nft ... comment "..."``)."""
    data = comment.encode() + b"\0"
    if len(data) > 128:
        raise ValueError("comment too long")
    return bytes((NFTNL_UDATA_RULE_COMMENT, len(data))) + data


def _nft_msg(nl: NetlinkSocket, msg_type: int, flags: int, family: str, policy: AttrPolicy, attrs):
    seq = nl.next_seq()
    return seq, nfnl_message(NFNL_SUBSYS_NFTABLES, msg_type, NLM_F_REQUEST | NLM_F_ACK | flags, seq,
                             _FAMILIES[family], 0, policy, attrs)


def add_queue_rule(netns: str | None, table: str, chain: str, ifname: str, queue: int, *, comment: str,
                   families: Iterable[str] = ("ip6", "ip"), hook: str = "postrouting",
                   priority: int = 500) -> None:
    """Send every packet leaving ``ifname`` to ``queue``: one rule in a base chain shared by such rules.

    One nf_tables transaction: for each family, ``add table`` and ``add
    chain`` (type filter, ``hook``, ``priority``, policy accept; both are
    no-ops if they exist) and append the rule of :func:`queue_rule_expressions`
    with ``comment`` (so that it can be found and deleted by handle through
    libnftables). Raises :class:`NetlinkError` (nothing changed) if refused.
    """
    if hook not in NF_INET_HOOKS:
        raise ValueError(f"hook must be one of {', '.join(NF_INET_HOOKS)}, got {hook!r}")
    exprs = queue_rule_expressions(ifname, queue)
    udata = rule_comment(comment)
    nl = NetlinkSocket(netns)
    try:
        msgs = []
        for fam in families:
            msgs.append(_nft_msg(nl, NFT_MSG_NEWTABLE, NLM_F_CREATE, fam, NFT_TABLE_ATTRS,
                                 [("name", table), ("flags", 0)]))
            msgs.append(_nft_msg(nl, NFT_MSG_NEWCHAIN, NLM_F_CREATE, fam, NFT_CHAIN_ATTRS, [
                ("table", table), ("name", chain),
                ("hook", [("hooknum", NF_INET_HOOKS[hook]), ("priority", priority)]),
                ("policy", NF_ACCEPT), ("type", "filter")]))
            msgs.append(_nft_msg(nl, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, fam, NFT_RULE_ATTRS, [
                ("table", table), ("chain", chain), ("expressions", exprs), ("userdata", udata)]))
        nfnl_batch(nl, msgs, f"adding rule 'oifname {ifname} -> NFQUEUE {queue}' to nftables table {table}")
    finally:
        nl.close()


def remove_table_if_unused(netns: str | None, table: str, chain: str,
                           families: Iterable[str] = ("ip6", "ip")) -> list[str]:
    """Delete ``table`` in each family where ``chain`` has no rule left and the table nothing else.

    Per family, one transaction ``delete chain; delete table``, both
    non-recursive (``NLM_F_NONREC``): the kernel refuses with EBUSY, and
    nothing changes, if a rule was added meanwhile (another element) — so
    there is no window between checking and deleting. Returns the families
    whose table was deleted (or was already gone).
    """
    done = []
    nl = NetlinkSocket(netns)
    try:
        for fam in families:
            msgs = [_nft_msg(nl, NFT_MSG_DELCHAIN, NLM_F_NONREC, fam, NFT_CHAIN_ATTRS,
                             [("table", table), ("name", chain)]),
                    _nft_msg(nl, NFT_MSG_DELTABLE, NLM_F_NONREC, fam, NFT_TABLE_ATTRS, [("name", table)])]
            try:
                nfnl_batch(nl, msgs, f"removing nftables table {fam} {table}")
                done.append(fam)
            except NetlinkError as exc:
                if exc.errno == errno.ENOENT:
                    done.append(fam)
                elif exc.errno != errno.EBUSY:
                    raise
    finally:
        nl.close()
    return done


def queue_bindings(netns: str | None) -> dict[int, dict[str, int]]:
    """Every bound queue of the namespace: ``/proc/net/netfilter/nfnetlink_queue`` by queue number."""
    def read() -> str:
        try:
            with open(_PROC_QUEUE, encoding="ascii") as f:
                return f.read()
        except OSError:
            return ""
    if netns is None:
        text = read()
    else:
        with NetnsThread(netns, thread_name=f"nfq-proc-{netns}") as t:
            text = t.call(read)
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0].isdigit():
            out[int(parts[0])] = dict(zip(_PROC_FIELDS, (int(p) for p in parts[:8]), strict=True))
    return out
