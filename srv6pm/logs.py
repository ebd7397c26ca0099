"""Structured, quiet logging for every srv6pm process.

Records carry their data as ``extra={...}`` fields, never formatted into the
message, so that they stay machine-readable. The default level is WARNING:
a healthy component prints nothing. Client libraries' own records (kafka-python's
"Connection failed: ... ECONNREFUSED", urllib3's retries, grpc's) are left out
unless ``-v`` is given: without it, what a user sees of a failure is the
product's own one-line error or warning. Two output formats: ``logfmt`` (one line,
``key=value``, for people and grep) and ``json`` (one object per line).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from srv6pm.config import ConfigError, setting
from srv6pm.quote import quote

__all__ = ["FORMATS", "setup"]

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _ts(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [f"ts={_ts(record)}", f"level={record.levelname.lower()}", f"component={record.name}",
                 f"msg={_quote(record.getMessage())}"]
        parts += [f"{k}={_quote(v)}" for k, v in _fields(record).items()]
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": _ts(record), "level": record.levelname.lower(), "component": record.name,
               "msg": record.getMessage(), **_fields(record)}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def _quote(value) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\n\t'):
        return text
    return json.dumps(text)


PRODUCT = "srv6pm"  # the product's loggers are this one and those under it
LIBRARIES = ("kafka", "urllib3", "influxdb_client", "pyroute2", "grpc", "arango")


class ProductOnly(logging.Filter):
    """Lets through the product's own records only (loggers ``srv6pm`` and ``srv6pm.*``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == PRODUCT or record.name.startswith(PRODUCT + ".")


class CloseRace(logging.Filter):
    """Leaves out kafka-python 3's tracebacks of a client closed while its own IO loop is still inside it;
    nothing is lost in either, and both are shown from ``-vvv`` on:

    - "Error closing coroutine for cancelled task" when the coroutine was still running (``ValueError:
      generator already executing``; logger ``kafka.net.selector``): seen when a consumer closes during a
      rebalance callback; the task is cancelled all the same;
    - "Error receiving network data closing socket" when the socket is already gone (``AttributeError``
      on ``None``'s ``recv``; logger ``kafka.net.transport``): the loop read a connection that the
      closing thread had just closed (seen at a processor's SIGINT).

    And "Error sending request data: [Errno 32] Broken pipe" (logger ``kafka.net.transport``) keeps its one
    line but loses its traceback: the connection was ended under a send, by the closing thread (seen at a
    processor's SIGINT) or by the broker; the line says which connection, and the traceback only where
    in kafka-python."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BrokenPipeError):
            if str(record.msg).endswith("Error sending request data: %s"):
                record.exc_info = record.exc_text = None
            return True
        if isinstance(exc, ValueError):
            return not (record.msg == "Error closing coroutine for cancelled task"
                        and "generator already executing" in str(exc))
        if isinstance(exc, AttributeError):
            return not (str(record.msg).endswith("Error receiving network data closing socket")
                        and "'NoneType' object has no attribute 'recv'" in str(exc))
        return True


_CLOSE_RACE = CloseRace()
_CLOSE_RACE_LOGGERS = ("kafka.net.selector", "kafka.net.transport")


FORMATS = ("logfmt", "json")  # what --log-format and $SRV6PM_LOG_FORMAT take


def setup(verbosity: int = 0, fmt: str | None = None) -> None:
    """Configure the root logger: 0 → WARNING, 1 → INFO, 2+ → DEBUG.

    Libraries' records: none at 0, their warnings at 1 and 2, everything at 3+
    (without -v, gRPC's C core is also told to log nothing, unless
    ``GRPC_VERBOSITY`` is set). ``fmt`` is ``logfmt`` or ``json``; default from
    ``SRV6PM_LOG_FORMAT``, else logfmt.
    """
    fmt = fmt or setting(None, "log_format", "SRV6PM_LOG_FORMAT", "logfmt")
    if fmt not in FORMATS:
        raise ConfigError(f"SRV6PM_LOG_FORMAT {quote(fmt)}: not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    if verbosity <= 0:
        handler.addFilter(ProductOnly())
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # read when grpc is first imported, after this
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING)
    # Client libraries are chatty at INFO; keep them at WARNING unless debugging.
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity >= 3 else logging.WARNING)
    for name in _CLOSE_RACE_LOGGERS:
        if verbosity >= 3:
            logging.getLogger(name).removeFilter(_CLOSE_RACE)
        else:
            logging.getLogger(name).addFilter(_CLOSE_RACE)
