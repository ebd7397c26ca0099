"""The one eBPF loader of srv6pm: libbpf (``libbpf.so.1``) driven from Python through ctypes.

Every eBPF program of the product (the exporter's alternate-marking data plane,
the STAMP reflector's fast path) is a C source in the component that loads it,
compiled at install time by ``./setup.sh`` with Debian's clang against a
``vmlinux.h`` made from the running kernel's BTF (:func:`build`). At run time:

* :func:`check_support` says, in one sentence, what this machine lacks to run
  eBPF programs (the BPF syscall, the kernel's BTF, libbpf, a compiled object)
  and raises :class:`BpfUnavailable`; :func:`check_loadable` also runs the
  verifier once. Callers name the alternative backend in the one wording of
  :func:`unavailable`.
* :class:`BpfObject` opens a compiled object, pins the maps it is told to pin
  under bpffs (``/sys/fs/bpf/<component>/<instance>/<map>``; a pinned map that
  exists already is reused, so counters survive a restart of the process), and
  loads every program. A program the verifier refuses raises
  :class:`VerifierError`, whose text carries libbpf's whole log, the verifier's
  included.
* :class:`Map` reads and writes a map by its file descriptor: single elements,
  and :meth:`Map.lookup_batch` for a whole map in a few syscalls (per-CPU maps
  come back as one value per possible CPU).
* :func:`tc_attach` / :func:`tc_detach` put a program on an interface's clsact
  hook (direct action); :func:`tcx_supported`, :func:`tcx_attach` and
  :func:`tcx_detach` on its tcx hook (kernel 6.6 and later: a BPF link, no
  qdisc nor classifier in the path, pinned in bpffs so that it outlives the
  process like a tc filter); :func:`xdp_attach` / :func:`xdp_detach` on its XDP
  hook, in native (driver) or generic (skb) mode, and :func:`xdp_program`
  says which program is there. They act on the network namespace of the
  calling thread: call them through :class:`srv6pm.netns.NetnsThread` for
  another one.

Nothing here builds a shell command: libbpf is called directly, and
:func:`build` runs clang and bpftool with argument lists.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from srv6pm.errors import OperationError, UnavailableError

__all__ = ["BPFFS", "BTF_PATH", "XDP_MODES", "BpfError", "BpfObject", "BpfUnavailable", "Map", "VerifierError",
           "build", "check_loadable", "check_support", "ensure_bpffs", "map_id", "pinned_map", "possible_cpus",
           "program_name", "tc_attach", "tc_detach", "tcx_attach", "tcx_detach", "tcx_supported", "test_run", "unavailable", "xdp_attach", "xdp_detach",
           "xdp_program"]

LIBRARY = "libbpf.so.1"
BPFFS = "/sys/fs/bpf"
BTF_PATH = "/sys/kernel/btf/vmlinux"
BPF_FS_MAGIC = 0xCAFE4A11
BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
BPF_TC_F_REPLACE = 1
BPF_TCX = {"ingress": 46, "egress": 47}  # enum bpf_attach_type: BPF_TCX_INGRESS, BPF_TCX_EGRESS (6.6+)
BPF_LINK_TYPE_TCX = 11
BPF_ANY = 0
BPF_NOEXIST = 1
XDP_FLAGS_UPDATE_IF_NOEXIST = 1
XDP_FLAGS_REPLACE = 16
XDP_MODES = {"native": 4, "generic": 2}  # XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE
_LOG_LIMIT = 1 << 20


class BpfError(OperationError):
    """libbpf or the kernel refused an operation; ``str()`` says which and why."""


class BpfUnavailable(BpfError, UnavailableError):
    """This machine cannot run srv6pm's eBPF programs; ``str()`` names what is missing."""


class VerifierError(BpfError):
    """The kernel refused to load a program; :attr:`log` holds libbpf's whole output, the verifier log included."""

    def __init__(self, message: str, log: str):
        super().__init__(f"{message}\n{log}" if log else message)
        self.log = log


# -- libbpf through ctypes -----------------------------------------------------------

