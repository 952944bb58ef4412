"""Mosquitto's files as the stack writes them: $7$ password entries, ACL, config, provisioning."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from strainwatch.stack import mosquitto as m

pytestmark = pytest.mark.unit


def test_password_entries_are_pbkdf2_sha512_in_mosquitto_format() -> None:
    entry = m.hash_password("secret", salt=b"0123456789ab")
    kind, iterations, salt, digest = entry.split("$")[1:]
    assert (kind, iterations) == ("7", "101")
    assert base64.b64decode(salt) == b"0123456789ab" and len(base64.b64decode(digest)) == 64
    assert m.verify_password("secret", entry)
    assert not m.verify_password("other", entry)
    assert not m.verify_password("secret", "$6$abc$def")


def test_entries_of_mosquitto_passwd_verify_with_ours(tmp_path: Path) -> None:
    # the same scheme as the broker's own tool (Debian's mosquitto, a system dependency): an entry
    # it writes verifies with our code
    assert shutil.which("mosquitto_passwd"), "mosquitto_passwd missing: make system-deps"
    path = tmp_path / "passwd"
    path.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(path), "dev-1", "pw-1"], check=True, capture_output=True)
    entry = m.parse_password_file(path.read_text())["dev-1"]
    assert entry.startswith("$7$")
    assert m.verify_password("pw-1", entry)


def test_provisioning_adds_and_updates_accounts_and_keeps_unchanged_ones(tmp_path: Path) -> None:
    paths = m.MosquittoPaths.of(tmp_path)
    m.set_accounts(paths, {m.GATEWAY_USERNAME: "gw"})
    m.provision_devices(tmp_path, {"dev-1": "a", "dev-2": "b"})  # no Mosquitto runs: files only
    first = m.parse_password_file(paths.passwords.read_text())
    m.provision_devices(tmp_path, {"dev-2": "b2", "dev-1": "a"})
    second = m.parse_password_file(paths.passwords.read_text())
    assert set(second) == {m.GATEWAY_USERNAME, "dev-1", "dev-2"}
    assert second["dev-1"] == first["dev-1"]  # same password: same entry
    assert m.verify_password("b2", second["dev-2"])
    assert paths.passwords.stat().st_mode & 0o077 == 0  # secrets: owner only


@pytest.mark.parametrize("bad", ["dev/1", "dev+", "#", "", "a b"])
def test_device_ids_that_would_break_the_acl_pattern_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        m.provision_devices(tmp_path, {bad: "x"})


def test_the_gateway_account_is_not_a_device(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        m.provision_devices(tmp_path, {m.GATEWAY_USERNAME: "x"})


def test_acl_confines_devices_to_their_own_topics() -> None:
    lines = [line for line in m.render_acl().splitlines() if line and not line.startswith("#")]
    assert lines == [
        "pattern write devices/%u/frames",
        "pattern write devices/%u/ack",
        "pattern read devices/%u/commands",
        "user strainwatch-gateway",
        "topic readwrite devices/#",
    ]


def test_config_listens_on_loopback_with_auth_and_persistence(tmp_path: Path) -> None:
    paths = m.MosquittoPaths.of(tmp_path)
    conf = m.render_config(paths, 11883, "root").splitlines()
    assert "listener 11883 127.0.0.1" in conf
    assert "allow_anonymous false" in conf
    assert "persistence true" in conf
    assert f"persistence_location {paths.data}/" in conf
    assert f"password_file {paths.passwords}" in conf and f"acl_file {paths.acl}" in conf
    assert any(line.startswith("max_queued_messages ") for line in conf)
