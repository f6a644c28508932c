"""One input record as it came off Kafka: where the log holds it, when the log took it, its bytes."""

from __future__ import annotations

from dataclasses import dataclass

LOG_APPEND_TIME = 1  # a Kafka record's timestamp_type when the broker stamped it


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # the broker's append time (every input topic uses LogAppendTime)
    key: bytes | None
    value: bytes | None
    log_append_time: bool = True  # False: a producer's CreateTime, which the fold cannot trust

    @property
    def position(self) -> str:
        """`topic:partition:offset`: the record's name in the log, unique and stable."""
        return f"{self.topic}:{self.partition}:{self.offset}"
