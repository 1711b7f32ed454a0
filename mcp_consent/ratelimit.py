"""Token buckets per client address and endpoint, in Django's cache (ABUSE-01, ABUSE-02, DCR-02).

Each (endpoint, address) has a bucket of ``burst`` tokens refilled at ``per_minute``: an
office behind one NAT address or a test suite from one machine spends its burst and keeps
going at the sustained rate; a tight flood empties it and gets 429 with Retry-After.

The bucket is one integer, its "theoretical arrival time" in milliseconds (GCRA, the
token bucket in one number): a request adds one emission interval to it and is refused
when that lies more than ``burst`` intervals ahead of now. ``cache.incr`` is atomic in
Redis and in LocMemCache, so app servers sharing Redis count together; the only race, two
requests catching up an idle bucket at once, forgives a request instead of refusing one.
LocMemCache counts per process (check --deploy warns, W005).

Endpoints that can tell count only *failures* (an unknown state, a bad client
credential), the way django-axes counts failed logins: ``refused`` before the work,
``failed`` after it failed, so legitimate traffic never empties the bucket.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from django.core.cache import cache
from django.http import HttpRequest

from .addresses import client_ip
from .app_settings import Rate, app_settings

PREFIX = "mcp_consent:ratelimit"


@dataclass(frozen=True)
class Limited:
    retry_after: int
    first_refusal: bool  # audit once per address and window, not once per flooded request


def _key(scope: str, request: HttpRequest) -> str:
    address = client_ip(request) or "unknown"
    return f"{PREFIX}:{scope}:{hashlib.sha256(address.encode()).hexdigest()[:32]}"


def _interval_ms(rule: Rate) -> int:
    return max(1, math.ceil(60_000 / rule.per_minute))


def _limited(scope: str, request: HttpRequest, ahead_ms: int, rule: Rate) -> Limited:
    retry = max(1, math.ceil((ahead_ms - _interval_ms(rule) * rule.burst) / 1000))
    return Limited(retry_after=retry, first_refusal=first_in_window(scope, request))


def hit(scope: str, request: HttpRequest) -> Limited | None:
    """Take one token from this address's bucket for ``scope``; a Limited when it is empty."""
    rule = app_settings.RATE_LIMITS.get(scope)
    if rule is None:
        return None
    interval = _interval_ms(rule)
    capacity = interval * rule.burst
    key = _key(scope, request)
    now = int(time.time() * 1000)
    ttl = math.ceil(capacity / 1000) + 5  # an expired bucket is a full one
    cache.add(key, now, timeout=ttl)
    try:
        arrival = int(cache.incr(key, interval))
    except ValueError:  # evicted between add and incr
        arrival = now + interval
        cache.set(key, arrival, timeout=ttl)
    if arrival < now + interval:
        # The bucket refilled completely while idle: restart it from now.
        arrival = now + interval
        cache.set(key, arrival, timeout=ttl)
    if arrival - now > capacity:
        try:
            cache.decr(key, interval)  # a refused request takes no token
        except ValueError:
            pass
        return _limited(scope, request, arrival - now, rule)
    cache.touch(key, ttl)
    return None


def refused(scope: str, request: HttpRequest) -> Limited | None:
    """For failure-counted endpoints: a Limited when this address failed too often, without
    counting this request (``failed`` does that once it has failed)."""
    rule = app_settings.RATE_LIMITS.get(scope)
    if rule is None:
        return None
    arrival = cache.get(_key(scope, request))
    now = int(time.time() * 1000)
    if (
        arrival is None
        or int(arrival) + _interval_ms(rule) - now <= _interval_ms(rule) * rule.burst
    ):
        return None
    return _limited(scope, request, int(arrival) + _interval_ms(rule) - now, rule)


def failed(scope: str, request: HttpRequest) -> None:
    """Count one failure of this address at ``scope``."""
    hit(scope, request)


def first_in_window(scope: str, request: HttpRequest) -> bool:
    """True once per address, ``scope`` and RATE_LIMIT_AUDIT_WINDOW: refusals of anonymous
    junk are audited in aggregate, not one row each (ABUSE-01)."""
    window = max(1, app_settings.RATE_LIMIT_AUDIT_WINDOW)
    # The window starts at the first refusal (the marker expires after it), not at a clock
    # boundary: a flood that straddles a whole minute is still one row, not two.
    return bool(cache.add(f"{_key(scope, request)}:audited", 1, timeout=window))
