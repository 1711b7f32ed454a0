"""CORS for browser-based MCP clients (mcp_consent/cors.py): public endpoints yes, /authorize/ never.

The MCP Inspector and web agents run discovery, registration and the token exchange with
fetch(); a preflight carries ``MCP-Protocol-Version``. None of these endpoints trusts
cookies, so ``*`` without credentials is safe; the authorization endpoint gets nothing
(CD-17, BCP-15).
"""

from __future__ import annotations

import pytest
from django.test import Client

from tests.browser_client import PROXY_HOST

pytestmark = pytest.mark.django_db

INSPECTOR = "http://localhost:6274"


def preflight(path: str, method: str = "POST") -> object:
    return Client().options(
        path,
        HTTP_HOST=PROXY_HOST,
        HTTP_ORIGIN=INSPECTOR,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD=method,
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type, mcp-protocol-version",
    )


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/.well-known/oauth-authorization-server", "GET"),
        ("/.well-known/oauth-protected-resource/mcp", "GET"),
        ("/.well-known/oauth-protected-resource", "GET"),
        ("/register/", "POST"),
        ("/token/", "POST"),
        ("/revoke/", "POST"),
    ],
)
def test_browser_clients_may_call_the_machine_endpoints(path: str, method: str) -> None:
    response = preflight(path, method)
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "*"
    assert method in response["Access-Control-Allow-Methods"]
    assert "MCP-Protocol-Version" in response["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in response


def test_answers_are_readable_but_carry_no_credentials() -> None:
    response = Client().post(
        "/token/",
        {"grant_type": "authorization_code", "code": "x"},
        HTTP_HOST=PROXY_HOST,
        HTTP_ORIGIN=INSPECTOR,
    )
    assert response.status_code in (400, 401)
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response


@pytest.mark.parametrize("path", ["/authorize/", "/introspect/", "/upstream/callback/"])
def test_never_on_the_authorization_endpoint_pages_or_introspection(path: str) -> None:
    """CD-17 / BCP-15; introspection is server to server."""
    response = preflight(path)
    assert "Access-Control-Allow-Origin" not in response
