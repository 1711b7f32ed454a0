"""RFC 8414 authorization server metadata at /.well-known/oauth-authorization-server.

What an MCP client reads before anything else: the issuer it must match byte for byte
(RFC 8414 §3.3, MU-01/02), the endpoints it will call, and the capabilities it relies on
(PKCE S256, `iss`, CIMD, public clients).
"""

from __future__ import annotations

import html
import json
import re
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.test import override_settings

from tests.browser_client import pkce_pair, query_of

from .factories import MCPClientFactory

METADATA = "/.well-known/oauth-authorization-server"
pytestmark = pytest.mark.django_db

ENDPOINT_KEYS = [
    "authorization_endpoint",
    "token_endpoint",
    "registration_endpoint",
    "revocation_endpoint",
]


def issuer_setting() -> str:
    return settings.OAUTH2_PROVIDER["OIDC_ISS_ENDPOINT"]


def fetch(client: Any, **extra: Any) -> dict[str, Any]:
    response = client.get(METADATA, **extra)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    return response.json()


def test_as_10_as_11_as_12_metadata_is_a_json_object_at_the_root_well_known(client):
    """AS-10 / AS-11 / AS-12 / BCP-20: 200 application/json object at the root well-known URL."""
    response = client.get(METADATA)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    data = json.loads(response.content)
    assert isinstance(data, dict)
    # AS-12: zero-element claims are omitted, not sent empty.
    assert all(value not in (None, [], "", {}) for value in data.values()), data


