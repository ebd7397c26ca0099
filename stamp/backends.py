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
from srv6pm.errors import Srv6pmError
from srv6pm.stamp.reflector import Reflector, ReflectorConfig

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "BackendUnavailable", "open_reflector"]

BACKENDS = ("ebpf", "socket")
DEFAULT_BACKEND = "ebpf"


class BackendUnavailable(Srv6pmError):
    """The ebpf backend cannot run here; ``str()`` says why (first line) and what to choose instead,
    then libbpf's and the verifier's log if there is one."""


def open_reflector(config: ReflectorConfig, backend: str, *, instance: str, how_socket: str,
                   attach: str = "auto"):
    """A reflector of ``backend`` for ``config``, opened (bound, and with ebpf loaded and attached).

    ``instance`` names the ebpf backend's pins; ``how_socket`` tells the
    caller's user how to choose the socket backend (``"--backend socket"``).
    Raises ``ValueError`` for a bad backend or settings the backend cannot
    take, :class:`BackendUnavailable` when eBPF cannot run here, and what
    ``open`` raises otherwise (``OSError``, :class:`srv6pm.netns.NetnsError`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "socket":
        reflector = Reflector(config)
        reflector.open()
        return reflector
    from srv6pm.stamp.ebpf import EbpfReflector
    reflector = EbpfReflector(config, instance=instance, attach=attach)
    try:
        reflector.open()
    except bpf.BpfError as exc:
        raise BackendUnavailable(bpf.unavailable("ebpf reflector", exc, "the socket reflector", how_socket)) from None
    return reflector
