"""The processor's compose health check and Kubernetes probes use its ops endpoints (/readyz,
/healthz) on the port it binds with the deployment's STRAINWATCH_OPS_BIND (docs/operations.md)."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from strainwatch.ops.server import resolve_bind
from tests.unit.deploy.common import DEPLOY, K8S
from tests.unit.deploy.test_k8s import of_kind, render

pytestmark = pytest.mark.unit


def compose() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_compose_healthcheck_asks_the_processors_readyz() -> None:
    """Run here against a server answering 200, then 503, then nothing listening."""
    doc = compose()
    bind = doc["x-strainwatch-env"]["STRAINWATCH_OPS_BIND"]
    host, port = resolve_bind(None, "processor", {"STRAINWATCH_OPS_BIND": bind})  # type: ignore[misc]
    assert host == "0.0.0.0" and port == 9310
    test = doc["services"]["processor"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    url = "http://127.0.0.1:9310/readyz"
    assert url in test[3]
    answers: list[int] = []
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
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
    assert paths == ["/readyz", "/readyz"]


def test_k8s_processor_probes_use_the_ops_port() -> None:
    objects = render(K8S / "overlays" / "example")
    deployment = of_kind(objects, "Deployment")["strainwatch-processor"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (config,) = [c for c in of_kind(objects, "ConfigMap").values() if "STRAINWATCH_OPS_BIND" in c["data"]]
    host, port = resolve_bind(
        None, "processor", {"STRAINWATCH_OPS_BIND": config["data"]["STRAINWATCH_OPS_BIND"]}
    )  # type: ignore[misc]
    assert host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["ops"] == port == 9310
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    # liveness must not restart a processor that only waits for its broker or InfluxDB: it asks
    # /healthz, which answers while the event loop runs
    assert "exec" not in container["livenessProbe"]
    # the processor leaves within its 27 s stop deadline, inside the grace period
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
