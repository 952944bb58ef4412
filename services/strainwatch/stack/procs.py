"""Start, watch and stop the local stack's background processes (pids and logs in the state dir)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """A stack component could not start or be reached; the message says what to do."""


@dataclass(frozen=True)
class Proc:
    name: str
    pid: int
    port: int
    log: str
    marker: str  # a string of its command line, so a recycled pid is never killed by mistake


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free(port: int, what: str) -> None:
    if not port_free(port):
        raise StackError(
            f"port {port} for {what} is already taken by another process; "
            f"free it or choose another port (see `strainwatch config show`)"
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def alive(proc: Proc) -> bool:
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    if proc.marker not in cmdline:
        return False
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{proc.pid}/stat").read_text().split(") ", 1)[1][0]
        if status == "Z":  # a zombie has exited; only its parent has not reaped it
            return False
    return True


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    marker: str | None = None,
) -> Proc:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,  # survives the CLI that started it; `stack down` stops it
        )
    return Proc(name, popen.pid, port, str(log_path), marker or argv[0])


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    proc: Proc | None = None,
    interval_s: float = 0.1,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and not _pid_running(proc.pid):
            raise StackError(f"{what} exited during start-up; its log: {proc.log}\n{tail(proc.log)}")
        time.sleep(interval_s)
    raise StackError(f"{what} not ready after {timeout_s:.0f} s; log: {proc.log if proc else '-'}")


def tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(proc: Proc, timeout_s: float = 20.0) -> bool:
    """SIGTERM, then SIGKILL after timeout_s. True if it was running."""
    if not alive(proc):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(proc.pid)
        if not alive(proc):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for _ in range(100):
        _reap(proc.pid)
        if not alive(proc):
            break
        time.sleep(0.05)
    return True


def _pid_running(pid: int) -> bool:
    """Right after spawn the command line may still be Python's (fork before exec): check the pid only."""
    _reap(pid)
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return status != "Z"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def ensure_debian_binary(package: str, binary: str, missing_hint: str) -> str:
    """The path of `binary` (on PATH or in /usr/sbin, where Debian puts daemons); if absent and we
    are root on Debian, apt-get install `package` first. Otherwise a StackError with the hint."""

    def find() -> str | None:
        sbin = Path("/usr/sbin") / binary
        return shutil.which(binary) or (str(sbin) if sbin.exists() else None)

    found = find()
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        result = subprocess.run(
            ["apt-get", "install", "-y", "-qq", package], env=env, capture_output=True, text=True
        )
        found = find()
        if found:
            return found
        raise StackError(f"apt-get install {package} failed:\n{result.stderr[-2000:]}")
    raise StackError(f"{binary} is not installed. {missing_hint}")
