"""RFC 7662 introspection at /introspect/ for MCP servers that run as separate services.

Callers are resource servers with credentials from ``manage.py mcp_consent_resource_server``;
attackers are everyone else: anonymous, any self-registered client (public or
confidential), a resource server asking about another server's tokens.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import httpx2
import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from mcp_consent import resource
from mcp_consent.flows import resource_servers
from tests.asgi_helpers import django_asgi_app, lifespan
from tests.browser_client import PROXY_HOST
from tests.factories import MCPClientFactory
from tests.mcp_tokens import OTHER_RESOURCE, RESOURCE, issue_token, post_form, upstream_tokens_of

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()
ISSUER = "http://127.0.0.1:8000"
EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "introspecting_server.py"


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def introspect(data: dict[str, str], authorization: str | None = None, method: str = "post") -> Any:
    headers = {"Authorization": authorization} if authorization else {}
    client = Client()
    if method == "get":
        return client.get("/introspect/", data, HTTP_HOST=PROXY_HOST, headers=headers)
    return client.post("/introspect/", data, HTTP_HOST=PROXY_HOST, headers=headers)


@pytest.fixture
def resource_server(settings) -> tuple[str, str]:
    """A separate MCP server serving RESOURCE, allowed to introspect."""
    application, secret = resource_servers.create_resource_server("Billing MCP server")
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "INTROSPECTION_CLIENTS": {application.client_id: [RESOURCE]},
    }
    return application.client_id, secret


@pytest.fixture
def issued():
    return issue_token()


# --- INT-03: what an allowed caller learns about a good token --------------------------------------


def test_int03_an_active_token_with_everything_the_resource_server_checks(
    resource_server, issued
) -> None:
    """INT-03: aud, scope, client_id, exp, iss, sub; never cached."""
    client_id, secret = resource_server
    response = introspect({"token": issued.access_token}, basic(client_id, secret))
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    data = response.json()
    row = AccessToken.objects.get(token_checksum=resource.checksum(issued.access_token))
    assert data == {
        "active": True,
        "iss": ISSUER,
        "sub": str(row.user_id),
        "client_id": issued.client_id,
        "scope": "items:read",
        "aud": [RESOURCE],
        "exp": int(row.expires.timestamp()),
        "iat": int(row.created.timestamp()),
        "token_type": "Bearer",
    }


def test_int01_client_secret_post_works_too(resource_server, issued) -> None:
    client_id, secret = resource_server
    response = introspect(
        {"token": issued.access_token, "client_id": client_id, "client_secret": secret}
    )
    assert response.json()["active"] is True


# --- INT-02: inactive is {"active": false} and nothing else ----------------------------------------


def inactive(response: Any) -> None:
    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_int02_unknown_expired_revoked_and_foreign_tokens_are_just_inactive(
    resource_server, issued, settings
) -> None:
    client_id, secret = resource_server
    auth = basic(client_id, secret)
    inactive(introspect({"token": "A" * 30}, auth))
    upstream_access, upstream_refresh = upstream_tokens_of(issued)
    inactive(introspect({"token": upstream_access}, auth))  # TP-01: not ours
    inactive(introspect({"token": issued.refresh_token}, auth))  # refresh tokens are not shown
    post_form("/revoke/", {"token": issued.access_token, "client_id": issued.client_id})
    inactive(introspect({"token": issued.access_token}, auth))

    expiring = issue_token()
    AccessToken.objects.filter(token_checksum=resource.checksum(expiring.access_token)).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    inactive(introspect({"token": expiring.access_token}, auth))

    rat = MCPClientFactory().registered.registration_access_token  # type: ignore[attr-defined]
    inactive(introspect({"token": rat}, auth))


def test_int02_a_server_learns_nothing_about_tokens_for_other_servers(
    resource_server, settings
) -> None:
    """INT-02 / RFC 7662 §4: the caller serves RESOURCE; a token for OTHER_RESOURCE is inactive."""
    client_id, secret = resource_server
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RESOURCES": [RESOURCE, OTHER_RESOURCE]}
    other = issue_token(resource=OTHER_RESOURCE)
    inactive(introspect({"token": other.access_token}, basic(client_id, secret)))


def test_missing_token_parameter_is_invalid_request(resource_server) -> None:
    client_id, secret = resource_server
    response = introspect({}, basic(client_id, secret))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# --- INT-01: only allowed, authenticated callers ----------------------------------------------------


def refused(response: Any) -> None:
    """RFC 7662 §2.3: 401, and no word about the token."""
    assert response.status_code == 401, response.content
    assert response.json()["error"] == "invalid_client"
    assert "active" not in response.json()
    assert response["WWW-Authenticate"].startswith("Basic")


def test_int01_anonymous_callers_are_refused(issued, resource_server) -> None:
    refused(introspect({"token": issued.access_token}))


def test_int01_a_wrong_secret_is_refused(issued, resource_server) -> None:
    client_id, _ = resource_server
    refused(introspect({"token": issued.access_token}, basic(client_id, "guess")))
    refused(introspect({"token": issued.access_token}, basic(client_id, "")))


def test_int01_a_public_client_cannot_introspect_even_if_allowed(issued, settings) -> None:
    """A public client "authenticates" with an empty secret in DOT: no token scanning for it."""
    public = MCPClientFactory()
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "INTROSPECTION_CLIENTS": {public.application.client_id: [RESOURCE]},
    }
    refused(introspect({"token": issued.access_token, "client_id": public.application.client_id}))
    refused(introspect({"token": issued.access_token}, basic(public.application.client_id, "")))


def test_int01_a_self_registered_confidential_client_is_not_a_resource_server(issued) -> None:
    """Anyone can register a confidential client by DCR; it still may not introspect."""
    response = Client().post(
        "/register/",
        json.dumps(
            {
                "client_name": "Scanner",
                "redirect_uris": ["https://scanner.example/cb"],
                "token_endpoint_auth_method": "client_secret_basic",
            }
        ),
        content_type="application/json",
        HTTP_HOST=PROXY_HOST,
    )
    assert response.status_code == 201
    registered = response.json()
    refused(
        introspect(
            {"token": issued.access_token},
            basic(registered["client_id"], registered["client_secret"]),
        )
    )


def test_int01_a_bearer_token_is_no_way_in(issued, resource_server) -> None:
    """DOT's view also admits bearer tokens with an 'introspection' scope; ours does not."""
    refused(introspect({"token": issued.access_token}, issued.authorization))


