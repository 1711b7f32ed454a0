"""Abuse limits: per-IP rate limits (DCR-02) and the cap on unused DCR clients (issue 4)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from mcp_consent.models import AuditEvent, MCPClient
from tests.browser_client import PROXY_HOST, authorize_params
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db


def register(client: Client, ip: str = "203.0.113.7") -> object:
    body = {"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"}
    return client.post(
        "/register/",
        json.dumps(body),
        content_type="application/json",
        HTTP_HOST=PROXY_HOST,
        REMOTE_ADDR=ip,
    )


def test_dcr02_registrations_over_the_limit_get_429(settings) -> None:
    """DCR-02: 100 registrations a minute from one address -> 429 after the threshold."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RATE_LIMITS": {"register": (10, 60)}}
    client = Client()
    statuses = [register(client).status_code for _ in range(100)]
    assert statuses[:10] == [201] * 10 and set(statuses[10:]) == {429}
    limited = register(client)
    assert limited["Retry-After"].isdigit() and 1 <= int(limited["Retry-After"]) <= 60
    assert (
        limited.json()["error"] == "temporarily_unavailable"
        and "no-store" in limited["Cache-Control"]
    )
    assert MCPClient.objects.count() == 10
    # Audited once per window, not once per flooded request.
    assert AuditEvent.objects.filter(action=AuditEvent.Action.REGISTRATION_REFUSED).count() == 1
    # Another address is not affected.
    assert register(client, ip="198.51.100.9").status_code == 201


def test_token_endpoint_is_rate_limited(settings) -> None:
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RATE_LIMITS": {"token": (3, 60)}}
    client = Client()
    answers = [
        client.post(
            "/token/",
            {"grant_type": "authorization_code", "code": "x", "client_id": "y"},
            HTTP_HOST=PROXY_HOST,
        )
        for _ in range(5)
    ]
    assert [a.status_code for a in answers][3:] == [429, 429]
    assert all(a.status_code != 429 for a in answers[:3])
    assert answers[-1].json()["error"] == "temporarily_unavailable" and answers[-1]["Retry-After"]


def test_authorize_is_rate_limited_with_a_page(settings) -> None:
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RATE_LIMITS": {"authorize": (2, 60)}}
    params = authorize_params(MCPClientFactory())
    client = Client()
    codes = [client.get("/authorize/", params, HTTP_HOST=PROXY_HOST).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    page = client.get("/authorize/", params, HTTP_HOST=PROXY_HOST)
    assert "Too many requests" in page.content.decode() and page["Retry-After"]
    assert page["X-Frame-Options"] == "DENY"


def test_cap_on_unused_dcr_clients(settings) -> None:
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "MAX_UNUSED_DCR_CLIENTS": 3, "RATE_LIMITS": {}}
    client = Client()
    assert [register(client).status_code for _ in range(4)] == [201, 201, 201, 429]
    # A client that was used no longer counts against the cap.
    from django.utils import timezone

    MCPClient.objects.filter(pk=MCPClient.objects.first().pk).update(last_used_at=timezone.now())
    assert register(client).status_code == 201
