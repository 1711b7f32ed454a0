"""Helpers shared by the flows."""

from __future__ import annotations

from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is attacker-controlled unless a trusted proxy
    # rewrites it, and then the deployment sets REMOTE_ADDR from it (BCP-19).
    return request.META.get("REMOTE_ADDR") or None


def user_agent(request: HttpRequest) -> str:
    return request.META.get("HTTP_USER_AGENT", "")[:512]
