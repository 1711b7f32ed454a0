"""Provider presets and discovery, each against a local fake that behaves like the provider.

The fakes answer as the real providers do where they differ (docs/providers.md): GitHub's
token endpoint is form-encoded unless asked for JSON, refuses with HTTP 200 and ``error``, and
separates scopes with commas; Google answers RFC 6749 JSON errors with 400 and separates
scopes with spaces; Entra ID has per-tenant v2.0 endpoints; any OpenID Connect provider is
found by its issuer's discovery document (UP-01, UP-04, UP-06, MU-03).
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest
import requests
from django.conf import settings
from django.test import override_settings

from mcp_consent import upstream
from mcp_consent.app_settings import app_settings
from mcp_consent.checks import E031, check_configuration
from tests.upstream_fakes import FaultAdapter, make_response, mounted

SECRET = "s3cr+t/with:odd=chars"  # RFC 6749 §2.3.1: each must be form-encoded in Basic


def with_upstream(**raw: Any) -> override_settings:
    return override_settings(MCP_CONSENT={**settings.MCP_CONSENT, "UPSTREAM": raw})


def basic_credentials(request: requests.PreparedRequest) -> tuple[str, str]:
    scheme, _, value = (request.headers.get("Authorization") or "").partition(" ")
    assert scheme == "Basic"
    client_id, _, secret = base64.b64decode(value).decode().partition(":")
    return client_id, secret


class GitHubToken(FaultAdapter):
    """github.com/login/oauth/access_token as it answers."""

    def __init__(self, *, refuse: bool = False) -> None:
        super().__init__(self.answer)
        self.refuse = refuse
        self.requests: list[requests.PreparedRequest] = []

    def answer(self, request: requests.PreparedRequest) -> requests.Response:
        self.requests.append(request)
        if self.refuse:
            body: dict[str, str] = {
                "error": "bad_verification_code",
                "error_description": "The code passed is incorrect or expired.",
            }
        else:
            body = {
                "access_token": "gho_16C7e42F292c6912E7710c838347Ae178B4a",
                "token_type": "bearer",
                "scope": "repo,read:user",
            }
        if "application/json" in (request.headers.get("Accept") or ""):
            return make_response(request, 200, body)
        return make_response(request, 200, urlencode(body), "application/x-www-form-urlencoded")


# --- GitHub -------------------------------------------------------------------------------------


def test_github_preset_is_a_whole_upstream_with_the_credentials() -> None:
    with with_upstream(PROVIDER="github", CLIENT_ID="Iv1.abc", CLIENT_SECRET="x"):
        config = app_settings.UPSTREAM
        assert config.authorize_url == "https://github.com/login/oauth/authorize"
        assert config.token_url == "https://github.com/login/oauth/access_token"
        assert config.userinfo_url == "https://api.github.com/user"
        assert config.api_base == "https://api.github.com/"
        assert config.issuer == ""  # GitHub sends no RFC 9207 iss
        assert config.require_iss is False
        assert (config.subject_field, config.username_field) == ("id", "login")
        assert check_configuration() == []


def test_explicit_keys_win_over_the_preset() -> None:
    with with_upstream(PROVIDER="github", CLIENT_ID="a", SCOPES=["repo"], NAME="GH Enterprise"):
        assert app_settings.UPSTREAM.scopes == ["repo"]
        assert app_settings.UPSTREAM.name == "GH Enterprise"


def test_github_code_exchange_json_comma_scopes_and_form_encoded_basic() -> None:
    fake = GitHubToken()
    preset = {"PROVIDER": "github", "CLIENT_ID": "Iv1.abc", "CLIENT_SECRET": SECRET}
    with with_upstream(**preset), mounted("https://github.com/login/oauth/access_token", fake):
        tokens = upstream.exchange_code("code-1", "verifier-1")
    assert tokens["access_token"] == "gho_16C7e42F292c6912E7710c838347Ae178B4a"
    assert tokens["refresh_token"] == ""  # an OAuth app's tokens come without one
    assert tokens["expires_at"] is None
    assert tokens["scope"] == "repo read:user"
    (sent,) = fake.requests
    # RFC 6749 §2.3.1: form-encoded, then Basic; a conforming server decodes both.
    assert basic_credentials(sent) == ("Iv1.abc", "s3cr%2Bt%2Fwith%3Aodd%3Dchars")
    form = dict(parse_qsl(str(sent.body)))
    assert form["grant_type"] == "authorization_code"
    assert form["code"] == "code-1"
    assert form["code_verifier"] == "verifier-1"
    assert "client_secret" not in form


def test_github_form_encoded_answer_is_read_too() -> None:
    """A GitHub answer without JSON (the endpoint's default) is still a token response."""
    fake = GitHubToken()

    def without_json(request: requests.PreparedRequest) -> requests.Response:
        request.headers["Accept"] = "*/*"
        return fake.answer(request)

    with (
        with_upstream(PROVIDER="github", CLIENT_ID="a", CLIENT_SECRET="b"),
        mounted("https://github.com/login/oauth/access_token", FaultAdapter(without_json)),
    ):
        tokens = upstream.exchange_code("code-1", None)
    assert tokens["access_token"].startswith("gho_")
    assert tokens["scope"] == "repo read:user"


def test_github_refusal_with_http_200_is_a_refusal_not_a_token() -> None:
    with (
        with_upstream(PROVIDER="github", CLIENT_ID="a", CLIENT_SECRET="b"),
        mounted("https://github.com/login/oauth/access_token", GitHubToken(refuse=True)),
    ):
        with pytest.raises(upstream.UpstreamRefused) as refused:
            upstream.exchange_code("stale", None)
    assert refused.value.reason == "token endpoint refused the code: HTTP 200 bad_verification_code"


# --- Google -------------------------------------------------------------------------------------


def google_token(request: requests.PreparedRequest) -> requests.Response:
    form = dict(parse_qsl(str(request.body)))
    if form.get("code") != "good":
        return make_response(
            request, 400, {"error": "invalid_grant", "error_description": "Bad Request"}
        )
    return make_response(
        request,
        200,
        {
            "access_token": "ya29.a0Af",
            "expires_in": 3599,
            "refresh_token": "1//0g-refresh",
            "scope": "openid https://www.googleapis.com/auth/userinfo.email",
            "token_type": "Bearer",
            "id_token": "eyJ...",
        },
    )


def test_google_preset_exchange_and_refusal() -> None:
    preset = {
        "PROVIDER": "google",
        "CLIENT_ID": "1234.apps.googleusercontent.com",
        "CLIENT_SECRET": "GOCSPX-x",
    }
    with (
        with_upstream(**preset),
        mounted("https://oauth2.googleapis.com/token", FaultAdapter(google_token)),
    ):
        config = app_settings.UPSTREAM
        assert config.issuer == "https://accounts.google.com"  # a returned iss is checked
        assert config.subject_field == "sub"
        tokens = upstream.exchange_code("good", "v")
        assert tokens["refresh_token"] == "1//0g-refresh"
        assert tokens["expires_at"] is not None
        assert tokens["scope"] == "openid https://www.googleapis.com/auth/userinfo.email"
        with pytest.raises(upstream.UpstreamRefused) as refused:
            upstream.exchange_code("bad", "v")
    assert refused.value.reason == "token endpoint refused the code: HTTP 400 invalid_grant"


def test_google_authorization_url_has_space_separated_scopes_and_s256() -> None:
    with with_upstream(PROVIDER="google", CLIENT_ID="cid", CLIENT_SECRET="s"):
        url = upstream.authorization_url(
            state="st", scopes=["openid", "email"], code_verifier="v" * 43
        )
    parts = urlsplit(url)
    assert (
        f"{parts.scheme}://{parts.netloc}{parts.path}"
        == "https://accounts.google.com/o/oauth2/v2/auth"
    )
    query = parse_qs(parts.query)
    assert query["scope"] == ["openid email"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["client_id"] == ["cid"]


# --- Microsoft Entra ID -----------------------------------------------------------------------


def test_entra_preset_uses_the_tenants_v2_endpoints() -> None:
    tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    with with_upstream(PROVIDER="entra", TENANT=tenant, CLIENT_ID="app", CLIENT_SECRET="s~x.y"):
        config = app_settings.UPSTREAM
        assert (
            config.authorize_url
            == f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize"
        )
        assert config.token_url == f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
        assert "offline_access" in config.scopes
        assert config.username_field == "preferred_username"

        def entra_token(request: requests.PreparedRequest) -> requests.Response:
            assert basic_credentials(request) == ("app", "s~x.y")
            return make_response(
                request,
                200,
                {
                    "token_type": "Bearer",
                    "scope": "openid profile email User.Read",
                    "expires_in": 4186,
                    "ext_expires_in": 4186,
                    "access_token": "eyJ0eXAi",
                    "refresh_token": "0.AXEA",
                },
            )

        with mounted(config.token_url, FaultAdapter(entra_token)):
            tokens = upstream.exchange_code("code", "v")
    assert tokens["refresh_token"] == "0.AXEA"
    assert tokens["scope"] == "openid profile email User.Read"


def test_e031_entra_without_tenant_and_unknown_provider() -> None:
    with with_upstream(PROVIDER="entra", CLIENT_ID="app"):
        assert E031 in check_configuration()
    with with_upstream(PROVIDER="gitlab", CLIENT_ID="app"):
        assert E031 in check_configuration()


# --- Any OpenID Connect provider by its issuer --------------------------------------------------


def discovery(metadata: dict[str, Any], status: int = 200) -> FaultAdapter:
    return FaultAdapter(lambda request: make_response(request, status, metadata))


ISSUER = "https://id.example.com/realms/mcp"
METADATA = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/protocol/openid-connect/auth",
    "token_endpoint": f"{ISSUER}/protocol/openid-connect/token",
    "userinfo_endpoint": f"{ISSUER}/protocol/openid-connect/userinfo",
    "revocation_endpoint": f"{ISSUER}/protocol/openid-connect/revoke",
    "code_challenge_methods_supported": ["plain", "S256"],
    "scopes_supported": ["openid", "email", "profile", "offline_access"],
    "authorization_response_iss_parameter_supported": True,
}


def test_oidc_discovery_with_rfc9207_requires_iss() -> None:
    with mounted(f"{ISSUER}/.well-known/openid-configuration", discovery(METADATA)):
        found = upstream.discover(ISSUER + "/")
    assert found == {
        "NAME": "id.example.com",
        "AUTHORIZE_URL": f"{ISSUER}/protocol/openid-connect/auth",
        "TOKEN_URL": f"{ISSUER}/protocol/openid-connect/token",
        "USERINFO_URL": f"{ISSUER}/protocol/openid-connect/userinfo",
        "REVOCATION_URL": f"{ISSUER}/protocol/openid-connect/revoke",
        "ISSUER": ISSUER,
        "REQUIRE_ISS": True,
        "PKCE": True,
        "SCOPES": ["openid", "email", "profile"],
        "SUBJECT_FIELD": "sub",
        "USERNAME_FIELD": "preferred_username",
    }


def test_rfc8414_metadata_when_there_is_no_oidc_document_and_no_iss_support() -> None:
    metadata = {
        k: v for k, v in METADATA.items() if k != "authorization_response_iss_parameter_supported"
    }
    not_found = discovery({}, status=404)
    with (
        mounted(f"{ISSUER}/.well-known/openid-configuration", not_found),
        mounted(
            "https://id.example.com/.well-known/oauth-authorization-server/realms/mcp",
            discovery(metadata),
        ),
    ):
        found = upstream.discover(ISSUER)
    assert found["REQUIRE_ISS"] is False  # checked when sent, not required (UP-04)
    assert found["ISSUER"] == ISSUER


def test_discovery_refuses_metadata_of_another_issuer() -> None:
    """MU-03 / RFC 8414 §3.3: a document naming another issuer is refused."""
    forged = {**METADATA, "issuer": "https://evil.example.com"}
    with mounted(f"{ISSUER}/.well-known/openid-configuration", discovery(forged)):
        with pytest.raises(upstream.UpstreamError) as refused:
            upstream.discover(ISSUER)
    assert "not 'https://id.example.com/realms/mcp'" in refused.value.reason


def test_discovery_needs_https() -> None:
    with pytest.raises(upstream.UpstreamError):
        upstream.discover("http://id.example.com")


def test_discover_command_prints_the_upstream_settings() -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    with mounted(f"{ISSUER}/.well-known/openid-configuration", discovery(METADATA)):
        call_command("mcp_consent_discover", ISSUER, stdout=out)
    printed = out.getvalue()
    assert '"REQUIRE_ISS": True' in printed
    assert f'"TOKEN_URL": "{ISSUER}/protocol/openid-connect/token"' in printed
    assert json.dumps(ISSUER) in printed
