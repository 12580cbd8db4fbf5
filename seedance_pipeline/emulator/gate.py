"""Before any API route runs: the key, the rate limits and injected server errors.

Result links, hosted files and the emulator's own ledger are public, as a CDN link is.
"""

from __future__ import annotations

import math
import threading
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .answers import FILES_PREFIX, error_for
from .context import Emulator


class TokenBucket:
    """Requests per second with a burst of one second's worth."""

    def __init__(self, rate: float):
        self.rate, self.capacity = rate, max(1.0, rate)
        self.tokens, self.stamp = self.capacity, time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0 when a request may go now, else seconds until one may."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


def is_api(path: str) -> bool:
    """Paths that need the key: the generation API and the files API."""
    return path.startswith(("/v1/", FILES_PREFIX))


class Gate:
    """ASGI middleware answering 401, 429 or an injected 500 in the right API's envelope."""

    def __init__(self, app: ASGIApp, emulator: Emulator):
        self.app, self.emu = app, emulator
        rate = emulator.config.rate_limit
        self.bucket = TokenBucket(rate) if rate else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_api(scope["path"]):
            refusal = self._refusal(scope)
            if refusal is not None:
                return await refusal(scope, receive, send)
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope):
        path, config = scope["path"], self.emu.config
        if Headers(scope=scope).get("authorization") != f"Bearer {config.api_key}":
            return error_for(path, 401, "Invalid or expired token")
        if self.bucket and (wait := self.bucket.take()):
            retry_after = str(max(1, math.ceil(wait)))
            message = "Too many requests, please try again later"
            return error_for(path, 429, message, **{"Retry-After": retry_after})
        if self.emu.chance(config.error_rate):
            return error_for(path, 500, "Internal server error")
        return None
