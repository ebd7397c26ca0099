"""What became of some input records: the unit the processor loop finishes.

Every input record is identified by an opaque *token* (the processor uses
``(topic, partition, offset)``). A stage turns records into :class:`Outcome`
objects; an outcome lists the tokens it consumed, the results to store and
publish, and the tokens to dead-letter with their reason. Once an outcome's
results are published and stored, its tokens are finished and the consumer
offsets may move past them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Protocol

__all__ = ["Outcome", "Result", "Token"]

Token = Hashable


class Result(Protocol):
    """A result record: one message on an output topic, one InfluxDB point."""

    period: int

    @property
    def subject(self) -> str: ...  # the flow or session: the output record's key

    def to_dict(self) -> dict: ...

    def to_json(self) -> bytes: ...


@dataclass
class Outcome:
    tokens: list[Token]
    results: list = field(default_factory=list)
    rejected: dict[Token, str] = field(default_factory=dict)
