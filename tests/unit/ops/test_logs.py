from __future__ import annotations

import io
import logging

import pytest

from strainwatch.ops.logs import RepeatLimit, limit_library_logs

pytestmark = pytest.mark.unit


def test_library_lines_are_limited_per_template() -> None:
    now = [0.0]
    stream = io.StringIO()
    logger = logging.getLogger("test.ops.limit")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    handler.addFilter(RepeatLimit(60.0, clock=lambda: now[0]))
    try:
        for step in range(1200):  # two minutes of reconnect errors, ten a second
            now[0] = step / 10
            logger.error("Unable connect to node with id %s: %s", 1, "refused")
            if step % 100 == 0:
                logger.warning("Heartbeat failed")
        lines = stream.getvalue().splitlines()
    finally:
        logger.removeHandler(handler)
    connect = [line for line in lines if line.startswith("Unable connect")]
    assert len(connect) == 2  # at 0 s and at 60 s
    assert "[599 similar lines suppressed in the last 60 s]" in connect[1]
    assert len([line for line in lines if line.startswith("Heartbeat")]) == 2


def test_own_loggers_pass_and_install_once() -> None:
    record = logging.LogRecord("strainwatch.processor", logging.INFO, "x", 1, "same", None, None)
    limit = RepeatLimit(60.0)
    assert all(limit.filter(record) for _ in range(5))
    logger = logging.getLogger("test.ops.install")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        limit_library_logs(60.0, logger)
        limit_library_logs(60.0, logger)
        assert len([f for f in handler.filters if isinstance(f, RepeatLimit)]) == 1
    finally:
        logger.removeHandler(handler)
