"""Kafka helpers shared by every srv6pm component.

Deliberately small: waiting until a broker answers, making sure the topics a
component needs exist with enough partitions, and building a consumer-group
member the way every srv6pm consumer needs it (:func:`group_consumer`).
Producers and non-group consumers are built by the components themselves with
kafka-python.

Where to connect is given either as a bootstrap string (``"host:port[,...]"``)
or as a :class:`srv6pm.config.KafkaSettings` (anything with a
``client_options()`` method returning kafka-python keyword arguments including
``bootstrap_servers``): building client options (TLS, SASL, ...) from the
configuration is the configuration module's job, not this one's. Extra
``**client_options`` are passed to :class:`kafka.KafkaAdminClient` and win.

Requires kafka-python 3.x (dict-based ``create_topics(..., raise_errors=False)``
and dict-shaped ``describe_topics`` results).

Why topics are created explicitly: the embedded lab broker (Tansu) creates a
topic with 4 partitions as soon as a producer or a subscribing consumer asks for
its metadata, so a component that starts before :func:`ensure_topics` ran gets
a topic with the wrong partition count, and Tansu cannot add partitions later
(no CreatePartitions support). Call :func:`ensure_topics` before producing or
consuming.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Union

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaConfigurationError, KafkaError

from srv6pm.errors import OperationError, UnavailableError

if TYPE_CHECKING:
    from srv6pm.config import KafkaSettings

__all__ = [
    "BrokerUnavailableError",
    "KafkaTarget",
    "TopicPartitionCountError",
    "ensure_topics",
    "group_consumer",
    "wait_for_broker",
]

log = logging.getLogger(__name__)

_RETRY_INTERVAL_S = 0.1
_TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code TOPIC_ALREADY_EXISTS
_UNKNOWN_TOPIC_OR_PARTITION = 3


KafkaTarget = Union[str, "KafkaSettings"]
"""A bootstrap string, or settings with a ``client_options()`` method."""


class BrokerUnavailableError(UnavailableError, RuntimeError):
    """No Kafka broker answered at the bootstrap address within the timeout."""


class TopicPartitionCountError(OperationError, RuntimeError):
    """An existing topic has fewer partitions than required."""


def wait_for_broker(kafka: KafkaTarget, timeout: float = 30.0, **client_options: Any) -> None:
    """Block until a Kafka broker answers a metadata request.

    ``kafka`` is a bootstrap string (``"host:port"`` or a comma-separated list) or
    :class:`~srv6pm.config.KafkaSettings`. The broker counts as ready when a
    :class:`kafka.KafkaAdminClient` can connect and list topics, i.e. the broker
    really speaks the Kafka protocol, not merely accepts TCP connections.

    Raises :class:`BrokerUnavailableError` (with the last client error) when the
    broker has not answered after ``timeout`` seconds. ``client_options`` go to
    :class:`kafka.KafkaAdminClient`.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    bootstrap, options = _connection(kafka, client_options)
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    attempts = 0
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        try:
            admin = _admin_client(remaining, options)
            try:
                admin.list_topics()
            finally:
                admin.close()
        except KafkaConfigurationError:
            raise  # a wrong client option never fixes itself by waiting
        except (KafkaError, OSError) as exc:
            last_error = exc
        else:
            log.debug("kafka broker ready", extra={"bootstrap": bootstrap, "attempts": attempts})
            return
        if time.monotonic() + _RETRY_INTERVAL_S >= deadline:
            raise BrokerUnavailableError(
                f"no Kafka broker answered at {bootstrap} within {timeout:g} s "
                f"({attempts} attempts; last error: {last_error!r})"
            ) from last_error
        time.sleep(_RETRY_INTERVAL_S)


