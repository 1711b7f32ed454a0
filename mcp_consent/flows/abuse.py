"""Refusals worth an audit row: rate limits and refused registrations."""

from __future__ import annotations

from django.http import HttpRequest

from .. import audit, ratelimit
from ..models import AuditEvent


def record_rate_limited(scope: str, request: HttpRequest) -> None:
    """Once per window and address (a flood must not flood the audit trail too)."""
    action = (
        AuditEvent.Action.REGISTRATION_REFUSED
        if scope == "register"
        else AuditEvent.Action.RATE_LIMITED
    )
    audit.record(
        action,
        actor=audit.actor_from(request),
        request=request,
        details={"reason": "rate limit", "endpoint": scope},
    )


def record_registration_refused(
    error: str, description: str, request: HttpRequest, *, anonymous: bool = False
) -> None:
    """A refused registration; an anonymous one once per address and window (ABUSE-01),
    so a flood of junk documents does not write one audit row each. Its window is its own:
    sharing the rate limit's would leave the flood's 429s unaudited once a junk document
    had been (ABUSE-01: the operator sees both that junk came and that it was throttled)."""
    if anonymous and not ratelimit.first_in_window("register-refused", request):
        return
    audit.record(
        AuditEvent.Action.REGISTRATION_REFUSED,
        actor=audit.actor_from(request),
        request=request,
        details={"reason": "policy", "error": error, "description": description[:500]},
    )
