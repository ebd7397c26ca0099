from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SidBehavior(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SID_BEHAVIOR_UNSPECIFIED: _ClassVar[SidBehavior]
    SID_BEHAVIOR_END: _ClassVar[SidBehavior]
    SID_BEHAVIOR_END_X: _ClassVar[SidBehavior]
    SID_BEHAVIOR_END_DT6: _ClassVar[SidBehavior]
    SID_BEHAVIOR_END_DX6: _ClassVar[SidBehavior]

class EncapMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCAP_MODE_UNSPECIFIED: _ClassVar[EncapMode]
    ENCAP_MODE_ENCAP: _ClassVar[EncapMode]
    ENCAP_MODE_INLINE: _ClassVar[EncapMode]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_INGRESS: _ClassVar[Role]
    ROLE_EGRESS: _ClassVar[Role]
    ROLE_TRANSIT: _ClassVar[Role]
SID_BEHAVIOR_UNSPECIFIED: SidBehavior
SID_BEHAVIOR_END: SidBehavior
SID_BEHAVIOR_END_X: SidBehavior
SID_BEHAVIOR_END_DT6: SidBehavior
SID_BEHAVIOR_END_DX6: SidBehavior
ENCAP_MODE_UNSPECIFIED: EncapMode
ENCAP_MODE_ENCAP: EncapMode
ENCAP_MODE_INLINE: EncapMode
ROLE_UNSPECIFIED: Role
ROLE_INGRESS: Role
ROLE_EGRESS: Role
ROLE_TRANSIT: Role

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node", "boot_id", "period_s", "version", "started_ns", "dataplane")
    NODE_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_S_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_NS_FIELD_NUMBER: _ClassVar[int]
    DATAPLANE_FIELD_NUMBER: _ClassVar[int]
    node: str
    boot_id: str
    period_s: float
    version: str
    started_ns: int
    dataplane: str
    def __init__(self, node: _Optional[str] = ..., boot_id: _Optional[str] = ..., period_s: _Optional[float] = ..., version: _Optional[str] = ..., started_ns: _Optional[int] = ..., dataplane: _Optional[str] = ...) -> None: ...

class ApplyReply(_message.Message):
    __slots__ = ("changed", "detail")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    detail: str
    def __init__(self, changed: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class LocalSid(_message.Message):
    __slots__ = ("sid", "behavior", "nexthop", "table", "device")
    SID_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOR_FIELD_NUMBER: _ClassVar[int]
    NEXTHOP_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    sid: str
    behavior: SidBehavior
    nexthop: str
    table: int
    device: str
    def __init__(self, sid: _Optional[str] = ..., behavior: _Optional[_Union[SidBehavior, str]] = ..., nexthop: _Optional[str] = ..., table: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class LocalSidRef(_message.Message):
    __slots__ = ("sid",)
    SID_FIELD_NUMBER: _ClassVar[int]
    sid: str
    def __init__(self, sid: _Optional[str] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("name", "destination", "segments", "mode", "device")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    name: str
    destination: str
    segments: _containers.RepeatedScalarFieldContainer[str]
    mode: EncapMode
    device: str
    def __init__(self, name: _Optional[str] = ..., destination: _Optional[str] = ..., segments: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[EncapMode, str]] = ..., device: _Optional[str] = ...) -> None: ...

class PolicyRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class FlowMonitor(_message.Message):
    __slots__ = ("flow", "role", "source_prefix", "destination_prefix", "flowmon_id", "position")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PREFIX_FIELD_NUMBER: _ClassVar[int]
    FLOWMON_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    flow: str
    role: Role
    source_prefix: str
    destination_prefix: str
    flowmon_id: int
    position: int
    def __init__(self, flow: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., source_prefix: _Optional[str] = ..., destination_prefix: _Optional[str] = ..., flowmon_id: _Optional[int] = ..., position: _Optional[int] = ...) -> None: ...

class FlowMonitorRef(_message.Message):
    __slots__ = ("flow", "role")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    flow: str
    role: Role
    def __init__(self, flow: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ...) -> None: ...

class ReadCountersRequest(_message.Message):
    __slots__ = ("flow",)
    FLOW_FIELD_NUMBER: _ClassVar[int]
    flow: str
    def __init__(self, flow: _Optional[str] = ...) -> None: ...

class FlowCounter(_message.Message):
    __slots__ = ("flow", "role", "colour", "packets", "bytes", "generation", "flowmon_id")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    COLOUR_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    FLOWMON_ID_FIELD_NUMBER: _ClassVar[int]
    flow: str
    role: Role
    colour: int
    packets: int
    bytes: int
    generation: str
    flowmon_id: int
    def __init__(self, flow: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., colour: _Optional[int] = ..., packets: _Optional[int] = ..., bytes: _Optional[int] = ..., generation: _Optional[str] = ..., flowmon_id: _Optional[int] = ...) -> None: ...

class Counters(_message.Message):
    __slots__ = ("read_ns", "counters")
    READ_NS_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    read_ns: int
    counters: _containers.RepeatedCompositeFieldContainer[FlowCounter]
    def __init__(self, read_ns: _Optional[int] = ..., counters: _Optional[_Iterable[_Union[FlowCounter, _Mapping]]] = ...) -> None: ...

class StampSession(_message.Message):
    __slots__ = ("name", "destination", "source", "port", "segments", "return_segments", "rate", "timeout_s", "reflector_node", "auth_key_file", "liveness", "liveness_down_after", "liveness_up_after", "direct_measurement", "dscp", "ssid", "stop_if_ssid_ignored")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    RETURN_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    REFLECTOR_NODE_FIELD_NUMBER: _ClassVar[int]
    AUTH_KEY_FILE_FIELD_NUMBER: _ClassVar[int]
    LIVENESS_FIELD_NUMBER: _ClassVar[int]
    LIVENESS_DOWN_AFTER_FIELD_NUMBER: _ClassVar[int]
    LIVENESS_UP_AFTER_FIELD_NUMBER: _ClassVar[int]
    DIRECT_MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    DSCP_FIELD_NUMBER: _ClassVar[int]
    SSID_FIELD_NUMBER: _ClassVar[int]
    STOP_IF_SSID_IGNORED_FIELD_NUMBER: _ClassVar[int]
    name: str
    destination: str
    source: str
    port: int
    segments: _containers.RepeatedScalarFieldContainer[str]
    return_segments: _containers.RepeatedScalarFieldContainer[str]
    rate: float
    timeout_s: float
    reflector_node: str
    auth_key_file: str
    liveness: bool
    liveness_down_after: int
    liveness_up_after: int
    direct_measurement: bool
    dscp: int
    ssid: int
    stop_if_ssid_ignored: bool
    def __init__(self, name: _Optional[str] = ..., destination: _Optional[str] = ..., source: _Optional[str] = ..., port: _Optional[int] = ..., segments: _Optional[_Iterable[str]] = ..., return_segments: _Optional[_Iterable[str]] = ..., rate: _Optional[float] = ..., timeout_s: _Optional[float] = ..., reflector_node: _Optional[str] = ..., auth_key_file: _Optional[str] = ..., liveness: _Optional[bool] = ..., liveness_down_after: _Optional[int] = ..., liveness_up_after: _Optional[int] = ..., direct_measurement: _Optional[bool] = ..., dscp: _Optional[int] = ..., ssid: _Optional[int] = ..., stop_if_ssid_ignored: _Optional[bool] = ...) -> None: ...

class StampSessionRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StampReflector(_message.Message):
    __slots__ = ("bind", "port", "stateful", "auth_key_file", "backend")
    BIND_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    STATEFUL_FIELD_NUMBER: _ClassVar[int]
    AUTH_KEY_FILE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    bind: str
    port: int
    stateful: bool
    auth_key_file: str
    backend: str
    def __init__(self, bind: _Optional[str] = ..., port: _Optional[int] = ..., stateful: _Optional[bool] = ..., auth_key_file: _Optional[str] = ..., backend: _Optional[str] = ...) -> None: ...

class StampReflectorRef(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StampSessionStatus(_message.Message):
    __slots__ = ("name", "running", "error", "sent", "received", "lost")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    name: str
    running: bool
    error: str
    sent: int
    received: int
    lost: int
    def __init__(self, name: _Optional[str] = ..., running: _Optional[bool] = ..., error: _Optional[str] = ..., sent: _Optional[int] = ..., received: _Optional[int] = ..., lost: _Optional[int] = ...) -> None: ...

class StampReflectorStatus(_message.Message):
    __slots__ = ("running", "error", "received", "reflected", "dropped_malformed", "dropped_auth")
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    REFLECTED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_MALFORMED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_AUTH_FIELD_NUMBER: _ClassVar[int]
    running: bool
    error: str
    received: int
    reflected: int
    dropped_malformed: int
    dropped_auth: int
    def __init__(self, running: _Optional[bool] = ..., error: _Optional[str] = ..., received: _Optional[int] = ..., reflected: _Optional[int] = ..., dropped_malformed: _Optional[int] = ..., dropped_auth: _Optional[int] = ...) -> None: ...

class BatchItem(_message.Message):
    __slots__ = ("local_sid", "policy", "flow", "stamp_session", "stamp_reflector", "remove_local_sid", "remove_policy", "remove_flow", "remove_stamp_session", "remove_stamp_reflector")
    LOCAL_SID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    STAMP_SESSION_FIELD_NUMBER: _ClassVar[int]
    STAMP_REFLECTOR_FIELD_NUMBER: _ClassVar[int]
    REMOVE_LOCAL_SID_FIELD_NUMBER: _ClassVar[int]
    REMOVE_POLICY_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FLOW_FIELD_NUMBER: _ClassVar[int]
    REMOVE_STAMP_SESSION_FIELD_NUMBER: _ClassVar[int]
    REMOVE_STAMP_REFLECTOR_FIELD_NUMBER: _ClassVar[int]
    local_sid: LocalSid
    policy: Policy
    flow: FlowMonitor
    stamp_session: StampSession
    stamp_reflector: StampReflector
    remove_local_sid: LocalSidRef
    remove_policy: PolicyRef
    remove_flow: FlowMonitorRef
    remove_stamp_session: StampSessionRef
    remove_stamp_reflector: StampReflectorRef
    def __init__(self, local_sid: _Optional[_Union[LocalSid, _Mapping]] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., flow: _Optional[_Union[FlowMonitor, _Mapping]] = ..., stamp_session: _Optional[_Union[StampSession, _Mapping]] = ..., stamp_reflector: _Optional[_Union[StampReflector, _Mapping]] = ..., remove_local_sid: _Optional[_Union[LocalSidRef, _Mapping]] = ..., remove_policy: _Optional[_Union[PolicyRef, _Mapping]] = ..., remove_flow: _Optional[_Union[FlowMonitorRef, _Mapping]] = ..., remove_stamp_session: _Optional[_Union[StampSessionRef, _Mapping]] = ..., remove_stamp_reflector: _Optional[_Union[StampReflectorRef, _Mapping]] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[BatchItem]
    def __init__(self, items: _Optional[_Iterable[_Union[BatchItem, _Mapping]]] = ...) -> None: ...

class BatchResult(_message.Message):
    __slots__ = ("code", "error", "reply")
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    code: int
    error: str
    reply: ApplyReply
    def __init__(self, code: _Optional[int] = ..., error: _Optional[str] = ..., reply: _Optional[_Union[ApplyReply, _Mapping]] = ...) -> None: ...

class BatchReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchResult, _Mapping]]] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeState(_message.Message):
    __slots__ = ("info", "local_sids", "policies", "flows", "stamp_sessions", "stamp_reflector", "session_status", "reflector_status")
    INFO_FIELD_NUMBER: _ClassVar[int]
    LOCAL_SIDS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    STAMP_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    STAMP_REFLECTOR_FIELD_NUMBER: _ClassVar[int]
    SESSION_STATUS_FIELD_NUMBER: _ClassVar[int]
    REFLECTOR_STATUS_FIELD_NUMBER: _ClassVar[int]
    info: NodeInfo
    local_sids: _containers.RepeatedCompositeFieldContainer[LocalSid]
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    flows: _containers.RepeatedCompositeFieldContainer[FlowMonitor]
    stamp_sessions: _containers.RepeatedCompositeFieldContainer[StampSession]
    stamp_reflector: StampReflector
    session_status: _containers.RepeatedCompositeFieldContainer[StampSessionStatus]
    reflector_status: StampReflectorStatus
    def __init__(self, info: _Optional[_Union[NodeInfo, _Mapping]] = ..., local_sids: _Optional[_Iterable[_Union[LocalSid, _Mapping]]] = ..., policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ..., flows: _Optional[_Iterable[_Union[FlowMonitor, _Mapping]]] = ..., stamp_sessions: _Optional[_Iterable[_Union[StampSession, _Mapping]]] = ..., stamp_reflector: _Optional[_Union[StampReflector, _Mapping]] = ..., session_status: _Optional[_Iterable[_Union[StampSessionStatus, _Mapping]]] = ..., reflector_status: _Optional[_Union[StampReflectorStatus, _Mapping]] = ...) -> None: ...
