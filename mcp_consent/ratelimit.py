"""Per-IP rate limits through Django's cache (DCR-02; Redis in production, one counter for
all app servers — LocMemCache counts per process, which check --deploy warns about).

Fixed windows: ``limit`` requests per ``window`` seconds per client IP and endpoint.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from django.core.cache import cache
from django.http import HttpRequest

from .app_settings import app_settings


@dataclass(frozen=True)
class Limited:
    retry_after: int
    first_refusal: bool  # audit once per window, not once per flooded request


def hit(scope: str, request: HttpRequest) -> Limited | None:
    """Count one request; a Limited when this IP is over the limit for ``scope``."""
    rule = app_settings.RATE_LIMITS.get(scope)
    if not rule:
        return None
    limit, window = int(rule[0]), int(rule[1])
    now = time.time()
    bucket = int(now // window)
    ip = request.META.get("REMOTE_ADDR", "") or "unknown"
    key = f"mcp_consent:ratelimit:{scope}:{hashlib.sha256(ip.encode()).hexdigest()[:32]}:{bucket}"
    cache.add(key, 0, timeout=window + 5)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=window + 5)
        count = 1
    if count <= limit:
        return None
    return Limited(
        retry_after=max(1, math.ceil((bucket + 1) * window - now)), first_refusal=count == limit + 1
    )