class _TcHook(ctypes.Structure):
    """``struct bpf_tc_hook`` (libbpf.h)."""

    _fields_ = [("sz", ctypes.c_size_t), ("ifindex", ctypes.c_int), ("attach_point", ctypes.c_int),
                ("parent", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class _TcOpts(ctypes.Structure):
    """``struct bpf_tc_opts`` (libbpf.h)."""

    _fields_ = [("sz", ctypes.c_size_t), ("prog_fd", ctypes.c_int), ("flags", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("handle", ctypes.c_uint32), ("priority", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


class _TestRunOpts(ctypes.Structure):
    """``struct bpf_test_run_opts`` (bpf.h)."""

    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


class _BatchOpts(ctypes.Structure):
    """``struct bpf_map_batch_opts`` (bpf.h)."""

    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_lib = None
_libc: ctypes.CDLL | None = None
_lock = threading.Lock()
_log_lock = threading.Lock()
_log: list[str] | None = None  # libbpf's messages while a load is under way


def _print(level: int, fmt: bytes, args: int) -> int:
    # libbpf formats printf-style with a va_list; vsnprintf turns it into text (x86-64 and
    # others where va_list is passed as a pointer).
    if _log is not None and fmt is not None and _libc is not None:  # _libc: loaded before any log
        buf = ctypes.create_string_buffer(4096)
        _libc.vsnprintf(buf, len(buf), fmt, ctypes.c_void_p(args))
        if sum(map(len, _log)) < _LOG_LIMIT:
            _log.append(buf.value.decode("utf-8", "replace"))
    return 0


_print_cb = _PRINT_FN(_print)


def _load():
    global _lib, _libc
    with _lock:
        if _lib is not None:
            return _lib
        try:
            lib = ctypes.CDLL(LIBRARY, use_errno=True)
        except OSError as exc:
            raise BpfUnavailable(f"cannot load {LIBRARY} ({exc}); install it with: apt-get install libbpf1") from None
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        vp, c_int, c_char_p, c_uint = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32
        sigs = {
            "bpf_object__open_file": ([c_char_p, vp], vp),
            "bpf_object__load": ([vp], c_int),
            "bpf_object__close": ([vp], None),
            "bpf_object__find_map_by_name": ([vp, c_char_p], vp),
            "bpf_object__find_program_by_name": ([vp, c_char_p], vp),
            "bpf_map__set_pin_path": ([vp, c_char_p], c_int),
            "bpf_map__fd": ([vp], c_int),
            "bpf_map__key_size": ([vp], c_uint),
            "bpf_map__value_size": ([vp], c_uint),
            "bpf_map__type": ([vp], c_int),
            "bpf_map__max_entries": ([vp], c_uint),
            "bpf_map__unpin": ([vp, c_char_p], c_int),
            "bpf_map__set_max_entries": ([vp, c_uint], c_int),
            "bpf_program__fd": ([vp], c_int),
            "bpf_map_update_elem": ([c_int, vp, vp, ctypes.c_uint64], c_int),
            "bpf_map_lookup_elem": ([c_int, vp, vp], c_int),
            "bpf_map_delete_elem": ([c_int, vp], c_int),
            "bpf_map_get_next_key": ([c_int, vp, vp], c_int),
            "bpf_map_lookup_batch": ([c_int, vp, vp, vp, vp, ctypes.POINTER(c_uint), vp], c_int),
            "bpf_obj_get_info_by_fd": ([c_int, vp, ctypes.POINTER(c_uint)], c_int),
            "bpf_obj_get": ([c_char_p], c_int),
            "bpf_obj_pin": ([c_int, c_char_p], c_int),
            "bpf_prog_query": ([c_int, c_int, c_uint, ctypes.POINTER(c_uint), vp, ctypes.POINTER(c_uint)], c_int),
            "bpf_link_create": ([c_int, c_int, c_int, vp], c_int),
            "bpf_link_update": ([c_int, c_int, vp], c_int),
            "bpf_link_detach": ([c_int], c_int),
            "bpf_tc_hook_create": ([vp], c_int),
            "bpf_tc_attach": ([vp, vp], c_int),
            "bpf_tc_detach": ([vp, vp], c_int),
            "bpf_xdp_attach": ([c_int, c_int, c_uint, vp], c_int),
            "bpf_xdp_detach": ([c_int, c_uint, vp], c_int),
            "bpf_xdp_query_id": ([c_int, c_int, ctypes.POINTER(c_uint)], c_int),
            "bpf_prog_get_fd_by_id": ([c_uint], c_int),
            "libbpf_num_possible_cpus": ([], c_int),
            "bpf_prog_test_run_opts": ([c_int, vp], c_int),
            "libbpf_set_print": ([_PRINT_FN], vp),
        }
        for name, (args, res) in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes = args
            fn.restype = res
        lib.libbpf_set_print(_print_cb)
        _lib = lib
        return lib


def _err(rc: int) -> int:
    """libbpf 1.x returns ``-errno``; some calls return -1 and set errno."""
    return -rc if rc < -1 else (ctypes.get_errno() or errno.EIO)


_cpus = 0


def possible_cpus() -> int:
    """The number of possible CPUs: how many values a per-CPU map holds per key."""
    global _cpus
    if not _cpus:
        n = _load().libbpf_num_possible_cpus()
        if n <= 0:
            raise BpfError(f"libbpf_num_possible_cpus: {os.strerror(-n)}")
        _cpus = n
    return _cpus


# -- what the machine can do ------------------------------------------------------------

def check_support(obj_path: str | os.PathLike, *, btf_path: str | None = None) -> None:
    """Raise :class:`BpfUnavailable` naming the first thing missing to run the compiled object ``obj_path``."""
    btf_path = btf_path or BTF_PATH
    if not os.path.exists(btf_path):
        raise BpfUnavailable(f"the kernel has no BTF ({btf_path} is missing): the eBPF programs are compiled "
                             "against the running kernel's BTF")
    if not os.path.exists(obj_path):
        raise BpfUnavailable(f"the eBPF object {obj_path} is not built (./setup.sh compiles it with clang; "
                             "it needs clang, bpftool and libbpf-dev)")
    _load()


def check_loadable(obj_path: str | os.PathLike) -> None:
    """:func:`check_support`, then load the object's programs once (the verifier runs; nothing is pinned or
    attached), so that a machine that cannot run them is told so before anything changes."""
    check_support(obj_path)
    BpfObject(obj_path).close()


def unavailable(component: str, exc: BpfError, alternative: str, how: str) -> str:
    """The one wording for an eBPF component that cannot run: ``"the <component> cannot run here: <reason>;
    choose <alternative> instead (<how>)"``, then the rest of ``exc``'s text (libbpf's log, the verifier's
    included) on the following lines."""
    first, _, rest = str(exc).partition("\n")
    return f"the {component} cannot run here: {first}; choose {alternative} instead ({how})" + (
        f"\n{rest}" if rest else "")


def ensure_bpffs(root: str = BPFFS) -> None:
    """Mount bpffs on ``root`` if it is not mounted there; :class:`BpfUnavailable` if that fails."""

    class _Statfs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]

    _load()
    assert _libc is not None  # loaded by _load()
    st = _Statfs()
    if _libc.statfs(root.encode(), ctypes.byref(st)) == 0 and (st.f_type & 0xFFFFFFFF) == BPF_FS_MAGIC:
        return
    os.makedirs(root, exist_ok=True)
    if _libc.mount(b"bpf", root.encode(), b"bpf", 0, None) != 0:
        code = ctypes.get_errno()
        raise BpfUnavailable(f"cannot mount bpffs on {root}: {os.strerror(code)}")


# -- maps -------------------------------------------------------------------------------

@dataclass
class Map:
    """A BPF map by file descriptor; keys and values are ``bytes`` of the map's sizes.

    For a per-CPU map, :attr:`value_size` is the size of one CPU's value and
    reads return ``possible_cpus()`` values, each padded to 8 octets.
    """

    name: str
    fd: int
    key_size: int
    value_size: int
    percpu: bool
    max_entries: int = 0

    @property
    def _stride(self) -> int:
        return (self.value_size + 7) // 8 * 8 if self.percpu else self.value_size

    @property
    def _read_size(self) -> int:
        return self._stride * possible_cpus() if self.percpu else self.value_size

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> bool:
        """Set ``key`` to ``value`` (for a per-CPU map: ``value`` on every CPU).

        With ``BPF_NOEXIST``, a key that exists already is left as it is and
        False is returned; otherwise True.
        """
        if self.percpu:
            value = value.ljust(self._stride, b"\0") * possible_cpus()
        rc = _load().bpf_map_update_elem(self.fd, key, value, flags)
        if rc:
            code = _err(rc)
            if code == errno.EEXIST and flags == BPF_NOEXIST:
                return False
            raise BpfError(f"map {self.name}: update: {os.strerror(code)}")
        return True

    def lookup(self, key: bytes) -> bytes | None:
        """The value of ``key`` (per-CPU: all CPUs' values, concatenated), or None."""
        buf = ctypes.create_string_buffer(self._read_size)
        rc = _load().bpf_map_lookup_elem(self.fd, key, buf)
        if rc:
            code = _err(rc)
            if code == errno.ENOENT:
                return None
            raise BpfError(f"map {self.name}: lookup: {os.strerror(code)}")
        return buf.raw

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; False if it was not there."""
        rc = _load().bpf_map_delete_elem(self.fd, key)
        if rc:
            code = _err(rc)
            if code == errno.ENOENT:
                return False
            raise BpfError(f"map {self.name}: delete: {os.strerror(code)}")
        return True

    def keys(self) -> list[bytes]:
        """Every key, walked with ``BPF_MAP_GET_NEXT_KEY`` (for maps without batch operations, LPM tries)."""
        lib = _load()
        out: list[bytes] = []
        key = ctypes.create_string_buffer(self.key_size)
        while lib.bpf_map_get_next_key(self.fd, key if out else None, key) == 0:
            out.append(key.raw)
        return out

    def lookup_batch(self, chunk: int = 8192) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of a hash map, ``chunk`` elements a syscall (``BPF_MAP_LOOKUP_BATCH``)."""
        keys, values, count = self.dump(chunk)
        size = self._read_size
        return [(keys[i * self.key_size:(i + 1) * self.key_size], values[i * size:(i + 1) * size])
                for i in range(count)]

    def dump(self, chunk: int = 8192) -> tuple[bytes, bytes, int]:
        """Every key and value of a hash map as two packed buffers and the element count.

        Keys are ``key_size`` octets each; values are as :meth:`lookup`
        returns them (per-CPU: one padded value per possible CPU), in the same
        order. Reads ``chunk`` elements a syscall (``BPF_MAP_LOOKUP_BATCH``).
        """
        lib = _load()
        size = self._read_size
        keys = ctypes.create_string_buffer(self.key_size * chunk)
        values = ctypes.create_string_buffer(size * chunk)
        in_batch = ctypes.create_string_buffer(max(self.key_size, 8))
        out_batch = ctypes.create_string_buffer(max(self.key_size, 8))
        opts = _BatchOpts(ctypes.sizeof(_BatchOpts), 0, 0)
        key_parts: list[bytes] = []
        value_parts: list[bytes] = []
        total = 0
        first = True
        while True:
            count = ctypes.c_uint32(chunk)
            rc = lib.bpf_map_lookup_batch(self.fd, None if first else in_batch, out_batch, keys, values,
                                          ctypes.byref(count), ctypes.byref(opts))
            code = _err(rc) if rc else 0
            if code not in (0, errno.ENOENT):
                raise BpfError(f"map {self.name}: batch lookup: {os.strerror(code)}")
            key_parts.append(ctypes.string_at(keys, count.value * self.key_size))
            value_parts.append(ctypes.string_at(values, count.value * size))
            total += count.value
            if code == errno.ENOENT:
                return b"".join(key_parts), b"".join(value_parts), total
            ctypes.memmove(in_batch, out_batch, len(out_batch))
            first = False


def map_id(fd: int) -> int:
    """The kernel's id of the map (or program) behind ``fd``: new whenever the object is recreated."""
    info = ctypes.create_string_buffer(256)
    length = ctypes.c_uint32(len(info))
    rc = _load().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(length))
    if rc:
        raise BpfError(f"bpf_obj_get_info_by_fd: {os.strerror(_err(rc))}")
    return int.from_bytes(info.raw[4:8], "little")  # struct bpf_map_info: type, id, ...


def program_name(prog_id: int) -> str | None:
    """The name of the loaded program with kernel id ``prog_id`` (its C function's name, cut to 15
    characters), or None if there is no such program."""
    lib = _load()
    fd = lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return None
    try:
        info = ctypes.create_string_buffer(256)
        length = ctypes.c_uint32(len(info))
        if lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(length)):
            return None
        return info.raw[64:80].split(b"\0", 1)[0].decode("ascii", "replace")  # struct bpf_prog_info.name
    finally:
        os.close(fd)


_PERCPU_TYPES = {5, 6, 10, 21}  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE


def pinned_map(path: str | os.PathLike) -> Map:
    """The map pinned at ``path`` (opened with ``BPF_OBJ_GET``); :class:`BpfError` if there is none.

    The caller owns the descriptor: ``os.close(m.fd)`` when done.
    """
    lib = _load()
    fd = lib.bpf_obj_get(str(path).encode())
    if fd < 0:
        raise BpfError(f"{path}: {os.strerror(_err(fd))}")
    info = ctypes.create_string_buffer(256)
    length = ctypes.c_uint32(len(info))
    rc = lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(length))
    if rc:
        os.close(fd)
        raise BpfError(f"{path}: bpf_obj_get_info_by_fd: {os.strerror(_err(rc))}")
    # struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name[16] ...
    kind, _, key_size, value_size, max_entries = (int.from_bytes(info.raw[i:i + 4], "little")
                                                  for i in range(0, 20, 4))
    return Map(Path(path).name, fd, key_size, value_size, kind in _PERCPU_TYPES, max_entries)


class BpfObject:
    """A compiled BPF object, loaded, with the maps in ``pin`` pinned under ``pin_dir``.

    A map pinned there already (by an earlier run) is reused when it is
    compatible; when one is not (another size or layout after an upgrade)
    every map of ``pin`` is unpinned and created anew, which callers see as a
    new :func:`map_id` (their counters restarted).
    ``max_entries`` sizes maps before they are created (``{"sessions": 50000}``).
    Raises :class:`VerifierError` with the whole log if a program is refused,
    :class:`BpfUnavailable` if the object cannot be opened.
    """

    def __init__(self, path: str | os.PathLike, *, pin_dir: str | os.PathLike | None = None,
                 pin: tuple[str, ...] = (), max_entries: dict[str, int] | None = None):
        self.path = str(path)
        self._max_entries = dict(max_entries or {})
        self.pin_dir = Path(pin_dir) if pin_dir else None
        if pin and self.pin_dir is None:
            raise ValueError(f"{self.path}: maps to pin ({', '.join(pin)}) but no pin_dir")
        self._obj = None
        self._maps: dict[str, Map] = {}
        lib = _load()
        if self.pin_dir is not None:
            ensure_bpffs()
            self.pin_dir.mkdir(parents=True, exist_ok=True)
        for attempt in (1, 2):
            log = self._open_and_load(lib, pin)
            if log is None:
                return
            if attempt == 1 and self.pin_dir is not None and "reuse pinned map" in log:
                for name in pin:  # stale pins from an older object layout: start these maps again
                    (self.pin_dir / name).unlink(missing_ok=True)
                continue
            raise VerifierError(f"{self.path}: the kernel refused to load the programs", log)

    def _open_and_load(self, lib, pin: tuple[str, ...]) -> str | None:
        global _log
        with _log_lock:
            _log = []
            try:
                obj = lib.bpf_object__open_file(self.path.encode(), None)
                if not obj:
                    code = ctypes.get_errno()
                    raise BpfUnavailable(f"cannot open the eBPF object {self.path}: {os.strerror(code)}\n"
                                         + "".join(_log))
                for name, entries in self._max_entries.items():
                    m = lib.bpf_object__find_map_by_name(obj, name.encode())
                    rc = lib.bpf_map__set_max_entries(m, entries) if m else -errno.ENOENT
                    if rc:
                        lib.bpf_object__close(obj)
                        raise BpfError(f"{self.path}: map {name}: max_entries {entries}: {os.strerror(_err(rc))}")
                for name in pin:
                    assert self.pin_dir is not None  # __init__ refuses pin without pin_dir
                    m = lib.bpf_object__find_map_by_name(obj, name.encode())
                    if not m:
                        lib.bpf_object__close(obj)
                        raise BpfError(f"{self.path}: no map named {name!r}")
                    rc = lib.bpf_map__set_pin_path(m, str(self.pin_dir / name).encode())
                    if rc:
                        lib.bpf_object__close(obj)
                        raise BpfError(f"{self.path}: pin path of map {name}: {os.strerror(_err(rc))}")
                rc = lib.bpf_object__load(obj)
                if rc:
                    lib.bpf_object__close(obj)
                    code = _err(rc)
                    if code == errno.ENOSYS:
                        raise BpfUnavailable("the kernel has no BPF syscall (CONFIG_BPF_SYSCALL)")
                    if code == errno.EPERM:
                        raise BpfUnavailable("loading eBPF programs is not permitted: it needs root "
                                             "(CAP_BPF and CAP_NET_ADMIN)")
                    text = "".join(_log)
                    return text or f"bpf_object__load: {os.strerror(code)}\n"
                self._obj = obj
                return None
            finally:
                _log = None

    def map(self, name: str) -> Map:
        """The map ``name`` of the loaded object."""
        if name not in self._maps:
            lib = _load()
            m = lib.bpf_object__find_map_by_name(self._obj, name.encode())
            if not m:
                raise BpfError(f"{self.path}: no map named {name!r}")
            self._maps[name] = Map(name, lib.bpf_map__fd(m), lib.bpf_map__key_size(m), lib.bpf_map__value_size(m),
                                   lib.bpf_map__type(m) in _PERCPU_TYPES, lib.bpf_map__max_entries(m))
        return self._maps[name]

    def program_fd(self, name: str) -> int:
        """The file descriptor of the loaded program ``name`` (its C function's name)."""
        lib = _load()
        prog = lib.bpf_object__find_program_by_name(self._obj, name.encode())
        if not prog:
            raise BpfError(f"{self.path}: no program named {name!r}")
        return lib.bpf_program__fd(prog)

    def close(self) -> None:
        """Close the object's descriptors (pinned maps and attached programs stay in the kernel); idempotent."""
        if self._obj is not None:
            _load().bpf_object__close(self._obj)
            self._obj = None
            self._maps.clear()


def unpin(pin_dir: str | os.PathLike) -> None:
    """Remove a component instance's pinned maps (its counters) and the folder; idempotent."""
    shutil.rmtree(pin_dir, ignore_errors=True)


@dataclass(frozen=True)
class TestRun:
    """What :func:`test_run` saw: the program's return code, the packet it left, its mean time per run."""

    retval: int
    packet: bytes
    ns_per_run: int


def test_run(prog_fd: int, packet: bytes, *, repeat: int = 1) -> TestRun:
    """Run a loaded program ``repeat`` times on ``packet`` in the kernel (``BPF_PROG_TEST_RUN``).

    The program's map updates are real. For tc programs ``packet`` starts
    with the Ethernet header; :attr:`TestRun.packet` is the packet as the
    program left it (after its last run).
    """
    out = ctypes.create_string_buffer(len(packet) + 512)
    data = ctypes.create_string_buffer(packet, len(packet))
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.cast(data, ctypes.c_void_p),
                        data_out=ctypes.cast(out, ctypes.c_void_p), data_size_in=len(packet),
                        data_size_out=len(out), repeat=repeat)
    rc = _load().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    if rc:
        raise BpfError(f"BPF_PROG_TEST_RUN: {os.strerror(_err(rc))}")
    return TestRun(opts.retval, out.raw[:opts.data_size_out], opts.duration)


