"""What became of some input records: the unit the processor loop finishes.

Every input record is identified by an opaque *token* (the processor uses
``(topic, partition, offset)``). A stage turns records into :class:`Outcome`
objects; an outcome lists the tokens it consumed, the results to store and
publish, and the tokens to dead-letter with their reason. Once an outcome's
results are published and stored, its tokens are finished and the consumer
offsets may move past them.
"""

from __future__ import annotations

from typing import Any, Hashable, Protocol

__all__ = ["Outcome", "Result", "Token", "gather"]

Token = Hashable


class Result(Protocol):
    """A result record: one message on an output topic, one InfluxDB point."""

    period: int

    @property
    def subject(self) -> str: ...  # the flow or session: the output record's key

    def to_dict(self) -> dict: ...

    def to_json(self) -> bytes: ...


class Outcome:
    """The tokens an outcome consumed, the results they made, and the tokens rejected with their reason."""

    __slots__ = ("tokens", "results", "rejected")

    def __init__(self, tokens: list[Token], results: list | None = None, rejected: dict[Token, str] | None = None):
        self.tokens = tokens
        self.results = results if results is not None else []
        self.rejected = rejected if rejected is not None else {}

    def __eq__(self, other) -> bool:
        return isinstance(other, Outcome) and (self.tokens, self.results, self.rejected) == (
            other.tokens, other.results, other.rejected)

    def __repr__(self) -> str:
        return f"Outcome(tokens={self.tokens!r}, results={self.results!r}, rejected={self.rejected!r})"


def gather(added, token: Any, closed: set, append, run_tokens: list, run_results: list) -> None:
    """Sort the outcomes a stage's ``add`` made of the record of ``token`` (a ``(topic, partition, offset)``),
    as a stage's ``take`` of a run does: the keys of their results go into ``closed``; a rejection, or an
    outcome whose results go to another partition, is ``append``-ed as it is; the others' tokens and results
    join the run's (``run_tokens``, ``run_results``)."""
    for outcome in added:
        for r in outcome.results:
            closed.add((r.subject, r.period))
        first: Any = outcome.tokens[0] if outcome.tokens else None
        if outcome.rejected or first is None or first[:2] != token[:2]:
            append(outcome)
        else:  # its results go to this run's partition: one outcome for the run (tokens[0] is of it)
            run_tokens.extend(outcome.tokens)
            run_results.extend(outcome.results)
