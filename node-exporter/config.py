"""The node exporter's configuration file (YAML or JSON).

::

    node: r1                      # this router's name, as in the records (optional when
                                  # given outside the file: --node or $SRV6PM_NODE)
    netns: r1                     # optional: the data plane's network namespace
                                  # (management traffic, i.e. Kafka, stays in the
                                  # exporter's own namespace)
    period: 2                     # alternate-marking period, seconds (optional with --period)
    dataplane: ebpf               # ebpf (default: RFC 9343 option, counting at every hop, the
                                  # customer's DSCP untouched) or nftables (kernels without BPF:
                                  # the colour in two DSCP codepoints, which rewrites the DSCP)
    dscp: [11, 15]                # nftables data plane: DSCP of colour 0 and colour 1 (optional)
    state_file: /var/lib/srv6pm/r1.json   # baselines across restarts (optional); the
                                  # applied state is kept beside it (<state_file>.intent.db)
    buffer_size: 256MiB           # records that cannot be published yet (the broker away) wait on
                                  # disk, up to this many bytes (a number, or one with KiB, MiB or
                                  # GiB; default 256MiB, at least 64KiB); beyond it the oldest are
                                  # dropped and counted. --buffer-size or $SRV6PM_BUFFER_SIZE win.
    buffer_dir: /var/lib/srv6pm/r1.json.buffer   # where they wait (default <state_file>.buffer;
                                  # without a state file, a temporary directory removed at exit).
                                  # --buffer-dir or $SRV6PM_BUFFER_DIR win.
    grpc:                         # the southbound API (optional; flags of `srv6pm exporter run`
                                  # override it)
      listen: "[::]:50051"        # host:port; "" or "none": no API (file-only mode)
      plaintext: false            # true: serve without TLS (a lab on one machine only)
      tls:                        # server certificate and key; with client_ca, mutual TLS
        cert: /etc/srv6pm/tls/exporter.pem
        key: /etc/srv6pm/tls/exporter.key
        client_ca: /etc/srv6pm/tls/ca.pem
    flows:                        # optional: flows monitored from the start (default none;
                                  # more come over the API)
      - name: f1
        role: ingress             # ingress (marks + counts), transit or egress (count)
        src: fd01:1::2/128        # inner source prefix
        dst: fd01:4::101/128      # inner destination prefix
        flowmon_id: 17            # ebpf data plane: the flow's RFC 9343 FlowMonID (1..1048575)
        position: 0               # ebpf data plane: the point's index on the path (0: ingress)
    stamp:                        # optional: STAMP delay measurement (RFC 8762) from the start
      reflector:                  # answer test packets on this node
        bind: "fcff:4::2"         # without bind, no reflector starts from the file (backend still counts)
        port: 862                 # optional
        stateful: false           # optional
        auth_key_file: /etc/srv6pm/stamp.key   # optional: authenticated mode
        backend: ebpf             # optional: ebpf (default: answered in the kernel where it can, see
                                  # srv6pm.stamp.ebpf) or socket; also the backend of reflectors the
                                  # API starts without one
      sessions:                   # send test packets from this node
        - name: s1
          dest: "fcff:4::2"       # the reflector's address
          source: "fcff:1::2"     # optional
          segments: ["fcff:2::1", "fcff:3::1"]          # forward SRv6 SIDs (optional)
          return_segments: ["fcff:3::1", "fcff:2::1"]   # Return Path TLV (optional)
          rate: 10                # test packets per second
          timeout: 2              # seconds until a packet counts as lost (optional)
          reflector: r4           # reflector's node name, for the records (optional)
          auth_key_file: ...      # optional
          liveness: {down_after: 3, up_after: 3}   # optional: watch the path (true: these defaults;
                                  # liveness alarms on srv6pm.alarms, path_down/path_up on srv6pm.events)

:func:`load` validates the whole file and raises :class:`ConfigError` with a
one-line message naming the file and the field. The YAML values' types are
checked like those of scenarios and the collector's file
(:class:`srv6pm.netspec.Validator`); the flows and STAMP settings are then the
southbound API's messages, with its rules and defaults
(:mod:`srv6pm.southbound.validate`, :data:`~srv6pm.southbound.validate.DEFAULTS`):
a prefix is strict (host bits set is an error; a bare address is a /128), a
port or timeout left out is the API's default, errors read like the API's
(``stamp.sessions[0].timeout: 99 not in 0.01..60``).

``node``, ``period``, ``dataplane``, ``buffer_size`` and ``buffer_dir`` may also come from outside the file (the command
line, the environment) as an :class:`Override`, which wins over the file;
the file may then leave them out. An override is validated like the file's
value and its error names the override's origin (``--node: ...``,
``SRV6PM_NODE: ...``). A value the file does give is checked even when it is
overridden, so a file is never silently wrong.

The flows and STAMP settings of the file are the exporter's initial state:
:meth:`ExporterConfig.objects` lists them as the validated messages, which the
exporter applies through the same code path as the API's requests.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from srv6pm import netspec, yamlfile
from srv6pm.errors import InputError
from srv6pm.exporter.dataplane import DEFAULT_DSCP
from srv6pm.netspec import kind
from srv6pm.quote import quote
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.stamp.backends import BACKENDS, DEFAULT_BACKEND

__all__ = ["ConfigError", "ExporterConfig", "GrpcSettings", "Override", "load", "parse"]

ROLES = tuple(validate.ROLE_NAMES.values())
DATAPLANES = netspec.DATAPLANES
DEFAULT_BUFFER_SIZE = 256 * 2**20
MIN_BUFFER_SIZE = 64 * 2**10
MAX_BUFFER_SIZE = 2**50  # 1 PiB: a bound on what a disk can hold, so that no size overflows
_UNITS = {"": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB)?\s*$")


class ConfigError(InputError, ValueError):
    """The exporter configuration is invalid; ``str()`` is one line."""


class Override(NamedTuple):
    """A setting given outside the file and where it came from, for errors: ``Override("r1", "SRV6PM_NODE")``.

    ``value`` is what the source holds: text from the command line or the
    environment (a period as text is read as a number), or a ready value.
    """

    value: object
    origin: str


@dataclass(frozen=True)
class GrpcSettings:
    """The ``grpc`` section: where the southbound API listens and how it is secured.

    ``listen`` None means "not given" (the command line's default applies);
    ``""`` means no API. TLS files are paths (None: not given).
    """

    listen: str | None = None
    plaintext: bool = False
    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None


@dataclass(frozen=True)
class ExporterConfig:
    """A validated exporter configuration.

    ``flows``, ``reflector`` and ``sessions`` are the file's initial objects as
    southbound messages, validated and normalised by
    :mod:`srv6pm.southbound.validate` (the API's own rules and defaults).
    """

    node: str
    period: float
    flows: tuple[pb.FlowMonitor, ...]
    netns: str | None = None
    dataplane: str = netspec.DEFAULT_DATAPLANE
    dscp: tuple[int, int] = DEFAULT_DSCP
    state_file: str | None = None
    reflector: pb.StampReflector | None = None
    sessions: tuple[pb.StampSession, ...] = ()
    grpc: GrpcSettings = GrpcSettings()
    reflector_backend: str = DEFAULT_BACKEND  # for a StampReflector whose backend is "" (stamp.reflector.backend)
    buffer_size: int = DEFAULT_BUFFER_SIZE  # bytes of unpublished records kept on disk at most
    buffer_dir: str | None = None  # None: <state_file>.buffer, or a temporary directory without a state file

    def buffer_path(self) -> str | None:
        """The buffer's directory: ``buffer_dir``, else ``<state_file>.buffer``; None: none configured."""
        if self.buffer_dir:
            return self.buffer_dir
        return f"{self.state_file}.buffer" if self.state_file else None

    def objects(self) -> list:
        """The file's flows and STAMP settings as southbound API messages (validated), in file order:
        flows, the reflector, sessions."""
        return [*self.flows, *([self.reflector] if self.reflector is not None else []), *self.sessions]


def load(path: str | Path, *, node: Override | None = None, period: Override | None = None,
         dataplane: Override | None = None, buffer_size: Override | None = None,
         buffer_dir: Override | None = None) -> ExporterConfig:
    """Read and validate the file at ``path``; the overrides win over the file's values (see :func:`parse`)."""
    path = Path(path)
    return parse(yamlfile.read(path, ConfigError), str(path), node=node, period=period, dataplane=dataplane,
                 buffer_size=buffer_size, buffer_dir=buffer_dir)


def parse(text: str, source: str = "<config>", *, node: Override | None = None,
          period: Override | None = None, dataplane: Override | None = None,
          buffer_size: Override | None = None, buffer_dir: Override | None = None) -> ExporterConfig:
    """Validate the configuration ``text`` (``source`` names it in errors).

    ``node`` and ``period``, when given, win over the file's values, which
    then become optional; each is validated with its own origin in the error.
    """
    reader = _Reader(source)
    fail = reader.fail
    doc = reader.mapping(yamlfile.parse(text, source, ConfigError), "",
                         {"node", "netns", "period", "dataplane", "dscp", "state_file", "flows", "stamp", "grpc",
                          "buffer_size", "buffer_dir"}, set())
    if "node" in doc:
        file_node = _node(doc["node"], lambda m: fail("node", m))
    if "period" in doc:
        file_period = _period(doc["period"], lambda m: fail("period", m))
    if node is not None:
        chosen_node = _node(node.value, lambda m, o=node.origin: ConfigError(f"{o}: {m}"))
    elif "node" in doc:
        chosen_node = file_node
    else:
        raise fail("node", "missing (or give --node or $SRV6PM_NODE)")
    if period is not None:
        text_ok = isinstance(period.value, str)
        chosen_period = _period(period.value, lambda m, o=period.origin: ConfigError(f"{o}: {m}"), text_ok=text_ok)
    elif "period" in doc:
        chosen_period = file_period
    else:
        raise fail("period", "missing (or give --period)")
    netns = doc.get("netns")
    if netns is not None and (not isinstance(netns, str) or not netspec.NAME.fullmatch(netns)):
        raise fail("netns", f"{quote(netns)} is not a valid namespace name")
    file_dataplane = _dataplane(doc.get("dataplane", netspec.DEFAULT_DATAPLANE), lambda m: fail("dataplane", m))
    if dataplane is not None:
        chosen_dataplane = _dataplane(dataplane.value, lambda m, o=dataplane.origin: ConfigError(f"{o}: {m}"))
    else:
        chosen_dataplane = file_dataplane
    dscp = doc.get("dscp", list(DEFAULT_DSCP))
    if (not isinstance(dscp, list) or len(dscp) != 2 or any(isinstance(d, bool) or not isinstance(d, int) for d in dscp)
            or not all(0 <= d <= 63 for d in dscp) or dscp[0] == dscp[1]):
        raise fail("dscp", f"must be two different DSCP values 0..63 (colour 0, colour 1), got {quote(dscp)}")
    state_file = doc.get("state_file")
    if state_file is not None and not isinstance(state_file, str):
        raise fail("state_file", "must be a path")
    size = _buffer_size(doc.get("buffer_size", DEFAULT_BUFFER_SIZE), lambda m: fail("buffer_size", m))
    if buffer_size is not None:
        size = _buffer_size(buffer_size.value, lambda m, o=buffer_size.origin: ConfigError(f"{o}: {m}"))
    directory = doc.get("buffer_dir")
    if directory is not None and (not isinstance(directory, str) or not directory.strip()):
        raise fail("buffer_dir", "must be a directory path")
    if buffer_dir is not None:
        if not isinstance(buffer_dir.value, str) or not buffer_dir.value.strip():
            raise ConfigError(f"{buffer_dir.origin}: must be a directory path")
        directory = buffer_dir.value
    flows = reader.flows(doc.get("flows") if doc.get("flows") is not None else [])  # "flows:" alone: none
    reflector, sessions, backend = reader.stamp(doc.get("stamp"))
    return ExporterConfig(node=chosen_node, period=chosen_period, flows=flows, netns=netns,
                          dataplane=chosen_dataplane,
                          dscp=(dscp[0], dscp[1]), state_file=state_file, reflector=reflector, sessions=sessions,
                          grpc=_grpc(doc.get("grpc"), fail), reflector_backend=backend, buffer_size=size,
                          buffer_dir=directory)


def _buffer_size(value, fail) -> int:
    """Bytes from an integer or text such as ``"256MiB"`` (KiB, MiB, GiB); at least 64 KiB."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        amount = float(match.group(1)) * _UNITS[match.group(2) or ""]
        number = int(amount) if amount <= MAX_BUFFER_SIZE else MAX_BUFFER_SIZE + 1  # inf: too large, not a crash
    if number is None or number < MIN_BUFFER_SIZE:
        raise fail(f"must be a size of at least 64KiB (bytes, or a number with KiB, MiB or GiB), got {quote(value)}")
    if number > MAX_BUFFER_SIZE:
        raise fail(f"must be a size of at most 1048576GiB (1 PiB), got {quote(value)}")
    return number


def _dataplane(value, fail) -> str:
    if value not in DATAPLANES:
        raise fail(f"must be one of {', '.join(DATAPLANES)}, got {quote(value)}")
    return value


def _node(value, fail) -> str:
    if not isinstance(value, str) or not netspec.NAME.fullmatch(value):
        raise fail(f"{quote(value)} is not a valid node name (letters, digits, '_', '.', '-'; at most 64)")
    return value


def _period(value, fail, *, text_ok: bool = False) -> float:
    """Seconds from 0.5 to 3600; ``text_ok``: text (from a flag) is read as a number."""
    number = value
    if text_ok and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0.5 <= number <= 3600:
        raise fail(f"must be a number of seconds from 0.5 to 3600, got {quote(value)}")
    return float(number)


def _grpc(doc, fail) -> GrpcSettings:
    if doc is None:
        return GrpcSettings()
    if not isinstance(doc, dict):
        raise fail("grpc", "must be a mapping with listen, plaintext and/or tls")
    for key in doc:
        if key not in ("listen", "plaintext", "tls"):
            raise fail(f"grpc.{key}", "unknown field (allowed: listen, plaintext, tls)")
    listen = doc.get("listen")
    if listen is not None and not isinstance(listen, str):
        raise fail("grpc.listen", f"must be host:port, \"\" or \"none\", got {quote(listen)}")
    plaintext = doc.get("plaintext", False)
    if not isinstance(plaintext, bool):
        raise fail("grpc.plaintext", "must be true or false")
    tls = doc.get("tls") if doc.get("tls") is not None else {}
    if not isinstance(tls, dict):
        raise fail("grpc.tls", "must be a mapping with cert, key and client_ca")
    for key, value in tls.items():
        if key not in ("cert", "key", "client_ca"):
            raise fail(f"grpc.tls.{key}", "unknown field (allowed: cert, client_ca, key)")
        if not isinstance(value, str) or not value:
            raise fail(f"grpc.tls.{key}", "must be a file path")
    return GrpcSettings(listen=listen, plaintext=plaintext, cert=tls.get("cert"), key=tls.get("key"),
                        client_ca=tls.get("client_ca"))


def _key_file(value: str) -> str:
    """A key file path as the southbound API takes it: absolute (relative to the working directory)."""
    return os.path.abspath(value) if value else ""


class _Reader(netspec.Validator):
    """The file's flows and STAMP settings as southbound messages: the YAML values' types are checked
    here (:class:`srv6pm.netspec.Validator`, as for scenarios and the collector's file), every rule
    and default of the objects is :mod:`srv6pm.southbound.validate`'s."""

    def __init__(self, source: str):
        super().__init__(source, ConfigError)

    def flows(self, value: Any) -> tuple[pb.FlowMonitor, ...]:
        flows: list[pb.FlowMonitor] = []
        seen_matches: dict[tuple, str] = {}
        seen: set = set()
        for i, item in enumerate(self.sequence(value, "flows")):
            f = f"flows[{i}]"
            item = self.mapping(item, f, {"name", "role", "src", "dst", "flowmon_id", "position"},
                                {"name", "role", "src", "dst"})
            role = item["role"]
            if role not in ROLES:
                raise self.fail(f"{f}.role", f"must be one of {', '.join(ROLES)}, got {quote(role)}")
            monitor = self.checked(validate.flow_monitor, pb.FlowMonitor(
                flow=self.text(item["name"], f"{f}.name", "a flow name"), role=validate.ROLE_VALUES[role],
                source_prefix=self.text(item["src"], f"{f}.src", "an IPv6 prefix"),
                destination_prefix=self.text(item["dst"], f"{f}.dst", "an IPv6 prefix"),
                flowmon_id=self.whole(item.get("flowmon_id", 0), f"{f}.flowmon_id"),
                position=self.whole(item.get("position", 0), f"{f}.position")),
                f, {"flow": f"{f}.name", "role": f"{f}.role", "source_prefix": f"{f}.src",
                    "destination_prefix": f"{f}.dst", "flowmon_id": f"{f}.flowmon_id", "position": f"{f}.position"})
            if validate.key_of(monitor) in seen:
                raise self.fail(f"{f}.name", f"flow {quote(monitor.flow)} is listed twice as {role}")
            seen.add(validate.key_of(monitor))
            match = (role, monitor.source_prefix, monitor.destination_prefix)
            if role != "transit" and match in seen_matches:
                raise self.fail(f, f"same {role} src/dst as flow {quote(seen_matches[match])}: "
                                "the counters could not tell them apart")
            seen_matches.setdefault(match, monitor.flow)
            flows.append(monitor)
        return tuple(flows)

    def flag(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(field, f"must be true or false, got {kind(value)}")
        return value

    def addresses(self, value: Any, field: str) -> list[str]:
        return [self.text(v, f"{field}[{j}]", "an IPv6 SID")
                for j, v in enumerate(self.sequence(value, field, "a list of IPv6 SIDs"))]

    def stamp(self, value: Any) -> tuple[pb.StampReflector | None, tuple[pb.StampSession, ...], str]:
        """The file's reflector (None: none), its sessions, and the reflector backend (default ebpf)."""
        if value is None:
            return None, (), DEFAULT_BACKEND
        if not isinstance(value, dict):
            raise self.fail("stamp", "must be a mapping with 'reflector' and/or 'sessions'")
        doc = self.mapping(value, "stamp", {"reflector", "sessions"}, set())
        reflector = None
        backend = DEFAULT_BACKEND
        if doc.get("reflector") is not None:
            f = "stamp.reflector"
            raw = doc["reflector"]
            only_backend = isinstance(raw, dict) and set(raw) == {"backend"}
            r = self.mapping(raw, f, {"bind", "port", "stateful", "auth_key_file", "backend"},
                             set() if only_backend else {"bind"})
            if "backend" in r:
                backend = r["backend"]
                if backend not in BACKENDS:
                    raise self.fail(f"{f}.backend", f"must be one of {', '.join(BACKENDS)}, got {quote(backend)}")
            stateful = self.flag(r.get("stateful", False), f"{f}.stateful")
            if not only_backend:
                reflector = self.checked(validate.stamp_reflector, pb.StampReflector(
                    bind=self.text(r["bind"], f"{f}.bind", "an IP address"),
                    port=self.given(validate.port, self.whole(r.get("port", 0), f"{f}.port"), "port" in r, f"{f}.port"),
                    stateful=stateful, backend=r.get("backend", ""),
                    auth_key_file=_key_file(self.text(r.get("auth_key_file") or "", f"{f}.auth_key_file",
                                                      "a file path"))),
                    f, {name: f"{f}.{name}" for name in ("bind", "port", "auth_key_file", "backend")})
        sessions = []
        names: set[str] = set()
        for i, item in enumerate(self.sequence(doc.get("sessions", []), "stamp.sessions")):
            f = f"stamp.sessions[{i}]"
            item = self.mapping(item, f, {"name", "dest", "source", "port", "segments", "return_segments", "rate",
                                          "timeout", "reflector", "auth_key_file", "liveness"}, {"name", "dest", "rate"})
            name = self.unique(self.name(item["name"], f"{f}.name", "session"), f"{f}.name", names, "session")
            liveness = self.liveness(item.get("liveness", False), f"{f}.liveness")
            rate = self.real(item["rate"], f"{f}.rate")
            timeout = self.real(item.get("timeout", 0), f"{f}.timeout")
            sessions.append(self.checked(validate.stamp_session, pb.StampSession(
                name=name, destination=self.text(item["dest"], f"{f}.dest", "an IP address"),
                source=self.text(item.get("source") or "", f"{f}.source", "an IP address"),
                port=self.given(validate.port, self.whole(item.get("port", 0), f"{f}.port"), "port" in item,
                                f"{f}.port"),
                segments=self.addresses(item.get("segments", []), f"{f}.segments"),
                return_segments=self.addresses(item.get("return_segments", []), f"{f}.return_segments"),
                rate=rate, timeout_s=self.given(validate.stamp_timeout, timeout, "timeout" in item, f"{f}.timeout"),
                reflector_node=self.text(item.get("reflector") or "", f"{f}.reflector", "a node name"),
                auth_key_file=_key_file(self.text(item.get("auth_key_file") or "", f"{f}.auth_key_file",
                                                  "a file path")),
                **validate.liveness_fields(liveness)),
                f, {"name": f"{f}.name", "destination": f"{f}.dest", "source": f"{f}.source", "port": f"{f}.port",
                    "segments": f"{f}.segments", "return_segments": f"{f}.return_segments", "rate": f"{f}.rate",
                    "timeout_s": f"{f}.timeout", "reflector_node": f"{f}.reflector",
                    "auth_key_file": f"{f}.auth_key_file"}))
        return reflector, tuple(sessions), backend
