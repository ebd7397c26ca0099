"""The root of srv6pm's errors, its branches, and what each branch means to a caller.

Every error that srv6pm raises on purpose derives from :class:`Srv6pmError`, so
that a caller (a command line, an RPC handler) can tell the product's own,
already-explained failures from programming errors with one ``except``. Each
error derives from one of three branches, and the branch alone decides how a
command exits (:func:`exit_status`) and which gRPC status the southbound API
answers with (:func:`grpc_status`); a command's last line is ``srv6pm: <message>``
for bad input and ``srv6pm: error: <message>`` otherwise (the class's ``label``):

============================ =========== ======================= =====================================
branch                       exit status gRPC status             meaning
============================ =========== ======================= =====================================
:class:`InputError`          2           ``INVALID_ARGUMENT``    what the operator or a caller gave is
                                                                 wrong (a configuration file, a flag, a
                                                                 scenario, a request field, a record)
:class:`UnavailableError`    1           ``FAILED_PRECONDITION`` something srv6pm needs is not there or
                                                                 not reachable (a broker, a store, a
                                                                 kernel feature, a backend)
:class:`OperationError`      1           ``FAILED_PRECONDITION`` the input was fine but carrying it out
                                                                 failed or was refused (the kernel, a
                                                                 started service, a conflict with what
                                                                 is applied, a remote node)
:class:`Srv6pmError` itself  1           ``INTERNAL``            none of the above
============================ =========== ======================= =====================================

An error class keeps its historical built-in base beside its branch (e.g.
``class ConfigError(InputError, ValueError)``), so code catching ``ValueError``
or ``RuntimeError`` still catches it.
"""

from __future__ import annotations

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "InputError", "OperationError", "Srv6pmError",
           "UnavailableError", "exit_status", "grpc_status"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class Srv6pmError(Exception):
    """An error srv6pm raises on purpose; ``str()`` is a message for the operator."""

    #: The exit status of a command that ends with this error.
    exit_status = EXIT_FAILURE
    #: The name of the ``grpc.StatusCode`` the southbound API answers with.
    grpc_status = "INTERNAL"
    #: What a command's last line puts between ``srv6pm:`` and the message (:func:`srv6pm.exits.guard`):
    #: ``error:`` for a failure, nothing where the message itself says what to change.
    label = "error: "


class InputError(Srv6pmError):
    """What the operator or a caller gave is wrong; ``str()`` names the field, flag or file."""

    exit_status = EXIT_USAGE
    grpc_status = "INVALID_ARGUMENT"
    label = ""


class UnavailableError(Srv6pmError):
    """Something srv6pm needs (a service, a kernel feature, a backend) is not there or not reachable."""

    grpc_status = "FAILED_PRECONDITION"


class OperationError(Srv6pmError):
    """Good input whose execution failed or was refused (the kernel's reason, a conflict, a remote's answer)."""

    grpc_status = "FAILED_PRECONDITION"


def exit_status(exc: BaseException) -> int:
    """The exit status of a command ending with ``exc``: its branch's, 1 for anything not srv6pm's."""
    return exc.exit_status if isinstance(exc, Srv6pmError) else EXIT_FAILURE


def grpc_status(exc: BaseException):
    """The ``grpc.StatusCode`` an RPC failing with ``exc`` answers with: its branch's, ``INTERNAL`` otherwise."""
    import grpc
    return grpc.StatusCode[exc.grpc_status if isinstance(exc, Srv6pmError) else "INTERNAL"]
