"""The report as PDF: the HTML document with PNG figures, laid out by WeasyPrint.

Deterministic: no creation or modification date (none is given to WeasyPrint, so none is written), a
fixed document identifier, fonts from the system's fontconfig (DejaVu Sans), and the embedded font
subsets stamped with a fixed time: fontTools, which WeasyPrint subsets fonts with, writes the current
time into each font's `head` table unless SOURCE_DATE_EPOCH is set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

FONT_TIMESTAMP = "0"  # SOURCE_DATE_EPOCH while fonts are subset


@contextmanager
def _fixed_font_timestamp() -> Iterator[None]:
    before = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = FONT_TIMESTAMP
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = before


def render_pdf(document: str) -> bytes:
    import weasyprint  # type: ignore[import-untyped]

    # WeasyPrint logs every CSS property it ignores at WARNING; the report's CSS is fixed
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    with _fixed_font_timestamp():
        pdf = weasyprint.HTML(string=document, base_url=".").write_pdf(pdf_identifier=b"strainwatch-report")
    assert pdf is not None
    return bytes(pdf)
