"""InfluxDB sink: buffers line-protocol points, writes them when the checkpoint flushes.

Like Quix Streams' BaseSink: `add()` buffers, `flush()` writes, and the checkpoint calls `flush()`
before it acknowledges the offsets that produced the points. `flush()` only returns once every point
is stored; while InfluxDB is unreachable it retries with capped exponential back-off (ops/retry.py:
the outage is logged once, then a reminder a minute), so offsets simply wait (nothing is dropped,
nothing is acknowledged early). An answer that retrying cannot fix (401/403: bad token; 404: missing
bucket or database) is logged once as an error, marks the `sink` readiness check fatal, and makes
every later `flush()` raise `SinkFatal` at once: the points stay unwritten and the offsets that
produced them uncommitted until the service is restarted with a fixed configuration.

Why not influxdb-client's *batching* WriteApi: it cannot be flushed on demand
(`WriteApi.flush()` is a no-op in 1.50) and reports failures only through callbacks, so a checkpoint
could not know its points are stored. The sink batches itself and writes each batch through
influxdb-client's asynchronous write API (`/api/v2/write`, precision seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import structlog
from influxdb_client import WritePrecision
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

from strainwatch.logs import RateLimitedLog
from strainwatch.ops.readiness import Readiness
from strainwatch.ops.retry import OutageLog, RetryPolicy, RetryStopped
from strainwatch.storage.measurements import EXPOSURE, WINDOWS_RP
from strainwatch.tls import influx_ca_file

_WINDOW_PREFIX = EXPOSURE + ","  # exactly the `exposure` measurement, not `exposure_hourly`

log = structlog.get_logger("strainwatch.sink")


class SinkStopped(RuntimeError):
    """flush() gave up because the service is stopping; the points stay unacknowledged."""


class SinkFatal(RuntimeError):
    """InfluxDB refused the write in a way retrying cannot fix (401, 403, 404)."""

    retryable = False  # ops/retry.py: not retried

    def __init__(self, status: int, bucket: str, body: str) -> None:
        self.status = status
        self.bucket = bucket
        self.body = body
        super().__init__(
            f"InfluxDB answered {status} ({FATAL_STATUSES[status]}) writing to {bucket!r}: {body}"
        )


# HTTP answers to a write that no retry can fix, and what each means
FATAL_STATUSES = {
    401: "unauthorized: the token is wrong or expired",
    403: "forbidden: the token may not write to this bucket",
    404: "not found: the bucket or database does not exist",
}


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
        readiness: Readiness | None = None,
        check: str = "sink",
        share_fatal_with: InfluxSink | None = None,
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
        self._stop_event = asyncio.Event()
        self.readiness = readiness
        self.check = check
        # a fatal answer holds for every sink on the same InfluxDB and token: shared, logged once
        self._fatal: list[SinkFatal] = share_fatal_with._fatal if share_fatal_with is not None else []
        self._policy = RetryPolicy(initial_s=0.1, cap_s=max_backoff_s, jitter_s=0.1, reminder_s=60.0)
        # one per sink: an outage spans flushes (a health flush is cancelled after 5 s and retried)
        self._outage = OutageLog(log, "influx_write", reminder_s=60.0)
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

    @property
    def fatal(self) -> SinkFatal | None:
        return self._fatal[0] if self._fatal else None

    def request_stop(self) -> None:
        self._stopping = True
        self._stop_event.set()

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
        if self.fatal is not None:
            raise self.fatal  # retrying cannot fix it: never asked again
        try:
            await self._policy.call(
                self._write_once,
                bucket,
                batch,
                what="influx_write",
                logger=log,
                outage=self._outage,
                stop=self._stop_event if give_up_when_stopping else None,
                readiness=self.readiness,
                check=self.check if self.readiness is not None else None,
            )
        except RetryStopped as stopped:
            raise SinkStopped("stopping with unwritten points; offsets stay uncommitted") from stopped
        except SinkFatal as error:
            if not self._fatal:
                self._fatal.append(error)
            raise

    async def _write_once(self, bucket: str, batch: list[str]) -> None:
        try:
            await (
                self._api()
                .write_api()
                .write(bucket=bucket, org=self.org, record=batch, write_precision=WritePrecision.S)
            )
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
            # a fresh client after a failure: the old session may hold dead connections
            await self._reset_client()
            status = getattr(error, "status", None)
            if status in FATAL_STATUSES:
                raise SinkFatal(int(status), bucket, _body(error)) from error
            raise

    async def _reset_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # a broken session must not mask the write error
                await client.close()

    async def close(self) -> None:
        await self._reset_client()


def _body(error: Exception) -> str:
    body = getattr(error, "body", None) or str(error)
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    return str(body).strip()[:300]


def _beyond_retention(error: Exception) -> bool:
    """A partial write whose only rejected points lie beyond the retention policy (1.x: 400
    "partial write: points beyond retention policy dropped=N"; 2.x: 422 with the same words)."""
    body = str(getattr(error, "body", "") or error)
    return "beyond retention policy" in body and getattr(error, "status", None) in (400, 422)
