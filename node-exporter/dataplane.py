"""The exporter's alternate-marking data plane: one nftables table of per-flow, per-colour counters.

Marking rule (DESIGN.md, RFC 9341): colour ``c = period index mod 2``, carried in
the inner packet's DSCP. By default colour 0 is DSCP 11 and colour 1 is DSCP 15
(both from the EXP/LU pool ``xxxx11``, one bit apart); the pair is configurable.
Linux seg6 encapsulation copies the inner traffic class to the outer header,
so transit nodes see the colour too, and End.DX6 decapsulation keeps it in the
inner packet the egress node forwards.

A flow is identified by the (source prefix, destination prefix) of its inner
IPv6 packets (:class:`FlowMatch`).

Table ``ip6 <table>`` (default ``srv6pm``) in the node's namespace holds::

    set ingress_c0 / ingress_c1 / egress_c0 / egress_c1 {
        type ipv6_addr . ipv6_addr; flags interval; counter;   # one element per flow
    }
    chain ingress_mark {   # type filter hook prerouting priority mangle
        ip6 saddr . ip6 daddr @ingress_c<c> ip6 dscp set <dscp[c]>     # c = current colour
    }
    chain egress_count {   # type filter hook forward priority filter
        ip6 dscp <dscp[0]> ip6 saddr . ip6 daddr @egress_c0
        ip6 dscp <dscp[1]> ip6 saddr . ip6 daddr @egress_c1
    }

* Per-packet cost does not grow with the number of flows: a constant number of
  rules (1 + 2), each doing one set lookup; a successful lookup updates the
  matching element's own counter (packets, bytes of the whole inner IPv6
  packet, header included), which is the per-flow, per-colour counter.
* Ingress (where host traffic enters and seg6 encapsulation happens): the
  prerouting rule runs before routing, so the DSCP it sets is copied into the
  outer header by the encap route. The colour switch (:meth:`CountingTable.set_colour`)
  is one nftables transaction (flush ``ingress_mark`` + add the rule of the
  new colour), so a packet is always counted in the set of the colour it is
  marked with.
* Egress (the node whose End.DX6 SID decapsulates and forwards the inner
  packet to its host): checked on kernel 6.18 with
  ``net.netfilter.nf_hooks_lwtunnel = 0`` (the default), the decapsulated inner
  packet is seen by the **forward** and **postrouting** hooks, not by
  prerouting or input (prerouting sees only the outer, SRH-carrying packet;
  forward/postrouting see no outer packet since it is consumed by End.DX6). So
  ``egress_count`` hooks forward. With ``nf_hooks_lwtunnel = 1`` the kernel
  would additionally pass the inner packet through prerouting after decap;
  this module does not rely on it (that sysctl is host-wide and cannot be
  switched off again until reboot). At the ingress node, forward sees only
  the encapsulated outer packet (its addresses are the node's and the SID),
  which no flow element matches.

Counters are monotonic: the table never resets them. :meth:`CountingTable.install`
on an existing table (an exporter restart) keeps the table, its sets and
their counters, and only reconciles the set elements (adds missing flows,
deletes unwanted ones) and the rules; it lists the table, so its cost grows
with the number of flows. Later changes go through :meth:`CountingTable.change`:
element additions and deletions only, one transaction, a cost that does not
depend on the number of flows. A consumer computes deltas, and detects
that counters restarted through :attr:`Reading.generation`, which changes
whenever the set is recreated (or the table, or the namespace).

All commands run through one :class:`~srv6pm.nft.Nft`, bound to the
node's namespace; see :mod:`srv6pm.netns` for driving it from the root namespace.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from srv6pm.errors import OperationError
from srv6pm.nft import Nft, NftError

__all__ = ["CountingTable", "DataplaneError", "FlowMatch", "Reading", "ROLES", "DEFAULT_DSCP", "check_colour"]

ROLES = ("ingress", "egress")
DEFAULT_DSCP = (11, 15)
FAMILY = "ip6"
INGRESS_CHAIN = "ingress_mark"
EGRESS_CHAIN = "egress_count"
PRIO_MANGLE = -150
PRIO_FILTER = 0

_SADDR = {"payload": {"protocol": "ip6", "field": "saddr"}}
_DADDR = {"payload": {"protocol": "ip6", "field": "daddr"}}
_DSCP = {"payload": {"protocol": "ip6", "field": "dscp"}}


class DataplaneError(OperationError, RuntimeError):
    """The counting table could not be installed, changed or read; ``str()`` names namespace and table."""


@dataclass(frozen=True)
class FlowMatch:
    """A monitored flow: inner packets with source in ``src`` and destination in ``dst``.

    ``src``/``dst`` are IPv6 prefixes (``"fd01:1::2/128"``) or addresses
    (meaning /128); they are normalised (``str(ipaddress.IPv6Network)``).
    Host bits set or a non-IPv6 value raise ``ValueError`` naming the flow.
    """

    name: str
    src: str
    dst: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"flow name must be a non-empty string, got {self.name!r}")
        for field in ("src", "dst"):
            value = getattr(self, field)
            try:
                net = ipaddress.IPv6Network(value, strict=True)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"flow {self.name!r}: {field} {value!r} is not an IPv6 prefix ({exc})") from None
            object.__setattr__(self, field, str(net))

    @property
    def key(self) -> tuple[str, str]:
        """``(src, dst)``, normalised: the set element that counts this flow."""
        return (self.src, self.dst)


@dataclass(frozen=True)
class Reading:
    """The counters of one role and colour at one instant.

    ``counts`` maps flow name to ``(packets, bytes)`` (monotonic) for every
    installed flow of the role found in the set. ``generation`` is an opaque
    identity of the counter set (namespace cookie, table handle, set handle):
    if it differs from a previous reading's, the counters restarted from zero.
    """

    role: str
    colour: int
    counts: dict[str, tuple[int, int]]
    generation: str


def _set_name(role: str, colour: int) -> str:
    return f"{role}_c{colour}"


def _element(key: tuple[str, str]) -> dict:
    parts = []
    for prefix in key:
        net = ipaddress.IPv6Network(prefix)
        parts.append({"prefix": {"addr": str(net.network_address), "len": net.prefixlen}})
    return {"concat": parts}


def _prefix_of(value) -> str | None:
    """Normalised prefix of one concatenation component as listed by libnftables (None if not a prefix)."""
    try:
        if isinstance(value, str):
            return str(ipaddress.IPv6Network(value))
        if isinstance(value, dict) and "prefix" in value:
            p = value["prefix"]
            return str(ipaddress.IPv6Network(f"{p['addr']}/{p['len']}"))
        if isinstance(value, dict) and "range" in value:
            lo, hi = value["range"]
            nets = list(ipaddress.summarize_address_range(ipaddress.IPv6Address(lo), ipaddress.IPv6Address(hi)))
            return str(nets[0]) if len(nets) == 1 else None
    except (ValueError, KeyError, TypeError):
        return None
    return None


def _elements(set_obj: dict) -> list[tuple[object, tuple[int, int]]]:
    """``[(key or raw value, (packets, bytes))]`` of a listed set; key is ``(src, dst)`` when parsable."""
    out = []
    for item in set_obj.get("elem", []) or []:
        elem = item.get("elem", item) if isinstance(item, dict) else item
        val = elem.get("val", elem) if isinstance(elem, dict) else elem
        counter = elem.get("counter", {}) if isinstance(elem, dict) else {}
        key: object = val
        if isinstance(val, dict) and isinstance(val.get("concat"), list) and len(val["concat"]) == 2:
            src, dst = (_prefix_of(v) for v in val["concat"])
            if src is not None and dst is not None:
                key = (src, dst)
        out.append((key, (int(counter.get("packets", 0)), int(counter.get("bytes", 0)))))
    return out


def check_colour(colour: int) -> int:
    """``colour`` (0 or 1) as an int; ``ValueError`` for anything else (a bool too)."""
    if isinstance(colour, bool) or colour not in (0, 1):
        raise ValueError(f"colour must be 0 or 1, got {colour!r}")
    return int(colour)


class CountingTable:
    """The counting table ``ip6 <table>`` of one node, driven through ``nft``.

    ``dscp`` is the pair of DSCP codepoints (colour 0, colour 1): two distinct
    integers in 0..63. Not thread safe by itself (serialise calls), but every
    call is one or two libnftables runs in ``nft``'s namespace thread.
    """

    counting_gap = False  # (EbpfTable's: nftables counts in one rule set, with no hand-over between hooks)
    was_marking = False  # whether install found an earlier run's ingress flows, marked until then (EbpfTable's too)

    def __init__(self, nft: Nft, *, table: str = "srv6pm", dscp: Sequence[int] = DEFAULT_DSCP):
        dscp = tuple(dscp)
        if (len(dscp) != 2 or any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 63 for d in dscp)
                or dscp[0] == dscp[1]):
            raise ValueError(f"dscp must be two distinct codepoints in 0..63, got {dscp!r}")
        if not isinstance(table, str) or not table:
            raise ValueError(f"invalid table name {table!r}")
        self.nft = nft
        self.table = table
        self.dscp: tuple[int, int] = dscp
        self._flows: dict[str, dict[tuple[str, str], str]] | None = None  # role -> key -> flow name
        self._names: dict[str, dict[str, tuple[str, str]]] = {}  # role -> flow name -> key
        self._colour: int | None = None

    # -- helpers ---------------------------------------------------------------
    def _where(self) -> str:
        ns = self.nft.netns
        return f"{'netns ' + repr(ns) if ns is not None else 'current netns'}: table {FAMILY} {self.table}"

    def _run(self, what: str, commands: list[dict], *, needs_table: bool = False) -> list[dict]:
        try:
            return self.nft.run(commands)
        except NftError as exc:
            if needs_table and not self.exists():
                raise DataplaneError(f"{self._where()}: {what}: the table does not exist "
                                     "(removed, or install() not called)") from exc
            raise DataplaneError(f"{self._where()}: {what}: {exc}") from exc

    def _table_handle(self) -> int | None:
        for obj in self._run("listing tables", [{"list": {"tables": {"family": FAMILY}}}]):
            t = obj.get("table")
            if t and t.get("name") == self.table and t.get("family") == FAMILY:
                return int(t["handle"])
        return None

    def exists(self) -> bool:
        """True if the table exists in the namespace."""
        return self._table_handle() is not None

    def _ref(self, **kw) -> dict:
        return {"family": FAMILY, "table": self.table, **kw}

    def _mark_rule(self, colour: int) -> dict:
        return {"add": {"rule": self._ref(chain=INGRESS_CHAIN, expr=[
            {"match": {"op": "==", "left": {"concat": [_SADDR, _DADDR]}, "right": "@" + _set_name("ingress", colour)}},
            {"mangle": {"key": _DSCP, "value": self.dscp[colour]}},
        ])}}

    def _count_rule(self, colour: int) -> dict:
        return {"add": {"rule": self._ref(chain=EGRESS_CHAIN, expr=[
            {"match": {"op": "==", "left": _DSCP, "right": self.dscp[colour]}},
            {"match": {"op": "==", "left": {"concat": [_SADDR, _DADDR]}, "right": "@" + _set_name("egress", colour)}},
        ])}}

    def _structure(self) -> list[dict]:
        cmds: list[dict] = [{"add": {"table": {"family": FAMILY, "name": self.table}}}]
        for role in ROLES:
            for colour in (0, 1):
                cmds.append({"add": {"set": self._ref(
                    name=_set_name(role, colour), type=["ipv6_addr", "ipv6_addr"],
                    flags=["interval"], stmt=[{"counter": None}])}})
        cmds.append({"add": {"chain": self._ref(name=INGRESS_CHAIN, type="filter", hook="prerouting",
                                                prio=PRIO_MANGLE, policy="accept")}})
        cmds.append({"add": {"chain": self._ref(name=EGRESS_CHAIN, type="filter", hook="forward",
                                                prio=PRIO_FILTER, policy="accept")}})
        return cmds

    @staticmethod
    def _index(role: str, flows: Iterable[FlowMatch]) -> dict[tuple[str, str], str]:
        by_key: dict[tuple[str, str], str] = {}
        names: set[str] = set()
        for f in flows:
            if not isinstance(f, FlowMatch):
                raise TypeError(f"{role} flows must be FlowMatch objects, got {type(f).__name__}")
            if f.name in names:
                raise ValueError(f"duplicate {role} flow name {f.name!r}")
            if f.key in by_key:
                raise ValueError(f"{role} flows {by_key[f.key]!r} and {f.name!r} have the same match {f.src} . {f.dst}")
            names.add(f.name)
            by_key[f.key] = f.name
        return by_key

    # -- API -------------------------------------------------------------------
    def install(self, ingress: Sequence[FlowMatch], egress: Sequence[FlowMatch], colour: int) -> None:
        """Create or reconcile the table so that it counts exactly these flows; mark with ``colour``.

        Missing table, sets or chains are created. Existing sets (and their
        element counters) are kept: only elements are added or deleted to
        match ``ingress``/``egress``, and the rules are rewritten. Everything
        happens in one nftables transaction. Raises ``ValueError`` for bad
        arguments (duplicate names or matches within a role) and
        :class:`DataplaneError` if nftables refuses.
        """
        colour = check_colour(colour)
        wanted = {"ingress": self._index("ingress", ingress), "egress": self._index("egress", egress)}
        present: dict[str, list[object]] = {}
        if self.exists():
            for obj in self._run("listing the table", [{"list": {"table": {"family": FAMILY, "name": self.table}}}]):
                s = obj.get("set")
                if s:
                    present[s["name"]] = [key for key, _ in _elements(s)]
        cmds = self._structure()
        adds: list[dict] = []
        for role in ROLES:
            for c in (0, 1):
                name = _set_name(role, c)
                have = present.get(name, [])
                unwanted = [k for k in have if not (isinstance(k, tuple) and k in wanted[role])]
                missing = [k for k in wanted[role] if k not in have]
                if unwanted:
                    elems = [_element(k) if isinstance(k, tuple) else k for k in unwanted]
                    cmds.append({"delete": {"element": self._ref(name=name, elem=elems)}})
                if missing:
                    adds.append({"add": {"element": self._ref(name=name, elem=[_element(k) for k in missing])}})
        cmds.extend(adds)
        was_marking = any(present.get(_set_name("ingress", c)) for c in (0, 1))
        cmds.append({"flush": {"chain": self._ref(name=INGRESS_CHAIN)}})
        cmds.append(self._mark_rule(colour))
        cmds.append({"flush": {"chain": self._ref(name=EGRESS_CHAIN)}})
        cmds.append(self._count_rule(0))
        cmds.append(self._count_rule(1))
        self._run("installing", cmds)
        self._flows = wanted
        self._names = {role: {name: key for key, name in wanted[role].items()} for role in ROLES}
        self._colour = colour
        self.was_marking = was_marking

    def change(self, add: Mapping[str, Iterable[FlowMatch]] | None = None,
               remove: Mapping[str, Iterable[str]] | None = None) -> None:
        """Stop counting the flows named in ``remove[role]``, then count ``add[role]``; the others are untouched.

        One nftables transaction of ``delete element`` and ``add element``
        commands on the role's two colour sets, nothing else: no listing, no
        rule rewritten, so its cost does not depend on how many flows are
        installed. Absent names in ``remove`` are ignored. Needs a prior
        :meth:`install`. Raises ``ValueError`` for a name or match already
        counted in the role (or twice in ``add``) and :class:`DataplaneError`
        if nftables refuses; then nothing changed.
        """
        if self._flows is None:
            raise DataplaneError(f"{self._where()}: change before install()")
        add, remove = add or {}, remove or {}
        undo: list = []
        gone: dict[str, list] = {role: [] for role in ROLES}
        new: dict[str, list] = {role: [] for role in ROLES}
        try:
            for role in ROLES:
                by_key, by_name = self._flows[role], self._names[role]
                for name in remove.get(role, ()):
                    key = by_name.pop(name, None)
                    if key is not None:
                        del by_key[key]
                        gone[role].append(key)
                        undo.append((by_key, by_name, key, name))
                for f in add.get(role, ()):
                    if not isinstance(f, FlowMatch):
                        raise TypeError(f"{role} flows must be FlowMatch objects, got {type(f).__name__}")
                    if f.name in by_name:
                        raise ValueError(f"duplicate {role} flow name {f.name!r}")
                    if f.key in by_key:
                        raise ValueError(f"{role} flows {by_key[f.key]!r} and {f.name!r} have the same match "
                                         f"{f.src} . {f.dst}")
                    by_key[f.key], by_name[f.name] = f.name, f.key
                    new[role].append(f.key)
                    undo.append((by_key, by_name, None, f))
            cmds = []
            for role in ROLES:
                for c in (0, 1):
                    if gone[role]:
                        cmds.append({"delete": {"element": self._ref(name=_set_name(role, c),
                                                                     elem=[_element(k) for k in gone[role]])}})
            for role in ROLES:
                for c in (0, 1):
                    if new[role]:
                        cmds.append({"add": {"element": self._ref(name=_set_name(role, c),
                                                                  elem=[_element(k) for k in new[role]])}})
            self._run("changing the flows", cmds, needs_table=True)
        except BaseException:
            for by_key, by_name, key, item in reversed(undo):
                if key is not None:  # a removal: put it back
                    by_key[key], by_name[item] = item, key
                else:  # an addition: take it out
                    del by_key[item.key], by_name[item.name]
            raise

    @property
    def colour(self) -> int | None:
        """The colour set by the last :meth:`install`/:meth:`set_colour` of this object."""
        return self._colour

    def set_colour(self, colour: int) -> None:
        """Mark (and count at ingress) with ``colour`` from now on; one atomic transaction."""
        colour = check_colour(colour)
        self._run(f"switching to colour {colour}", [
            {"flush": {"chain": self._ref(name=INGRESS_CHAIN)}},
            self._mark_rule(colour),
        ], needs_table=True)
        self._colour = colour

    def read_all(self, colour: int) -> dict[str, Reading]:
        """Role -> the counters of ``colour``, for each role with installed flows (the eBPF table's interface)."""
        return {role: self.read(role, colour) for role in ROLES if self._flows and self._flows[role]}

    def read(self, role: str, colour: int) -> Reading:
        """The counters of ``role`` (``"ingress"``/``"egress"``) and ``colour``.

        Needs a prior :meth:`install` in this object (it knows the flow
        names). Elements that match no installed flow are ignored.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        colour = check_colour(colour)
        if self._flows is None:
            raise DataplaneError(f"{self._where()}: read before install()")
        name = _set_name(role, colour)
        out = self._run(f"reading set {name}", [
            {"list": {"tables": {"family": FAMILY}}},
            {"list": {"set": self._ref(name=name)}},
        ], needs_table=True)
        table_handle = set_obj = None
        for obj in out:
            if "table" in obj and obj["table"].get("name") == self.table:
                table_handle = obj["table"].get("handle")
            elif "set" in obj and obj["set"].get("name") == name:
                set_obj = obj["set"]
        if set_obj is None or table_handle is None:
            raise DataplaneError(f"{self._where()}: set {name} not found")
        names = self._flows[role]
        counts = {names[key]: value for key, value in _elements(set_obj) if isinstance(key, tuple) and key in names}
        generation = f"{self.nft.netns_cookie or 0}.{table_handle}.{set_obj.get('handle')}"
        return Reading(role, colour, counts, generation)

    def rule_count(self) -> int:
        """The number of rules in the table (constant: 3, whatever the number of flows)."""
        out = self._run("listing the table", [{"list": {"table": {"family": FAMILY, "name": self.table}}}],
                        needs_table=True)
        return sum(1 for obj in out if "rule" in obj)

    def remove(self) -> None:
        """Delete the table with its counters; idempotent."""
        if self.exists():
            self._run("removing", [{"delete": {"table": {"family": FAMILY, "name": self.table}}}])
        self._flows = None
        self._names = {}
        self._colour = None
