"""The private faust and aiokafka behaviour the processor relies on, one test per surface.

None of this is API. The versions are pinned (pyproject.toml, requirements.lock, processor/compat.py);
these tests are what an upgrade has to pass: each asserts the behaviour the processor uses, so a
release that changes it fails here rather than in production. No broker: objects are built against
an unreachable one and never started.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import signal
from collections.abc import Coroutine, Mapping, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

import aiokafka
import faust
import faust._cython
import pytest
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from faust import streams as faust_streams
from faust.serializers import codecs
from faust.tables.recovery import Recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ConsumerMessage, Message

pytestmark = pytest.mark.unit

T = TypeVar("T")

NOACK = "sw-surface-noack"  # stands for the posture topic, subscribed with acks=False
ACKING = "sw-surface-acking"  # an ordinary topic, as a control


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def make_app() -> faust.App:
    # an unreachable broker: nothing here connects, and a test that tried would fail fast
    return faust.App("sw-surfaces", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)


def message(topic: str, offset: int, partition: int = 0) -> ConsumerMessage:
    return ConsumerMessage(topic, partition, offset, 0.0, 0, None, b"key", b"value", None)


async def indexed_app() -> faust.App:
    """An app whose conductor has indexed a NOACK (acks=False) and an ACKING subscription, the way a
    stream or agent subscribes: iterating a topic registers its iterator clone with the conductor."""
    app = make_app()
    app.topic(NOACK, acks=False).__aiter__()
    app.topic(ACKING).__aiter__()
    await app.topics._update_indices()
    return app


def recorded(consumer: Any, tp: TP) -> tuple[list[int], set[int]]:
    return list(consumer._acked.get(tp, [])), set(consumer._acked_index.get(tp, set()))


# --- a. app.topic(name, acks=False): faust neither acks nor commits that topic ------------------


def test_acks_false_topic_is_not_acking_once_the_conductor_indexes_it() -> None:
    async def main() -> None:
        app = make_app()
        channel = app.topic(NOACK, acks=False).__aiter__()
        app.topic(ACKING).__aiter__()
        index = await app.topics._update_indices()
        assert channel in app.topics and channel.acks is False  # the clone keeps acks=False
        assert NOACK in index  # still subscribed and delivered...
        assert not app.topics.acks_enabled_for(NOACK)  # ...but not acked
        assert NOACK not in app.topics.acking_topics
        assert app.topics.acks_enabled_for(ACKING)

    run(main())


def test_acks_are_per_topic_name_so_one_acking_subscription_enables_them() -> None:
    # A hazard, not a feature: the processor must be the only subscriber of its topic's name.
    async def main() -> None:
        app = make_app()
        app.topic(NOACK, acks=False).__aiter__()
        acking = app.topic(NOACK).__aiter__()
        await app.topics._update_indices()
        assert app.topics.acks_enabled_for(NOACK)
        app.topics.discard(acking)
        await app.topics._update_indices()
        assert app.topics.acks_enabled_for(NOACK)  # and it sticks until the conductor is cleared

    run(main())


def test_consumer_ack_records_nothing_for_a_topic_without_acks() -> None:
    async def main() -> None:
        app = await indexed_app()
        consumer = app.consumer
        noack_tp, acking_tp = TP(NOACK, 0), TP(ACKING, 0)

        skipped = message(NOACK, 5)
        assert consumer.ack(skipped) is False
        assert skipped.acked  # marked, so no later ack of it counts either
        # the processor's own route: Message.ack -> ConsumerMessage.on_final_ack -> Consumer.ack
        via_message = message(NOACK, 6)
        assert via_message.ack(consumer) is False
        event = app.create_event(b"key", b"value", {}, message(NOACK, 7))
        assert event.ack() is False  # Stream.ack and the pure-Python iterator go this way
        assert recorded(consumer, noack_tp) == ([], set())
        assert consumer._n_acked == 0

        assert consumer.ack(message(ACKING, 5)) is True  # control: an acking topic is recorded
        assert recorded(consumer, acking_tp) == ([5], {5})
        # so faust's own commit (force_commit, on its interval and at stop) has nothing to commit there
        assert consumer._filter_committable_offsets([noack_tp, acking_tp]) == {acking_tp: 6}

    run(main())


def test_the_installed_wheel_runs_the_compiled_stream_iterator() -> None:
    # the acks of `async for` over a stream are the compiled StreamIterator.after's, not Consumer.ack's
    assert faust_streams._CStreamIterator is not None
    assert faust_streams._CStreamIterator.__module__ == "faust._cython.streams"


def test_compiled_stream_iterator_after_records_nothing_without_acks() -> None:
    iterator_type = faust_streams._CStreamIterator
    if iterator_type is None:
        pytest.skip("no compiled iterator (the test above fails)")

    async def main() -> None:
        app = await indexed_app()
        consumer = app.consumer
        # do_ack=True: what the iterator passes for a *skipped* event even on a noack() stream
        for topic in (NOACK, ACKING):
            iterator = iterator_type(app.topic(topic).stream())
            msg = message(topic, 9, partition=1)
            iterator.after(app.create_event(b"key", b"value", {}, msg), True, None)
            assert msg.acked
        assert recorded(consumer, TP(NOACK, 1)) == ([], set())
        assert recorded(consumer, TP(ACKING, 1)) == ([9], {9})

    run(main())


def test_shipped_streams_pyx_guards_the_ack_bookkeeping_with_acks_enabled_for() -> None:
    source = (Path(faust._cython.__file__).parent / "streams.pyx").read_text()
    start = source.index("cpdef object after(")
    end = source.index("\n    cdef ", start)
    after = source[start:end].splitlines()
    (guard,) = [i for i, line in enumerate(after) if "if self.acks_enabled_for(message.topic):" in line]
    guard_indent = len(after[guard]) - len(after[guard].lstrip())
    bookkeeping = [
        i for i, line in enumerate(after) if re.search(r"consumer\._(acked|acked_index|n_acked)\b", line)
    ]
    assert bookkeeping, "after() no longer touches the consumer's ack bookkeeping"
    for i in bookkeeping:
        # inside the guard's block: after it, and no line between them back at its indentation
        assert i > guard
        block = [line for line in after[guard + 1 : i + 1] if line.strip()]
        assert all(len(line) - len(line.lstrip()) > guard_indent for line in block), after[i]


def test_a_paused_aiokafka_partition_is_not_fetched_and_pauses_end_with_the_assignment() -> None:
    """At each assignment the processor pauses the posture partitions in faust's aiokafka consumer
    (app.py `_pause_in_consumer_thread`): aiokafka fetches no paused partition and drops records it
    fetched before the pause instead of returning them; a new assignment forgets the pauses."""
    from aiokafka.consumer import fetcher

    actions = inspect.getsource(fetcher.Fetcher._get_actions_per_node)
    assert "elif tp_state.paused:" in actions  # a paused partition gets no fetch request
    check = inspect.getsource(fetcher.FetchResult.check_assignment)
    assert "if tp_state.paused:" in check and "return_result = False" in check

    async def main() -> tuple[set[Any], set[Any]]:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9", group_id=None)
        tp = TopicPartition(NOACK, 0)
        consumer.assign([tp])
        consumer.pause(tp)  # creates its resume future on the running loop: the consumer's thread
        paused = set(consumer.paused())
        consumer.assign([tp, TopicPartition(NOACK, 1)])
        return paused, set(consumer.paused())

    paused, after_reassignment = run(main())
    assert paused == {TopicPartition(NOACK, 0)} and after_reassignment == set()


def test_faust_pauses_and_resumes_only_its_own_sets_never_aiokafkas() -> None:
    """faust's pause/resume (flow control, table recovery) choose what its getmany hands to
    streams; none reaches the aiokafka consumer, so the processor's pause of the posture topic holds
    through recovery."""
    driver = Path(faust_aiokafka.__file__).read_text()
    assert not re.search(r"\.(pause|resume)\(", driver)
    for method in (faust_consumer.Consumer.pause_partitions, faust_consumer.Consumer.resume_partitions):
        assert "_thread" not in inspect.getsource(method)


def test_fetch_checks_run_per_partition_through_the_threads_verify_event_path() -> None:
    """faust's livelock detector checks every assigned partition through the consumer thread's
    `verify_event_path(now, tp)`, which the processor wraps to leave the posture topic out."""
    from strainwatch.processor.app import _quiet_fetch_checks
    from strainwatch.topics import POSTURE_EVENTS

    assert "self.verify_event_path(now, tp)" in inspect.getsource(
        faust_consumer.Consumer.verify_all_partitions_active
    )
    assert "self._thread.verify_event_path(now, tp)" in inspect.getsource(
        faust_aiokafka.Consumer.verify_event_path
    )
    assert list(inspect.signature(faust_aiokafka.AIOKafkaConsumerThread.verify_event_path).parameters) == [
        "self",
        "now",
        "tp",
    ]

    class Thread:
        def __init__(self) -> None:
            self.checked: list[TP] = []

        def verify_event_path(self, now: float, tp: TP) -> None:
            self.checked.append(tp)

    thread = Thread()
    _quiet_fetch_checks(thread)
    _quiet_fetch_checks(thread)  # at every assignment: wrapped once
    for tp in (
        TP(POSTURE_EVENTS.name, 0),
        TP("strainwatch-processor-worker-state-changelog", 0),
        TP("roster.v1", 2),
    ):
        thread.verify_event_path(1.0, tp)
    assert thread.checked == [TP("strainwatch-processor-worker-state-changelog", 0), TP("roster.v1", 2)]


def test_drain_messages_adds_offset_gaps_only_for_acking_topics() -> None:
    async def main() -> None:
        app = await indexed_app()
        consumer = app.consumer
        fetcher_stopped = asyncio.Event()
        gaps: list[tuple[TP, int, int]] = []
        delivered: list[tuple[str, int]] = []
        batch = []
        for topic in (NOACK, ACKING):
            tp = TP(topic, 0)
            consumer._read_offset[tp] = 3
            batch.append((tp, message(topic, 10)))  # offsets 4..9 never arrived

        async def add_gap(tp: TP, first: int, last: int) -> None:
            gaps.append((tp, first, last))

        async def callback(msg: Message) -> None:
            delivered.append((msg.topic, msg.offset))

        async def getmany(timeout: float) -> Any:
            for item in batch:
                yield item
            fetcher_stopped.set()

        consumer._add_gap = add_gap
        consumer.callback = callback
        consumer.getmany = getmany
        fetcher = type("Fetcher", (), {"_stopped": fetcher_stopped})()
        await consumer._drain_messages(fetcher)
        assert delivered == [(NOACK, 10), (ACKING, 10)]  # both delivered
        assert gaps == [(TP(ACKING, 0), 4, 10)]  # a gap (counted as done) only where faust acks

    run(main())


# --- b. Consumer._commit(offsets): the processor commits the posture topic itself ---------------


def test_commit_is_an_abstract_coroutine_taking_a_tp_offset_mapping() -> None:
    base = faust_consumer.Consumer._commit
    assert "_commit" in faust_consumer.Consumer.__abstractmethods__
    assert inspect.iscoroutinefunction(base)
    params = list(inspect.signature(base).parameters.values())
    assert [p.name for p in params] == ["self", "offsets"]
    assert str(params[1].annotation) in ("Mapping[TP, int]", "typing.Mapping[faust.types.tuples.TP, int]")
    assert "_commit" not in faust_aiokafka.Consumer.__abstractmethods__
    assert issubclass(faust_aiokafka.Consumer, faust_consumer.Consumer)


def test_aiokafka_consumer_commit_delegates_to_its_thread_and_returns_its_verdict() -> None:
    async def main() -> None:
        app = make_app()
        consumer = app.consumer
        assert isinstance(consumer, faust_aiokafka.Consumer)
        calls: list[Mapping[TP, int]] = []
        verdict = {"ok": True}

        class Thread:
            async def commit(self, offsets: Mapping[TP, int]) -> bool:
                calls.append(offsets)
                return verdict["ok"]

        consumer._thread = Thread()
        offsets = {TP(NOACK, 2): 41}
        assert await consumer._commit(offsets) is True
        verdict["ok"] = False
        assert await consumer._commit(offsets) is False
        assert calls == [offsets, offsets]

    run(main())


def test_consumer_thread_commits_the_given_offsets_of_assigned_partitions() -> None:
    async def main() -> None:
        app = make_app()
        thread = app.consumer._thread
        assert isinstance(thread, faust_aiokafka.AIOKafkaConsumerThread)
        committed: list[dict[TopicPartition, OffsetAndMetadata]] = []

        class Driver:  # the aiokafka consumer inside faust's consumer thread
            def assignment(self) -> set[TopicPartition]:
                return {TopicPartition(NOACK, 0), TopicPartition(NOACK, 1)}

            async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
                committed.append(offsets)

        async def call_thread(fun: Any, *args: Any) -> Any:  # run inline instead of in the thread
            return await fun(*args)

        thread._consumer = Driver()
        thread.call_thread = call_thread
        ok = await thread.commit({TP(NOACK, 0): 41, TP(NOACK, 1): 7, TP(NOACK, 3): 99})
        # the offset is committed as given (the next one to read), and an unassigned partition is
        # dropped silently: the call still reports success
        assert ok is True
        assert committed == [
            {
                TopicPartition(NOACK, 0): OffsetAndMetadata(41, ""),
                TopicPartition(NOACK, 1): OffsetAndMetadata(7, ""),
            }
        ]

    run(main())


# --- c. Table.data and Table.changelog_topic ----------------------------------------------------


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(
        self, topic: str, key: Any, value: Any, partition: Any, timestamp: Any, headers: Any
    ) -> Any:
        self.sent.append((topic, key, value, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


def test_table_data_is_a_plain_mapping_keyed_by_raw_bytes_that_bypasses_the_changelog() -> None:
    app = make_app()
    table = app.Table("worker-state", partitions=4, key_type=bytes)
    assert table.key_serializer == "raw"
    data = table.data
    assert isinstance(data, MutableMapping)
    assert table.data is data  # one store, created once

    def no_changelog(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("writing table.data must not produce to the changelog")

    table.send_changelog = no_changelog
    record = object()
    data[b"worker-1"] = record
    assert list(data) == [b"worker-1"]
    assert table.get(b"worker-1") is record  # read back through the table, the very object
    assert table.get(b"worker-2") is None


def test_changelog_topic_sends_key_value_partition_and_returns_the_delivery_future() -> None:
    async def main() -> None:
        app = make_app()
        table = app.Table("worker-state", partitions=4, key_type=bytes)
        changelog = table.changelog_topic
        assert isinstance(changelog, faust.Topic)
        assert changelog.get_topic_name() == "sw-surfaces-worker-state-changelog"
        assert changelog.partitions == 4
        assert changelog.acks is False and changelog.internal
        # faust would attach a send made inside a stream to the event's commit (never, with acks=False)
        assert app.conf.stream_publish_on_commit is False

        producer = FakeProducer()

        async def maybe_start_producer() -> FakeProducer:
            return producer

        app.maybe_start_producer = maybe_start_producer
        delivered = await changelog.send(key=b"worker-1", value=b"record", partition=2)
        assert producer.sent == [(changelog.get_topic_name(), b"worker-1", b"record", 2)]
        assert isinstance(delivered, asyncio.Future) and not delivered.done()
        producer.futures[0].set_result("metadata")
        assert await delivered == "metadata"

        failed = await changelog.send(key=b"worker-2", value=b"record", partition=3)
        producer.futures[1].set_exception(RuntimeError("broker said no"))
        with pytest.raises(RuntimeError, match="broker said no"):
            await failed  # a failed delivery surfaces where the checkpoint awaits it

    run(main())


# --- d. table recovery callbacks, and when faust calls them --------------------------------------


def test_recover_callbacks_run_after_the_store_has_recovered() -> None:
    async def main() -> None:
        app = make_app()
        calls: list[str] = []

        async def by_argument() -> None:
            calls.append("on_recover=")

        table = app.Table("worker-state", partitions=4, key_type=bytes, on_recover=by_argument)

        @table.on_recover
        async def by_decorator() -> None:
            calls.append("@on_recover")

        async def store_recovered(active: set[TP], standby: set[TP]) -> None:
            calls.append("store")

        table.data.on_recovery_completed = store_recovered
        await table.on_recovery_completed(set(), set())
        assert calls[0] == "store"
        assert sorted(calls[1:]) == ["@on_recover", "on_recover="]

    run(main())


def test_recovery_awaits_the_tables_callbacks_before_seeking_to_committed_offsets() -> None:
    source = inspect.getsource(Recovery.on_recovery_completed)
    positions = [
        source.index("table.on_recovery_completed("),
        source.index("await asyncio.wait(callback_coros)"),
        source.index("consumer.perform_seek()"),
        source.index("self.app.flow_control.resume()"),
    ]
    assert positions == sorted(positions), source


# --- e. worker signal handling ------------------------------------------------------------------


def test_worker_installs_its_own_sigterm_and_sigint_methods_and_schedules_one_shutdown() -> None:
    class Overriding(faust.Worker):
        handled: list[str] = []

        def _on_sigterm(self) -> None:
            self.handled.append("TERM")

        def _on_sigint(self) -> None:
            self.handled.append("INT")

    async def main() -> None:
        worker = Overriding(make_app(), loglevel="WARNING", quiet=True, redirect_stdouts=False)
        installed: dict[int, Any] = {}
        worker.loop.add_signal_handler = lambda sig, callback, *args: installed.__setitem__(sig, callback)
        worker.install_signal_handlers()
        # the handlers are looked up on the instance, so the subclass's overrides are what run
        installed[signal.SIGTERM]()
        installed[signal.SIGINT]()
        assert Overriding.handled == ["TERM", "INT"]

        stops: list[signal.Signals] = []

        async def stop_on_signal(sig: signal.Signals) -> None:
            stops.append(sig)

        worker._stop_on_signal = stop_on_signal
        assert list(inspect.signature(worker._schedule_shutdown).parameters) == ["signal"]
        worker._schedule_shutdown(signal.SIGTERM)
        worker._schedule_shutdown(signal.SIGINT)  # a second signal does not stop twice
        await worker._signal_stop_future
        assert stops == [signal.SIGTERM]

    run(main())


def test_faust_worker_sigterm_handler_is_what_schedules_the_shutdown() -> None:
    # what the processor's override replaces, and then calls itself
    class Recording(faust.Worker):
        scheduled: list[signal.Signals] = []

        def _schedule_shutdown(self, sig: signal.Signals) -> None:
            self.scheduled.append(sig)

    async def main() -> None:
        worker = Recording(make_app(), loglevel="WARNING", quiet=True, redirect_stdouts=False)
        worker._on_sigterm()
        worker._on_sigint()
        assert Recording.scheduled == [signal.SIGTERM, signal.SIGINT]

    run(main())


# --- f. value codecs: a registered codec and a value type naming it -----------------------------


class Record:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def to_bytes(self) -> bytes:
        return b"R" + self.payload

    @classmethod
    def from_bytes(cls, data: bytes) -> Record:
        assert data[:1] == b"R", data
        return cls(data[1:])


class RecordCodec(codecs.Codec):  # the shape of processor/app.py's _RecordCodec
    def _dumps(self, obj: Any) -> bytes:
        return obj.to_bytes() if isinstance(obj, Record) else bytes(obj)

    def _loads(self, s: bytes) -> Any:
        return Record.from_bytes(s)


class RecordType:  # the shape of processor/app.py's _RecordType
    class _options:
        serializer = "sw-surfaces-record"

    @classmethod
    def from_data(cls, data: Any, preferred_type: Any = None) -> Any:
        return data


def test_a_value_type_naming_a_registered_codec_serialises_table_values_through_it() -> None:
    codecs.register(RecordType._options.serializer, RecordCodec())

    async def main() -> None:
        app = make_app()
        table = app.Table("worker-state", partitions=4, key_type=bytes, value_type=RecordType)
        assert table.value_serializer == "sw-surfaces-record"
        changelog = table.changelog_topic
        assert changelog.value_serializer == "sw-surfaces-record" and changelog.value_type is RecordType
        # writing: a Record becomes its bytes, already-encoded bytes go out untouched
        assert table.data._encode_value(Record(b"x")) == b"Rx"
        assert changelog.prepare_value(Record(b"x"), changelog.value_serializer)[0] == b"Rx"
        assert changelog.prepare_value(b"Rx", changelog.value_serializer)[0] == b"Rx"
        # recovery: a changelog message decodes through the codec and lands in table.data
        event = await changelog.decode(
            Message(changelog.get_topic_name(), 1, 0, 0.0, 0, None, b"w1", b"Ry", None)
        )
        assert isinstance(event.value, Record) and event.value.payload == b"y"
        table.apply_changelog_batch([event])
        restored = table.data[b"w1"]
        assert isinstance(restored, Record) and restored.payload == b"y"

    run(main())


# --- g. aiokafka: the group-less frame reader and the group offset fetch ------------------------


def test_aiokafka_consumer_signatures_used_for_frame_reads_and_offset_fetches() -> None:
    consumer = aiokafka.AIOKafkaConsumer
    init = inspect.signature(consumer.__init__).parameters
    assert init["group_id"].default is None and init["enable_auto_commit"].default is True
    assert "bootstrap_servers" in init

    def params(name: str) -> list[tuple[str, Any]]:
        return [(p.name, p.kind) for p in inspect.signature(getattr(consumer, name)).parameters.values()][1:]

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert params("assign") == [("partitions", positional)]
    assert params("seek") == [("partition", positional), ("offset", positional)]
    assert params("getmany") == [
        ("partitions", inspect.Parameter.VAR_POSITIONAL),
        ("timeout_ms", inspect.Parameter.KEYWORD_ONLY),
        ("max_records", inspect.Parameter.KEYWORD_ONLY),
    ]
    assert params("beginning_offsets") == [("partitions", positional)]
    assert init["max_poll_records"].default is None and init["auto_offset_reset"].default == "latest"
    for name in ("getmany", "beginning_offsets", "start", "stop"):
        assert inspect.iscoroutinefunction(getattr(consumer, name)), name
    for name in ("assign", "seek"):
        assert not inspect.iscoroutinefunction(getattr(consumer, name)), name
    assert TopicPartition("t", 3) == ("t", 3) and TopicPartition("t", 3).partition == 3


def test_admin_offset_fetch_and_faust_highwaters_signatures() -> None:
    """The group's committed offsets come from an admin OffsetFetch (a consumer's committed() needs
    a subscription); the health report asks faust's consumer for the log ends (consumer lag)."""
    from aiokafka.admin import AIOKafkaAdminClient

    fetch = AIOKafkaAdminClient.list_consumer_group_offsets
    assert inspect.iscoroutinefunction(fetch)
    assert list(inspect.signature(fetch).parameters)[:2] == ["self", "group_id"]
    assert "partitions" in inspect.signature(fetch).parameters
    highwaters = faust_aiokafka.Consumer.highwaters
    assert inspect.iscoroutinefunction(highwaters)
    assert [p.kind for p in inspect.signature(highwaters).parameters.values()][1:] == [
        inspect.Parameter.VAR_POSITIONAL
    ]