def ensure_topics(
    kafka: KafkaTarget,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
    **client_options: Any,
) -> list[str]:
    """Make sure every topic in ``topics`` exists with at least the given partition count.

    ``kafka`` is a bootstrap string or :class:`~srv6pm.config.KafkaSettings`.
    ``topics`` maps topic name to the wanted number of partitions. Missing topics
    are created with that many partitions and ``replication_factor``; topics that
    already exist are left alone (also when another process creates them at the
    same time). Returns the sorted names of the topics this call created.

    Raises :class:`TopicPartitionCountError` when an existing topic has fewer
    partitions than wanted (records keyed by flow would then land on other
    partitions than the rest of the pipeline expects, and partitions cannot be
    added on the embedded broker); more partitions than wanted is accepted.
    Raises :class:`BrokerUnavailableError` when the broker cannot be reached and
    :class:`kafka.errors.KafkaError` for other broker-side failures. New topics
    are waited for until every partition has a leader, all within ``timeout``
    seconds.
    """
    wanted = dict(topics)
    for name, partitions in wanted.items():
        if not name:
            raise ValueError("topic names must not be empty")
        if not isinstance(partitions, int) or partitions < 1:
            raise ValueError(f"topic {name!r}: partition count must be a positive int, got {partitions!r}")
    if replication_factor < 1:
        raise ValueError(f"replication_factor must be >= 1, got {replication_factor!r}")
    if not wanted:
        return []

    bootstrap, options = _connection(kafka, client_options)
    deadline = time.monotonic() + timeout
    try:
        admin = _admin_client(timeout, options)
    except KafkaConfigurationError:
        raise
    except (KafkaError, OSError) as exc:
        raise BrokerUnavailableError(f"cannot reach Kafka broker at {bootstrap}: {exc!r}") from exc
    try:
        existing = _partition_counts(admin, list(wanted))
        _check_partition_counts(existing, wanted)
        missing = sorted(set(wanted) - set(existing))
        if not missing:
            log.debug("kafka topics already present", extra={"topics": sorted(wanted)})
            return []

        response = admin.create_topics(
            {name: {"num_partitions": wanted[name], "replication_factor": replication_factor} for name in missing},
            timeout_ms=_ms(deadline),
            raise_errors=False,
        )
        created = []
        for result in response.get("topics", ()):
            name, code = result.get("name"), result.get("error_code", 0)
            if code == 0:
                created.append(name)
            elif code == _TOPIC_ALREADY_EXISTS:
                continue  # created concurrently by someone else; its partition count is checked below
            else:
                raise KafkaError(
                    f"creating topic {name!r} failed: error {code} {result.get('error_message') or ''}".rstrip()
                )

        counts = _wait_for_partitions(admin, missing, deadline)
        _check_partition_counts(counts, wanted)
        log.info("kafka topics created", extra={"topics": sorted(created), "bootstrap": bootstrap})
        return sorted(created)
    finally:
        admin.close()


def group_consumer(
    kafka: KafkaTarget,
    topics: Iterable[str],
    group_id: str,
    client_id: str,
    *,
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
    max_poll_interval_ms: int,
    max_poll_records: int,
    listener: ConsumerRebalanceListener | None = None,
    **client_options: Any,
) -> KafkaConsumer:
    """A member of consumer group ``group_id``, already subscribed to ``topics``.

    ``kafka`` is a bootstrap string or :class:`~srv6pm.config.KafkaSettings`.
    The consumer returned guarantees:

    * no automatic commits (``enable_auto_commit=False``): offsets move only
      when the caller commits them, after it finished the records (at least
      once, never "committed but not done");
    * a group without committed offsets starts at the earliest record
      (``auto_offset_reset="earliest"``), so nothing produced before the first
      start is skipped;
    * the given group timings and batch size. The defaults of the components
      suit a production broker; the lab passes short ones (e.g. 2000/500 ms)
      because a join on the embedded broker (Tansu) takes about
      ``session_timeout_ms / 2``.

    ``listener`` (a :class:`kafka.ConsumerRebalanceListener`) is told about
    assignments and revocations; its callbacks run inside ``poll``. The topics
    should exist first (see :func:`ensure_topics`). ``client_options`` go to
    :class:`kafka.KafkaConsumer` and win over the settings' options (not over
    the guarantees above).

    Raises :class:`ValueError` naming the argument for an empty group id or
    topic list, a non-positive timing, or a heartbeat interval not below the
    session timeout.
    """
    names = [topics] if isinstance(topics, str) else list(topics)
    if not names or not all(isinstance(t, str) and t for t in names):
        raise ValueError(f"topics: need one or more non-empty topic names, got {names!r}")
    if not isinstance(group_id, str) or not group_id:
        raise ValueError(f"group_id: must be a non-empty string, got {group_id!r}")
    timings = {"session_timeout_ms": session_timeout_ms, "heartbeat_interval_ms": heartbeat_interval_ms,
               "max_poll_interval_ms": max_poll_interval_ms, "max_poll_records": max_poll_records}
    for name, value in timings.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: must be a positive int, got {value!r}")
    if heartbeat_interval_ms >= session_timeout_ms:
        raise ValueError(f"heartbeat_interval_ms: must be below session_timeout_ms ({session_timeout_ms}), "
                         f"got {heartbeat_interval_ms}")
    _, options = _connection(kafka, client_options)
    options.update(group_id=group_id, client_id=client_id, enable_auto_commit=False,
                   auto_offset_reset="earliest", **timings)
    consumer = KafkaConsumer(**options)
    try:
        consumer.subscribe(names, listener=listener)
    except BaseException:
        consumer.close()
        raise
    return consumer


