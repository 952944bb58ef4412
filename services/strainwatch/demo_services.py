"""What `strainwatch demo` runs beside the stack: the services as subprocesses, and a local webhook
receiver standing in for a chat service (the alerting service posts to it through apprise's
`json://` URL)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson


@dataclass
class ServiceProc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"the {self.name} exited ({self.popen.returncode}); see {self.log_path}")

    def stop(self, timeout_s: float = 40.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()


def start_service(name: str, args: list[str], env: dict[str, str], logs: Path) -> ServiceProc:
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "strainwatch.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServiceProc(name, popen, log_path)


@dataclass
class WebhookReceiver:
    """Collects the JSON bodies POSTed to it, on 127.0.0.1 and a free port."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> int:
        received = self.bodies
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    body = {"raw": raw.decode(errors="replace")}
                with lock:
                    received.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def channels_file(path: Path, site: str, port: int) -> Path:
    """The alerting service's channels file for the demo: the demo site's prompts go to the local
    webhook receiver (quiet hours none, default budgets)."""
    doc = {
        "sites": {
            site: {
                "timezone": "UTC",
                "channels": [
                    {"name": "demo-webhook", "url": f"json://127.0.0.1:{port}/prompts", "rate_per_s": 20}
                ],
            }
        }
    }
    path.write_bytes(orjson.dumps(doc))  # JSON is YAML
    return path