def test_as_13_issuer_is_the_configured_string(client):
    """AS-13 / MU-01: issuer is exactly OIDC_ISS_ENDPOINT: no trailing slash, query or fragment."""
    data = fetch(client)
    assert data["issuer"] == issuer_setting()
    assert not data["issuer"].endswith("/")
    assert "?" not in data["issuer"]
    assert "#" not in data["issuer"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8000", "testserver"])
def test_as_13_issuer_does_not_follow_the_host_header(client, host):
    """AS-13 / MU-01: another Host cannot change the issuer or the endpoints."""
    data = fetch(client, HTTP_HOST=host)
    assert data["issuer"] == issuer_setting()
    for key in ENDPOINT_KEYS:
        assert data[key].startswith(issuer_setting() + "/"), key


def test_as_13_forwarded_headers_do_not_change_the_issuer(client):
    """AS-13 / BCP-19: X-Forwarded-Host/Proto from the request do not move the issuer."""
    data = fetch(client, HTTP_X_FORWARDED_HOST="evil.example", HTTP_X_FORWARDED_PROTO="https")
    assert data["issuer"] == issuer_setting()
    assert "evil.example" not in json.dumps(data)


def test_as_14_as_16_endpoints_are_published_under_the_issuer(client):
    """AS-14 / AS-16: authorization, token, registration and revocation endpoints under the issuer."""
    data = fetch(client)
    for key in ENDPOINT_KEYS:
        assert isinstance(data.get(key), str), key
        assert data[key].startswith(issuer_setting() + "/"), key
    assert data["authorization_endpoint"] == issuer_setting() + "/authorize/"
    assert data["token_endpoint"] == issuer_setting() + "/token/"
    assert data["registration_endpoint"] == issuer_setting() + "/register/"
    assert data["revocation_endpoint"] == issuer_setting() + "/revoke/"


def test_as_14_as_16_only_the_code_flow_is_advertised(client):
    """AS-14 / AS-16 / BCP-06 / BCP-07: code and refresh only; implicit and password nowhere."""
    data = fetch(client)
    assert data["response_types_supported"] == ["code"]
    assert data["grant_types_supported"] == ["authorization_code", "refresh_token"]
    text = json.dumps(data)
    for banned in [
        "implicit",
        "password",
        "client_credentials",
        '"token"',
        "id_token",
        "device_code",
    ]:
        assert banned not in text, banned


def test_as_15_pkce_s256_only(client):
    """AS-15 / BCP-05: code_challenge_methods_supported is present and exactly S256."""
    assert fetch(client)["code_challenge_methods_supported"] == ["S256"]


def test_mu_02_iss_parameter_is_advertised(client):
    """MU-02 / AS-16: RFC 9207 authorization_response_iss_parameter_supported is true."""
    assert fetch(client)["authorization_response_iss_parameter_supported"] is True


def test_as_16_cimd_is_advertised(client):
    """AS-16 / AS-60: client_id_metadata_document_supported is true."""
    assert fetch(client)["client_id_metadata_document_supported"] is True


def test_as_16_public_clients_can_use_the_token_endpoint(client):
    """AS-16 / DCR-16: token_endpoint_auth_methods_supported includes none for public clients."""
    methods = fetch(client)["token_endpoint_auth_methods_supported"]
    assert "none" in methods
    assert set(methods) <= {"none", "client_secret_basic", "client_secret_post"}


def test_as_16_sm_01_scopes_supported_are_the_configured_scopes(client):
    """AS-16 / SM-01: scopes_supported lists the configured scopes, no wildcard."""
    scopes = fetch(client)["scopes_supported"]
    assert sorted(scopes) == sorted(settings.OAUTH2_PROVIDER["SCOPES"])
    assert not {"*", "all", "full-access", "offline_access"} & set(scopes)


def test_url_02_not_applicable_metadata_publishes_no_script_urls(client):
    """URL-02 (N/A to metadata; checked anyway): every URL published is http(s)."""
    data = fetch(client)
    for key, value in data.items():
        if key == "issuer" or key.endswith(("_endpoint", "_uri")):
            assert value.split(":", 1)[0] in {"http", "https"}, key


def production_issuer_settings(issuer: str = "https://proxy.example.com") -> dict[str, Any]:
    oauth2 = dict(settings.OAUTH2_PROVIDER)
    oauth2["OIDC_ISS_ENDPOINT"] = issuer
    return oauth2


def test_url_01_every_published_url_is_https_in_production(client):
    """URL-01 / AS-02 / AS-13: with an https issuer, every endpoint URL in the metadata is https."""
    with override_settings(OAUTH2_PROVIDER=production_issuer_settings()):
        data = fetch(client)
    assert data["issuer"] == "https://proxy.example.com"
    urls = {
        key: value for key, value in data.items() if key == "issuer" or key.endswith("_endpoint")
    }
    assert set(ENDPOINT_KEYS) <= set(urls)
    for key, value in urls.items():
        assert value.startswith("https://proxy.example.com"), key
    # DOT re-read its settings when the override ended.
    assert fetch(client)["issuer"] == issuer_setting()


def test_mu_01_iss_on_redirects_equals_metadata_issuer(client):
    """MU-01 / MU-02: the iss on an authorization error redirect is the metadata issuer, exactly."""
    registered = MCPClientFactory(redirect_uris=["https://app.example.com/cb"])
    _verifier, challenge = pkce_pair()
    params = {
        "client_id": registered.application.client_id,
        "redirect_uri": "https://app.example.com/cb",
        "response_type": "code",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st",
        "prompt": "none",
    }
    response = client.get("/authorize/?" + urlencode(params))
    # SEC-03: nobody approved this client, so the error response is a link on our page.
    assert response.status_code == 400
    assert not response.has_header("Location")
    link = re.search(r'<a id="client-error-link" href="([^"]*)"', response.content.decode())
    assert link, "no link back to the client"
    location = html.unescape(link.group(1))
    assert location.startswith("https://app.example.com/cb?")
    assert query_of(location)["iss"] == [fetch(client)["issuer"]]
    assert query_of(location)["state"] == ["st"]


@pytest.mark.parametrize("path", [METADATA, "/authorize/"])
def test_cd_17_bcp_15_no_cors_on_the_authorization_endpoint(client, path):
    """CD-17 / BCP-15 / AS-17: a foreign Origin gets no CORS grant from /authorize."""
    registered = (
        MCPClientFactory(redirect_uris=["https://app.example.com/cb"])
        if path == "/authorize/"
        else None
    )
    query = ""
    if registered is not None:
        _verifier, challenge = pkce_pair()
        query = "?" + urlencode(
            {
                "client_id": registered.application.client_id,
                "redirect_uri": "https://app.example.com/cb",
                "response_type": "code",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": "st",
            }
        )
    response = client.get(path + query, HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 200
    if path == "/authorize/":
        assert "Access-Control-Allow-Origin" not in response
        assert "Access-Control-Allow-Credentials" not in response
    else:
        # Metadata is public; if it allows CORS it must not allow credentials.
        assert response.get("Access-Control-Allow-Credentials") != "true"


def test_cd_17_bcp_15_preflight_is_not_granted(client):
    """CD-17 / BCP-15: an OPTIONS preflight to /authorize grants nothing."""
    response = client.options(
        "/authorize/",
        HTTP_ORIGIN="https://evil.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )
    assert "Access-Control-Allow-Origin" not in response
    assert response.status_code in {400, 403, 405}


PLAIN_HTTP_PROBE = """
import json
import django
django.setup()
from django.test import Client
http = Client()
host = {"HTTP_HOST": "proxy.example.com"}
answers = {
    "authorize": http.get("/authorize/?client_id=x&response_type=code", **host),
    "token": http.post("/token/", {"grant_type": "authorization_code", "code": "c" * 30}, **host),
    "register": http.post("/register/", "{}", content_type="application/json", **host),
    "metadata": http.get("/.well-known/oauth-authorization-server", **host),
}
out = {name: [r.status_code, r.get("Location", "")] for name, r in answers.items()}
out["over-https"] = http.get("/.well-known/oauth-authorization-server", secure=True, **host).status_code
print(json.dumps(out))
"""


def test_as02_plain_http_is_redirected_to_https_in_production_settings(tmp_path) -> None:
    """AS-02: the demo project configured for production (DEBUG off, an https issuer) answers a
    plain-HTTP request to any AS endpoint with a redirect to https, before any view reads it;
    the same request over https is served (control)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from cryptography.fernet import Fernet

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "MCP_CONSENT_"))},
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "PUBLIC_BASE_URL": "https://proxy.example.com",
        "DJANGO_SECRET_KEY": "a-production-like-secret-key-for-this-test-only-0123456789",
        "MCP_CONSENT_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    done = subprocess.run(  # noqa: S603 -- this interpreter, a fixed script
        [sys.executable, "-c", PLAIN_HTTP_PROBE],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    for name, path in {
        "authorize": "/authorize/?client_id=x&response_type=code",
        "token": "/token/",
        "register": "/register/",
        "metadata": "/.well-known/oauth-authorization-server",
    }.items():
        assert answers[name] == [301, f"https://proxy.example.com{path}"], name
    assert answers["over-https"] == 200
