"""When faust's rebalance begins and ends: the gate of the processor's frame reader (app.py).

Private faust behaviour, pinned like the surfaces in test_faust_surfaces.py: an upgrade that moves
the start or the end of `app.rebalancing` fails here.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import faust
import pytest
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka

pytestmark = pytest.mark.unit


def test_app_rebalancing_spans_a_rebalance_from_its_start_until_the_table_is_restored() -> None:
    """The frame reader reads only while `app.rebalancing` is false: faust sets it in the consumer
    thread as a rebalance begins (before the revocation, even of nothing) and clears it only at the
    end of table recovery for the new assignment, with a restore or without one. (faust's flow
    control is no such gate: a member that owned nothing is not suspended.)"""
    from faust.app.base import App

    listener = inspect.getsource(faust_aiokafka.ConsumerRebalanceListener.on_partitions_revoked)
    assert listener.index("thread.app.on_rebalance_start()") < listener.index("thread.on_partitions_revoked(")
    assert "self.rebalancing = True" in inspect.getsource(App.on_rebalance_start)
    assert "self.rebalancing = False" in inspect.getsource(App.on_rebalance_end)
    completed = inspect.getsource(Recovery.on_recovery_completed)
    assert completed.index("await asyncio.wait(callback_coros)") < completed.index(
        "self.app.on_rebalance_end()"
    )
    assert inspect.getsource(Recovery._resume_streams).rstrip().splitlines()[-2:] == [
        "        app.on_rebalance_end()",
        '        self.log.info("Worker ready")',
    ]
    # nothing else ends it
    package = Path(faust.__file__).parent
    enders = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if re.search(r"on_rebalance_end\(\)|rebalancing = False", path.read_text())
    )
    assert enders == ["app/base.py", "tables/recovery.py"], enders
    revoked = inspect.getsource(App._on_partitions_revoked)
    assert "if assignment:" in revoked  # flow control: suspended only if something was assigned
