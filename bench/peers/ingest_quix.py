"""Peer of the ingest benchmark: Quix Streams running our `TimerProcessor` on its own State.

`python bench/peers/ingest_quix.py BOOTSTRAP GROUP PREFIX STATE_DIR`, in the venv the bench
makes for it (Quix Streams pinned, this project installed without its dependencies), consumes
the four input topics in group GROUP from the start until SIGTERM. The topics are concatenated
into one StreamingDataFrame, which makes Quix read them aligned by timestamp per partition
number (its counterpart of our merge). Each record is folded by the processor over a States
view of the record key's Quix State (RocksDB, with Quix's own changelog topic); its outputs go
to PREFIX + the contract's topic names. Quix's at-least-once checkpoint (every second) flushes
the producer and the state's changelog, then commits. Quix rows carry no timestamp type: the
input topics are stamped LogAppendTime (the bench creates them so), and the record says so."""

from __future__ import annotations

import sys
from typing import Any

from quixstreams import Application
from quixstreams.context import message_context
from quixstreams.models import TopicConfig
from quixstreams.models.serializers import Serializer
from quixstreams.state import State
from quixstreams.state.rocksdb import RocksDBOptions

from streams import outputs, topics
from streams.message import Message
from streams.processor import TimerProcessor
from streams.state import Expired, TimerState, decode_state, encode_state

STATE_KEY = b"timer"
PARTITIONS = 8  # of the bench's input topics
OUTPUTS = (topics.TIMER_EVENTS, topics.AUDIT, topics.ANALYTICS, topics.DLQ)
COMMIT_INTERVAL_S = 1.0
# Quix's consumer asks librdkafka for up to 10,000 messages at once and waits this long for them
# to come; its default (1 s) stalls every partition group that runs dry on the tail of a topic.
POLL_TIMEOUT_S = 0.01


def same(value: bytes) -> bytes:
    """State values are our own encoding already (encode_state); Quix stores the bytes as they are."""
    return value


class RecordValue(Serializer):  # type: ignore[misc]  # Quix is typed only in its own venv
    """An output `Record` goes out as its value bytes."""

    def __call__(self, value: outputs.Record, ctx: Any) -> bytes:
        return value.value


class QuixStates:
    """The processor's States over the Quix State of the record being processed (its key's)."""

    def __init__(self) -> None:
        self.current: State | None = None

    def get(self, key: bytes) -> TimerState | None:
        assert self.current is not None
        raw = self.current.get(STATE_KEY)
        return None if raw is None else decode_state(raw)

    def put(self, key: bytes, state: TimerState) -> None:
        assert self.current is not None
        self.current.set(STATE_KEY, encode_state(state))

    # The bench's input has no ForgetTimer commands: nothing is ever removed after its retention.
    def expired(self, key: bytes) -> Expired | None:
        return None

    def forget(self, key: bytes, marker: Expired) -> None:
        raise NotImplementedError("the ingest bench never forgets an auction")

    def drop_expired(self, key: bytes) -> None:
        raise NotImplementedError("the ingest bench never forgets an auction")


def main(bootstrap: str, group: str, prefix: str, state_dir: str) -> None:
    app = Application(
        broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
        commit_interval=COMMIT_INTERVAL_S, consumer_poll_timeout=POLL_TIMEOUT_S, state_dir=state_dir,
        rocksdb_options=RocksDBOptions(dumps=same, loads=same), loglevel="WARNING",
    )  # fmt: skip
    inputs = [app.topic(name, value_deserializer="bytes", key_deserializer="bytes") for name in topics.INPUT_TOPICS]
    config = TopicConfig(num_partitions=PARTITIONS, replication_factor=1)
    out = {
        name: app.topic(prefix + name, value_serializer=RecordValue(), key_serializer="bytes", config=config)
        for name in OUTPUTS
    }
    states = QuixStates()
    processor = TimerProcessor(states, PARTITIONS, 65_536)

    def fold(value: bytes, key: bytes, timestamp: int, headers: Any, state: State) -> list[outputs.Record]:
        ctx = message_context()
        states.current = state
        return processor.process(Message(ctx.topic, ctx.partition, ctx.offset, timestamp, key, value, True)).records

    sdf = app.dataframe(inputs[0])
    for topic in inputs[1:]:
        sdf = sdf.concat(app.dataframe(topic))
    sdf = sdf.apply(fold, stateful=True, metadata=True, expand=True)
    sdf.to_topic(lambda record, key, timestamp, headers: out[record.topic], key=lambda record: record.key)
    app.run()


if __name__ == "__main__":
    main(*sys.argv[1:5])
