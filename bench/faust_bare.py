"""The processor benchmark's faust baseline: a bare agent on the posture topic, nothing else.

Same faust App settings as the processor (processor/app.py `app_options`), uvloop, the same log
levels; per frame only faust's own event delivery and an orjson decode (the least any processor on
faust does). No table, no sink, no outputs, no commits. With `BENCH_RUNTIME=1` it runs the
processor's `Runtime.on_message` per frame instead, taking frames through faust in runs of 1,000
(still no sink, changelog or outputs): the processor's runtime on faust's per-event delivery, the
path the processor took before it read posture frames itself (docs/processor.md). Once it has
seen `BENCH_FRAMES` frames it writes `{"first_s": ..., "done_s": ...}` (wall clock) to
`BENCH_DONE` and idles until killed.

    BENCH_FRAMES=120000 BENCH_DONE=/tmp/done.json python bench/faust_bare.py
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUN = 1_000  # BENCH_RUNTIME=1: frames taken from faust's stream in runs of this many
RUN_WAIT_S = 0.05  # or what came within this long


def main() -> None:
    import mode.loop

    mode.loop.use("uvloop")  # as the processor does (processor/cli.py)
    import faust
    import orjson

    from strainwatch.config import get_settings
    from strainwatch.processor.app import app_options
    from strainwatch.topics import POSTURE_EVENTS

    expected = int(os.environ["BENCH_FRAMES"])
    done_path = Path(os.environ["BENCH_DONE"])
    settings = get_settings()
    datadir = Path(tempfile.mkdtemp(prefix="faust-bare-"))
    app = faust.App(settings.processor_group, **app_options(settings, datadir))
    source = app.topic(POSTURE_EVENTS.name, key_serializer="raw", value_serializer="raw", acks=False)

    on_message = _runtime_on_message(settings) if os.environ.get("BENCH_RUNTIME") == "1" else None

    @app.agent(source, name="bare")
    async def bare(stream: Any) -> None:
        seen = 0
        first = 0.0
        loads = orjson.loads
        if on_message is not None:
            # in runs, as the processor's agent took them while faust delivered its frames
            async for batch in stream.take_events(RUN, within=RUN_WAIT_S):
                if not seen:
                    first = time.time()
                for event in batch:
                    message = event.message
                    on_message(message.key, message.value, message.partition, message.offset)
                seen += len(batch)
                if seen >= expected:
                    done_path.write_bytes(orjson.dumps({"first_s": first, "done_s": time.time()}))
            return
        async for event in stream.noack().events():
            loads(event.message.value)
            seen += 1
            if seen == 1:
                first = time.time()
            if seen == expected:
                done_path.write_bytes(orjson.dumps({"first_s": first, "done_s": time.time()}))

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    logging.getLogger().setLevel(logging.WARNING)  # as processor/cli.py: faust leaves it at DEBUG
    worker.execute_from_commandline()


def _runtime_on_message(settings: Any) -> Any:
    """BENCH_RUNTIME=1: the processor's Runtime.on_message per frame instead of the bare decode, with
    the checkpoint's snapshot taken and dropped every `max_pending_frames` (no sink, no changelog,
    no outputs): what the runtime itself costs on top of faust."""
    from strainwatch.exposure import ExposureEngine, load_thresholds
    from strainwatch.processor.runtime import Runtime, RuntimeConfig

    engine = ExposureEngine(load_thresholds(settings.thresholds), window_s=settings.window_s)
    table: dict[str, Any] = {}
    runtime = Runtime(engine, RuntimeConfig(), load=table.get)
    every = settings.max_pending_frames
    count = 0

    def on_message(key: bytes | None, value: bytes, partition: int, offset: int) -> None:
        nonlocal count
        runtime.on_message(key, value, partition, offset)
        count += 1
        if count % every == 0:
            dirty, _lines = runtime.snapshot()
            table.update(dirty)
            runtime.take_outputs()

    return on_message


if __name__ == "__main__":
    main()
