"""Which Redis error replies are permanent for one auction (skipped and reported) and which
pass (retried), as redis-py parses them off the wire."""

from __future__ import annotations

import pytest
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError, TimeoutError

from projections.refusals import error_code, is_permanent


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("WRONGTYPE Operation against a key holding the wrong kind of value", "WRONGTYPE"),
        ("NOPERM this user has no permissions to access one of the keys used as arguments", "NOPERM"),
        ("ERR user_script:7: attempt to compare nil with number script: 1a2b, on @user_script:7.", "ERR"),
    ],
)
def test_replies_about_the_key_or_the_acl_are_permanent(reply: str, code: str) -> None:
    error = BaseParser.parse_error(reply)
    assert is_permanent(error)
    assert error_code(error) == code


@pytest.mark.parametrize(
    "reply",
    [
        "READONLY You can't write against a read only replica.",
        "OOM command not allowed when used memory > 'maxmemory'.",
        "NOSCRIPT No matching script. Please use EVAL.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "CLUSTERDOWN The cluster is down",
        "MOVED 3999 127.0.0.1:6381",
        "LOADING Redis is loading the dataset in memory",
    ],
)
def test_replies_about_the_servers_passing_state_are_retried(reply: str) -> None:
    assert not is_permanent(BaseParser.parse_error(reply))


def test_connection_trouble_is_retried() -> None:
    assert not is_permanent(ConnectionError("Connection reset by peer"))
    assert not is_permanent(TimeoutError("Timeout reading from socket"))
