"""How a command ends when it fails: one line on stderr, and the exit status its error's class gives.

Every ``srv6pm`` command runs its body through :func:`guard`, so that a failure
looks the same whichever command it ends:

- an error srv6pm raises on purpose (:class:`~srv6pm.errors.Srv6pmError`)
  prints ``srv6pm: <message>`` for bad input (:class:`~srv6pm.errors.InputError`)
  and ``srv6pm: error: <message>`` otherwise (the class's ``label``, which an
  error whose message says what to do instead may leave empty), and exits with
  :func:`srv6pm.errors.exit_status` (2 for bad input, 1 otherwise);
- Ctrl-C or a signal before the command's stop was ready exits 130 / 143
  (:func:`srv6pm.stopping.status_of`);
- a closed output pipe is left to :func:`srv6pm.stopping.quiet_on_closed_pipe` (141);
- anything else (a library's or the kernel's failure, a bug) prints
  ``srv6pm: error: <message>`` and exits 1; ``-vv`` logs its traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable

from srv6pm.errors import EXIT_FAILURE, InputError, Srv6pmError, exit_status
from srv6pm.stopping import status_of

__all__ = ["guard"]

log = logging.getLogger("srv6pm")


def guard(body: Callable[[], int]) -> int:
    """``body()``'s exit status, or the one line and exit status of the failure it raised."""
    try:
        return body()
    except KeyboardInterrupt as exc:  # Ctrl-C, or a signal before the command's stop was ready
        return status_of(exc)
    except BrokenPipeError:
        raise  # srv6pm.cli.main's: quiet, 141
    except Srv6pmError as exc:
        if not isinstance(exc, InputError):
            log.debug("failure", exc_info=True)
        print(f"srv6pm: {exc.label}{exc}", file=sys.stderr)
        return exit_status(exc)
    except Exception as exc:  # a clear last word instead of a traceback; -vv shows the traceback
        log.debug("failure", exc_info=True)
        print(f"srv6pm: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
