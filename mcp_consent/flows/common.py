"""Helpers shared by the flows."""

from __future__ import annotations

from django.http import HttpRequest

from ..addresses import client_ip

__all__ = ["client_ip", "user_agent"]


def user_agent(request: HttpRequest) -> str:
    return request.META.get("HTTP_USER_AGENT", "")[:512]
