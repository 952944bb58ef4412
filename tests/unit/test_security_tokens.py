"""The deployment's InfluxDB tokens: each consumer gets the narrowest one (docs/security.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
INIT_SCRIPT = DEPLOY / "influxdb" / "strainwatch-init.sh"


def _permissions(script: str, file: str) -> list[str]:
    match = re.search(rf"^token {re.escape(file)} .*?\n(.*?)\n", script, re.S | re.M)
    assert match, file
    return match.group(1).split()


def test_three_tokens_each_as_narrow_as_its_use() -> None:
    script = INIT_SCRIPT.read_text()
    both = ['"$main_id"', '"$windows_id"']
    assert _permissions(script, "services-write.token") == [x for b in both for x in ("--write-bucket", b)]
    assert _permissions(script, "grafana-read.token") == [x for b in both for x in ("--read-bucket", b)]
    ops = _permissions(script, "operations-readwrite.token")
    assert sorted(zip(ops[::2], ops[1::2], strict=True)) == sorted(
        [("--read-bucket", b) for b in both] + [("--write-bucket", b) for b in both]
    )
    # nothing else is ever granted (no org-wide, no all-access, no operator token)
    assert not re.search(r"--(all-access|operator|read-orgs|write-orgs)", script)


def test_no_long_running_service_mounts_the_operations_token() -> None:
    for path in [DEPLOY / "compose.yaml", *sorted((DEPLOY / "k8s").rglob("*.yaml"))]:
        assert "operations-readwrite" not in path.read_text(), path
