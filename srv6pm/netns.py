"""Run code inside a named network namespace without moving the whole process.

A named network namespace is a file ``/run/netns/NAME`` (created by
``ip netns add`` or :func:`pyroute2.netns.create`) onto which the kernel's
namespace object is bind-mounted.

:class:`NetnsThread` owns one dedicated thread. That thread enters the namespace
once, with ``setns(2)``, and then runs the callables submitted to it with
:meth:`NetnsThread.call`, one after another, in submission order. Everything else
in the process stays where it was. The kernel semantics that make this work,
and that callers must keep in mind:

* ``setns(fd, CLONE_NEWNET)`` changes the network namespace of the **calling
  thread only**. Other threads, including the one that created the
  :class:`NetnsThread`, keep their namespace.
* A socket belongs to the namespace its creating thread was in at ``socket()``
  time, for its whole life, whichever thread later uses it. So a socket
  (netlink, UDP, ...) created inside :meth:`NetnsThread.call` may be used from
  any thread afterwards and still talks to the namespace; one created outside
  never does.
* Files under ``/proc/sys/net`` are resolved against the namespace of the thread
  that opens them, so sysctls of the namespace are read and written by opening
  the file inside :meth:`NetnsThread.call`. ``/proc/self/net`` is not safe for this
  (``self`` is the thread group leader, not the calling thread).
* The thread holds a reference to the namespace: if ``/run/netns/NAME`` is
  deleted while the thread lives, the namespace (and its interfaces) lives on
  until :meth:`NetnsThread.close`.

``NetnsThread(None)`` is a worker thread in the current namespace (no ``setns``):
the same serialising executor, which is useful for libraries that are not
thread safe (libnftables contexts, for instance).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, TypeVar

from srv6pm.errors import OperationError

__all__ = ["NETNS_DIR", "NetnsError", "NetnsThread", "exists", "netns_path", "unshare"]

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

T = TypeVar("T")

_libc = None
_libc_lock = threading.Lock()


class NetnsError(OperationError, RuntimeError):
    """A namespace is missing, cannot be entered, or its worker thread is closed."""


def _get_libc():
    global _libc
    with _libc_lock:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
            _libc.setns.restype = ctypes.c_int
        return _libc


def unshare() -> bool:
    """Move the calling thread, and only it, into a new network namespace of no name (gone when nothing holds it
    any more); False if the kernel refuses (not root)."""
    return _get_libc().unshare(CLONE_NEWNET) == 0


def netns_path(name: str) -> str:
    """The path ``/run/netns/NAME`` of a named namespace; ``ValueError`` for a bad name."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"invalid network namespace name {name!r}")
    return os.path.join(NETNS_DIR, name)


def exists(name: str) -> bool:
    """True if ``/run/netns/NAME`` exists (so creating a namespace of that name would clash)."""
    return os.path.lexists(netns_path(name))


_STOP = object()


class NetnsThread:
    """A worker thread that lives in network namespace ``name`` (``None``: the current one).

    The constructor starts the thread and waits until it has entered the
    namespace; it raises :class:`NetnsError` naming the namespace if it does not
    exist or ``setns`` fails (then no thread is left running).

    :meth:`call` runs a callable in that thread and returns its result or
    re-raises its exception in the caller. Calls are executed one at a time in
    submission order; a call made from inside the worker thread itself (a
    callable that calls back) runs directly instead of dead-locking.

    Use as a context manager or call :meth:`close`. Thread safe.
    """

    def __init__(self, name: str | None, *, thread_name: str | None = None):
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        path = netns_path(name) if name is not None else None
        ready: Future = Future()
        label = thread_name or f"netns-{name if name is not None else '(current)'}"
        self._thread = threading.Thread(target=self._run, args=(path, ready), name=label, daemon=True)
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join()
            self._closed = True
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"NetnsThread({self.name!r}, {state})"

    def _enter(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NetnsError(f"network namespace {self.name!r} does not exist ({path} missing)") from None
        except OSError as exc:
            raise NetnsError(f"network namespace {self.name!r}: cannot open {path}: {exc.strerror}") from None
        try:
            libc = _get_libc()
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise NetnsError(f"network namespace {self.name!r}: setns failed: {os.strerror(err)}"
                                 + (" (is it a namespace? are you root?)" if err in (1, 22) else ""))
        finally:
            os.close(fd)

    def _run(self, path: str | None, ready: Future) -> None:
        try:
            if path is not None:
                self._enter(path)
        except BaseException as exc:  # reported to the constructor
            ready.set_exception(exc)
            return
        ready.set_result(None)
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            future, fn, args, kw = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kw)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            del future, fn, args, kw, item

    def call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run ``fn(*args, **kw)`` in the namespace thread; return its result or re-raise."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kw)
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise NetnsError(f"worker thread of network namespace {self.name!r} is closed")
            self._queue.put((future, fn, args, kw))
        return future.result()

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread after the calls already submitted; idempotent.

        When the thread has exited it no longer holds the namespace alive.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the constructor failed)."""
        return self._closed

    def __enter__(self) -> "NetnsThread":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