# -- tc ---------------------------------------------------------------------------------

def tc_attach(ifindex: int, direction: str, prog_fd: int, *, handle: int = 1, priority: int = 1) -> None:
    """Attach ``prog_fd`` on the clsact ``direction`` (``"ingress"``/``"egress"``) of ``ifindex``, direct action.

    The clsact qdisc is created if needed; a filter already at (handle,
    priority) is replaced in one step, so a restarted exporter swaps its
    programs without a gap. Acts in the calling thread's network namespace.
    """
    lib = _load()
    hook = _TcHook(ctypes.sizeof(_TcHook), ifindex, _direction(direction), 0, 0)
    rc = lib.bpf_tc_hook_create(ctypes.byref(hook))
    if rc and _err(rc) != errno.EEXIST:
        raise BpfError(f"ifindex {ifindex}: clsact qdisc: {os.strerror(_err(rc))}")
    opts = _TcOpts(ctypes.sizeof(_TcOpts), prog_fd, BPF_TC_F_REPLACE, 0, handle, priority, 0)
    rc = lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts))
    if rc:
        raise BpfError(f"ifindex {ifindex}: tc {direction} attach: {os.strerror(_err(rc))}")


def tc_detach(ifindex: int, direction: str, *, handle: int = 1, priority: int = 1) -> bool:
    """Remove the filter at (handle, priority) of ``ifindex``'s ``direction``; False if none was there."""
    lib = _load()
    hook = _TcHook(ctypes.sizeof(_TcHook), ifindex, _direction(direction), 0, 0)
    opts = _TcOpts(ctypes.sizeof(_TcOpts), 0, 0, 0, handle, priority, 0)
    rc = lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))
    if rc:
        code = _err(rc)
        if code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            return False
        raise BpfError(f"ifindex {ifindex}: tc {direction} detach: {os.strerror(code)}")
    return True


