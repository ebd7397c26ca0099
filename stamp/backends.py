"""The Session-Reflector's two backends and the one way to choose between them.

``ebpf`` (the default): :class:`~srv6pm.stamp.ebpf.EbpfReflector`, the kernel
answers what it can and the socket reflector the rest. ``socket``:
:class:`~srv6pm.stamp.reflector.Reflector` alone. Both answer every test
packet with the same bytes (timestamps aside). Choosing ``ebpf`` where it
cannot run is an error that says why and names ``socket``; nothing ever falls
back to the other backend by itself.
"""

from __future__ import annotations

from srv6pm import bpf
from srv6pm.errors import UnavailableError
from srv6pm.stamp.reflector import Reflector, ReflectorConfig

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "BackendUnavailable", "make_reflector", "open_reflector"]

BACKENDS = ("ebpf", "socket")
DEFAULT_BACKEND = "ebpf"


class BackendUnavailable(UnavailableError):
    """The ebpf backend cannot run here; ``str()`` says why (first line) and what to choose instead,
    then libbpf's and the verifier's log if there is one."""

    label = ""  # the message says what is missing and what to choose instead: no "error:"


def make_reflector(config: ReflectorConfig, backend: str, *, instance: str, attach: str = "auto"):
    """A reflector of ``backend`` for ``config``, not opened yet.

    ``instance`` names the ebpf backend's pins, ``attach`` its hook (see
    :data:`srv6pm.stamp.ebpf.ATTACH_MODES`). ``ValueError`` for a bad backend
    or settings the backend cannot take (the ebpf one answers IPv6 only).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "socket":
        return Reflector(config)
    from srv6pm.stamp.ebpf import EbpfReflector
    return EbpfReflector(config, instance=instance, attach=attach)


def open_reflector(reflector, how_socket: str) -> None:
    """``reflector.open()``; eBPF's refusals become :class:`BackendUnavailable`, whose text ends with
    ``how_socket``, how the caller's user chooses the socket backend (``"--backend socket"``).
    Other failures (``OSError``, :class:`srv6pm.netns.NetnsError`) propagate."""
    try:
        reflector.open()
    except bpf.BpfError as exc:
        raise BackendUnavailable(bpf.unavailable("ebpf reflector", exc, "the socket reflector", how_socket)) from None
