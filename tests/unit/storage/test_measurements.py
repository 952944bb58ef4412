from __future__ import annotations

import pytest

from strainwatch.storage.measurements import line

pytestmark = pytest.mark.unit


def test_line_protocol_escapes_tags_and_types_fields() -> None:
    text = line(
        "exposure",
        {"worker": "w 1", "site": "plant,1", "team": "a=b"},
        {"frames": 3, "wear_s": 1.5, "thresholds": 'default "v1"', "ok": True},
        1_700_000_000,
    )
    assert text == (
        r"exposure,site=plant\,1,team=a\=b,worker=w\ 1 "
        r'frames=3i,wear_s=1.5,thresholds="default \"v1\"",ok=true 1700000000'
    )


def test_empty_tags_are_left_out() -> None:
    assert line("m", {"a": "", "b": "x"}, {"f": 1.0}, 5) == "m,b=x f=1.0 5"