# -- tcx (6.6+) -------------------------------------------------------------------------

def tcx_supported(ifindex: int = 1) -> bool:
    """Whether the kernel has the tcx hooks: it answers ``BPF_PROG_QUERY`` for ``ifindex``'s tcx ingress (a
    kernel before 6.6 refuses the attach type with ``EINVAL``). Acts in the calling thread's network namespace
    (ifindex 1, ``lo``, is in every one)."""
    flags, count = ctypes.c_uint32(0), ctypes.c_uint32(0)
    rc = _load().bpf_prog_query(ifindex, BPF_TCX["ingress"], 0, ctypes.byref(flags), None, ctypes.byref(count))
    if rc == 0:
        return True
    code = _err(rc)
    if code == errno.EINVAL:
        return False
    raise BpfError(f"ifindex {ifindex}: tcx query: {os.strerror(code)}")


def _tcx_target(link_fd: int) -> tuple[int, int] | None:
    """(ifindex, attach type) of a tcx link; None for another kind of link. A link whose interface is gone
    has ifindex 0."""
    info = ctypes.create_string_buffer(64)  # struct bpf_link_info: type, id, prog_id, then the union at 16
    length = ctypes.c_uint32(len(info))
    if _load().bpf_obj_get_info_by_fd(link_fd, info, ctypes.byref(length)):
        return None
    kind, ifindex, attach_type = (int.from_bytes(info.raw[o:o + 4], sys.byteorder) for o in (0, 16, 20))
    return (ifindex, attach_type) if kind == BPF_LINK_TYPE_TCX else None


