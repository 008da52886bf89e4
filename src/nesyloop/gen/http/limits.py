"""Requests-per-minute and tokens-per-minute limits as token buckets.

Each bucket holds at most one second's worth of its rate (so a burst never exceeds what a
minute-long window would allow) and starts full. A request takes 1 from the request bucket and
its worst-case token count from the token bucket; the token bucket may go below zero for a
request bigger than a second's worth, and later requests then wait until it refills. When the
reply's real token count is known, :meth:`RateLimiter.settle` gives back the difference.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, per_minute: float, clock=time.monotonic):
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be > 0, got {per_minute}")
        self.rate = per_minute / 60.0  # units per second
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.clock = clock
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` may be taken (0: now)."""
        self._refill()
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    """``rpm`` requests and ``tpm`` tokens per minute (None: unlimited)."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of (at most) ``tokens`` tokens may be sent, and take it."""
        while True:
            wait = max(self.requests.wait_time(1) if self.requests else 0.0,
                       self.tokens.wait_time(tokens) if self.tokens else 0.0)
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        if self.requests:
            self.requests.take(1)
        if self.tokens:
            self.tokens.take(tokens)

    def settle(self, reserved: int, used: int) -> None:
        """A reply used ``used`` tokens where ``reserved`` were taken: give back the rest (or
        take the excess)."""
        if self.tokens and used != reserved:
            if used < reserved:
                self.tokens.give(reserved - used)
            else:
                self.tokens.take(used - reserved)
