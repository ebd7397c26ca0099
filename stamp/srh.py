"""The IPv6 Segment Routing Header (RFC 8754) that a UDP socket puts on its packets.

Layout (routing header type 4)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    | Next Header   |  Hdr Ext Len  | Routing Type  | Segments Left |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  Last Entry   |     Flags     |              Tag              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |            Segment List[0] (128-bit IPv6 address)             |
    ~                              ...                              ~
    |            Segment List[n] (128-bit IPv6 address)             |

The Segment List holds the path in reverse: Segment List[0] is the final
destination, Segment List[Last Entry] the first segment, and a fresh packet
has Segments Left = Last Entry with the IPv6 destination address set to the
first segment.

How Linux lets a user-space UDP socket send an SRH (checked on kernel 6.18):

* ``setsockopt(IPPROTO_IPV6, IPV6_RTHDR, srh)`` (a *sticky* option) accepts a
  type 4 header (validated by ``seg6_validate_srh``) and every later datagram
  carries it. The kernel (``ipv6_push_rthdr4``) overwrites Segment List[0]
  with the datagram's destination address and sends the packet to Segment
  List[Segments Left]. ``setsockopt(..., IPV6_RTHDR, b"")`` removes it.
  No capability is needed.
* The per-datagram ancillary form (``sendmsg`` with an ``IPV6_RTHDR`` cmsg)
  is refused with EINVAL for type 4 (the kernel accepts only type 2 there),
  so a sender that changes the path per packet must set the sticky option
  before each ``sendmsg`` (:class:`StickyRoute` does that only on change).
* The node that receives a packet carrying an SRH processes it only if
  ``net.ipv6.conf.{all,<ifname>}.seg6_enabled`` are both 1, even when
  Segments Left is 0 (the final destination): otherwise it drops the packet.
  So the hosts at both ends of a STAMP session over SRv6 need seg6_enabled.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Iterable

from srv6pm.stamp.errors import MalformedPacket

__all__ = ["MAX_SEGMENTS", "ROUTING_TYPE_SRH", "SegmentRoutingHeader", "StickyRoute", "parse_segments"]

ROUTING_TYPE_SRH = 4
MAX_SEGMENTS = 127  # Hdr Ext Len is one octet of 8-octet units: 2 per segment
_FIXED = struct.Struct("!BBBBBBH")


@dataclass(frozen=True)
class SegmentRoutingHeader:
    """An SRH without TLVs. ``segment_list`` is Segment List[0..n] in wire order."""

    segment_list: tuple[ipaddress.IPv6Address, ...]
    segments_left: int
    next_header: int = 0
    flags: int = 0
    tag: int = 0

    def __post_init__(self):
        segs = tuple(ipaddress.IPv6Address(s) for s in self.segment_list)
        object.__setattr__(self, "segment_list", segs)
        if not 1 <= len(segs) <= MAX_SEGMENTS:
            raise ValueError(f"an SRH holds 1 to {MAX_SEGMENTS} segments, not {len(segs)}")
        if not 0 <= self.segments_left < len(segs):
            raise ValueError(f"segments left {self.segments_left} outside 0..{len(segs) - 1}")

    @classmethod
    def for_path(cls, waypoints: Iterable[ipaddress.IPv6Address | str],
                 destination: ipaddress.IPv6Address | str) -> "SegmentRoutingHeader":
        """The SRH that takes a packet through ``waypoints`` (in order), then to ``destination``."""
        hops = tuple(ipaddress.IPv6Address(w) for w in waypoints)
        return cls((ipaddress.IPv6Address(destination), *reversed(hops)), len(hops))

    @property
    def path(self) -> tuple[ipaddress.IPv6Address, ...]:
        """The segments in visiting order, final destination last."""
        return tuple(reversed(self.segment_list))

    def pack(self) -> bytes:
        n = len(self.segment_list)
        head = _FIXED.pack(self.next_header, 2 * n, ROUTING_TYPE_SRH, self.segments_left, n - 1, self.flags, self.tag)
        return head + b"".join(s.packed for s in self.segment_list)

    @classmethod
    def unpack(cls, data: bytes) -> "SegmentRoutingHeader":
        """Decode an SRH (TLVs after the segment list are ignored); :class:`MalformedPacket` if invalid."""
        if len(data) < _FIXED.size:
            raise MalformedPacket(f"SRH of {len(data)} octets is shorter than {_FIXED.size}")
        nh, hdrlen, rtype, left, last, flags, tag = _FIXED.unpack_from(data)
        if rtype != ROUTING_TYPE_SRH:
            raise MalformedPacket(f"routing header type {rtype} is not 4 (SRH)")
        n = last + 1
        if (hdrlen + 1) * 8 > len(data) or _FIXED.size + 16 * n > (hdrlen + 1) * 8 or left > last:
            raise MalformedPacket("SRH lengths are inconsistent")
        segs = tuple(ipaddress.IPv6Address(data[8 + 16 * i:24 + 16 * i]) for i in range(n))
        return cls(segs, left, nh, flags, tag)


def parse_segments(text: str) -> tuple[ipaddress.IPv6Address, ...]:
    """``"SID,SID,..."`` -> IPv6 addresses; ``ValueError`` naming the bad item."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise ValueError(f"empty SID in segment list {text!r}")
    out = []
    for item in items:
        try:
            out.append(ipaddress.IPv6Address(item))
        except ValueError:
            raise ValueError(f"{item!r} is not an IPv6 address (SIDs are IPv6 addresses)") from None
    if len(out) > MAX_SEGMENTS - 1:
        raise ValueError(f"{len(out)} SIDs: at most {MAX_SEGMENTS - 1} fit in an SRH with the destination")
    return tuple(out)


class StickyRoute:
    """The IPV6_RTHDR sticky option of one IPv6 socket, changed only when needed.

    :meth:`use` installs the SRH for ``waypoints`` towards ``destination``
    (or removes any SRH when ``waypoints`` is empty) before a ``sendmsg``.
    Not thread safe: one sending thread per socket.
    """

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._current: bytes = b""

    def use(self, waypoints: tuple[ipaddress.IPv6Address, ...], destination: ipaddress.IPv6Address | str) -> None:
        """Install (or clear) the SRH; ``OSError`` from the kernel propagates (state stays consistent)."""
        wanted = SegmentRoutingHeader.for_path(waypoints, destination).pack() if waypoints else b""
        if wanted != self._current:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RTHDR, wanted)
            self._current = wanted

    def clear(self) -> None:
        """Remove the SRH, ignoring errors (for error paths)."""
        try:
            self.use((), "::")
        except OSError:
            pass
