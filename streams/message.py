"""One input record as it came off Kafka: where the log holds it, when the log took it, its bytes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # the broker's append time (every input topic uses LogAppendTime)
    key: bytes | None
    value: bytes | None

    @property
    def position(self) -> str:
        """`topic:partition:offset`: the record's name in the log, unique and stable."""
        return f"{self.topic}:{self.partition}:{self.offset}"