def test_the_producer_sends_topic_key_value_partition_and_returns_the_delivery_future() -> None:
    """The processor sends changelog records and outputs through `app.maybe_start_producer()`'s
    `send(topic, key, value, partition, timestamp, headers)` (app.py), skipping Topic.send's
    FutureMessage: the awaited call must hand back aiokafka's delivery future, unresolved."""
    from faust.transport.drivers.aiokafka import Producer

    params = list(inspect.signature(Producer.send).parameters)
    assert params[:7] == ["self", "topic", "key", "value", "partition", "timestamp", "headers"]

    async def main() -> None:
        app = make_app()
        producer = app.producer
        assert isinstance(producer, Producer)
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        sent: list[tuple[Any, ...]] = []

        class FakeAiokafka:
            async def send(self, topic: str, value: Any, **kwargs: Any) -> Any:
                sent.append((topic, value, kwargs["key"], kwargs["partition"]))
                return delivery

        producer._producer = FakeAiokafka()  # what _ensure_producer() hands out once started
        producer._started.set()  # maybe_start() must not try to connect
        assert await app.maybe_start_producer() is producer
        got = await producer.send("t", b"k", b"v", 3, None, None)
        assert sent == [("t", b"v", b"k", 3)]
        assert got is delivery and not got.done()

    run(main())
