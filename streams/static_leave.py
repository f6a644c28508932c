"""A stopping worker leaves its consumer group although it is a static member.

The worker joins with a `group.instance.id` (static membership, KIP-345) so that a restart
after a crash gets its partitions back without a rebalance. aiokafka therefore never sends
LeaveGroup: its v0/v1 cannot name a static member. Then a worker stopped on purpose keeps its
partitions for the whole session timeout, and nobody folds or completes them meanwhile, however
warm the standby. LeaveGroup v3 names the member by its instance id; the broker removes it and
rebalances at once, as Kafka Streams' `close(leaveGroup=true)` and the admin client's
`removeMembersFromConsumerGroup` do.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String

log = logging.getLogger("auction_timer.static_leave")
LEAVE_TIMEOUT_S = 5.0  # a stop does not hang on a coordinator that does not answer
_MEMBER = (("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))  # the id may be null


class LeaveGroupResponse_v3(Response):  # type: ignore[misc]  # aiokafka ships no type information
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("members", Array(*_MEMBER, ("error_code", Int16))),
    )


class LeaveGroupRequest_v3(RequestStruct):  # type: ignore[misc]
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = LeaveGroupResponse_v3
    SCHEMA = Schema(
        ("group_id", String("utf-8")),
        ("members", Array(*_MEMBER)),
    )


class StaticLeave(Request[LeaveGroupRequest_v3]):  # type: ignore[misc]
    API_KEY = 13

    def __init__(self, group_id: str, member_id: str, instance_id: str) -> None:
        self.group_id = group_id
        self.member_id = member_id
        self.instance_id = instance_id

    def build(self, request_struct_class: type[LeaveGroupRequest_v3]) -> LeaveGroupRequest_v3:
        return request_struct_class(self.group_id, [(self.member_id, self.instance_id)])


def leave_when_closing(coordinator: Any) -> None:
    """Make `coordinator` (aiokafka's GroupCoordinator) leave by instance id when it closes: its
    close stops the heartbeat, then calls `_maybe_leave_group`, which skips static members. (It
    calls it also when a poll interval was exceeded, where a static member stays: only a close
    leaves.)"""
    instance_id = getattr(coordinator, "_group_instance_id", None)  # a group-less client has none
    if instance_id is None:
        return  # a dynamic member: aiokafka leaves by itself
    skipped = coordinator._maybe_leave_group

    async def leave() -> None:
        if coordinator._closing.done() and coordinator.generation > 0:
            request = StaticLeave(coordinator.group_id, coordinator.member_id, instance_id)
            try:
                response = await asyncio.wait_for(coordinator._send_req(request), LEAVE_TIMEOUT_S)
                codes = [response.error_code, *(member[2] for member in response.members)]
                failed = next((code for code in codes if code), 0)
                if failed:
                    raise for_code(failed)()
                log.info("left the consumer group", extra={"instance_id": instance_id})
            except (KafkaError, TimeoutError, NotImplementedError) as exc:  # the last: a broker without v3
                # Best effort, as aiokafka's own leave: the session timeout hands the partitions on.
                log.warning("could not leave the consumer group", extra={"error": repr(exc)[:300]})
        await skipped()

    coordinator._maybe_leave_group = leave
