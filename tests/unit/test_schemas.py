"""The contracts in schemas/: current with the models, examples accepted or rejected for the right reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from strainwatch import contracts_export
from strainwatch.events import MESSAGE_MODELS, DeadReason, Rejected, parse_frame
from strainwatch.topics import ALL_TOPICS

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
VALID = sorted((SCHEMAS / "examples" / "valid").glob("*.json"))
INVALID = sorted((SCHEMAS / "examples" / "invalid").glob("*.json"))
# `late` depends on the processor's watermark, and the device codes on the roster's bindings (the
# gateway checks them), not on the frame alone: no example file can show them.
PROCESSOR_ONLY = {DeadReason.LATE, DeadReason.UNBOUND_DEVICE, DeadReason.DEVICE_WORKER_MISMATCH}


def expand(node: Any) -> Any:
    """Expand `{"$repeat": {"value": v, "count": n}}` recipes (examples too large to commit)."""
    if isinstance(node, dict):
        if set(node) == {"$repeat"}:
            return [node["$repeat"]["value"]] * int(node["$repeat"]["count"])
        return {k: expand(v) for k, v in node.items()}
    if isinstance(node, list):
        return [expand(v) for v in node]
    return node


def example_bytes(path: Path) -> bytes:
    if path.name.endswith(".gen.json"):
        return json.dumps(expand(json.loads(path.read_bytes()))).encode()
    return path.read_bytes()  # bytes, not parsed: some examples are deliberately not JSON


def reason_of(path: Path) -> DeadReason:
    return DeadReason(path.name.split("--", 1)[0])


def posture_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / contracts_export.schema_file_name("PostureFrame")).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


# --- the exported files are current -----------------------------------------------------------


def test_committed_schemas_equal_a_fresh_export() -> None:
    differ = contracts_export.stale(SCHEMAS)
    assert not differ, f"schemas/ is out of date ({', '.join(differ)}): run `strainwatch schemas export`"


def test_export_is_deterministic() -> None:
    first = contracts_export.export()
    second = contracts_export.export()
    assert first == second
    for name, content in first.items():
        assert content.endswith("\n") and not content.endswith("\n\n"), name
        if name.endswith(".json"):
            canonical = json.dumps(json.loads(content), indent=2, sort_keys=True, ensure_ascii=False)
            assert content == canonical + "\n", name


def test_one_schema_per_message_model_with_dialect_and_id() -> None:
    files = contracts_export.export()
    for name in MESSAGE_MODELS:
        file_name = contracts_export.schema_file_name(name)
        schema = json.loads(files[file_name])
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].endswith("/" + file_name)
        assert schema["title"] == name
        jsonschema.Draft202012Validator.check_schema(schema)
    assert contracts_export.schema_file_name("PostureFrame") == "posture-frame.v1.schema.json"
    ids = {json.loads(files[contracts_export.schema_file_name(n)])["$id"] for n in MESSAGE_MODELS}
    assert len(ids) == len(MESSAGE_MODELS)


def test_check_fails_on_a_changed_file_and_export_repairs_it(tmp_path: Path) -> None:
    from strainwatch.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["schemas", "export", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "posture-frame.v1.schema.json" in result.output
    assert runner.invoke(app, ["schemas", "check", "--dir", str(tmp_path)]).exit_code == 0

    (tmp_path / "posture-frame.v1.schema.json").write_text("{}\n")
    (tmp_path / "old-model.v1.schema.json").write_text("{}\n")
    (tmp_path / "asyncapi.yaml").unlink()
    result = runner.invoke(app, ["schemas", "check", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    for name in ("posture-frame.v1.schema.json", "old-model.v1.schema.json", "asyncapi.yaml"):
        assert name in result.output
    assert "strainwatch schemas export" in result.output

    assert runner.invoke(app, ["schemas", "export", "--out", str(tmp_path)]).exit_code == 0
    assert not (tmp_path / "old-model.v1.schema.json").exists()
    assert runner.invoke(app, ["schemas", "check", "--dir", str(tmp_path)]).exit_code == 0


# --- examples ---------------------------------------------------------------------------------


def test_there_are_examples_of_every_kind() -> None:
    assert len(VALID) >= 4
    covered = {reason_of(p) for p in INVALID}
    assert covered == set(DeadReason) - PROCESSOR_ONLY


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_example_passes_parse_frame_and_the_json_schema(path: Path) -> None:
    raw = example_bytes(path)
    frame = parse_frame(raw)  # the real clock: valid examples lie in the past
    assert frame.n_samples >= 1
    errors = sorted(posture_validator().iter_errors(json.loads(raw)), key=str)
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_rejected_with_the_reason_its_name_says(path: Path) -> None:
    expected = reason_of(path)
    with pytest.raises(Rejected) as caught:
        parse_frame(example_bytes(path))
    assert caught.value.reason is expected, caught.value.detail


def test_recipes_expand_past_the_limits() -> None:
    frame = json.loads(example_bytes(SCHEMAS / "examples" / "invalid" / "oversized--6001-samples.gen.json"))
    assert len(frame["samples"]["trunk_flexion"]) == 6001
    assert len(example_bytes(SCHEMAS / "examples" / "invalid" / "oversized--frame-over-256-kib.gen.json")) > (
        262_144
    )


def test_the_json_schema_rejects_what_it_can_express() -> None:
    """Device makers validate with the JSON Schema alone: it must catch the structural faults."""
    validator = posture_validator()
    for name in (
        "out_of_range--trunk-flexion.json",
        "invalid_field--worker-id-email.json",
        "invalid_field--event-id-not-uuid.json",
        "unknown_field--worker-name.json",
        "missing_field--samples.json",
        "unsupported_schema_version--v2.json",
        "not_finite--null-sample.json",
        "oversized--6001-samples.gen.json",
    ):
        doc = json.loads(example_bytes(SCHEMAS / "examples" / "invalid" / name))
        assert not validator.is_valid(doc), name


# --- AsyncAPI ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    doc = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_asyncapi_is_3_0_and_names_every_topic(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    channels = asyncapi["channels"]
    by_address = {c["address"]: c for c in channels.values()}
    assert set(by_address) == {t.name for t in ALL_TOPICS}
    for spec in ALL_TOPICS:
        binding = by_address[spec.name]["bindings"]["kafka"]
        cfg = spec.config()
        assert binding["topicConfiguration"] == {
            "cleanup.policy": [cfg["cleanup.policy"]],
            "retention.ms": int(cfg["retention.ms"]),
        }, spec.name
        assert binding["partitions"] >= 1
        if not spec.per_worker:
            assert binding["partitions"] == 1


def test_asyncapi_messages_reference_the_exported_schemas(asyncapi: dict[str, Any]) -> None:
    messages = asyncapi["components"]["messages"]
    for spec in ALL_TOPICS:
        channel = next(c for c in asyncapi["channels"].values() if c["address"] == spec.name)
        (ref,) = (m["$ref"] for m in channel["messages"].values())
        message = messages[ref.rsplit("/", 1)[1]]
        target = message["payload"]["schema"]["$ref"]
        schema = json.loads((SCHEMAS / target).read_text())
        assert schema["title"] == spec.message.__name__
        assert message["bindings"]["kafka"]["key"]["type"] == "string"


def test_asyncapi_operations_point_at_defined_channels(asyncapi: dict[str, Any]) -> None:
    channels = asyncapi["channels"]
    ops = asyncapi["operations"]
    seen: dict[str, set[str]] = {}
    for op in ops.values():
        channel_id = op["channel"]["$ref"].removeprefix("#/channels/")
        assert channel_id in channels
        for msg in op["messages"]:
            assert msg["$ref"].startswith(f"#/channels/{channel_id}/messages/")
            assert msg["$ref"].rsplit("/", 1)[1] in channels[channel_id]["messages"]
        seen.setdefault(channels[channel_id]["address"], set()).add(op["action"])
    assert seen["posture.events.v1"] == {"send", "receive"}
    assert "send" in seen["posture.deadletter.v1"]
    for spec in ALL_TOPICS:
        assert "send" in seen.get(spec.name, set()), f"nobody sends to {spec.name}"
