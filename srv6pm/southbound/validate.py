"""Validation and normalisation of the southbound API's request messages.

One function per request message (:func:`local_sid`, :func:`policy`, ...,
:func:`stamp_reflector_ref`), and :func:`request` that picks the function by
the message's type. Each returns a NEW message, normalised, or raises
:class:`InvalidArgument` naming the first bad field; the argument is never
modified. Unknown fields (from a newer peer) are dropped from the result.
Pure functions: no I/O, no clock.

The exporter answers ``INVALID_ARGUMENT`` with ``str(error)``; the collector
normalises its desired state with the same functions, so that it compares
equal (``==``) to what the exporter reports in ``GetState``. Normalising is
idempotent: ``f(f(m)) == f(m)``.

Field names in errors are the proto's; list items are ``segments[1]``.

Normalisation rules (the defaults they name are :data:`DEFAULTS`, the one
table of them; a configuration file's reader leaves unset what the file does
not say and lets these functions fill it in):

* IPv6 addresses become their compressed text, ``str(IPv6Address(x))``
  (``FC00:0:0::1`` -> ``fc00::1``). Scoped addresses (``fe80::1%eth0``) are
  refused. Where IPv4 is allowed too (STAMP), the same with ``ip_address``.
* Prefixes become ``str(IPv6Network(x, strict=True))``; host bits set is an
  error, a bare address means ``/128``.
* Names (policy, flow, STAMP session, reflector node) must match
  ``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``; they are kept as given.
* Interface names follow the kernel's rule: 1..15 bytes, no ``/``, ``:``,
  whitespace or NUL, not ``.`` or ``..``.
* Enum fields: ``*_UNSPECIFIED`` is "missing" unless a default is stated
  below; a number the proto does not define is an error.
* SIDs (``LocalSid.sid``, every segment of a list) cannot be the unspecified,
  loopback, multicast or link-local address.
* ``LocalSid``: ``sid`` required; ``behavior`` required; ``nexthop`` required
  for End.X and End.DX6 and must be empty otherwise; ``table`` 0 becomes 254
  (main) for End.DT6 and must be 0 for every other behaviour; ``device`` ""
  becomes ``"lo"``.
* ``Policy``: ``name``, ``destination`` (prefix) and 1..16 ``segments``
  required; ``mode`` UNSPECIFIED becomes ENCAP; ``device`` optional.
* ``FlowMonitor``: ``flow``, ``role`` (INGRESS, TRANSIT or EGRESS),
  ``source_prefix`` and ``destination_prefix`` required; ``flowmon_id``
  0..1048575 (RFC 9343's 20 bits; 0: none, only for the nftables data plane,
  which the exporter checks); ``position`` 0..255, 0 for INGRESS, at least 1
  for TRANSIT and for an EGRESS with a ``flowmon_id``. A TRANSIT monitor
  needs a ``flowmon_id``. ``FlowMonitorRef``: ``flow`` and ``role``.
* ``StampSession``: ``name``, ``destination`` (IPv6 or IPv4) and ``rate``
  (0.01..1000 per second) required; ``source`` optional, of the
  destination's IP version; ``port`` 0 becomes 862 (1..65535); ``segments``
  and ``return_segments`` 0..16 IPv6 addresses each, only with an IPv6
  destination; ``timeout_s`` 0 becomes 2.0 (0.01..60); ``reflector_node``
  optional name; ``auth_key_file`` optional absolute path (kept as given);
  with ``liveness``, ``liveness_down_after`` and ``liveness_up_after`` 0
  become 3 (1..1000, :mod:`srv6pm.stamp.liveness`); without it both must be 0.
  ``dscp`` optional, 0..63; ``ssid`` 0 (none) or 1..65535;
  ``stop_if_ssid_ignored`` only with an ``ssid``; ``direct_measurement`` any.
* ``StampReflector``: ``bind`` (IPv6 or IPv4 address, ``::`` for all)
  required; ``port`` 0 becomes 862; ``auth_key_file`` optional absolute path;
  ``backend`` ``"ebpf"``, ``"socket"`` or ``""`` (the exporter's default; kept
  as ``""``, since what it means is the exporter's to say).
* ``BatchItem``: exactly one object or ``*Ref`` (its ``object`` oneof);
  an empty item is ``object: missing``. The object is then validated by its
  own rule (:func:`batch_object`, :func:`request`).

:func:`key_of` gives the identity of an object (what "the same object" means
for idempotence and diffs): ``LocalSid`` -> sid, ``Policy`` -> name,
``FlowMonitor`` -> (flow, role), ``StampSession`` -> name,
``StampReflector`` -> ``"reflector"``; a ``*Ref`` message has the key of the
object it removes.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from types import MappingProxyType
from typing import Any, Mapping

from srv6pm.errors import InputError
from srv6pm.netlink import RT_TABLE_MAIN
from srv6pm.netspec import MAX_SEGMENTS, MAX_STAMP_RATE, MIN_STAMP_RATE, NAME
from srv6pm.quote import quote
from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.stamp.backends import BACKENDS as REFLECTOR_BACKENDS
from srv6pm.stamp.liveness import DEFAULT_DOWN_AFTER, DEFAULT_UP_AFTER, MAX_COUNT as LIVENESS_MAX
from srv6pm.stamp.protocol import DEFAULT_TIMEOUT_S, STAMP_PORT

FLOWMON_ID_MAX = (1 << 20) - 1
"""The largest RFC 9343 FlowMonID (20 bits); 0 means none."""
POSITION_MAX = 255
"""The largest counting-point position on a flow's path."""
ROLE_NAMES = {pb.ROLE_INGRESS: "ingress", pb.ROLE_TRANSIT: "transit", pb.ROLE_EGRESS: "egress"}
"""A counting point's role as named in records and configuration files, by its southbound value."""
ROLE_VALUES = {name: value for value, name in ROLE_NAMES.items()}
"""The southbound value of a role by its name (``"ingress"`` -> ``ROLE_INGRESS``)."""