def test_int01_get_with_the_token_in_the_url_is_refused(issued, resource_server) -> None:
    """RS-09 spirit: a token in a URL leaks; RFC 7662 is POST."""
    client_id, secret = resource_server
    response = introspect({"token": issued.access_token}, basic(client_id, secret), method="get")
    assert response.status_code == 405


def test_metadata_advertises_introspection_without_the_none_method() -> None:
    data = Client().get("/.well-known/oauth-authorization-server", HTTP_HOST=PROXY_HOST).json()
    assert data["introspection_endpoint"] == f"{ISSUER}/introspect/"
    assert data["introspection_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]


def test_the_credentials_command_prints_the_secret_once_and_the_setting() -> None:
    out = StringIO()
    call_command("mcp_consent_resource_server", "Billing", "--resource", RESOURCE, stdout=out)
    text = out.getvalue()
    client_id = text.split("client_id:")[1].split()[0]
    secret = text.split("client_secret:")[1].split()[0]
    assert f'{{"{client_id}": ["{RESOURCE}"]}}' in text
    from oauth2_provider.models import get_application_model

    application = get_application_model().objects.get(client_id=client_id)
    assert application.client_secret != secret  # stored hashed
    assert not hasattr(application, "mcp_client") or application.mcp_client is None


def test_resource_server_credentials_open_no_oauth_flow(resource_server) -> None:
    """Not an MCP client: it cannot obtain tokens at /token/ (mcp_consent fails closed)."""
    client_id, secret = resource_server
    response = post_form(
        "/token/",
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert response.status_code in (400, 401)
    assert "access_token" not in response.json()


# --- The documented separate server ------------------------------------------------------------------


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("introspecting_server", EXAMPLE)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_documented_separate_server_verifies_through_introspection(
    resource_server, settings
) -> None:
    """docs/examples/introspecting_server.py, against this authorization server in-process."""
    client_id, secret = resource_server
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RESOURCES": [RESOURCE, OTHER_RESOURCE]}
    good, foreign = issue_token(), issue_token(resource=OTHER_RESOURCE)
    example = load_example()

    async def verify(token: str) -> Any:
        async with httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=django_asgi_app()), base_url=ISSUER
        ) as http:
            verifier = example.IntrospectionTokenVerifier(
                issuer=ISSUER,
                resource=RESOURCE,
                client_id=client_id,
                client_secret=secret,
                http_client=http,
            )
            return await verifier.verify_token(token)

    accepted = async_to_sync(verify)(good.access_token)
    assert accepted is not None
    assert accepted.resource == RESOURCE
    assert accepted.client_id == good.client_id
    assert accepted.subject
    assert accepted.scopes == ["items:read"]
    assert async_to_sync(verify)(foreign.access_token) is None
    assert async_to_sync(verify)("A" * 30) is None


def test_the_documented_separate_server_serves_a_tool_to_the_sdk_client(
    resource_server,
) -> None:
    """The example server end to end: the SDK client calls its tool with an mcp-consent token."""
    from mcp.client import Client as MCPClient
    from mcp.client.streamable_http import streamable_http_client

    client_id, secret = resource_server
    good = issue_token()
    example = load_example()

    async def scenario() -> Any:
        async with httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=django_asgi_app()), base_url=ISSUER
        ) as to_proxy:
            verifier = example.IntrospectionTokenVerifier(
                issuer=ISSUER,
                resource=RESOURCE,
                client_id=client_id,
                client_secret=secret,
                http_client=to_proxy,
            )
            app = example.build_server(verifier).streamable_http_app(
                stateless_http=True, json_response=True
            )
            async with lifespan(app):
                async with httpx2.AsyncClient(
                    transport=httpx2.ASGITransport(app=app),
                    headers={"Authorization": good.authorization},
                ) as http:
                    async with MCPClient(
                        streamable_http_client(RESOURCE, http_client=http)
                    ) as client:
                        return await client.call_tool("whoami", {})

    result = async_to_sync(scenario)()
    assert not result.is_error
    assert good.client_id in result.content[0].text
