"""The registrations shipping MCP clients send, each through a whole approved flow.

DCR-11 / DCR-13 / AS-62 / LH-01: each client registers at /register/ with its own metadata,
a person approves on the consent page, signs in upstream, and the client's redirect URI
receives code, state and iss; the code redeems at /token/ with that redirect_uri.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from django.conf import settings
from django.test import Client

from tests.browser_client import PROXY_HOST, Browser, pkce_pair, query_of

pytestmark = pytest.mark.django_db

PUBLIC = {
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
}

# (metadata as the client sends it, the redirect URI it then authorizes with)
REAL_CLIENTS = [
    pytest.param(
        {
            **PUBLIC,
            "client_name": "Claude",
            "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
        },
        "https://claude.ai/api/mcp/auth_callback",
        id="hosted-https",
    ),
    pytest.param(
        {
            **PUBLIC,
            "client_name": "Visual Studio Code",
            "redirect_uris": ["http://127.0.0.1:33418", "https://vscode.dev/redirect"],
        },
        "http://127.0.0.1:33418",
        id="vscode-loopback",
    ),
    pytest.param(
        {
            **PUBLIC,
            "client_name": "Visual Studio Code",
            "redirect_uris": ["http://127.0.0.1:33418", "https://vscode.dev/redirect"],
        },
        "https://vscode.dev/redirect",
        id="vscode-https",
    ),
    pytest.param(
        {
            **PUBLIC,
            "client_name": "Claude Code",
            "application_type": "native",
            "redirect_uris": ["http://localhost:54212/callback"],
        },
        "http://localhost:60117/callback",  # RFC 8252 §7.3: another ephemeral port
        id="loopback-chosen-port",
    ),
    pytest.param(
        {
            **PUBLIC,
            "client_name": "MCP Inspector",
            "client_uri": "https://github.com/modelcontextprotocol/inspector",
            "redirect_uris": [
                "http://localhost:6274/oauth/callback",
                "http://localhost:6274/oauth/callback/debug",
            ],
        },
        "http://localhost:6274/oauth/callback",
        id="inspector",
    ),
    pytest.param(
        {
            **PUBLIC,
            "client_name": "MCP Inspector",
            "redirect_uris": [
                "http://localhost:6274/oauth/callback",
                "http://localhost:6274/oauth/callback/debug",
            ],
        },
        "http://localhost:6274/oauth/callback/debug",
        id="inspector-debug",
    ),
    pytest.param(
        {
            **PUBLIC,
            "client_name": "Cursor",
            "redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"],
        },
        "cursor://anysphere.cursor-mcp/oauth/callback",
        id="cursor-private-use-scheme",
    ),
]


def register(metadata: dict[str, Any]) -> dict[str, Any]:
    response = Client().post(
        "/register/", json.dumps(metadata), content_type="application/json", HTTP_HOST=PROXY_HOST
    )
    assert response.status_code == 201, response.content
    return dict(response.json())


@pytest.mark.parametrize(("metadata", "redirect_uri"), REAL_CLIENTS)
def test_dcr_11_real_client_completes_a_whole_flow(metadata, redirect_uri):
    """DCR-11 / AS-62: each real client registers, is approved and redeems its code."""
    info = register(metadata)
    assert info["redirect_uris"] == metadata["redirect_uris"]
    browser = Browser()
    browser.login_upstream()
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": info["client_id"],
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "real-client-state",
        "resource": settings.MCP_CONSENT["RESOURCES"][0],
    }
    final = browser.run_flow(params)
    assert final.status_code == 302, final.content[:300]
    location = final["Location"]
    assert location.startswith(redirect_uri + "?"), location
    query = query_of(location)
    assert query["state"] == ["real-client-state"]
    assert query["iss"] == [settings.OAUTH2_PROVIDER["OIDC_ISS_ENDPOINT"]]
    token = Client().post(
        "/token/",
        urlencode(
            {
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "client_id": info["client_id"],
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "resource": params["resource"],
            }
        ),
        content_type="application/x-www-form-urlencoded",
        HTTP_HOST=PROXY_HOST,
    )
    assert token.status_code == 200, token.content
    assert token.json()["token_type"].lower() == "bearer"


def test_dcr_13_lh_01_consent_page_warns_for_a_private_use_scheme_and_names_it():
    """DCR-13 / LH-01: any program on this computer can claim a private-use scheme."""
    info = register(
        {
            **PUBLIC,
            "client_name": "Cursor",
            "redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"],
        }
    )
    _verifier, challenge = pkce_pair()
    page = Browser().authorize(
        {
            "response_type": "code",
            "client_id": info["client_id"],
            "redirect_uri": "cursor://anysphere.cursor-mcp/oauth/callback",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "s",
        }
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="private-scheme-warning"' in html
    assert "<code>cursor:</code>" in html
    assert 'id="loopback-warning"' not in html
    assert 'id="destination-warning"' not in html  # no server is named for an app scheme


def test_dcr_13_consent_page_shows_an_authority_less_private_use_uri_whole():
    """LH-02: ``com.example.app:/cb`` is shown as registered, not cut at a guessed host."""
    info = register(
        {**PUBLIC, "client_name": "Example", "redirect_uris": ["com.example.app:/oauth2redirect"]}
    )
    _verifier, challenge = pkce_pair()
    page = Browser().authorize(
        {
            "response_type": "code",
            "client_id": info["client_id"],
            "redirect_uri": "com.example.app:/oauth2redirect",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "s",
        }
    )
    assert page.status_code == 200
    html = page.content.decode()
    uri_div = html.split('id="redirect-uri">', 1)[1].split("</div>", 1)[0]
    assert (
        uri_div.replace("<strong>", "").replace("</strong>", "")
        == "com.example.app:/oauth2redirect"
    )
    assert urlsplit("com.example.app:/oauth2redirect").scheme in html
