"""Desired state per node, and the ordered actions that get a node there.

:func:`desired_state` turns a :class:`~srv6pm.collector.config.Config` into,
for every node, the southbound objects it should hold. It only places them:
the configuration already holds them as NORMALISED messages
(:mod:`srv6pm.southbound.validate`, applied when the file is read), so that
they compare equal to what the exporter reports in ``GetState``:

* every node: a ``LocalSid`` per configured SID;
* a flow's ``from``: a ``Policy`` (name = flow) and a ``FlowMonitor`` INGRESS;
* a flow's ``to``: a ``FlowMonitor`` EGRESS;
* with the ebpf data plane (the configuration's ``dataplane``), also each of
  a flow's ``via`` nodes: a ``FlowMonitor`` TRANSIT. Every monitor of the
  flow carries the flow's ``flowmon_id`` (``Config.flowmon_ids``, allocated
  by :mod:`srv6pm.collector.flowmon`, whatever the data plane) and its
  ``position`` among the flow's counting points in path order: with ebpf 0
  the ingress, 1..n the via nodes, n+1 the egress (a segment that is no
  configured node is no counting point and has no position); with the
  nftables data plane there are no transit monitors, the ingress is 0 and
  the egress 1 (the exporter counts by prefixes and puts only the
  ``flowmon_id`` on its records, no position: the processor computes no
  segments for the two ends);
* a session's ``from``: a ``StampSession`` to ``to``'s measurement address;
* every node that is the ``to`` of a session: one ``StampReflector`` bound to
  its measurement address.

Objects are keyed by :data:`Key` = (message type name, ``validate.key_of``),
because names of different kinds may coincide (a policy and a session both
called ``f1``).

Every object has a PHASE, the order in which the collector puts objects in
place across the whole network (so that nothing counts before what it is
counted against exists, and no loss is invented while setting up):

1. local SIDs;
2. egress and transit flow monitors, and STAMP reflectors;
3. policies;
4. ingress flow monitors and STAMP sessions.

:func:`diff` compares a node's desired objects with its actual ones and gives
the actions: removals first, in reverse phase order (4, 3, 2, 1), then
applies in phase order (1..4); an object present under the same key but
different is applied again (the exporter replaces it in one step). Each
action's :attr:`Action.step` (0..7) is its position in that order, the unit
by which the engine advances all nodes together.

:func:`prerequisite` names the object on another node that must be in place
before an object is applied: an ingress monitor waits for its flow's egress
monitor (not for the transit ones: a transit node that is down makes
its segments incomplete, not the flow), a STAMP session for its reflector.

Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from srv6pm.collector.config import Config, Flow
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb

__all__ = ["Action", "Key", "PHASES", "STEPS", "actual_state", "describe", "desired_state", "diff",
           "flow_monitors", "key", "phase_of", "prerequisite", "to_json"]

Key = tuple[str, Any]
"""(message type name, ``validate.key_of(message)``)."""

PHASES = (1, 2, 3, 4)
STEPS = tuple([("remove", p) for p in reversed(PHASES)] + [("apply", p) for p in PHASES])
"""The order of actions: (verb, phase) for step 0..7."""
_STEP_OF = {verb_phase: step for step, verb_phase in enumerate(STEPS)}

_ROLE_NAME = validate.ROLE_NAMES


def key(message) -> Key:
    """The identity of an object across all kinds."""
    return (type(message).DESCRIPTOR.name, validate.key_of(message))


def phase_of(message) -> int:
    """1 local SID, 2 egress or transit monitor or reflector, 3 policy, 4 ingress monitor or STAMP session."""
    if isinstance(message, pb.LocalSid):
        return 1
    if isinstance(message, pb.StampReflector):
        return 2
    if isinstance(message, pb.FlowMonitor):
        return 2 if message.role in (pb.ROLE_EGRESS, pb.ROLE_TRANSIT) else 4
    if isinstance(message, pb.Policy):
        return 3
    if isinstance(message, pb.StampSession):
        return 4
    raise TypeError(f"not a southbound object: {type(message).__name__}")


def describe(message) -> str:
    """The object as named in events: ``policy f1``, ``local_sid fcff:1::1``, ``flow f1 ingress``,
    ``flow f1 transit``, ..."""
    if isinstance(message, pb.LocalSid):
        return f"local_sid {message.sid}"
    if isinstance(message, pb.Policy):
        return f"policy {message.name}"
    if isinstance(message, pb.FlowMonitor):
        return f"flow {message.flow} {_ROLE_NAME.get(message.role, message.role)}"
    if isinstance(message, pb.StampSession):
        return f"stamp_session {message.name}"
    if isinstance(message, pb.StampReflector):
        return "stamp_reflector"
    raise TypeError(f"not a southbound object: {type(message).__name__}")


def desired_state(config: Config) -> dict[str, dict[Key, Any]]:
    """Node name -> {key: normalised message} for every node of ``config`` (empty dict if nothing).

    Every flow needs its FlowMonID in ``config.flowmon_ids``: ValueError otherwise.
    """
    out: dict[str, dict[Key, Any]] = {n.name: {} for n in config.nodes}

    def put(node: str, message) -> None:
        out[node][key(message)] = message

    for n in config.nodes:
        for sid in n.sids:
            put(n.name, sid)
    for f in config.flows:
        put(f.src, f.policy)
        for node, monitor in flow_monitors(config, f):
            put(node, monitor)
    for s in config.stamp:
        put(s.src, s.message)
        put(s.dst, s.reflector)
    return out


def flow_monitors(config: Config, flow: Flow) -> list[tuple[str, pb.FlowMonitor]]:
    """(node, monitor) for each counting point of ``flow``, in path order (see the module docstring).

    Each is the flow's validated ingress monitor (``flow.monitor``) at its role and position: a normal
    form by construction (:func:`srv6pm.southbound.validate.flow_monitor` holds the rule).
    """
    def monitor(role: pb.Role, flowmon_id: int = 0, position: int = 0) -> pb.FlowMonitor:
        out = pb.FlowMonitor()
        out.CopyFrom(flow.monitor)
        out.role, out.flowmon_id, out.position = role, flowmon_id, position
        return out

    try:
        flowmon_id = config.flowmon_ids[flow.name]
    except KeyError:
        raise ValueError(f"flow {flow.name!r} has no FlowMonID: every flow needs one "
                         "(srv6pm.collector.flowmon.assign)") from None
    via = flow.via if config.dataplane == "ebpf" else ()
    points = [(flow.src, pb.ROLE_INGRESS), *((v, pb.ROLE_TRANSIT) for v in via), (flow.dst, pb.ROLE_EGRESS)]
    return [(node, monitor(role, flowmon_id, position)) for position, (node, role) in enumerate(points)]


def prerequisite(config: Config, node: str, message) -> tuple[str, Key] | None:
    """(node, key) of the object that must be in place before ``message`` is applied at ``node``, or None.

    An ingress ``FlowMonitor`` needs its flow's egress monitor (else the
    ingress counts packets nobody counts at the other end); a ``StampSession``
    needs the reflector of its ``to`` node (else every test packet is lost).
    """
    if isinstance(message, pb.FlowMonitor) and message.role == pb.ROLE_INGRESS:
        flow = config.flow(message.flow)
        if flow is not None:
            return flow.dst, ("FlowMonitor", (message.flow, pb.ROLE_EGRESS))
    if isinstance(message, pb.StampSession):
        session = config.session(message.name)
        if session is not None:
            return session.dst, ("StampReflector", validate.REFLECTOR_KEY)
    return None


def actual_state(state: pb.NodeState, normalise: Callable[[Any], Any] = validate.request) -> dict[Key, Any]:
    """The objects of a ``GetState`` answer, keyed like :func:`desired_state`.

    Each is normalised again with ``normalise`` (``validate.request``, or a
    memo of it; idempotent for a conforming exporter); one that does not
    validate is kept as reported, so it differs from any desired object and
    is replaced or removed.
    """
    items: list = [*state.local_sids, *state.policies, *state.flows, *state.stamp_sessions]
    if state.HasField("stamp_reflector"):
        items.append(state.stamp_reflector)
    out: dict[Key, Any] = {}
    for message in items:
        try:
            message = normalise(message)
        except validate.InvalidArgument:
            pass
        out[key(message)] = message
    return out


@dataclass(frozen=True)
class Action:
    """Apply ``message``, or remove the object ``message`` (as reported by the exporter)."""

    verb: str  # "apply" | "remove"
    message: Any
    phase: int
    replaces: bool = False  # apply over a different object under the same key

    @property
    def step(self) -> int:
        return _STEP_OF[(self.verb, self.phase)]

    @property
    def key(self) -> Key:
        return key(self.message)

    @property
    def object(self) -> str:
        return describe(self.message)


def diff(desired: Mapping[Key, Any], actual: Mapping[Key, Any], *, full: bool = False) -> list[Action]:
    """The actions that turn ``actual`` into ``desired``, in step order.

    Removals of what is not desired come first, in reverse phase order; then
    applies of what is missing or different (or, with ``full``, of everything
    desired: after an exporter restart the kernel may have lost what the
    exporter still reports), in phase order. Within a step, objects keep the
    order of ``desired`` / ``actual``.
    """
    actions = [Action("remove", m, phase_of(m)) for k, m in actual.items() if k not in desired]
    for k, m in desired.items():
        current = actual.get(k)
        if full or current is None or current != m:
            actions.append(Action("apply", m, phase_of(m), replaces=current is not None and current != m))
    return sorted(actions, key=lambda a: a.step)  # stable: keeps the order within a step


def to_json(state: Mapping[str, Mapping[Key, Any]]) -> dict:
    """Desired state as JSON-able data: node -> list of {object, phase, message fields}."""
    from google.protobuf.json_format import MessageToDict
    return {node: [{"object": describe(m), "kind": type(m).DESCRIPTOR.name, "phase": phase_of(m),
                    **MessageToDict(m, preserving_proto_field_name=True)}
                   for m in sorted(objects.values(), key=phase_of)]
            for node, objects in state.items()}
