from __future__ import annotations

import logging

import pytest

from strainwatch.gateway.log_limits import RepeatFilter

pytestmark = pytest.mark.unit


def record(name: str, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, ("x",), None)


def test_repeats_of_kafka_client_messages_are_suppressed_and_counted() -> None:
    limiter = RepeatFilter(("aiokafka",), interval_s=3600)
    assert limiter.filter(record("aiokafka.conn", "Unable connect to node %s"))
    assert not limiter.filter(record("aiokafka.conn", "Unable connect to node %s"))
    assert limiter.filter(record("aiokafka.conn", "another message %s"))
    assert limiter.filter(record("strainwatch.gateway", "anything %s"))
    assert limiter.filter(record("strainwatch.gateway", "anything %s"))


def test_the_next_message_through_says_how_many_were_suppressed() -> None:
    limiter = RepeatFilter(("aiokafka",), interval_s=0.0)
    first = record("aiokafka", "down %s")
    assert limiter.filter(first)
    limiter._interval_s = 3600
    assert not limiter.filter(record("aiokafka", "down %s"))
    limiter._interval_s = 0.0
    later = record("aiokafka", "down %s")
    assert limiter.filter(later)
    assert "repeated 1 times" in str(later.msg)
