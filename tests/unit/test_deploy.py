"""deploy/ validated offline (no Docker engine here): the compose file agrees with the code and itself."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import typer
import yaml

from strainwatch.config import Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
STRAINWATCH_VAR = re.compile(r"\bSTRAINWATCH_[A-Z0-9_]+\b")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
# commands the compose file runs that are still being built by others (remove as they land)
PENDING_COMMANDS: set[tuple[str, ...]] = set()


def load_compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            out[key.strip()] = value.strip()
    return out


def interpolate(value: Any, env: dict[str, str]) -> str:
    """docker compose's variable substitution, for the forms the compose file uses."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        present = name in env and (env[name] != "" or op is None or not op.startswith(":"))
        if op in ("-", ":-"):
            return env[name] if present else arg
        if op in ("?", ":?"):
            if not present:
                raise KeyError(f"{name} is required: {arg}")
            return env[name]
        return env.get(name, "")

    text = str(value).replace("$$", "\0")
    return INTERPOLATION.sub(sub, text).replace("\0", "$")


def referenced_variables() -> set[str]:
    return {m.group(1) for m in INTERPOLATION.finditer(COMPOSE.read_text())}


def unique_env() -> dict[str, str]:
    """Every variable set to a value of its own: equal results then mean the same variable."""
    return {name: f"value-of-{name}" for name in referenced_variables()}


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def strainwatch_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if isinstance(svc.get("command"), list) and svc["command"][:1] == ["strainwatch"]
    }


def kafka_internal_listener(compose: dict[str, Any]) -> tuple[str, int]:
    env = environment(compose["services"]["kafka"])
    inter = env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")
    advertised = dict(
        item.split("://", 1)
        for item in interpolate(env["KAFKA_ADVERTISED_LISTENERS"], unique_env()).split(",")
    )
    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    host, port = advertised[inter].rsplit(":", 1)
    assert host in ("kafka", compose["services"]["kafka"].get("hostname")), f"{inter} advertises {host}"
    assert listeners[inter].rsplit(":", 1)[1] == port, f"{inter} listens elsewhere than it advertises"
    return host, int(port)


def container_port(service: dict[str, Any]) -> int:
    (mapping,) = service["ports"]
    return int(str(mapping).rsplit(":", 1)[1].split("/")[0])


# --- shape ------------------------------------------------------------------------------------


def test_compose_parses_and_has_every_component() -> None:
    compose = load_compose()
    services = compose["services"]
    for name in ("kafka", "influxdb", "grafana", "mosquitto", "topics", "processor", "alerting", "gateway"):
        assert name in services, name
    assert services["kafka"]["image"].split(":-", 1)[1].startswith("apache/kafka:4.")
    assert "influxdb:2.7" in services["influxdb"]["image"]
    assert "grafana/grafana:12." in services["grafana"]["image"]
    assert "eclipse-mosquitto:2" in services["mosquitto"]["image"]
    commands = {name: svc["command"] for name, svc in strainwatch_services(compose).items()}
    assert commands["processor"] == ["strainwatch", "processor"]
    assert commands["alerting"] == ["strainwatch", "alerts", "run"]
    assert commands["gateway"] == ["strainwatch", "gateway", "run"]
    assert commands["topics"][:3] == ["strainwatch", "stack", "topics"]


def test_long_running_services_restart_and_have_healthchecks() -> None:
    compose = load_compose()
    for name, svc in compose["services"].items():
        if name == "topics":
            assert svc["restart"].startswith("on-failure"), "the topics job runs once"
            continue
        assert svc.get("restart") in ("unless-stopped", "always"), name
        check = svc.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"{name} has no healthcheck"


def test_strainwatch_services_share_the_env_anchor() -> None:
    compose = load_compose()
    anchor = compose["x-strainwatch-env"]
    for name, svc in strainwatch_services(compose).items():
        assert environment(svc) == anchor, f"{name} does not use x-strainwatch-env"
        assert svc["build"]["dockerfile"] == "Dockerfile"
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DOCKERFILE


# --- configuration agrees with strainwatch.config.Settings --------------------------------------


def test_every_strainwatch_variable_is_a_settings_field() -> None:
    fields = {"STRAINWATCH_" + name.upper() for name in Settings.model_fields}
    used = set(STRAINWATCH_VAR.findall(COMPOSE.read_text())) | set(
        STRAINWATCH_VAR.findall(ENV_EXAMPLE.read_text())
    )
    assert used, "no STRAINWATCH_* variable found at all"
    unknown = sorted(used - fields)
    assert not unknown, f"not fields of strainwatch.config.Settings: {unknown}"