def tcx_attach(ifindex: int, direction: str, prog_fd: int, pin: str | os.PathLike) -> None:
    """Put ``prog_fd`` on the tcx ``direction`` (``"ingress"``/``"egress"``) of ``ifindex`` as a BPF link pinned
    at ``pin`` (bpffs), after the programs already there.

    The link at ``pin``, when it is this interface's and direction's, gets the
    new program in one step (``BPF_LINK_UPDATE``), so a restarted owner swaps
    its programs without a gap, as with :func:`tc_attach`; a pinned link of an
    interface that is gone is unpinned (which releases it) and a new one made.
    Acts in the calling thread's network namespace.
    """
    lib = _load()
    kind = BPF_TCX[direction]
    path = os.fspath(pin).encode()
    fd = lib.bpf_obj_get(path)
    if fd >= 0:
        try:
            if _tcx_target(fd) == (ifindex, kind):
                rc = lib.bpf_link_update(fd, prog_fd, None)
                if rc:
                    raise BpfError(f"ifindex {ifindex}: tcx {direction} update: {os.strerror(_err(rc))}")
                return
        finally:
            os.close(fd)
        os.unlink(pin)
    elif _err(fd) != errno.ENOENT:
        raise BpfError(f"tcx link {os.fspath(pin)}: {os.strerror(_err(fd))}")
    fd = lib.bpf_link_create(prog_fd, ifindex, kind, None)
    if fd < 0:
        raise BpfError(f"ifindex {ifindex}: tcx {direction} attach: {os.strerror(_err(fd))}")
    try:
        rc = lib.bpf_obj_pin(fd, path)
        if rc:
            code = _err(rc)
            lib.bpf_link_detach(fd)
            raise BpfError(f"ifindex {ifindex}: tcx {direction} link pin at {os.fspath(pin)}: {os.strerror(code)}")
    finally:
        os.close(fd)


