"""Before any API route runs: the key, the rate limits and injected server errors.

Result links, hosted files and the emulator's own ledger are public, as a CDN link is.
Rate limits are per route class, each its own token bucket: creates at `rate_limit`; status
queries at `poll_rate_limit` (the vendor says queries get a higher limit than creation: by
default POLL_RATE_MULTIPLE x the create limit), and the credit balance and any other
generation-API read share that bucket; uploads go to the vendor's separate files service, so
they get their own bucket at the create limit.
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


def route_class(method: str, path: str) -> str | None:
    """ "create", "query" or "upload" for API paths (they need the key), else None."""
    if path.startswith(FILES_PREFIX):
        return "upload"
    if not path.startswith("/v1/"):
        return None
    return "create" if (method, path) == ("POST", "/v1/videos/generations") else "query"


class Gate:
    """ASGI middleware answering 401, 429 or an injected 500 in the right API's envelope."""

    def __init__(self, app: ASGIApp, emulator: Emulator):
        self.app, self.emu = app, emulator
        config = emulator.config
        rates = {
            "create": config.rate_limit,
            "query": config.poll_rate_limit,
            "upload": config.rate_limit,
        }
        self.buckets = {name: TokenBucket(rate) for name, rate in rates.items() if rate}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            kind = route_class(scope["method"], scope["path"])
            refusal = kind and self._refusal(scope, kind)
            if refusal:
                return await refusal(scope, receive, send)
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, kind: str):
        path, config = scope["path"], self.emu.config
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token != config.api_key:  # schemes ignore case
            return error_for(path, 401, "Invalid or expired token")
        bucket = self.buckets.get(kind)
        if bucket and (wait := bucket.take()):
            retry_after = str(max(1, math.ceil(wait)))
            message = "Too many requests, please try again later"
            return error_for(path, 429, message, **{"Retry-After": retry_after})
        if self.emu.chance(config.error_rate):
            return error_for(path, 500, "Internal server error")
        return None
