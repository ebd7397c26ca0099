"""The one binding to libnftables (ctypes), JSON in and JSON out, in one network namespace.

Used by the exporter's nftables data plane, the lab and the tests alike.

Each :class:`Nft` owns a :class:`srv6pm.netns.NetnsThread`; the libnftables
context is created, used and freed only in that thread, so every command talks
to the nf_tables of the namespace given at construction (``None``: the current
namespace of the process). This also serialises access to the context, which
libnftables does not make thread safe.

Commands are the objects of libnftables' JSON schema (``man libnftables-json``),
for example ``{"add": {"table": {"family": "ip6", "name": "t"}}}`` or
``{"list": {"set": {"family": "ip6", "table": "t", "name": "s"}}}``.
:meth:`Nft.run` sends one list of commands as one JSON document
``{"nftables": [...]}``, which libnftables executes as **one atomic
transaction**: either every command is applied or none is.

Needs ``libnftables.so.1`` (Debian: ``apt-get install nftables``) and
CAP_NET_ADMIN in the namespace.
"""

from __future__ import annotations

import ctypes
import json
import socket
import struct
import threading

from srv6pm.errors import OperationError, UnavailableError
from srv6pm.netns import NetnsThread

__all__ = ["Nft", "NftError", "NftUnavailable"]

LIBRARY = "libnftables.so.1"

# include/nftables/libnftables.h
NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_HANDLE = 1 << 3
NFT_CTX_OUTPUT_JSON = 1 << 4
SO_NETNS_COOKIE = 71  # asm-generic/socket.h

_lib = None
_lib_lock = threading.Lock()


class NftError(OperationError, RuntimeError):
    """libnftables refused a batch; ``str()`` carries its error text and the namespace."""

    def __init__(self, message: str, *, netns: str | None = None, commands: list[dict] | None = None):
        super().__init__(message)
        self.netns = netns
        self.commands = commands


class NftUnavailable(NftError, UnavailableError):
    """libnftables.so.1 is not installed or cannot be loaded."""


def _load():
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        try:
            lib = ctypes.CDLL(LIBRARY)
        except OSError as exc:
            raise NftUnavailable(f"cannot load {LIBRARY} ({exc}); install it with: apt-get install nftables") from None
        c_ctx = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_new.restype = c_ctx
        lib.nft_ctx_free.argtypes = [c_ctx]
        lib.nft_ctx_free.restype = None
        lib.nft_ctx_output_get_flags.argtypes = [c_ctx]
        lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
        lib.nft_ctx_output_set_flags.argtypes = [c_ctx, ctypes.c_uint]
        lib.nft_ctx_output_set_flags.restype = None
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [c_ctx]
            getattr(lib, name).restype = ctypes.c_int
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [c_ctx]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [c_ctx, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        _lib = lib
        return lib


def _parse_output(text: str) -> list[dict]:
    """The objects of every ``{"nftables": [...]}`` document in ``text``, metainfo dropped."""
    decoder = json.JSONDecoder()
    out: list[dict] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        doc, pos = decoder.raw_decode(text, pos)
        items = doc.get("nftables", []) if isinstance(doc, dict) else []
        out.extend(item for item in items if not (isinstance(item, dict) and "metainfo" in item))


def _netns_cookie() -> int | None:
    """The calling thread's network namespace cookie (SO_NETNS_COOKIE, Linux >= 5.14), else None."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            return struct.unpack("=Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
    except OSError:
        return None


class Nft:
    """A libnftables context bound to network namespace ``netns`` (``None``: current).

    ``netns_cookie`` is the kernel's 64-bit cookie of that namespace, unique
    for the life of the machine (None on kernels without SO_NETNS_COOKIE), so
    it tells a namespace from a later one of the same name.

    Raises :class:`NftUnavailable` if libnftables is missing and
    :class:`srv6pm.netns.NetnsError` if the namespace does not exist.
    """

    def __init__(self, netns: str | None = None):
        self.netns = netns
        lib = _load()
        self._thread = NetnsThread(netns, thread_name=f"nft-{netns or '(current)'}")
        try:
            self._ctx: int | None = self._thread.call(self._new_context, lib)  # None once freed
            self.netns_cookie: int | None = self._thread.call(_netns_cookie)
        except BaseException:
            self._thread.close()
            raise
        self._lib = lib

    def _where(self) -> str:
        return f"network namespace {self.netns!r}" if self.netns is not None else "the current network namespace"

    def _new_context(self, lib) -> int:
        ctx = lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx:
            raise NftError(f"nft_ctx_new failed in {self._where()}", netns=self.netns)
        flags = lib.nft_ctx_output_get_flags(ctx)
        lib.nft_ctx_output_set_flags(ctx, flags | NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE)
        if lib.nft_ctx_buffer_output(ctx) != 0 or lib.nft_ctx_buffer_error(ctx) != 0:
            lib.nft_ctx_free(ctx)
            raise NftError(f"cannot buffer libnftables output in {self._where()}", netns=self.netns)
        return ctx

    def _run(self, payload: bytes, commands: list[dict]) -> list[dict]:
        if self._ctx is None:
            raise NftError(f"nftables context for {self._where()} is closed", netns=self.netns)
        lib = self._lib
        rc = lib.nft_run_cmd_from_buffer(self._ctx, payload)
        output = (lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode("utf-8", "replace")
        error = (lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode("utf-8", "replace")
        if rc != 0:
            # JSON input has no source positions: drop libnftables' "internal:0:0-0: " prefixes
            lines = (line.strip().removeprefix("internal:0:0-0:").strip() for line in error.splitlines())
            text = " ".join(line for line in lines if line)
            raise NftError(f"nftables in {self._where()} refused the batch: {text or f'error {rc}'}",
                           netns=self.netns, commands=commands)
        try:
            return _parse_output(output)
        except ValueError as exc:
            raise NftError(f"nftables in {self._where()}: unparsable JSON output ({exc}): {output[:200]!r}",
                           netns=self.netns, commands=commands) from None

    def run(self, commands: list[dict]) -> list[dict]:
        """Execute ``commands`` as one atomic transaction; return the output objects.

        The output objects are the items of libnftables' ``{"nftables": [...]}``
        answer except ``metainfo`` (e.g. ``{"table": {...}}``, ``{"set": {...}}``
        for list commands; nothing for add/delete). Raises :class:`NftError` with
        libnftables' error text if the batch is refused (then nothing changed).
        """
        if not isinstance(commands, list):
            raise TypeError("commands must be a list of libnftables JSON command objects")
        if not commands:
            return []
        payload = json.dumps({"nftables": commands}, separators=(",", ":")).encode("utf-8")
        return self._thread.call(self._run, payload, commands)

    def close(self) -> None:
        """Free the context and stop its thread; idempotent."""
        if self._thread.closed:
            return

        def free():
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None

        try:
            self._thread.call(free)
        finally:
            self._thread.close()

    def __enter__(self) -> "Nft":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Nft(netns={self.netns!r})"