def tcx_detach(pin: str | os.PathLike) -> bool:
    """Take the program of the tcx link pinned at ``pin`` off its hook and unpin the link; False if none was
    pinned there."""
    lib = _load()
    fd = lib.bpf_obj_get(os.fspath(pin).encode())
    if fd < 0:
        code = _err(fd)
        if code == errno.ENOENT:
            return False
        raise BpfError(f"tcx link {os.fspath(pin)}: {os.strerror(code)}")
    try:
        lib.bpf_link_detach(fd)  # a link whose interface is gone is detached already
    finally:
        os.close(fd)
    os.unlink(pin)
    return True


# -- XDP --------------------------------------------------------------------------------

def _xdp_flags(mode: str) -> int:
    try:
        return XDP_MODES[mode]
    except KeyError:
        raise ValueError(f"XDP mode must be one of {', '.join(XDP_MODES)}, got {mode!r}") from None


def xdp_program(ifindex: int, mode: str) -> int:
    """The kernel id of the program on ``ifindex``'s XDP hook in ``mode`` (0: none)."""
    prog_id = ctypes.c_uint32(0)
    rc = _load().bpf_xdp_query_id(ifindex, _xdp_flags(mode), ctypes.byref(prog_id))
    if rc:
        code = _err(rc)
        if code in (errno.ENOENT, errno.ENODEV):
            return 0
        raise BpfError(f"ifindex {ifindex}: XDP query: {os.strerror(code)}")
    return prog_id.value


