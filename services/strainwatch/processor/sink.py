"""InfluxDB sink: buffers line-protocol points, writes them when the checkpoint flushes.

Like Quix Streams' BaseSink: `add()` buffers, `flush()` writes, and the checkpoint calls `flush()`
before it acknowledges the offsets that produced the points. `flush()` only returns once every point
is stored; while InfluxDB is unreachable it retries with capped exponential back-off, so offsets
simply wait (nothing is dropped, nothing is acknowledged early).

Why not influxdb-client's *batching* WriteApi: it cannot be flushed on demand
(`WriteApi.flush()` is a no-op in 1.50) and reports failures only through callbacks, so a checkpoint
could not know its points are stored. The sink batches itself and writes each batch through
influxdb-client's asynchronous write API (`/api/v2/write`, precision seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

import structlog
from influxdb_client import WritePrecision
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

from strainwatch.logs import RateLimitedLog

log = structlog.get_logger("strainwatch.sink")


class SinkStopped(RuntimeError):
    """flush() gave up because the service is stopping; the points stay unacknowledged."""


class InfluxSink:
    def __init__(
        self,
        url: str,
        token: str,
        org: str,
        bucket: str,
        *,
        batch_lines: int = 5_000,
        max_backoff_s: float = 5.0,
        timeout_ms: int = 30_000,
    ) -> None:
        self.url = url
        self.bucket = bucket
        self.org = org
        self._token = token
        self._timeout_ms = timeout_ms
        self.batch_lines = batch_lines
        self.max_backoff_s = max_backoff_s
        self._buffer: list[str] = []
        self._client: InfluxDBClientAsync | None = None
        self._stopping = False
        self._errors = RateLimitedLog(log, interval_s=10.0)
        self.points_written = 0
        self.write_failures = 0

    def add(self, lines: Iterable[str]) -> None:
        self._buffer.extend(lines)

    def __len__(self) -> int:
        return len(self._buffer)

    def request_stop(self) -> None:
        self._stopping = True

    def _api(self) -> InfluxDBClientAsync:
        if self._client is None:
            self._client = InfluxDBClientAsync(
                url=self.url, token=self._token, org=self.org, timeout=self._timeout_ms
            )
        return self._client

    async def flush(self, *, give_up_when_stopping: bool = False) -> int:
        """Write everything buffered; returns the number of points written."""
        lines, self._buffer = self._buffer, []
        written = 0
        try:
            for start in range(0, len(lines), self.batch_lines):
                await self._write_with_retry(lines[start : start + self.batch_lines], give_up_when_stopping)
                written += min(self.batch_lines, len(lines) - start)
        except BaseException:
            # whatever was not written goes back in front of anything added meanwhile
            self._buffer = lines[written:] + self._buffer
            raise
        self.points_written += written
        return written

    async def _write_with_retry(self, batch: list[str], give_up_when_stopping: bool) -> None:
        backoff = 0.1
        started = time.monotonic()
        while True:
            try:
                await (
                    self._api()
                    .write_api()
                    .write(bucket=self.bucket, org=self.org, record=batch, write_precision=WritePrecision.S)
                )
                if time.monotonic() - started > 1.0:
                    log.info("influx writes recovered", after_s=round(time.monotonic() - started, 1))
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.write_failures += 1
                self._errors.warning(
                    "influx-write", "influx write failed, retrying", error=str(error)[:300], backoff_s=backoff
                )
                # a fresh client after a failure: the old session may hold dead connections
                await self._reset_client()
                if give_up_when_stopping and self._stopping:
                    raise SinkStopped("stopping with unwritten points; offsets stay uncommitted") from error
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    async def _reset_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # a broken session must not mask the write error
                await client.close()

    async def close(self) -> None:
        await self._reset_client()