__all__ = [
    "DEFAULTS", "DSCP_MAX", "FLOWMON_ID_MAX", "InvalidArgument", "POSITION_MAX", "ROLE_NAMES", "ROLE_VALUES", "flow_monitor", "flow_monitor_ref", "key_of", "local_sid", "local_sid_ref", "policy",
    "policy_ref", "request", "stamp_reflector", "stamp_reflector_ref", "stamp_session", "stamp_session_ref",
    "batch_item", "batch_object", "liveness", "liveness_fields", "liveness_setting", "name", "port", "rfc8972_settings", "stamp_rate", "stamp_timeout",
]

DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "LocalSid": MappingProxyType({"table": RT_TABLE_MAIN, "device": "lo"}),  # table: End.DT6 only
    "Policy": MappingProxyType({"mode": pb.ENCAP_MODE_ENCAP}),
    "StampSession": MappingProxyType({"port": STAMP_PORT, "timeout_s": DEFAULT_TIMEOUT_S,
                                      "liveness_down_after": DEFAULT_DOWN_AFTER,  # with liveness only
                                      "liveness_up_after": DEFAULT_UP_AFTER}),
    "StampReflector": MappingProxyType({"port": STAMP_PORT}),
})
"""What a field left 0 or empty becomes, by message and field: the one table of the control plane's defaults.

Every reader of a configuration file leaves a field it is not given unset
and lets the functions below fill it in from here; nothing else states these
values (the STAMP sender's own defaults are :mod:`srv6pm.stamp.protocol`'s,
which this table reads)."""


def _default(kind: str, field: str) -> Any:
    """``DEFAULTS[kind][field]``, looked up when a message is validated."""
    return DEFAULTS[kind][field]


SSID_MAX = 0xFFFF
"""The largest Session-Sender Identifier (RFC 8972 §3, 16 bits); 0 means none."""
DSCP_MAX = 63
"""The largest DSCP (six bits) a STAMP session can send with and ask back (RFC 8972 §5.2)."""
RATE_RANGE = (MIN_STAMP_RATE, float(MAX_STAMP_RATE))
TIMEOUT_RANGE = (0.01, 60.0)
IFNAMSIZ = 16  # including the terminating NUL
REFLECTOR_KEY = "reflector"

_NEEDS_NEXTHOP = {pb.SID_BEHAVIOR_END_X, pb.SID_BEHAVIOR_END_DX6}


