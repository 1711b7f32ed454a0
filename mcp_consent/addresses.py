"""The address a request came from: one definition for audit rows, consents and rate limits.

Like django-axes' ``get_client_ip_address``: ``REMOTE_ADDR`` unless the operator says how
many reverse proxies stand in front of the app (``MCP_CONSENT["TRUSTED_PROXY_COUNT"]``).
Only then is the forwarding header read, and only the entry the outermost trusted proxy
wrote: everything to its left is whatever the client sent (BCP-19, ABUSE-01). A header
read without such a setting would let every request pick its own address, and with it a
fresh rate-limit bucket.
"""

from __future__ import annotations

import ipaddress

from django.http import HttpRequest

from .app_settings import app_settings


def _valid(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str | None:
    """The client's IP address, or None when the request carries none."""
    remote = _valid(request.META.get("REMOTE_ADDR") or "")
    proxies = app_settings.TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    entries = [e for e in request.META.get(app_settings.CLIENT_IP_HEADER, "").split(",") if e]
    if len(entries) < proxies:
        # Not through the whole proxy chain (a health check, a direct hit): the peer is it.
        return remote
    return _valid(entries[-proxies]) or remote
