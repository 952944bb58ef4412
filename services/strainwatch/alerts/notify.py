"""Channel messages through apprise, one rate limit (token bucket) per URL: a message waits for
its token, it is never dropped for the rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import apprise
import structlog

from strainwatch.alerts.channels import Channel

log = structlog.get_logger("strainwatch.alerts")


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; take() waits for a token. Callers are
    served in the order they ask (an asyncio.Lock is FIFO)."""

    def __init__(self, rate: float, burst: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()
        self._lock = asyncio.Lock()

    def wait_s(self) -> float:
        """Seconds until a token is available (0: take one now); refills first."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    async def take(self) -> None:
        async with self._lock:
            while (wait := self.wait_s()) > 0:
                await asyncio.sleep(wait)
            self._tokens -= 1.0


class ChannelSender:
    """One channel: its apprise object and its bucket. send() returns whether apprise delivered."""

    def __init__(self, channel: Channel, attempts: int = 3) -> None:
        self.channel = channel
        self.bucket = TokenBucket(channel.rate_per_s)
        self.attempts = attempts
        self._apprise = apprise.Apprise()
        if not self._apprise.add(channel.url):
            # validated at start (service refuses to run), so this only logs the masked label
            log.error("apprise rejects channel URL", channel=channel.label)

    async def send(self, title: str, body: str) -> bool:
        backoff = 0.5
        for attempt in range(1, self.attempts + 1):
            await self.bucket.take()
            try:
                ok = bool(await asyncio.to_thread(self._apprise.notify, body=body, title=title))
            except Exception as error:  # a plugin bug must not stop delivery to other channels
                log.warning("channel send raised", channel=self.channel.label, error=type(error).__name__)
                ok = False
            if ok:
                return True
            log.warning("channel send failed", channel=self.channel.label, attempt=attempt)
            if attempt < self.attempts:
                await asyncio.sleep(backoff)
                backoff *= 2
        return False


def url_is_valid(url: str) -> bool:
    return apprise.Apprise().add(url)
