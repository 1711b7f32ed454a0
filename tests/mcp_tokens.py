"""The one whole-flow helper of the suite: real MCP tokens, each from a whole flow.

register → consent page → Approve → Demo Hub (in-process) → callback → /token/, exactly as a
client gets one; nothing is written to the token tables directly. Every test that needs a
connected client uses ``issue_token``; tests of one step of the flow drive that step themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.test import Client

from mcp_consent import resource as resource_server
from mcp_consent import vault
from mcp_consent.models import Consent, UpstreamToken
from tests.browser_client import PROXY_HOST, Browser, authorize_params, code_from, pkce_pair
from tests.factories import MCPClientFactory

RESOURCE = "http://127.0.0.1:8000/mcp"
OTHER_RESOURCE = "http://127.0.0.1:8000/other-mcp"
REDIRECT_URI = "https://app.example/cb"


@dataclass
class Issued:
    """What a client holds after a flow, and the browser that ran it."""

    client: Any
    access_token: str
    refresh_token: str
    scope: str
    browser: Browser

    @property
    def client_id(self) -> str:
        return str(self.client.application.client_id)

    @property
    def authorization(self) -> str:
        return f"Bearer {self.access_token}"

    @property
    def consent(self) -> Consent:
        return Consent.objects.get(client=self.client)

    def refresh(self) -> Any:
        """The client's refresh-token request at /token/ (the response, whatever it is)."""
        return post_form(
            "/token/",
            {
                "grant_type": "refresh_token",
                "refresh_token": self.refresh_token,
                "client_id": self.client_id,
            },
        )


def post_form(path: str, data: dict[str, Any]) -> Any:
    return Client().post(
        path,
        urlencode(data, doseq=True),
        content_type="application/x-www-form-urlencoded",
        HTTP_HOST=PROXY_HOST,
    )


def issue_token(
    *,
    client: Any = None,
    scope: str | None = None,
    resource: str | list[str] = RESOURCE,
    username: str = "octocat",
    browser: Browser | None = None,
    **factory: Any,
) -> Issued:
    """Run a whole authorization and redeem the code at /token/ (``resource``: one MCP server
    or several, each sent as its own ``resource`` parameter). Without ``client``, a new one is
    registered with ``factory``'s metadata (``client_name=...``); with ``browser``, its user
    (already signed in upstream) approves."""
    client = client or MCPClientFactory(redirect_uris=[REDIRECT_URI], **factory)
    if browser is None:
        browser = Browser()
        browser.login_upstream(username)
    verifier, challenge = pkce_pair()
    extra = {"scope": scope} if scope else {}
    final = browser.run_flow(
        authorize_params(client, challenge=challenge, resource=resource, **extra)
    )
    response = post_form(
        "/token/",
        {
            "grant_type": "authorization_code",
            "code": code_from(final),
            "client_id": client.application.client_id,
            "redirect_uri": client.redirect_uris.first().uri,
            "code_verifier": verifier,
            "resource": resource,
        },
    )
    assert response.status_code == 200, response.content
    body = response.json()
    return Issued(
        client, body["access_token"], body.get("refresh_token", ""), body["scope"], browser
    )


def access_token_valid(raw: str) -> bool:
    """What the MCP endpoint checks on every request (mcp_consent.resource, RS-08)."""
    try:
        resource_server.verify_token(raw)
    except resource_server.InvalidToken:
        return False
    return True


def upstream_tokens_of(issued: Issued) -> tuple[str, str]:
    """The plaintext upstream access and refresh token stored for ``issued``'s consent."""
    row = UpstreamToken.objects.get(consent__client=issued.client)
    return vault.upstream_access_token(row), vault.upstream_refresh_token(row)
