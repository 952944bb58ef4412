"""`strainwatch processor` whose faust stream skips posture events, as faust does by itself at
start-up, after a generation change or while flow control is off, but deterministically: offsets
40 to 59 of every partition (a burst, as at start-up) and every offset that is 3 modulo 101 never
reach the agent, on every delivery, restarts included.

The processor must notice each hole at the next event of the partition, or when faust goes quiet,
and read the skipped offsets from the broker. Run as a script by the fault tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import faust.streams

from strainwatch.topics import POSTURE_EVENTS


def skipped(offset: int) -> bool:
    return 40 <= offset < 60 or offset % 101 == 3


_take_events = faust.streams.Stream.take_events


async def _skipping_take_events(self: Any, max_: int, within: float) -> AsyncIterator[list[Any]]:
    # the scoring agent takes posture frames in runs (processor/app.py)
    async for events in _take_events(self, max_, within):
        kept = [e for e in events if e.message.topic != POSTURE_EVENTS.name or not skipped(e.message.offset)]
        if kept:
            yield kept


faust.streams.Stream.take_events = _skipping_take_events  # type: ignore[method-assign]

if __name__ == "__main__":
    import sys

    from strainwatch.cli import main

    sys.argv = ["strainwatch", "processor"]  # the real command: version check, logging, worker
    main()
