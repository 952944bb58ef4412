"""A cheap "is Kafka reachable" probe for readiness: one metadata request over a kept client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from aiokafka.client import AIOKafkaClient


class KafkaProbe:
    """`await probe.check()` returns the number of brokers in the cluster's metadata, or raises
    (KafkaConnectionError, KafkaError, TimeoutError) when no broker answers within `timeout_s`.
    Security settings are the client's (strainwatch.kafka_clients.aiokafka_security())."""

    def __init__(
        self, bootstrap: str, security: Mapping[str, Any] | None = None, timeout_s: float = 5.0
    ) -> None:
        self.bootstrap = bootstrap
        self.security = dict(security or {})
        self.timeout_s = timeout_s
        self._client: AIOKafkaClient | None = None

    async def check(self) -> int:
        try:
            return await asyncio.wait_for(self._check(), timeout=self.timeout_s)
        except BaseException:
            await self.close()  # a fresh client next time: the old one may hold dead connections
            raise

    async def _check(self) -> int:
        if self._client is None:
            client = AIOKafkaClient(
                bootstrap_servers=self.bootstrap,
                request_timeout_ms=int(self.timeout_s * 1000),
                **self.security,
            )
            self._client = client
            await client.bootstrap()
        metadata = await self._client.fetch_all_metadata()
        return len(metadata.brokers())

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
