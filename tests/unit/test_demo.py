"""The demo's wait for the pipeline and its verdict, without the stack (a fake clock, no sleeps)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from strainwatch import demo
from strainwatch.demo import Accounting, DemoIncomplete, await_accounting, verdict

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


def _wait(counts: list[tuple[int, int]], expected: tuple[int, int], timeout_s: float = 300.0) -> Accounting:
    clock = FakeClock()
    series = iter(counts)
    last = [(0, 0)]

    def poll() -> tuple[int, int]:
        last[0] = next(series, last[0])
        return last[0]

    return await_accounting(poll, *expected, timeout_s, clock=clock, sleep=clock.sleep)


def test_returns_as_soon_as_every_frame_is_accounted_for() -> None:
    result = _wait([(0, 0), (50, 1), (100, 3)], (100, 3))
    assert result.complete and (result.processed, result.dead_lettered) == (100, 3)
    assert result.waited_s == 1.0  # two polls of 0.5 s before the third saw everything
    verdict(result)  # no exception: the demo prints its JSON line


def test_a_timeout_is_incomplete_and_says_what_is_missing() -> None:
    result = _wait([(10, 0), (90, 2)], (100, 3), timeout_s=300)
    assert not result.complete
    assert result.waited_s >= 300
    with pytest.raises(DemoIncomplete) as raised:
        verdict(result)
    message = str(raised.value)
    assert "processed 90 of 100 valid frames (10 missing" in message
    assert "dead-lettered 2 of 3 invalid frames (1 missing" in message


@pytest.mark.parametrize(
    ("counts", "missing", "not_missing"),
    [((100, 1), "dead-lettered 1 of 3", "processed"), ((40, 3), "processed 40 of 100", "dead-lettered")],
)
def test_only_the_missing_side_is_reported(counts: tuple[int, int], missing: str, not_missing: str) -> None:
    shortfall = Accounting(*counts, 100, 3, 300.0).shortfall()
    assert missing in shortfall and not_missing not in shortfall


def test_nothing_expected_is_complete_at_once() -> None:
    assert _wait([(0, 0)], (0, 0)).complete


def test_the_command_exits_non_zero_without_the_json_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's decision only: run_demo (the stack) replaced by one that ends in a timeout."""
    import typer

    def timed_out(*_args: object) -> dict[str, object]:
        verdict(Accounting(90, 2, 100, 3, 300.0))
        return {"frames_produced": 103}

    monkeypatch.setattr(demo, "run_demo", timed_out)
    app = typer.Typer()
    demo.register(app)
    app.command("noop")(lambda: None)  # two commands: typer keeps `demo` as a subcommand
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 1
    assert "frames_produced" not in result.stdout
    assert "processed 90 of 100" in result.output
