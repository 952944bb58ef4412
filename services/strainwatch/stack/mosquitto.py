"""Mosquitto 2 in the local stack: config, password file, ACL and persistence under <state_dir>/mosquitto/.

Accounts (docs/architecture.md): a device's username is its device id; the gateway's is
`strainwatch-gateway`. The ACL lets a device write only `devices/<its id>/frames|ack` and read only
`devices/<its id>/commands`; the gateway reads and writes `devices/#`.

Password entries are mosquitto 2's `$7$` format (PBKDF2-SHA512), written here in Python rather
than with `mosquitto_passwd -b`: one atomic rewrite of the whole file for any number of devices
(mosquitto_passwd is one process and one in-place rewrite per account, and a running Mosquitto
reloading on SIGHUP could read a half-written file), and provisioning works on hosts that have
the broker elsewhere and no `mosquitto_passwd`. A test checks the entries against the real broker.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pwd
import re
import secrets
import signal
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from strainwatch.stack.procs import (
    Proc,
    alive,
    ensure_debian_binary,
    spawn,
    stop,
    tcp_open,
    wait_until,
)

GATEWAY_USERNAME = "strainwatch-gateway"
# mosquitto_passwd's defaults for $7$ entries
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
# A stopped gateway's persistent session queues frames in Mosquitto: 1,000 devices sending one
# frame a second fill this in 100 s; beyond it Mosquitto drops new messages for that session.
MAX_QUEUED_MESSAGES = 100_000
# QoS 1 messages on their way to one client before its PUBACKs: the gateway acknowledges a frame
# only once Kafka has it, so the broker's default of 20 would cap it at 20 Kafka round trips.
MAX_INFLIGHT_MESSAGES = 1_000
# Below posture.events.v1's 1 MiB record batch limit, so any frame Mosquitto accepts fits on Kafka.
# A larger packet disconnects its sender (a device learns its frame was refused; the older
# message_size_limit dropped it after acknowledging it).
MAX_PACKET_SIZE = 1_000_000
# Mosquitto's usernames in the ACL `%u` pattern must not contain MQTT wildcards or levels.
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


@dataclass(frozen=True)
class MosquittoPaths:
    home: Path

    @classmethod
    def of(cls, state_dir: Path) -> MosquittoPaths:
        return cls(state_dir / "mosquitto")

    @property
    def config(self) -> Path:
        return self.home / "mosquitto.conf"

    @property
    def passwords(self) -> Path:
        return self.home / "passwd"

    @property
    def acl(self) -> Path:
        return self.home / "acl"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "mosquitto.log"

    @property
    def proc_file(self) -> Path:
        return self.home / "proc.json"


def render_config(paths: MosquittoPaths, port: int, run_as: str) -> str:
    return "\n".join(
        [
            "# written by strainwatch (stack/mosquitto.py); rewritten on every start",
            "per_listener_settings false",
            # stays this user when started as root (the default would switch to `mosquitto`,
            # which cannot read a state dir owned by someone else); no effect otherwise
            f"user {run_as}",
            "persistence true",
            f"persistence_location {paths.data}/",
            # also saved on every clean shutdown; a kill -9 loses at most this many seconds
            "autosave_interval 5",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            f"listener {port} 127.0.0.1",
            "protocol mqtt",
            "allow_anonymous false",
            f"password_file {paths.passwords}",
            f"acl_file {paths.acl}",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
            f"max_packet_size {MAX_PACKET_SIZE}",
            "",
        ]
    )


def render_acl(gateway_username: str = GATEWAY_USERNAME) -> str:
    # `pattern` lines apply to every user with %u = the authenticated username, so a device can
    # only ever reach its own topics whatever id it claims in a payload.
    return "\n".join(
        [
            "# written by strainwatch (stack/mosquitto.py)",
            "pattern write devices/%u/frames",
            "pattern write devices/%u/ack",
            "pattern read devices/%u/commands",
            "",
            f"user {gateway_username}",
            "topic readwrite devices/#",
            "",
        ]
    )


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A mosquitto 2 `$7$` password-file entry (without the `username:` prefix)."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, entry: str) -> bool:
    """True when `entry` (a `$7$` hash) is the hash of `password`."""
    parts = entry.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    salt = base64.b64decode(parts[3])
    return secrets.compare_digest(hash_password(password, salt=salt, iterations=int(parts[2])), entry)


def parse_password_file(text: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, entry = line.partition(":")
        if sep:
            entries[user] = entry
    return entries


def render_password_file(entries: Mapping[str, str]) -> str:
    return "".join(f"{user}:{entry}\n" for user, entry in sorted(entries.items()))


def check_username(username: str) -> None:
    if not _USERNAME.match(username) or len(username) > 64:
        raise ValueError(f"not a valid device id / MQTT username: {username!r}")


def set_accounts(paths: MosquittoPaths, accounts: Mapping[str, str]) -> None:
    """Add or update accounts {username: password} in the password file, atomically."""
    for username in accounts:
        check_username(username)
    paths.home.mkdir(parents=True, exist_ok=True)
    try:
        entries = parse_password_file(paths.passwords.read_text())
    except FileNotFoundError:
        entries = {}
    for username, password in accounts.items():
        if username in entries and verify_password(password, entries[username]):
            continue  # unchanged: keep the entry (and its salt)
        entries[username] = hash_password(password)
    _write_private(paths.passwords, render_password_file(entries))


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)  # a reloading Mosquitto reads the old file or the new one, never half


def running_proc(state_dir: Path) -> Proc | None:
    """The Mosquitto started for this state dir, if it still runs."""
    try:
        proc = Proc(**json.loads(MosquittoPaths.of(state_dir).proc_file.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return proc if alive(proc) else None


def reload(state_dir: Path) -> bool:
    """SIGHUP a running Mosquitto so it rereads its password and ACL files. False if none runs."""
    proc = running_proc(state_dir)
    if proc is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGHUP)
    return True


def provision_devices(state_dir: Path, devices: Mapping[str, str]) -> None:
    """Add or update device accounts {device_id: password}; a running Mosquitto reloads them.

    Mosquitto applies the reload asynchronously (within its next loop, milliseconds): a client
    connecting in the same instant may still see the old accounts.
    """
    if GATEWAY_USERNAME in devices:
        raise ValueError(f"{GATEWAY_USERNAME} is the gateway's account, not a device id")
    set_accounts(MosquittoPaths.of(state_dir), devices)
    reload(state_dir)


def ensure_mosquitto() -> str:
    return ensure_debian_binary(
        "mosquitto",
        "mosquitto",
        "Install Debian's package (`sudo apt-get install mosquitto`), or point STRAINWATCH_MQTT_HOST/PORT "
        "at an MQTT broker you run yourself.",
    )


def start_mosquitto(state_dir: Path, port: int, gateway_password: str) -> Proc:
    """Write config, ACL and the gateway's account, start Mosquitto and wait until it listens."""
    binary = ensure_mosquitto()
    paths = MosquittoPaths.of(state_dir)
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(render_config(paths, port, pwd.getpwuid(os.getuid()).pw_name))
    paths.acl.write_text(render_acl())
    set_accounts(paths, {GATEWAY_USERNAME: gateway_password})
    proc = spawn(
        "mosquitto",
        [binary, "-c", str(paths.config)],
        port=port,
        log_path=paths.log,
        marker=str(paths.config),
    )
    paths.proc_file.write_text(json.dumps(asdict(proc)))
    wait_until(lambda: tcp_open(port), timeout_s=20, what="mosquitto", proc=proc)
    return proc


def stop_mosquitto(state_dir: Path) -> bool:
    """SIGTERM (Mosquitto saves its persistence file on the way out). True if it was running."""
    proc = running_proc(state_dir)
    return stop(proc) if proc is not None else False