def test_strainwatch_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    anchor = load_compose()["x-strainwatch-env"]
    for name in list(Settings.model_fields):
        monkeypatch.delenv("STRAINWATCH_" + name.upper(), raising=False)
    for key, value in anchor.items():
        monkeypatch.setenv(key, interpolate(value, env_example()))
    settings = Settings()  # raises on a value of the wrong type or out of range
    assert settings.log_format == "json"
    for key, value in env_example().items():
        if key.startswith("STRAINWATCH_"):
            monkeypatch.setenv(key, value)
    Settings()


def test_required_variables_are_in_env_example() -> None:
    example = env_example()
    required = {
        m.group(1) for m in INTERPOLATION.finditer(COMPOSE.read_text()) if (m.group(2) or "").endswith("?")
    }
    assert required, "the secrets should be required (${NAME:?...})"
    assert required <= set(example), sorted(required - set(example))
    compose = load_compose()
    for svc in compose["services"].values():
        for value in environment(svc).values():
            interpolate(value, example)  # every required variable resolves


def test_bootstrap_points_at_the_kafka_internal_listener() -> None:
    compose = load_compose()
    host, port = kafka_internal_listener(compose)
    for name, svc in strainwatch_services(compose).items():
        bootstrap = interpolate(environment(svc)["STRAINWATCH_KAFKA_BOOTSTRAP"], env_example())
        assert bootstrap == f"{host}:{port}", name
    command = compose["services"]["topics"]["command"]
    assert command[command.index("--bootstrap") + 1] == f"{host}:{port}"


def test_influx_url_points_at_the_influxdb_service() -> None:
    compose = load_compose()
    port = container_port(compose["services"]["influxdb"])
    for name, svc in strainwatch_services(compose).items():
        url = urlparse(interpolate(environment(svc)["STRAINWATCH_INFLUX_URL"], env_example()))
        assert (url.scheme, url.hostname, url.port) == ("http", "influxdb", port), name
    grafana = urlparse(environment(compose["services"]["grafana"])["INFLUX_URL"])
    assert (grafana.hostname, grafana.port) == ("influxdb", port)


@pytest.mark.parametrize("env_kind", ["unique", "example"])
def test_influx_token_org_bucket_agree(env_kind: str) -> None:
    env = unique_env() if env_kind == "unique" else env_example()
    compose = load_compose()
    init = {k: interpolate(v, env) for k, v in environment(compose["services"]["influxdb"]).items()}
    assert init["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    grafana = {k: interpolate(v, env) for k, v in environment(compose["services"]["grafana"]).items()}
    for name, svc in strainwatch_services(compose).items():
        sw = {k: interpolate(v, env) for k, v in environment(svc).items()}
        assert sw["STRAINWATCH_INFLUX_TOKEN"] == init["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"], name
        assert sw["STRAINWATCH_INFLUX_ORG"] == init["DOCKER_INFLUXDB_INIT_ORG"], name
        assert sw["STRAINWATCH_INFLUX_BUCKET"] == init["DOCKER_INFLUXDB_INIT_BUCKET"], name
    assert grafana["INFLUX_TOKEN"] == init["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert grafana["INFLUX_BUCKET"] == init["DOCKER_INFLUXDB_INIT_BUCKET"]


def test_grafana_datasource_is_influxql_with_a_token_header() -> None:
    doc = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/strainwatch.yaml").read_text())
    (ds,) = doc["datasources"]
    assert ds["type"] == "influxdb"
    assert ds["url"] == "${INFLUX_URL}"
    assert ds["jsonData"]["version"] == "InfluxQL"
    assert ds["jsonData"]["dbName"] == "${INFLUX_BUCKET}"
    names = {k: v for k, v in ds["jsonData"].items() if k.startswith("httpHeaderName")}
    (header_key,) = [k for k, v in names.items() if v == "Authorization"]
    value = ds["secureJsonData"]["httpHeaderValue" + header_key.removeprefix("httpHeaderName")]
    assert value == "Token ${INFLUX_TOKEN}"  # Bearer gets 401 from InfluxDB 2.x /query (docs/architecture.md)
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/strainwatch.yaml").read_text())
    mounts = load_compose()["services"]["grafana"]["volumes"]
    paths = {p["options"]["path"] for p in providers["providers"]}
    assert paths <= {m.split(":")[1] for m in mounts}, "dashboard provider path is not mounted"


# --- internal consistency ---------------------------------------------------------------------


def test_depends_on_names_defined_services_with_valid_conditions() -> None:
    compose = load_compose()
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on undefined {dep}"
            assert dep != name
            condition = spec.get("condition", "service_started")
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                check = services[dep].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), f"{dep} has no healthcheck"
            if condition == "service_completed_successfully":
                assert not str(services[dep].get("restart", "no")).startswith(("always", "unless"))
    for name in ("processor", "alerting", "gateway"):
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_volume_mounts_exist_and_named_volumes_are_declared() -> None:
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for mount in svc.get("volumes", []):
            source = mount["source"] if isinstance(mount, dict) else mount.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert not source.startswith("/"), f"{name}: absolute host path {source}"
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist (relative to deploy/)"
            else:
                assert source in declared, f"{name}: named volume {source} is not declared"


def test_kafka_does_not_auto_create_topics() -> None:
    env = environment(load_compose()["services"]["kafka"])
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]