def _connection(kafka: KafkaTarget, extra: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(bootstrap string for messages, kafka-python client options) from either form of ``kafka``."""
    if isinstance(kafka, str):
        options: dict[str, Any] = {"bootstrap_servers": kafka}
    elif callable(getattr(kafka, "client_options", None)):
        options = dict(kafka.client_options())
    else:
        raise TypeError(f"expected a bootstrap string or KafkaSettings, got {type(kafka).__name__}")
    options.update(extra)
    servers = options.get("bootstrap_servers")
    if not servers:
        raise ValueError("no Kafka bootstrap servers given")
    bootstrap = servers if isinstance(servers, str) else ",".join(servers)
    return bootstrap, options


def _admin_client(timeout_s: float, options: Mapping[str, Any]) -> KafkaAdminClient:
    """An admin client whose connection and request timeouts fit in ``timeout_s`` (unless overridden)."""
    timeout_ms = max(100, int(timeout_s * 1000))
    return KafkaAdminClient(**{"request_timeout_ms": timeout_ms, "bootstrap_timeout_ms": timeout_ms, **options})


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition count of each named topic that exists (metadata only: never auto-creates)."""
    counts: dict[str, int] = {}
    for topic in admin.describe_topics(names):
        name = topic["name"]
        code = topic.get("error_code", 0)
        if code == _UNKNOWN_TOPIC_OR_PARTITION:
            continue
        if code != 0:
            raise KafkaError(f"describing topic {name!r} failed: error {code}")
        counts[name] = len(topic.get("partitions") or ())
    return counts


def _wait_for_partitions(admin: KafkaAdminClient, names: list[str], deadline: float) -> dict[str, int]:
    """Poll metadata until every topic in ``names`` shows partitions, each with a leader."""
    while True:
        ready: dict[str, int] = {}
        for topic in admin.describe_topics(names):
            name = topic["name"]
            partitions = topic.get("partitions") or ()
            leaders_ok = all(p.get("leader_id", -1) >= 0 for p in partitions)
            if topic.get("error_code", 0) == 0 and partitions and leaders_ok:
                ready[name] = len(partitions)
        if len(ready) == len(names):
            return ready
        if time.monotonic() >= deadline:
            pending = sorted(set(names) - set(ready))
            raise KafkaError(f"topics not ready (no leader for every partition) before timeout: {pending}")
        time.sleep(_RETRY_INTERVAL_S)


def _check_partition_counts(counts: Mapping[str, int], wanted: Mapping[str, int]) -> None:
    too_small = {name: n for name, n in counts.items() if n < wanted[name]}
    if too_small:
        details = ", ".join(f"{name!r} has {n}, needs {wanted[name]}" for name, n in sorted(too_small.items()))
        raise TopicPartitionCountError(
            f"existing Kafka topics have too few partitions: {details}; delete and recreate them "
            "(the embedded broker cannot add partitions)"
        )


def _ms(deadline: float) -> int:
    return max(100, int((deadline - time.monotonic()) * 1000))
