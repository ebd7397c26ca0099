"""Whether this kernel can make the SRv6 routes srv6pm needs, and the one wording for when it cannot.

srv6pm's SRv6 forwarding is Linux's own: ``encap seg6`` routes (H.Encaps at a
flow's ingress) and ``encap seg6local`` routes (the local SIDs: End,
End.DX6, ...). Both are lightweight tunnels that a kernel has only when it was
built with ``CONFIG_IPV6_SEG6_LWTUNNEL``; a kernel without them refuses either
route with EOPNOTSUPP ("lwt encapsulation type not supported"), which says
nothing of the cause.

:func:`missing` finds out, once per process, by adding one route of each kind in a
network namespace of its own: a thread unshares its network namespace, so
nothing is named and nothing is left behind when it ends. It needs root (as
every route does); where it cannot ask (not root, or the thread did not get a
namespace of its own), it answers None and the routes' own errors tell.
:data:`NO_SRV6` is the wording; :func:`explain` gives it for a route the
kernel refused that way.
"""

from __future__ import annotations

import errno
import os
import threading

from srv6pm import netns
from srv6pm.errors import UnavailableError

__all__ = ["NO_SRV6", "Srv6Unavailable", "check", "explain", "missing"]

NO_SRV6 = ("this kernel has no SRv6 routes: encap seg6 and encap seg6local need a kernel built with "
           "CONFIG_IPV6_SEG6_LWTUNNEL")
_LOOPBACK = 1  # the ifindex of lo in a new namespace

_lock = threading.Lock()
_answer: list[tuple[str, str | None]] = []  # once asked: ("present" | "missing" | "unknown", the reason)


class Srv6Unavailable(UnavailableError, RuntimeError):
    """The kernel cannot make SRv6 routes (:data:`NO_SRV6`, with the kernel's own answer)."""


def missing() -> str | None:
    """Why this kernel cannot make SRv6 routes (:data:`NO_SRV6` and the kernel's answer), or None: it can,
    or it could not be asked (not root). Asked once per process."""
    return _asked()[1]


def _asked() -> tuple[str, str | None]:
    """(what the probe found: ``present``, ``missing`` or ``unknown``, the reason when missing); asked once."""
    with _lock:
        if not _answer:
            out: list[tuple[str, str | None]] = [("unknown", None)]
            thread = threading.Thread(target=_probe, args=(out,), name="srv6pm-srv6-probe", daemon=True)
            thread.start()
            thread.join()
            _answer.append(out[0])
        return _answer[0]


def check() -> None:
    """:class:`Srv6Unavailable` if :func:`missing` gives a reason."""
    reason = missing()
    if reason is not None:
        raise Srv6Unavailable(reason)


def explain(code: int) -> str | None:
    """For a seg6 or seg6local route the kernel refused with ``code`` (an errno): :func:`missing`'s reason when
    that refusal is the kernel's missing SRv6 (EOPNOTSUPP), else None."""
    return missing() if code == errno.EOPNOTSUPP else None


def _probe(out: list[tuple[str, str | None]]) -> None:
    """In this thread only: a new network namespace, lo up, then one seg6local and one seg6 route on lo.

    Nothing is asked unless the thread is in a namespace of its own (its namespace changed at ``unshare``,
    and its lo is still down, as in every new one: the namespace it came from is never touched)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP

    try:
        before = os.stat("/proc/thread-self/ns/net").st_ino
        if not netns.unshare():  # not root: cannot tell
            return
        if os.stat("/proc/thread-self/ns/net").st_ino == before:
            return
        with IPRoute() as ipr:
            lo = ipr.get_links(_LOOPBACK)
            if not lo or lo[0].get_attr("IFLA_IFNAME") != "lo" or lo[0]["flags"] & IFF_UP:
                return  # not a new namespace's lo
            ipr.link("set", index=_LOOPBACK, state="up")
            ipr.route("add", dst="fc00::1/128", oif=_LOOPBACK, encap={"type": "seg6local", "action": "End"})
            ipr.route("add", dst="fc00::2/128", oif=_LOOPBACK,
                      encap={"type": "seg6", "mode": "encap", "segs": ["fc00::3"]})
        out[0] = ("present", None)
    except NetlinkError as exc:
        if exc.code == errno.EOPNOTSUPP:
            out[0] = ("missing", f"{NO_SRV6} (the kernel answered: {os.strerror(exc.code)}" + (
                f", {exc.args[1]})" if len(exc.args) > 1 and exc.args[1] != os.strerror(exc.code) else ")"))
    except Exception:  # any other failure of the probe itself (never printed): the routes' own errors tell
        pass
