"""STAMP on the node exporter: a Session-Reflector and Session-Senders whose samples go to Kafka.

Sessions and the reflector are started and stopped at any time
(:meth:`Probes.start_session`, :meth:`Probes.stop_session`,
:meth:`Probes.start_reflector`, :meth:`Probes.stop_reflector`), from the
southbound API's ``StampSession`` and ``StampReflector`` messages (validated).
Each session runs a :class:`~srv6pm.stamp.Sender` in its own thread (sockets
in the data plane's namespace, if configured), sending ``rate`` test packets
per second until it is stopped. Every sample becomes one ``srv6pm.stamp``
record keyed by the session name, with the exporter's period so that the
processor can cut per-period statistics; the producer batches them
(``linger_ms``). Samples are published in the order the sender decides them,
which is what the processor's event-time windows expect.

A session with ``liveness`` watches its path: its sender's declarations of
the path down or up again are published at once on ``srv6pm.alarms`` and
``srv6pm.events`` by a :class:`~srv6pm.exporter.liveness.LivenessPublisher`.

Starting checks what the kernel will refuse before anything changes: the key
file is read and the sender's socket is opened (bound, SRH set) once, so a
bad source address or key file is a :class:`ProbeError` and the session that
ran under that name (if any) keeps running. Replacing the reflector stops the
old one first (they share the port); if the new one cannot bind, the old one
is started again.

The reflector's backend is the message's ``backend``, else the exporter's
(``stamp.reflector.backend`` in its file, else ``ebpf``; see
:mod:`srv6pm.stamp.backends`). An ebpf reflector is attached in the data
plane's namespace and pins its maps under the node's name; where eBPF cannot
run, starting it is a :class:`ProbeError` that says why and how to choose
the socket backend, and nothing falls back by itself.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

from kafka import KafkaProducer

from srv6pm import metrics, records
from srv6pm.errors import OperationError
from srv6pm.netns import NetnsError
from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.stamp import ReflectorConfig, Sender, SenderConfig, StampError
from srv6pm.stamp.backends import DEFAULT_BACKEND, BackendUnavailable, make_reflector, open_reflector
from srv6pm.stamp.keys import load_key

from .liveness import LivenessPublisher

__all__ = ["ProbeError", "Probes"]

log = logging.getLogger("srv6pm.exporter.stamp")


class ProbeError(OperationError, RuntimeError):
    """A STAMP session or reflector cannot run; ``str()`` is ``"<what>: <reason>"`` (the kernel's reason)."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


@dataclasses.dataclass
class _Session:
    settings: pb.StampSession
    sender: Sender
    thread: threading.Thread | None = None
    error: str = ""
    stopped: bool = False


def _reply_fields(sample) -> dict:
    """The ``srv6pm.stamp`` members of a sample's reply: t2, t3, t4 (null when lost) and what its RFC 8972
    TLVs and timestamp checks give. t2/t3 of a reply flagged ``impossible_timestamps`` are published
    only if after 1970 (else null)."""
    if sample.lost:
        return {"t2": None, "t3": None, "t4": None}
    out = {name: getattr(sample, name) for name in (
        "t2", "t3", "t4", "sender_tx", "reflector_rx", "reflector_tx", "dscp", "dscp_at_reflector", "dscp_remarked",
        "reply_dscp", "reply_dscp_remarked")}
    if sample.impossible_timestamps:
        out.update(impossible_timestamps=True, t2=sample.t2 if sample.t2 >= 1 else None,
                   t3=sample.t3 if sample.t3 >= 1 else None)
    return out


class Probes:
    """The STAMP reflector and senders of one exporter. Thread safe."""

    def __init__(self, node: str, period: float, producer: KafkaProducer, netns: str | None = None,
                 reflector_backend: str = DEFAULT_BACKEND, boot_id: str | None = None):
        self.node = node
        self.period = period
        self.netns = netns
        self.reflector_backend = reflector_backend
        self._producer = producer
        self._liveness = LivenessPublisher(producer, node, period, boot_id)
        self._lock = threading.RLock()
        self._sessions: dict[str, _Session] = {}
        self._reflector = None  # a Reflector or an EbpfReflector
        self._reflector_settings: pb.StampReflector | None = None
        self._reflector_error = ""

    # -- sessions ---------------------------------------------------------------------
    def _sender(self, s: pb.StampSession) -> Sender:
        what = f"STAMP session {s.name}"
        try:
            key = load_key(s.auth_key_file) if s.auth_key_file else None
            return Sender(SenderConfig.from_session(s, key=key, netns=self.netns),
                          on_liveness=lambda change: self._liveness.changed(s, change))
        except (StampError, ValueError, OSError) as exc:
            raise ProbeError(f"{what}: {_reason(exc)}") from None

    def start_session(self, settings: pb.StampSession) -> None:
        """Run session ``settings`` (replacing a running one of that name); :class:`ProbeError` if it cannot.

        The sender's socket is opened here (:meth:`Sender.open`), so the kernel's refusals (a source
        address the node lacks, ...) come from this call, not later from the session's thread.
        """
        s = type(settings)()
        s.CopyFrom(settings)
        sender = self._sender(s)
        try:
            sender.open()
            with self._lock:
                self.stop_session(s.name)
                session = _Session(s, sender)
                session.thread = threading.Thread(target=self._run, args=(session,), name=f"stamp-{s.name}",
                                                  daemon=True)
                self._sessions[s.name] = session
                session.thread.start()
        except StampError as exc:
            sender.close()
            raise ProbeError(f"STAMP session {s.name}: {exc}") from None
        except BaseException:
            sender.close()
            raise
        log.info("STAMP session started", extra={"node": self.node, "session": s.name, "dest": s.destination})

    def stop_session(self, name: str) -> bool:
        """Stop session ``name`` and wait for its thread; False if there was none."""
        with self._lock:
            session = self._sessions.pop(name, None)
        if session is None:
            return False
        session.stopped = True
        session.sender.stop()
        if session.thread is not None:
            session.thread.join(timeout=5)
        log.info("STAMP session stopped", extra={"node": self.node, "session": name})
        return True

    def _run(self, session: _Session) -> None:
        try:
            for sample in session.sender.samples():
                self._publish(session.settings, sample)
        except Exception as exc:  # a session that cannot run says why, the others go on
            session.error = _reason(exc)
            log.error("STAMP session failed", extra={"session": session.settings.name, "error": session.error})

    def _publish(self, s: pb.StampSession, sample) -> None:
        if sample.t1 is None:  # never sent (socket error): nothing was measured
            log.warning("test packet not sent", extra={"session": s.name, "seq": sample.seq})
            return
        record = records.StampSample(
            session=s.name, seq=sample.seq, period_s=self.period, t1=sample.t1, lost=sample.lost, sender=self.node,
            reflector=s.reflector_node or s.destination, timestamps=sample.timestamps or None,
            ttl=sample.ttl, reflector_seq=sample.reflector_seq, **_reply_fields(sample))
        self._producer.send(records.STAMP, key=s.name.encode(), value=record.to_json())
        metrics.get().records_out.labels("exporter", records.STAMP).inc()
        if sample.impossible_timestamps:
            metrics.get().stamp_impossible_timestamps.labels("exporter", s.name).inc()

    def session_status(self) -> list[pb.StampSessionStatus]:
        """The live status of every session, sorted by name."""
        with self._lock:
            sessions = sorted(self._sessions.values(), key=lambda x: x.settings.name)
        out = []
        for s in sessions:
            stats = s.sender.stats()
            running = s.thread is not None and s.thread.is_alive() and not s.stopped
            out.append(pb.StampSessionStatus(name=s.settings.name, running=running, error=s.error,
                                             sent=stats.sent, received=stats.received, lost=stats.lost))
        return out

    # -- reflector --------------------------------------------------------------------
    def _open_reflector(self, r: pb.StampReflector):
        backend = r.backend or self.reflector_backend
        how = ('backend: "socket" in the StampReflector message, or stamp.reflector.backend: socket in the '
               "exporter's file for every reflector")
        reflector = None
        try:
            key = load_key(r.auth_key_file) if r.auth_key_file else None
            reflector = make_reflector(ReflectorConfig.from_message(r, key=key, netns=self.netns), backend,
                                       instance=self.node)
            open_reflector(reflector, how)
            return reflector.start()
        except (StampError, ValueError, OSError, NetnsError, BackendUnavailable) as exc:
            if reflector is not None:
                reflector.close()
            raise ProbeError(f"STAMP reflector on [{r.bind}]:{r.port} ({backend}): {_reason(exc)}") from None

    def start_reflector(self, settings: pb.StampReflector) -> None:
        """Run the reflector with ``settings`` (replacing the running one); :class:`ProbeError` if it cannot.

        On failure the previous reflector (if any) runs again as before.
        """
        r = type(settings)()
        r.CopyFrom(settings)
        with self._lock:
            previous = self._reflector_settings
            self._close_reflector()
            try:
                self._reflector = self._open_reflector(r)
            except ProbeError:
                if previous is not None:
                    try:
                        self._reflector = self._open_reflector(previous)
                        self._reflector_settings = previous
                    except ProbeError as exc:
                        self._reflector_error = str(exc)
                        log.error("previous STAMP reflector cannot run again", extra={"error": str(exc)})
                raise
            self._reflector_settings = r
            self._reflector_error = ""
        log.info("reflector started", extra={"node": self.node, "bind": r.bind, "port": r.port})

    def _close_reflector(self) -> None:
        if self._reflector is not None:
            stats = self._reflector.stats()
            self._reflector.close()
            self._reflector = None
            log.info("reflector stopped", extra={"node": self.node, **dataclasses.asdict(stats)})
        self._reflector_settings = None

    def stop_reflector(self) -> bool:
        """Stop the reflector; False if none was running."""
        with self._lock:
            had = self._reflector_settings is not None or self._reflector is not None
            self._close_reflector()
            self._reflector_error = ""
            return had

    def reflector_status(self) -> pb.StampReflectorStatus | None:
        """The reflector's live status (None: no reflector)."""
        with self._lock:
            if self._reflector is None and not self._reflector_error:
                return None
            stats = self._reflector.stats() if self._reflector is not None else None
        if stats is None:
            return pb.StampReflectorStatus(running=False, error=self._reflector_error)
        return pb.StampReflectorStatus(running=True, received=stats.received, reflected=stats.reflected,
                                       dropped_malformed=stats.dropped_malformed, dropped_auth=stats.dropped_auth)

    def reflector_stats(self):
        """The running reflector's :class:`~srv6pm.stamp.ReflectorStats` (None: no reflector)."""
        with self._lock:
            return None if self._reflector is None else self._reflector.stats()

    def stop(self) -> None:
        """Stop every session and the reflector."""
        with self._lock:
            names = list(self._sessions)
        for name in names:
            self.stop_session(name)
        self._liveness.close()
        self.stop_reflector()
