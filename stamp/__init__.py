"""STAMP (``srv6pm.stamp``): RFC 8762 / RFC 8972 / RFC 9503 Session-Sender and Session-Reflector.

One thing per module:

==============  =====================================================================
``timestamp``   NTP 64-bit and PTPv2 truncated timestamps <-> Unix ns; Error Estimate
``tlv``         RFC 8972 TLVs (U/M/I flags, Extra Padding, Class of Service, Direct
                Measurement, HMAC TLV; padding told from TLVs) and RFC 9503's
                Destination Node Address and Return Path (SRv6 Segment List, ...)
``packet``      the four base packet layouts, HMAC-SHA-256/128 of authenticated mode
``srh``         the SRv6 Segment Routing Header a UDP socket attaches (IPV6_RTHDR)
``udp``         sockets: kernel rx/tx timestamps, TTL/Hop Limit, network namespaces
``keys``        HMAC key files (the only way keys come in)
``reflector``   :class:`Reflector`: the Session-Reflector (thread + socket)
``ebpf``        :class:`~srv6pm.stamp.ebpf.EbpfReflector`: the same, answering in the kernel
                (``bpf/reflector.bpf.c``, XDP or tc) what it can, the socket the rest
``backends``    choosing between the two (``ebpf``, the default, or ``socket``)
``sender``      :class:`Sender`: the Session-Sender, yielding :class:`Sample` objects
``cli``         ``srv6pm stamp reflector`` / ``srv6pm stamp sender``
``errors``      :class:`StampError` and its subclasses
``protocol``    constants of the protocol used across srv6pm (:data:`STAMP_PORT`, 862)
==============  =====================================================================

Driving both ends from one process whose data-plane sockets live in other
network namespaces::

    from srv6pm.stamp import Reflector, ReflectorConfig, Sender, SenderConfig, TIMESTAMP_KINDS

    reflector = Reflector(ReflectorConfig(bind="fcff:4::2", netns="r4")).start()
    sender = Sender(SenderConfig(dest="fcff:4::2", source="fcff:1::2", netns="r1", session="s1",
                                 count=None, interval=0.1, segments=(...), return_segments=(...),
                                 reflector_timestamps=TIMESTAMP_KINDS))
    threading.Thread(target=sender.run, args=(publish,)).start()   # publish(sample) per test packet
    ...
    sender.stop(); reflector.close()
"""

from srv6pm.stamp.errors import AuthenticationError, KeyFileError, MalformedPacket, StampError, TimestampError
from srv6pm.stamp.keys import load_key
from srv6pm.stamp.reflector import TIMESTAMP_KINDS, Reflector, ReflectorConfig, ReflectorStats
from srv6pm.stamp.sender import Sample, Sender, SenderConfig, SenderStats, SsidIgnored, summarize
from srv6pm.stamp.timestamp import ErrorEstimate, TimestampFormat

__all__ = [
    "AuthenticationError", "ErrorEstimate", "KeyFileError", "MalformedPacket", "Reflector", "ReflectorConfig",
    "ReflectorStats", "Sample", "Sender", "SenderConfig", "SenderStats", "SsidIgnored", "StampError",
    "TIMESTAMP_KINDS",
    "TimestampError", "TimestampFormat", "load_key", "summarize",
]
