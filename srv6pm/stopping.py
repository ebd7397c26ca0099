"""How a command stops: on SIGINT or SIGTERM, and when its output pipe is closed.

A long-running command stops cleanly on the first SIGINT (Ctrl-C) or SIGTERM
and then exits with the shell's convention, 128 + the signal's number:
:data:`EXIT_INTERRUPTED` (130) after SIGINT, :data:`EXIT_TERMINATED` (143)
after SIGTERM. A command whose standard output is a pipe that the reader closed
(``srv6pm collector check --config F | head -1``) stops writing and exits with
:data:`EXIT_BROKEN_PIPE` (141, 128 + SIGPIPE, what a C program killed by
SIGPIPE reports), without a traceback.

What a signal asks for (a stop, a reload) runs in a thread of its own, never
in the handler: Python runs a handler between two bytecodes of the main
thread, which may at that moment hold the very lock the action takes (an
``Event``'s, while the main thread is inside its ``wait`` or ``clear``), and
the process would hang there for ever.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_INTERRUPTED", "EXIT_TERMINATED", "Interrupted", "Stop", "on_signal",
           "quiet_on_closed_pipe", "status_of"]

EXIT_INTERRUPTED = 128 + signal.SIGINT    # 130
EXIT_TERMINATED = 128 + signal.SIGTERM    # 143
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE   # 141


class Interrupted(KeyboardInterrupt):
    """A signal came while a command was still starting; ``status`` is its exit status (130 or 143)."""

    def __init__(self, sig: int) -> None:
        super().__init__(f"stopped by {signal.Signals(sig).name}")
        self.status = 128 + sig


def _in_thread(action: Callable[[], object]) -> None:
    """Run ``action`` in a thread of its own (see the module docstring)."""
    threading.Thread(target=action, name="srv6pm-signal", daemon=True).start()


def on_signal(sig: int, action: Callable[[], object]):
    """On each ``sig``, run ``action`` in a thread of its own; returns the previous handler (main thread only)."""
    return signal.signal(sig, lambda _sig, _frame: _in_thread(action))


def status_of(interruption: KeyboardInterrupt) -> int:
    """The exit status of an interruption: :class:`Interrupted`'s own, 130 for a plain Ctrl-C."""
    return getattr(interruption, "status", EXIT_INTERRUPTED)


class Stop:
    """Remembers the first SIGINT or SIGTERM received and calls ``then`` on each one, in a thread of its own.

    ``with Stop(then) as stop:`` installs the handlers (in the main thread only;
    elsewhere it installs nothing) and restores the previous ones on exit;
    :meth:`status` is then the command's exit status. Install it before
    building what it stops and :meth:`attach` the stop once built: until then,
    a signal raises :class:`Interrupted`, abandoning the start (e.g. a client
    still waiting for its broker).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, then: Callable[[], object] | None = None) -> None:
        self.then = then
        self.signal: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "Stop":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._received)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def attach(self, then: Callable[[], object]) -> None:
        """Call ``then`` on each signal from now on, and at once if one already came."""
        self.then = then
        if self.signal is not None:
            then()

    def _received(self, sig: int, _frame) -> None:
        if self.signal is None:
            self.signal = sig
        if self.then is None:
            raise Interrupted(sig)
        _in_thread(self.then)

    @property
    def stopping(self) -> bool:
        """True once a signal was received."""
        return self.signal is not None

    def status(self, otherwise: int = 0) -> int:
        """128 + the first signal's number (130 SIGINT, 143 SIGTERM), or ``otherwise`` if none came."""
        return 128 + self.signal if self.signal is not None else otherwise


def quiet_on_closed_pipe(command: Callable[[], int]) -> int:
    """``command()``'s exit status, or :data:`EXIT_BROKEN_PIPE` if its standard output was closed under it.

    Standard output is flushed before returning, so that a closed pipe shows
    here rather than as a traceback at the interpreter's exit.
    """
    try:
        try:
            return command()
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        _detach_stdout()
        return EXIT_BROKEN_PIPE


def _detach_stdout() -> None:
    """Point standard output at /dev/null, so that nothing more (not even the exit's flush) hits a closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (e.g. replaced in a test): nothing to detach
        pass
