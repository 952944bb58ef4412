"""`strainwatch processor` whose faust stream skips posture events, as faust does by itself at
start-up, after a generation change or while flow control is off, but deterministically: every
event whose offset is 3 modulo 7 never reaches the agent (on every delivery, restarts included).

The processor must notice each hole at the next event of the partition, or when faust goes quiet,
and read the skipped offsets from the broker. Run as a script by the fault tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import faust.streams

from strainwatch.topics import POSTURE_EVENTS

SKIP_MODULUS, SKIP_REMAINDER = 7, 3

_events = faust.streams.Stream.events


async def _skipping_events(self: Any) -> AsyncIterator[Any]:
    async for event in _events(self):
        message = event.message
        if message.topic == POSTURE_EVENTS.name and message.offset % SKIP_MODULUS == SKIP_REMAINDER:
            continue
        yield event


faust.streams.Stream.events = _skipping_events  # type: ignore[method-assign]

if __name__ == "__main__":
    from strainwatch.processor.cli import run_processor

    run_processor()
