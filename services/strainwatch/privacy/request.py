"""The erasure request on `privacy.erasures.v1` (key worker_id): the running processor and alerting
service drop the worker from memory when they read it (docs/privacy.md)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from strainwatch.events import Ident, Message


class ErasureRequest(Message):
    """Internal: `strainwatch privacy erase` asks the services to forget one worker's state."""

    worker_id: Ident
    site_id: Ident | None = Field(default=None, description="the erasure's site scope, if any")
    requested_at: datetime
    request_id: str = Field(min_length=1, max_length=64)