class InvalidArgument(InputError, ValueError):
    """A request field is missing or malformed. ``str()`` is ``"<field>: <message>"``."""

    def __init__(self, field: str, message: str):
        super().__init__(field, message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


# ---------------------------------------------------------------- field checks

def _required(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "missing")
    return value


def _no_scope(field: str, text: str) -> None:
    if "%" in text:
        raise InvalidArgument(field, f"{quote(text)}: scoped addresses are not accepted")


def _ipv6(field: str, text: str) -> str:
    _required(field, text)
    _no_scope(field, text)
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise InvalidArgument(field, f"{quote(text)} is not an IPv6 address") from None


def _ip(field: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    _required(field, text)
    _no_scope(field, text)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(field, f"{quote(text)} is not an IPv6 or IPv4 address") from None


# The address rules are pure functions of (field, text), and a batch of ten thousand flows or policies repeats
# most of its texts (one source prefix, the same segments): the valid ones are remembered (a refusal is not).
_remembered = functools.lru_cache(maxsize=4096)


@_remembered
def _prefix(field: str, text: str) -> str:
    _required(field, text)
    _no_scope(field, text)
    try:
        return str(ipaddress.IPv6Network(text, strict=True))
    except ValueError as exc:
        if "has host bits set" in str(exc):
            raise InvalidArgument(field, f"{quote(text)} has host bits set") from None
        raise InvalidArgument(field, f"{quote(text)} is not an IPv6 prefix") from None


@_remembered
def _sid(field: str, text: str) -> str:
    """An IPv6 address that can be a SID: globally routable in form, so not unspecified, loopback,
    multicast or link-local (RFC 8986 SIDs are routed to the node that owns them)."""
    text = _ipv6(field, text)
    address = ipaddress.IPv6Address(text)
    for unfit, what in ((address.is_unspecified, "the unspecified address"), (address.is_loopback, "loopback"),
                        (address.is_multicast, "multicast"), (address.is_link_local, "link-local")):
        if unfit:
            raise InvalidArgument(field, f"{quote(text)} is {what}, which cannot be a SID")
    return text


def _segments(field: str, items) -> list[str]:
    if len(items) > MAX_SEGMENTS:
        raise InvalidArgument(field, f"{len(items)} segments, at most {MAX_SEGMENTS}")
    return [_sid(f"{field}[{i}]", s) for i, s in enumerate(items)]


def name(field: str, text: str) -> str:
    """``text`` if it is a valid name (:data:`srv6pm.netspec.NAME`); :class:`InvalidArgument` on ``field``."""
    _required(field, text)
    if not NAME.fullmatch(text):
        raise InvalidArgument(field, f"{quote(text)} is not a valid name "
                                     "(letters, digits, '_', '.', '-'; at most 64; starts with a letter or digit)")
    return text


def _ifname(field: str, text: str) -> str:
    _required(field, text)
    if (len(text.encode()) >= IFNAMSIZ or text in (".", "..")
            or any(c in "/:\0" or c.isspace() for c in text)):
        raise InvalidArgument(field, f"{quote(text)} is not a valid interface name "
                                     f"(1..{IFNAMSIZ - 1} bytes, no '/', ':' or whitespace, not '.' or '..')")
    return text


def _enum(field: str, enum, value: int, *, default: int | None = None) -> int:
    if value == 0:
        if default is None:
            raise InvalidArgument(field, "missing")
        return default
    if value not in enum.values():
        raise InvalidArgument(field, f"unknown value {value}")
    return value


def _number(field: str, value: float, low: float, high: float) -> float:
    try:
        number = float(value)
    except OverflowError:  # a whole number (from a file) beyond a float's range
        number = math.inf
    if not (math.isfinite(number) and low <= number <= high):
        raise InvalidArgument(field, f"{quote(value)} not in {low:g}..{high:g}")
    return number


def _port(field: str, value: int, default: int) -> int:
    return port(value or default)


def port(value: int) -> int:
    """A UDP port a file or a message names, 1..65535; :class:`InvalidArgument` on ``port`` otherwise.
    (In a message 0 means the default, filled in first; a file that says ``port: 0`` is refused.)"""
    if not 1 <= value <= 65535:
        raise InvalidArgument("port", f"{value} not in 1..65535")
    return value


def stamp_timeout(value: float) -> float:
    """A STAMP session's ``timeout_s`` in :data:`TIMEOUT_RANGE`; :class:`InvalidArgument` on ``timeout_s``.
    (In a message 0 means the default, filled in first; a file that says ``timeout: 0`` is refused.)"""
    return _number("timeout_s", value, *TIMEOUT_RANGE)


def _key_file(field: str, text: str) -> str:
    if text and (not text.startswith("/") or "\0" in text):
        raise InvalidArgument(field, f"{quote(text)} is not an absolute path")
    return text


def _copy(message, kind):
    if not isinstance(message, kind):
        raise TypeError(f"expected {kind.DESCRIPTOR.full_name}, not {type(message).__name__}")
    out = kind()
    out.CopyFrom(message)
    out.DiscardUnknownFields()
    return out


# ---------------------------------------------------------------- local SIDs

def local_sid(message: pb.LocalSid) -> pb.LocalSid:
    """A normalised copy of a ``LocalSid``; :class:`InvalidArgument` if it is not valid."""
    out = _copy(message, pb.LocalSid)
    out.sid = _sid("sid", out.sid)
    out.behavior = _enum("behavior", pb.SidBehavior, out.behavior)
    if out.behavior in _NEEDS_NEXTHOP:
        out.nexthop = _ipv6("nexthop", out.nexthop)
    elif out.nexthop:
        raise InvalidArgument("nexthop", "only End.X and End.DX6 take a next hop")
    if out.behavior == pb.SID_BEHAVIOR_END_DT6:
        out.table = out.table or _default("LocalSid", "table")
    elif out.table:
        raise InvalidArgument("table", "only End.DT6 takes a table")
    out.device = _ifname("device", out.device or _default("LocalSid", "device"))
    return out


def local_sid_ref(message: pb.LocalSidRef) -> pb.LocalSidRef:
    """A normalised copy of a ``LocalSidRef``."""
    out = _copy(message, pb.LocalSidRef)
    out.sid = _ipv6("sid", out.sid)
    return out


# ---------------------------------------------------------------- policies

def policy(message: pb.Policy) -> pb.Policy:
    """A normalised copy of a ``Policy``; :class:`InvalidArgument` if it is not valid."""
    out = _copy(message, pb.Policy)
    out.name = name("name", out.name)
    out.destination = _prefix("destination", out.destination)
    if not out.segments:
        raise InvalidArgument("segments", "missing")
    out.segments[:] = _segments("segments", out.segments)
    out.mode = _enum("mode", pb.EncapMode, out.mode, default=_default("Policy", "mode"))
    if out.device:
        _ifname("device", out.device)
    return out


def policy_ref(message: pb.PolicyRef) -> pb.PolicyRef:
    """A normalised copy of a ``PolicyRef``."""
    out = _copy(message, pb.PolicyRef)
    out.name = name("name", out.name)
    return out


# ---------------------------------------------------------------- loss monitoring

def flow_monitor(message: pb.FlowMonitor) -> pb.FlowMonitor:
    """A normalised copy of a ``FlowMonitor``; :class:`InvalidArgument` if it is not valid."""
    out = _copy(message, pb.FlowMonitor)
    out.flow = name("flow", out.flow)
    out.role = _enum("role", pb.Role, out.role)
    out.source_prefix = _prefix("source_prefix", out.source_prefix)
    out.destination_prefix = _prefix("destination_prefix", out.destination_prefix)
    if out.flowmon_id > FLOWMON_ID_MAX:
        raise InvalidArgument("flowmon_id", f"{out.flowmon_id} not in 0..{FLOWMON_ID_MAX} (20 bits, RFC 9343)")
    if out.position > POSITION_MAX:
        raise InvalidArgument("position", f"{out.position} not in 0..{POSITION_MAX}")
    if out.role == pb.ROLE_INGRESS and out.position != 0:
        raise InvalidArgument("position", f"{out.position}: the ingress is position 0")
    if out.role == pb.ROLE_TRANSIT and out.flowmon_id == 0:
        raise InvalidArgument("flowmon_id", "missing: a transit point counts by FlowMonID")
    if out.role != pb.ROLE_INGRESS and out.flowmon_id and out.position == 0:
        raise InvalidArgument("position", "0 is the ingress: a transit or egress point is at 1 or more")
    return out


def flow_monitor_ref(message: pb.FlowMonitorRef) -> pb.FlowMonitorRef:
    """A normalised copy of a ``FlowMonitorRef``."""
    out = _copy(message, pb.FlowMonitorRef)
    out.flow = name("flow", out.flow)
    out.role = _enum("role", pb.Role, out.role)
    return out


# ---------------------------------------------------------------- STAMP

def stamp_session(message: pb.StampSession) -> pb.StampSession:
    """A normalised copy of a ``StampSession``; :class:`InvalidArgument` if it is not valid."""
    out = _copy(message, pb.StampSession)
    out.name = name("name", out.name)
    destination = _ip("destination", out.destination)
    out.destination = str(destination)
    if out.source:
        source = _ip("source", out.source)
        if source.version != destination.version:
            raise InvalidArgument("source", f"{quote(out.source)} is not of the destination's IP version "
                                            f"(IPv{destination.version})")
        out.source = str(source)
    out.port = _port("port", out.port, _default("StampSession", "port"))
    for field in ("segments", "return_segments"):
        items = getattr(out, field)
        if items and destination.version != 6:
            raise InvalidArgument(field, "segments need an IPv6 destination (SRv6)")
        items[:] = _segments(field, items)
    out.rate = stamp_rate(out.rate)
    out.timeout_s = stamp_timeout(out.timeout_s or _default("StampSession", "timeout_s"))
    if out.reflector_node:
        name("reflector_node", out.reflector_node)
    _key_file("auth_key_file", out.auth_key_file)
    out.liveness_down_after, out.liveness_up_after = liveness(out.liveness, out.liveness_down_after,
                                                              out.liveness_up_after)
    rfc8972_settings(out.dscp if out.HasField("dscp") else None, out.ssid, out.stop_if_ssid_ignored)
    return out


def rfc8972_settings(dscp: int | None, ssid: int, stop_if_ssid_ignored: bool) -> None:
    """Judge a STAMP session's RFC 8972 settings: ``dscp`` 0..63 (None: not asked for), ``ssid`` up to
    :data:`SSID_MAX` (0: none), ``stop_if_ssid_ignored`` only with an ``ssid``."""
    if dscp is not None and not 0 <= dscp <= DSCP_MAX:
        raise InvalidArgument("dscp", f"{dscp} is not a DSCP (0..{DSCP_MAX})")
    if not 0 <= ssid <= SSID_MAX:
        raise InvalidArgument("ssid", f"{ssid} is not an SSID (1..{SSID_MAX}, or 0 for none)")
    if stop_if_ssid_ignored and not ssid:
        raise InvalidArgument("stop_if_ssid_ignored", "needs an ssid: without one no reply can ignore it")


def stamp_rate(rate: float) -> float:
    """A STAMP session's ``rate``, test packets per second, in :data:`RATE_RANGE`; :class:`InvalidArgument`
    on ``rate`` otherwise. The rule of ``StampSession`` and of the sessions of every file (scenarios too,
    whose sessions have no message)."""
    return _number("rate", rate, *RATE_RANGE)


def liveness_setting(value) -> tuple[int, int] | None:
    """A configuration file's ``liveness`` of a session, as YAML gave it: ``true`` (default counts), ``false``,
    or a mapping with ``down_after`` and/or ``up_after``; (down_after, up_after), None when not watched.
    Raises :class:`InvalidArgument` whose field is ``""`` (the value), ``down_after`` or ``up_after``."""
    if isinstance(value, bool):
        counts, enabled = {}, value
    elif isinstance(value, dict):
        counts, enabled = value, True
        for key, count in counts.items():
            if key not in ("down_after", "up_after"):
                raise InvalidArgument(str(key), "unknown field (allowed: down_after, up_after)")
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise InvalidArgument(key, f"must be a whole number from 1 to {LIVENESS_MAX}, got {count!r}")
    else:
        raise InvalidArgument("", "must be true, false or a mapping with down_after and/or up_after")
    try:
        out = liveness(enabled, counts.get("down_after", 0), counts.get("up_after", 0))
    except InvalidArgument as exc:
        raise InvalidArgument(exc.field.removeprefix("liveness_"), exc.message) from None
    return out if enabled else None


def liveness_fields(liveness: tuple[int, int] | None) -> dict:
    """The ``StampSession`` fields of a configuration's ``liveness`` ((down_after, up_after), None: not watched)."""
    if liveness is None:
        return {}
    return {"liveness": True, "liveness_down_after": liveness[0], "liveness_up_after": liveness[1]}


def liveness(enabled: bool, down_after: int, up_after: int) -> tuple[int, int]:
    """The normal form of a session's liveness counts (the rule of ``StampSession``): (0, 0) without
    liveness, else each 1..1000 with 0 the default. Raises :class:`InvalidArgument` naming
    ``liveness_down_after`` or ``liveness_up_after``; also used for the configuration files."""
    out = []
    for field, value in (("liveness_down_after", down_after), ("liveness_up_after", up_after)):
        if not enabled:
            if value:
                raise InvalidArgument(field, f"{value}: only with liveness")
            out.append(0)
            continue
        value = value or _default("StampSession", field)
        if not 1 <= value <= LIVENESS_MAX:
            raise InvalidArgument(field, f"{value} not in 1..{LIVENESS_MAX}")
        out.append(value)
    return out[0], out[1]


def stamp_session_ref(message: pb.StampSessionRef) -> pb.StampSessionRef:
    """A normalised copy of a ``StampSessionRef``."""
    out = _copy(message, pb.StampSessionRef)
    out.name = name("name", out.name)
    return out


def stamp_reflector(message: pb.StampReflector) -> pb.StampReflector:
    """A normalised copy of a ``StampReflector``; :class:`InvalidArgument` if it is not valid."""
    out = _copy(message, pb.StampReflector)
    out.bind = str(_ip("bind", out.bind))
    out.port = _port("port", out.port, _default("StampReflector", "port"))
    _key_file("auth_key_file", out.auth_key_file)
    if out.backend and out.backend not in REFLECTOR_BACKENDS:
        raise InvalidArgument("backend", f"{quote(out.backend)} is not one of {', '.join(REFLECTOR_BACKENDS)} "
                                         "(or empty: the exporter's default)")
    return out


def stamp_reflector_ref(message: pb.StampReflectorRef) -> pb.StampReflectorRef:
    """A copy of a ``StampReflectorRef`` (it has no fields)."""
    return _copy(message, pb.StampReflectorRef)


# ---------------------------------------------------------------- by type

_BY_TYPE = {
    pb.LocalSid: local_sid, pb.LocalSidRef: local_sid_ref,
    pb.Policy: policy, pb.PolicyRef: policy_ref,
    pb.FlowMonitor: flow_monitor, pb.FlowMonitorRef: flow_monitor_ref,
    pb.StampSession: stamp_session, pb.StampSessionRef: stamp_session_ref,
    pb.StampReflector: stamp_reflector, pb.StampReflectorRef: stamp_reflector_ref,
}


_BATCH_FIELDS = {
    pb.LocalSid: "local_sid", pb.Policy: "policy", pb.FlowMonitor: "flow", pb.StampSession: "stamp_session",
    pb.StampReflector: "stamp_reflector", pb.LocalSidRef: "remove_local_sid", pb.PolicyRef: "remove_policy",
    pb.FlowMonitorRef: "remove_flow", pb.StampSessionRef: "remove_stamp_session",
    pb.StampReflectorRef: "remove_stamp_reflector",
}


def batch_item(message) -> pb.BatchItem:
    """The ``BatchItem`` carrying an object or a ``*Ref`` (copied); ``TypeError`` for any other message."""
    try:
        field = _BATCH_FIELDS[type(message)]
    except KeyError:
        raise TypeError(f"a batch carries no {type(message).__name__}") from None
    item = pb.BatchItem()
    getattr(item, field).CopyFrom(message)
    return item


def batch_object(item: pb.BatchItem):
    """The object or ``*Ref`` an item carries, not yet validated; :class:`InvalidArgument` for an empty item."""
    field = item.WhichOneof("object")
    if field is None:
        raise InvalidArgument("object", "missing: an item carries one object or one reference")
    return getattr(item, field)


def request(message):
    """Validate and normalise any of the request messages above, by its type.

    ``TypeError`` for a message that is not one of them.
    """
    try:
        check = _BY_TYPE[type(message)]
    except KeyError:
        raise TypeError(f"not a southbound request message: {type(message).__name__}") from None
    return check(message)


def key_of(message) -> str | tuple[str, pb.Role]:
    """The identity key of a (validated) object or of the ``*Ref`` that removes it.

    ``LocalSid``/``LocalSidRef`` -> sid; ``Policy``/``PolicyRef`` -> name;
    ``FlowMonitor``/``FlowMonitorRef`` -> (flow, role); ``StampSession``/
    ``StampSessionRef`` -> name; ``StampReflector``/``StampReflectorRef`` ->
    ``"reflector"``. ``TypeError`` for any other message.
    """
    if isinstance(message, (pb.LocalSid, pb.LocalSidRef)):
        return message.sid
    if isinstance(message, (pb.Policy, pb.PolicyRef, pb.StampSession, pb.StampSessionRef)):
        return message.name
    if isinstance(message, (pb.FlowMonitor, pb.FlowMonitorRef)):
        return (message.flow, message.role)
    if isinstance(message, (pb.StampReflector, pb.StampReflectorRef)):
        return REFLECTOR_KEY
    raise TypeError(f"no key for {type(message).__name__}")
