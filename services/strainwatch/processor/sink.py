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
from strainwatch.storage.measurements import EXPOSURE, WINDOWS_RP
from strainwatch.tls import influx_ca_file

_WINDOW_PREFIX = EXPOSURE + ","  # exactly the `exposure` measurement, not `exposure_hourly`

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
        windows_bucket: str | None = None,
    ) -> None:
        self.url = url
        self.bucket = bucket
        # the 10-second windows go to their own short-retention bucket (1.x: "<db>/windows")
        self.windows_bucket = windows_bucket or f"{bucket}/{WINDOWS_RP}"
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
        self.beyond_retention_batches = 0  # batches with points older than their bucket keeps
        self._retention_log = RateLimitedLog(log, interval_s=60.0)

    def add(self, lines: Iterable[str]) -> None:
        self._buffer.extend(lines)

    def __len__(self) -> int:
        return len(self._buffer)

    def discard(self) -> None:
        """Drop what is buffered (best-effort points only: never points a checkpoint waits for)."""
        self._buffer = []

    def request_stop(self) -> None:
        self._stopping = True

    def _api(self) -> InfluxDBClientAsync:
        if self._client is None:
            # https: verified against STRAINWATCH_INFLUX_CA_FILE or the system's CAs (docs/security.md)
            self._client = InfluxDBClientAsync(
                url=self.url,
                token=self._token,
                org=self.org,
                timeout=self._timeout_ms,
                verify_ssl=True,
                ssl_ca_cert=influx_ca_file(),
            )
        return self._client

    async def flush(self, *, give_up_when_stopping: bool = False) -> int:
        """Write everything buffered; returns the number of points written."""
        lines, self._buffer = self._buffer, []
        windows = [line for line in lines if line.startswith(_WINDOW_PREFIX)]
        others = [line for line in lines if not line.startswith(_WINDOW_PREFIX)] if windows else lines
        total = 0
        for bucket, group, later in ((self.windows_bucket, windows, others), (self.bucket, others, [])):
            written = 0
            try:
                for start in range(0, len(group), self.batch_lines):
                    batch = group[start : start + self.batch_lines]
                    await self._write_with_retry(bucket, batch, give_up_when_stopping)
                    written += len(batch)
            except BaseException:
                # whatever was not written goes back in front of anything added meanwhile
                self._buffer = group[written:] + later + self._buffer
                self.points_written += total + written
                raise
            total += written
        self.points_written += total
        return total

    async def _write_with_retry(self, bucket: str, batch: list[str], give_up_when_stopping: bool) -> None:
        backoff = 0.1
        started = time.monotonic()
        while True:
            try:
                await (
                    self._api()
                    .write_api()
                    .write(bucket=bucket, org=self.org, record=batch, write_precision=WritePrecision.S)
                )
                if time.monotonic() - started > 1.0:
                    log.info("influx writes recovered", after_s=round(time.monotonic() - started, 1))
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if _beyond_retention(error):
                    # InfluxDB stored the rest of the batch and drops points older than the bucket
                    # keeps (a backfill of old frames): retrying cannot store them, ever
                    self.beyond_retention_batches += 1
                    self._retention_log.warning(
                        "retention",
                        "points older than the bucket's retention were dropped by InfluxDB",
                        bucket=bucket,
                        error=str(getattr(error, "body", error))[:200],
                    )
                    return
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


def _beyond_retention(error: Exception) -> bool:
    """A partial write whose only rejected points lie beyond the retention policy (1.x: 400
    "partial write: points beyond retention policy dropped=N"; 2.x: 422 with the same words)."""
    body = str(getattr(error, "body", "") or error)
    return "beyond retention policy" in body and getattr(error, "status", None) in (400, 422)
