"""How a simulated device answers commands: receipts, ack and take shares, duplicates, bad input."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from strainwatch.fleet.behaviour import DeviceBehaviour, DevicePolicy, Reaction, Rejected, share_draw

RECEIVED = datetime(2026, 11, 2, 9, 30, tzinfo=UTC).timestamp()


def command(
    device_id: str = "dev-0001", kind: str = "break_prompt", alert_id: uuid.UUID | None = None
) -> bytes:
    alert = alert_id or uuid.uuid4()
    return orjson.dumps(
        {
            "schema_version": 1,
            "command_id": str(uuid.uuid5(alert, "command")),
            "worker_id": "w-1",
            "device_id": device_id,
            "ts": "2026-11-02T09:29:59.000Z",
            "command": kind,
            "haptic": "break" if kind == "break_prompt" else "nudge",
            "alert_id": str(alert),
            "text": "Time for a short break",
        }
    )


def alerts(n: int, seed: int = 7) -> list[uuid.UUID]:
    return [uuid.UUID(int=seed * 1_000_003 + i) for i in range(n)]


def react(behaviour: DeviceBehaviour, payload: bytes) -> Reaction:
    reaction = behaviour.on_command(payload, RECEIVED, event_now=RECEIVED)
    assert isinstance(reaction, Reaction)
    return reaction


def test_receipt_names_the_device_alert_command_and_time() -> None:
    alert = uuid.uuid4()
    reaction = react(DeviceBehaviour("dev-0001", DevicePolicy()), command(alert_id=alert))
    receipt = reaction.receipt
    assert (receipt.device_id, receipt.alert_id, receipt.command) == ("dev-0001", str(alert), "break_prompt")
    assert receipt.received_at == RECEIVED and not receipt.duplicate


def test_ack_payload_follows_the_convention() -> None:
    alert = uuid.uuid4()
    reaction = react(DeviceBehaviour("dev-0001", DevicePolicy(ack_share=1.0)), command(alert_id=alert))
    assert reaction.ack is not None
    assert orjson.loads(reaction.ack) == {
        "schema_version": 1,
        "alert_id": str(alert),
        "ts": "2026-11-02T09:30:00.000Z",
        "kind": "ack",
    }


@pytest.mark.parametrize("share", [0.0, 0.3, 0.7, 1.0])
def test_ack_share_is_kept_over_many_prompts(share: float) -> None:
    behaviour = DeviceBehaviour("dev-0001", DevicePolicy(ack_share=share, seed=3))
    acked = sum(react(behaviour, command(alert_id=a)).ack is not None for a in alerts(2000))
    assert abs(acked / 2000 - share) < 0.04


def test_shares_are_deterministic_per_seed_and_alert_whatever_the_order() -> None:
    ids = alerts(300)
    policy = DevicePolicy(ack_share=0.5, take_share=0.5, seed=11)

    def decisions(order: list[uuid.UUID]) -> dict[uuid.UUID, tuple[bool, bool]]:
        behaviour = DeviceBehaviour("dev-0001", policy)
        out = {}
        for alert in order:
            reaction = react(behaviour, command(alert_id=alert))
            out[alert] = (reaction.ack is not None, reaction.neutral_until is not None)
        return out

    assert decisions(ids) == decisions(list(reversed(ids)))
    other_seed = DeviceBehaviour("dev-0001", DevicePolicy(ack_share=0.5, take_share=0.5, seed=12))
    other = {a: react(other_seed, command(alert_id=a)).ack is not None for a in ids}
    assert other != {a: d[0] for a, d in decisions(ids).items()}


def test_ack_and_take_are_independent_draws() -> None:
    ids = [str(a) for a in alerts(2000)]
    both = sum(share_draw(1, a, "ack") < 0.5 and share_draw(1, a, "take") < 0.5 for a in ids)
    assert abs(both / 2000 - 0.25) < 0.04


def test_a_taken_break_holds_neutral_for_three_minutes_of_event_time() -> None:
    behaviour = DeviceBehaviour("dev-0001", DevicePolicy(take_share=1.0, report_rest=True))
    reaction = behaviour.on_command(command(), RECEIVED, event_now=1_000.0)
    assert isinstance(reaction, Reaction)
    assert reaction.neutral_until == 1_180.0
    assert reaction.rest is not None and orjson.loads(reaction.rest)["kind"] == "rest"


def test_rest_is_reported_only_when_the_policy_says_so() -> None:
    reaction = react(DeviceBehaviour("dev-0001", DevicePolicy(take_share=1.0)), command())
    assert reaction.neutral_until is not None and reaction.rest is None


def test_nudges_are_acknowledged_but_never_start_a_break() -> None:
    behaviour = DeviceBehaviour("dev-0001", DevicePolicy(ack_share=1.0, take_share=1.0, report_rest=True))
    reaction = react(behaviour, command(kind="haptic_nudge"))
    assert reaction.ack is not None
    assert reaction.neutral_until is None and reaction.rest is None


def test_a_redelivered_command_is_recorded_but_not_answered_twice() -> None:
    behaviour = DeviceBehaviour("dev-0001", DevicePolicy(ack_share=1.0, take_share=1.0))
    payload = command()
    first, again = react(behaviour, payload), react(behaviour, payload)
    assert not first.receipt.duplicate and first.ack is not None
    assert again.receipt.duplicate and again.ack is None and again.neutral_until is None


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b'{"schema_version": 1}', command()[:-1], command(device_id="dev-0002")],
    ids=["malformed", "incomplete", "truncated", "other-device"],
)
def test_bad_or_misaddressed_commands_are_rejected_not_raised(payload: bytes) -> None:
    result = DeviceBehaviour("dev-0001", DevicePolicy()).on_command(payload, RECEIVED, RECEIVED)
    assert isinstance(result, Rejected) and result.reason


def test_policy_validates_shares() -> None:
    with pytest.raises(ValueError, match="ack_share"):
        DevicePolicy(ack_share=1.5)
    with pytest.raises(ValueError, match="take_share"):
        DevicePolicy(take_share=-0.1)