def xdp_attach(ifindex: int, prog_fd: int, mode: str = "native", *, replace: str | None = None) -> None:
    """Put ``prog_fd`` on the XDP hook of ``ifindex`` in ``mode`` (``"native"``: the driver's,
    ``"generic"``: the kernel's skb-based one).

    A program already there is replaced only if its name is ``replace`` (a
    restarted owner swapping its own program without a gap); any other
    program raises :class:`BpfError` naming it, and so does a driver without
    native XDP (``EOPNOTSUPP``). Acts in the calling thread's network namespace.
    """
    lib = _load()
    flags = _xdp_flags(mode)
    current = xdp_program(ifindex, mode)
    if current:
        name = program_name(current)
        if name != replace:
            raise BpfError(f"ifindex {ifindex}: the XDP hook ({mode}) holds another program "
                           f"({name or '?'}, id {current})")
    else:
        flags |= XDP_FLAGS_UPDATE_IF_NOEXIST
    rc = lib.bpf_xdp_attach(ifindex, prog_fd, flags, None)
    if rc:
        raise BpfError(f"ifindex {ifindex}: XDP attach ({mode}): {os.strerror(_err(rc))}")


def xdp_detach(ifindex: int, mode: str = "native", *, name: str | None = None) -> bool:
    """Empty the XDP hook of ``ifindex`` in ``mode``; with ``name``, only if the program there has that
    name. False if nothing was removed."""
    current = xdp_program(ifindex, mode)
    if not current or (name is not None and program_name(current) != name):
        return False
    rc = _load().bpf_xdp_detach(ifindex, _xdp_flags(mode), None)
    if rc:
        code = _err(rc)
        if code in (errno.ENOENT, errno.ENODEV):
            return False
        raise BpfError(f"ifindex {ifindex}: XDP detach ({mode}): {os.strerror(code)}")
    return True


