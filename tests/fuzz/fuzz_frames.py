"""atheris fuzz target: arbitrary bytes through the processor's own frame path.

Each input is one posture.events.v1 value handed to `Runtime.on_message` (which calls
`events.parse_frame`, then orders, deduplicates and scores with a real ExposureEngine), as the
processor's faust agent does, without a broker. Per input it checks that

- no exception escapes (atheris reports any as a crash, with the input in build/fuzz/),
- the frame is either scored once or dead-lettered, every dead letter is a valid DeadLetter whose
  reason is a DeadReason code, carries the input bytes and fits the dead-letter topic's limit,
- the Python memory it allocates (tracemalloc peak) stays under MEMORY_FACTOR x its size plus
  MEMORY_SLACK_BYTES; libFuzzer's -rss_limit_mb bounds the whole process (native allocations too).

Run (make fuzz): `python tests/fuzz/fuzz_frames.py -max_total_time=60 -rss_limit_mb=1024`.
Without a corpus directory argument the seeds are schemas/examples/ (valid and invalid frames),
copied into build/fuzz/corpus/ where libFuzzer adds what it finds. FUZZ_TRACEMALLOC=0 skips the
per-input memory check (about twice the executions per second).
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["strainwatch"]):
    from strainwatch.events import DEAD_LETTER_MAX_ORIGINAL_BYTES, DeadLetter, DeadReason
    from strainwatch.exposure import ExposureEngine, load_thresholds
    from strainwatch.processor.runtime import Runtime, RuntimeConfig
    from strainwatch.topics import dead_letter_max_message_bytes

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "schemas" / "examples"
WORK = ROOT / "build" / "fuzz"

# The examples' start_ts is 2026-11-02T08:15Z: a clock after it keeps them from the future check.
NOW_S = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp()
MEMORY_FACTOR = 64  # a float sample ("1,": 2 bytes) becomes a 24-byte float and an 8-byte list slot
MEMORY_SLACK_BYTES = 4 * 1024 * 1024
LETTER_LIMIT = dead_letter_max_message_bytes(DEAD_LETTER_MAX_ORIGINAL_BYTES)
REASONS = {reason.value for reason in DeadReason}

ENGINE = ExposureEngine(load_thresholds("default"))
CONFIG = RuntimeConfig()
# One processor keeps one Runtime (and its rate-limited rejection log) for hours; the fresh Runtime
# per input shares one log, so dead letters are logged as the processor logs them, not per input.
REJECT_LOG = Runtime(ENGINE, CONFIG, load=lambda _worker: None)._reject_log
DICTIONARY = Path(__file__).with_name("frames.dict")
TRACE = os.environ.get("FUZZ_TRACEMALLOC", "1") != "0"


def run_one(data: bytes) -> None:
    """The frame three times, as the processor may see it: new, redelivered, replayed after a restart."""
    runtime = Runtime(ENGINE, CONFIG, load=lambda _worker: None, clock=lambda: NOW_S, monotonic=lambda: 0.0)
    runtime._reject_log = REJECT_LOG
    runtime.on_message(None, data, 0, 10)
    runtime.on_message(None, data, 0, 11)  # same event id: a duplicate
    runtime.on_message(None, data, 0, 5)  # below the worker's last offset: a replay
    runtime.snapshot()
    letters = runtime.take_outputs().dead_letters
    counters = runtime.counters
    assert counters.frames_in == 3
    assert set(counters.dead_lettered) <= REASONS, counters.dead_lettered
    if letters:
        # rejected once means rejected every time, for the same reason
        assert len(letters) == 3 and counters.frames_applied == 0, counters.as_dict()
        assert len(set(counters.dead_lettered)) == 1, counters.dead_lettered
    else:
        assert counters.frames_applied == 1, counters.as_dict()
        assert counters.duplicates == 1 and counters.replayed == 1, counters.as_dict()
    for key, value in letters:
        assert key is None
        letter = DeadLetter.model_validate_json(value)
        assert letter.reason.value in REASONS
        assert len(value) <= LETTER_LIMIT, len(value)
        if len(data) <= DEAD_LETTER_MAX_ORIGINAL_BYTES:
            assert base64.b64decode(letter.original_b64) == data
            assert not letter.original_truncated


def test_one_input(data: bytes) -> None:
    if not TRACE:
        run_one(data)
        return
    tracemalloc.start()
    try:
        run_one(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bound = MEMORY_FACTOR * len(data) + MEMORY_SLACK_BYTES
    assert peak <= bound, f"{len(data)}-byte input allocated {peak} bytes > {bound}"


def seed_corpus(target: Path) -> Path:
    """schemas/examples/ flattened into `target` (libFuzzer writes new inputs there, not into the repo)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(SEEDS.rglob("*.json")):
        shutil.copyfile(path, target / f"{path.parent.name}--{path.name}")
    return target


def main(argv: list[str]) -> None:
    args = list(argv)
    if not any(not a.startswith("-") for a in args[1:]):
        args.append(str(seed_corpus(WORK / "corpus")))
    (WORK / "artifacts").mkdir(parents=True, exist_ok=True)
    defaults = {
        "-max_len": "65536",
        "-artifact_prefix": f"{WORK / 'artifacts'}/",
        "-print_final_stats": "1",
        "-rss_limit_mb": "1024",
        "-dict": str(DICTIONARY),
    }
    for flag, value in defaults.items():
        if not any(a.startswith(flag + "=") for a in args[1:]):
            args.insert(1, f"{flag}={value}")
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
