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
one-line message naming the file and the field.

``node``, ``period``, ``dataplane``, ``buffer_size`` and ``buffer_dir`` may also come from outside the file (the command
line, the environment) as an :class:`Override`, which wins over the file;
the file may then leave them out. An override is validated like the file's
value and its error names the override's origin (``--node: ...``,
``SRV6PM_NODE: ...``). A value the file does give is checked even when it is
overridden, so a file is never silently wrong.

The flows and STAMP settings of the file are the exporter's initial state:
:meth:`ExporterConfig.objects` turns them into the southbound API's messages,
which the exporter applies through the same code path as the API's requests.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from srv6pm import yamlfile
from srv6pm.errors import InputError
from srv6pm.quote import quote
from srv6pm.southbound import validate
from srv6pm.southbound.validate import (DEFAULT_TIMEOUT_S, FLOWMON_ID_MAX, POSITION_MAX, RATE_RANGE, ROLE_NAMES,
                                        TIMEOUT_RANGE)
from srv6pm.stamp.backends import BACKENDS, DEFAULT_BACKEND
from srv6pm.stamp.protocol import STAMP_PORT

__all__ = ["ConfigError", "ExporterConfig", "FlowConfig", "GrpcSettings", "Override", "ReflectorSettings",
           "SessionSettings", "load", "parse"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ROLES = tuple(ROLE_NAMES.values())
DATAPLANES = ("ebpf", "nftables")
DEFAULT_BUFFER_SIZE = 256 * 2**20
MIN_BUFFER_SIZE = 64 * 2**10
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
class FlowConfig:
    name: str
    role: str
    src: str  # normalised prefix text
    dst: str
    flowmon_id: int = 0
    position: int = 0


@dataclass(frozen=True)
class ReflectorSettings:
    bind: str
    port: int = STAMP_PORT
    stateful: bool = False
    auth_key_file: str | None = None
    backend: str = ""  # as the file says it ("": not said)


@dataclass(frozen=True)
class SessionSettings:
    name: str
    dest: str
    rate: float
    source: str | None = None
    port: int = STAMP_PORT
    segments: tuple[str, ...] = ()
    return_segments: tuple[str, ...] = ()
    timeout: float = 2.0
    reflector: str | None = None
    auth_key_file: str | None = None
    liveness: tuple[int, int] | None = None  # (down_after, up_after); None: the path is not watched


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
    node: str
    period: float
    flows: tuple[FlowConfig, ...]
    netns: str | None = None
    dataplane: str = "ebpf"
    dscp: tuple[int, int] = (11, 15)
    state_file: str | None = None
    reflector: ReflectorSettings | None = None
    sessions: tuple[SessionSettings, ...] = ()
    grpc: GrpcSettings = GrpcSettings()
    reflector_backend: str = "ebpf"  # for a StampReflector whose backend is "" (stamp.reflector.backend)
    buffer_size: int = DEFAULT_BUFFER_SIZE  # bytes of unpublished records kept on disk at most
    buffer_dir: str | None = None  # None: <state_file>.buffer, or a temporary directory without a state file

    def buffer_path(self) -> str | None:
        """The buffer's directory: ``buffer_dir``, else ``<state_file>.buffer``; None: none configured."""
        if self.buffer_dir:
            return self.buffer_dir
        return f"{self.state_file}.buffer" if self.state_file else None

    def flows_of(self, role: str) -> list[FlowConfig]:
        return [f for f in self.flows if f.role == role]

    def objects(self) -> list:
        """The file's flows and STAMP settings as southbound API messages (not yet validated).

        Key file paths are made absolute (the API takes absolute paths only).
        """
        import os

        from srv6pm.southbound.v1 import southbound_pb2 as pb
        roles = {name: value for value, name in ROLE_NAMES.items()}
        out: list = [pb.FlowMonitor(flow=f.name, role=roles[f.role], source_prefix=f.src, destination_prefix=f.dst,
                                    flowmon_id=f.flowmon_id, position=f.position)
                     for f in self.flows]
        if self.reflector is not None:
            r = self.reflector
            out.append(pb.StampReflector(bind=r.bind, port=r.port, stateful=r.stateful, backend=r.backend,
                                         auth_key_file=os.path.abspath(r.auth_key_file) if r.auth_key_file else ""))
        for s in self.sessions:
            out.append(pb.StampSession(name=s.name, destination=s.dest, source=s.source or "", port=s.port,
                                       segments=s.segments, return_segments=s.return_segments, rate=s.rate,
                                       timeout_s=s.timeout, reflector_node=s.reflector or "",
                                       auth_key_file=os.path.abspath(s.auth_key_file) if s.auth_key_file else "",
                                       **validate.liveness_fields(s.liveness)))
        return out



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
    def fail(field: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: {field}: {message}" if field else f"{source}: {message}")

    doc = yamlfile.parse(text, source, ConfigError)
    if not isinstance(doc, dict):
        raise fail("", "must be a mapping")
    allowed = {"node", "netns", "period", "dataplane", "dscp", "state_file", "flows", "stamp", "grpc", "buffer_size",
               "buffer_dir"}
    for key in doc:
        if key not in allowed:
            raise fail(str(key), f"unknown field (allowed: {', '.join(sorted(allowed))})")
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
    if netns is not None and (not isinstance(netns, str) or not _NAME.match(netns)):
        raise fail("netns", f"{quote(netns)} is not a valid namespace name")
    file_dataplane = _dataplane(doc.get("dataplane", "ebpf"), lambda m: fail("dataplane", m))
    if dataplane is not None:
        chosen_dataplane = _dataplane(dataplane.value, lambda m, o=dataplane.origin: ConfigError(f"{o}: {m}"))
    else:
        chosen_dataplane = file_dataplane
    dscp = doc.get("dscp", [11, 15])
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
    flows_raw = doc.get("flows", [])
    if flows_raw is None:
        flows_raw = []
    if not isinstance(flows_raw, list):
        raise fail("flows", "must be a list")
    flows = []
    seen = set()
    seen_matches: dict[tuple, str] = {}
    for i, item in enumerate(flows_raw):
        field = f"flows[{i}]"
        if not isinstance(item, dict):
            raise fail(field, "must be a mapping")
        for key in item:
            if key not in ("name", "role", "src", "dst", "flowmon_id", "position"):
                raise fail(f"{field}.{key}", "unknown field (allowed: dst, flowmon_id, name, position, role, src)")
        for key in ("name", "role", "src", "dst"):
            if key not in item:
                raise fail(f"{field}.{key}", "missing")
        name = item["name"]
        if not isinstance(name, str) or not _NAME.match(name):
            raise fail(f"{field}.name", f"{quote(name)} is not a valid flow name")
        role = item["role"]
        if role not in ROLES:
            raise fail(f"{field}.role", f"must be one of {', '.join(ROLES)}, got {quote(role)}")
        if (name, role) in seen:
            raise fail(f"{field}.name", f"flow {quote(name)} is listed twice as {role}")
        seen.add((name, role))
        prefixes = []
        for key in ("src", "dst"):
            try:
                prefixes.append(str(ipaddress.IPv6Network(str(item[key]), strict=False)))
            except ValueError as exc:
                raise fail(f"{field}.{key}", f"not an IPv6 prefix: {exc}") from None
        numbers: list[int] = []
        for key, high in (("flowmon_id", FLOWMON_ID_MAX), ("position", POSITION_MAX)):
            value = item.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                raise fail(f"{field}.{key}", f"must be an integer 0..{high}, got {quote(value)}")
            numbers.append(value)
        if role != "transit" and (role, *prefixes) in seen_matches:
            raise fail(f"{field}", f"same {role} src/dst as flow {quote(seen_matches[(role, *prefixes)])}: "
                       "the counters could not tell them apart")
        if role != "transit":
            seen_matches[(role, *prefixes)] = name
        flows.append(FlowConfig(name, role, prefixes[0], prefixes[1], numbers[0], numbers[1]))
    reflector, sessions, backend = _stamp(doc.get("stamp"), fail)
    return ExporterConfig(node=chosen_node, period=chosen_period, flows=tuple(flows), netns=netns,
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
        number = int(float(match.group(1)) * _UNITS[match.group(2) or ""])
    if number is None or number < MIN_BUFFER_SIZE:
        raise fail(f"must be a size of at least 64KiB (bytes, or a number with KiB, MiB or GiB), got {value!r}")
    return number


def _dataplane(value, fail) -> str:
    if value not in DATAPLANES:
        raise fail(f"must be one of {', '.join(DATAPLANES)}, got {quote(value)}")
    return value


def _node(value, fail) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
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
    tls = doc.get("tls") or {}
    if not isinstance(tls, dict):
        raise fail("grpc.tls", "must be a mapping with cert, key and client_ca")
    for key, value in tls.items():
        if key not in ("cert", "key", "client_ca"):
            raise fail(f"grpc.tls.{key}", "unknown field (allowed: cert, client_ca, key)")
        if not isinstance(value, str) or not value:
            raise fail(f"grpc.tls.{key}", "must be a file path")
    return GrpcSettings(listen=listen, plaintext=plaintext, cert=tls.get("cert"), key=tls.get("key"),
                        client_ca=tls.get("client_ca"))


def _stamp(doc, fail) -> tuple[ReflectorSettings | None, tuple[SessionSettings, ...], str]:
    """The file's reflector (None: none), its sessions, and the reflector backend (default ebpf)."""
    if doc is None:
        return None, (), DEFAULT_BACKEND
    if not isinstance(doc, dict):
        raise fail("stamp", "must be a mapping with 'reflector' and/or 'sessions'")
    for key in doc:
        if key not in ("reflector", "sessions"):
            raise fail(f"stamp.{key}", "unknown field (allowed: reflector, sessions)")

    def fields(item, field, allowed, required):
        if not isinstance(item, dict):
            raise fail(field, "must be a mapping")
        for key in item:
            if key not in allowed:
                raise fail(f"{field}.{key}", f"unknown field (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required):
            if key not in item:
                raise fail(f"{field}.{key}", "missing")
        return item

    def address(value, field):
        try:
            return str(ipaddress.ip_address(str(value)))
        except ValueError:
            raise fail(field, f"{quote(value)} is not an IP address") from None

    def port(value, field):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise fail(field, f"must be a UDP port 1..65535, got {quote(value)}")
        return value

    def number(value, field, low, high):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise fail(field, f"must be a number from {low:g} to {high:g}, got {quote(value)}")
        return float(value)

    def path(value, field):
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise fail(field, "must be a file path")
        return value

    def liveness(value, field):
        try:
            return validate.liveness_setting(value)
        except validate.InvalidArgument as exc:
            raise fail(f"{field}.{exc.field}" if exc.field else field, exc.message) from None

    reflector = None
    backend = DEFAULT_BACKEND
    if doc.get("reflector") is not None:
        raw = doc["reflector"]
        only_backend = isinstance(raw, dict) and set(raw) == {"backend"}
        r = fields(raw, "stamp.reflector", {"bind", "port", "stateful", "auth_key_file", "backend"},
                   set() if only_backend else {"bind"})
        if "backend" in r:
            backend = r["backend"]
            if backend not in BACKENDS:
                raise fail("stamp.reflector.backend", f"must be one of {', '.join(BACKENDS)}, got {quote(backend)}")
        if not isinstance(r.get("stateful", False), bool):
            raise fail("stamp.reflector.stateful", "must be true or false")
        if not only_backend:
            reflector = ReflectorSettings(address(r["bind"], "stamp.reflector.bind"),
                                          port(r.get("port", STAMP_PORT), "stamp.reflector.port"), r.get("stateful", False),
                                          path(r.get("auth_key_file"), "stamp.reflector.auth_key_file"),
                                          r.get("backend", ""))
    sessions = []
    raw = doc.get("sessions", [])
    if not isinstance(raw, list):
        raise fail("stamp.sessions", "must be a list")
    names = set()
    for i, item in enumerate(raw):
        field = f"stamp.sessions[{i}]"
        item = fields(item, field, {"name", "dest", "source", "port", "segments", "return_segments", "rate",
                                    "timeout", "reflector", "auth_key_file", "liveness"}, {"name", "dest", "rate"})
        name = item["name"]
        if not isinstance(name, str) or not _NAME.match(name):
            raise fail(f"{field}.name", f"{quote(name)} is not a valid session name")
        if name in names:
            raise fail(f"{field}.name", f"duplicate session {quote(name)}")
        names.add(name)
        segs = {}
        for key in ("segments", "return_segments"):
            value = item.get(key, [])
            if not isinstance(value, list):
                raise fail(f"{field}.{key}", "must be a list of IPv6 SIDs")
            try:
                segs[key] = tuple(str(ipaddress.IPv6Address(str(v))) for v in value)
            except ValueError as exc:
                raise fail(f"{field}.{key}", f"not an IPv6 SID: {exc}") from None
        reflector_name = item.get("reflector")
        if reflector_name is not None and not isinstance(reflector_name, str):
            raise fail(f"{field}.reflector", "must be a node name")
        sessions.append(SessionSettings(
            name=name, dest=address(item["dest"], f"{field}.dest"),
            rate=number(item["rate"], f"{field}.rate", *RATE_RANGE),
            source=address(item["source"], f"{field}.source") if "source" in item else None,
            port=port(item.get("port", STAMP_PORT), f"{field}.port"),
            segments=segs["segments"], return_segments=segs["return_segments"],
            timeout=number(item.get("timeout", DEFAULT_TIMEOUT_S), f"{field}.timeout", *TIMEOUT_RANGE),
            reflector=reflector_name, auth_key_file=path(item.get("auth_key_file"), f"{field}.auth_key_file"),
            liveness=liveness(item.get("liveness", False), f"{field}.liveness")))
    return reflector, tuple(sessions), backend