def _direction(direction: str) -> int:
    try:
        return {"ingress": BPF_TC_INGRESS, "egress": BPF_TC_EGRESS}[direction]
    except KeyError:
        raise ValueError(f"direction must be 'ingress' or 'egress', got {direction!r}") from None


# -- build ------------------------------------------------------------------------------

def build(sources: list[Path], out_dir: Path, *, btf_path: str = BTF_PATH) -> list[Path]:
    """Compile each ``*.bpf.c`` of ``sources`` into ``out_dir/<name>.bpf.o`` with clang, against a vmlinux.h
    dumped from ``btf_path`` by bpftool. Returns the objects; :class:`BpfUnavailable` names a missing tool."""
    for tool, package in (("clang", "clang"), ("bpftool", "bpftool")):
        if shutil.which(tool) is None:
            raise BpfUnavailable(f"{tool} is not installed (apt-get install {package})")
    if not os.path.exists(btf_path):
        raise BpfUnavailable(f"the kernel has no BTF ({btf_path} is missing)")
    out_dir.mkdir(parents=True, exist_ok=True)
    vmlinux = out_dir / "vmlinux.h"
    with open(vmlinux, "wb") as fh:
        subprocess.run(["bpftool", "btf", "dump", "file", btf_path, "format", "c"], stdout=fh, check=True)
    objects = []
    for src in sources:
        obj = out_dir / (src.name[:-2] + ".o")
        # -mcpu=v3: atomic fetch-and-add (kernel 5.12+; the programs need 6.1+ for their helpers anyway)
        proc = subprocess.run(["clang", "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-mcpu=v3",
                               "-I", str(out_dir), "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BpfError(f"clang could not compile {src}:\n{proc.stderr}")
        objects.append(obj)
    return objects


def sources() -> list[Path]:
    """The eBPF C sources of every component: ``bpf/*.bpf.c`` beside the component's modules."""
    import importlib.util
    found: list[Path] = []
    for package in ("srv6pm.exporter", "srv6pm.stamp"):
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            found.extend(sorted(Path(location, "bpf").glob("*.bpf.c")))
    return found


def object_path(source_dir: str | os.PathLike, name: str) -> Path:
    """Where :func:`build` puts the object of ``source_dir/<name>.bpf.c``."""
    return Path(source_dir) / "build" / f"{name}.bpf.o"


def main(argv: list[str] | None = None) -> int:
    """``python -m srv6pm.bpf build``: compile every component's eBPF sources (what ./setup.sh runs)."""
    import argparse
    import sys
    parser = argparse.ArgumentParser(prog="python -m srv6pm.bpf",
                                     description="Compile srv6pm's eBPF programs with clang against the running "
                                                 "kernel's BTF (vmlinux.h made by bpftool).")
    parser.add_argument("command", choices=["build"], help="build: compile every bpf/*.bpf.c into bpf/build/")
    parser.parse_args(argv)
    try:
        by_dir: dict[Path, list[Path]] = {}
        for src in sources():
            by_dir.setdefault(src.parent, []).append(src)
        for folder, files in by_dir.items():
            for obj in build(files, folder / "build"):
                print(obj)
    except (BpfError, OSError, subprocess.CalledProcessError) as exc:
        print(f"srv6pm.bpf: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