def test_topics_job_is_the_only_topic_creator_and_applies_strainwatch_topics() -> None:
    """Every topic's settings, max.message.bytes included, come from strainwatch.topics.

    The dead-letter topic must accept the dead letter of any frame the posture topic accepts; a
    second definition (kafka-topics.sh, broker-wide message.max.bytes) could undo that.
    """
    import inspect

    from strainwatch.stack import cli
    from strainwatch.topics import ALL_TOPICS, POSTURE_DEADLETTER, dead_letter_max_message_bytes

    compose = load_compose()
    text = COMPOSE.read_text()
    assert "kafka-topics" not in text and "--create" not in text, "topics are created by the topics job only"
    kafka_env = environment(compose["services"]["kafka"])
    assert not any("MESSAGE_MAX_BYTES" in name for name in kafka_env), "topics pin max.message.bytes"
    assert compose["services"]["topics"]["command"][:3] == ["strainwatch", "stack", "topics"]
    assert "ensure_topics(" in inspect.getsource(cli.topics)
    by_name = {spec.name: spec for spec in ALL_TOPICS}
    source = by_name["posture.events.v1"].config()["max.message.bytes"]
    assert POSTURE_DEADLETTER.config()["max.message.bytes"] == str(dead_letter_max_message_bytes(int(source)))


def test_mosquitto_healthcheck_probes_a_configured_listener() -> None:
    conf = (DEPLOY / "mosquitto/mosquitto.conf").read_text()
    listeners = {line.split()[1] for line in conf.splitlines() if line.startswith("listener ")}
    test = load_compose()["services"]["mosquitto"]["healthcheck"]["test"]
    assert test[test.index("-p") + 1] in listeners
    assert "allow_anonymous false" in conf


# --- the image ----------------------------------------------------------------------------------


def console_scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_dockerfile_installs_the_package_and_runs_its_console_script() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    # the tested versions from the lock, then the package without resolving its ranges again
    lock = re.search(r"^RUN pip install -r requirements\.lock$", text, re.M)
    package = re.search(r"^RUN pip install --no-deps \.", text, re.M)
    assert lock and package and lock.start() < package.start()
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "!requirements.lock" in ignored, "the lock file must reach the build context"
    (cmd,) = re.findall(r"^(?:CMD|ENTRYPOINT) (\[.*\])$", text, re.M)
    executable = json.loads(cmd)[0]
    assert executable in console_scripts(), f"{executable} is not a [project.scripts] entry"
    for name, svc in strainwatch_services(load_compose()).items():
        assert svc["command"][0] in console_scripts(), name


def test_compose_commands_exist_in_the_cli() -> None:
    from strainwatch.cli import app

    root = typer.main.get_command(app)
    missing = set()
    for svc in strainwatch_services(load_compose()).values():
        words = [w for w in svc["command"][1:] if not w.startswith("-")]
        node: Any = root
        path: list[str] = []
        for word in words:
            if not hasattr(node, "commands"):
                break
            path.append(word)
            node = node.commands.get(word)
            if node is None:
                missing.add(tuple(words))
                break
    assert missing <= PENDING_COMMANDS, f"compose runs commands the CLI lacks: {sorted(missing)}"


def test_dockerignore_keeps_secrets_and_state_out_of_the_image() -> None:
    rules = [x for x in (REPO / ".dockerignore").read_text().splitlines() if x and not x.startswith("#")]
    assert rules[0] == "*", "ignore everything, then allow what the image needs"
    assert "!services/" in rules and "!pyproject.toml" in rules
    assert not any(r.startswith("!deploy") for r in rules), "deploy/.env holds secrets"


def test_the_deployed_mosquitto_acl_is_the_local_stacks() -> None:
    """A device may touch only its own topics, in production as in the local stack and tests."""
    from strainwatch.stack.mosquitto import render_acl

    def rules(text: str) -> list[str]:
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]

    assert rules((REPO / "deploy" / "mosquitto" / "acl").read_text()) == rules(render_acl())
    assert "acl_file /mosquitto/config/acl" in (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
