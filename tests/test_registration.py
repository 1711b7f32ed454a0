"""RFC 7591 registration (POST /register/) and RFC 7592 management (/register/<client_id>/).

Black-box: every test talks HTTP to the endpoints as an MCP client developer or an attacker
would and checks the status, the JSON body and the rows the registration leaves behind.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from django.test import Client
from oauth2_provider.models import get_application_model

from mcp_consent.models import MCPClient, RedirectURI
from tests.browser_client import pkce_pair

from .factories import MCPClientFactory

pytestmark = pytest.mark.django_db

Application = get_application_model()

REGISTER = "/register/"
HTTPS_CB = "https://app.example.com/cb"


def register(client: Client, body: Any, **extra: Any) -> Any:
    """POST a JSON document to the registration endpoint, like an MCP client does."""
    return client.post(REGISTER, data=json.dumps(body), content_type="application/json", **extra)


def public_metadata(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "redirect_uris": [HTTPS_CB],
        "token_endpoint_auth_method": "none",
        "client_name": "Acme Agent",
        "application_type": "web",
    }
    data.update(overrides)
    return data


def row_counts() -> tuple[int, int, int]:
    return Application.objects.count(), MCPClient.objects.count(), RedirectURI.objects.count()


def assert_registration_error(response: Any, error: str) -> dict[str, Any]:
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error, body
    assert isinstance(body.get("error_description"), str)
    assert body["error_description"]
    return body


def authorize_params(client_id: str, redirect_uri: str, **extra: str) -> dict[str, str]:
    _verifier, challenge = pkce_pair()
    params = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st-123",
    }
    params.update(extra)
    return params


def authorize(client: Client, params: dict[str, str]) -> Any:
    return client.get("/authorize/?" + urlencode(params))


def assert_error_page_without_redirect(response: Any) -> None:
    """AS-50: a bad client or redirect URI is an error page for the person, never a redirect."""
    assert response.status_code == 400
    assert "Location" not in response
    assert response["Content-Type"].startswith("text/html")


# --- DCR-01: the request body ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(
            urlencode({"redirect_uris": HTTPS_CB, "token_endpoint_auth_method": "none"}),
            "application/x-www-form-urlencoded",
            id="form-encoded",
        ),
        pytest.param(
            '{"redirect_uris": ["https://app.example.com/cb"]', "application/json", id="malformed"
        ),
        pytest.param("", "application/json", id="empty"),
        pytest.param(json.dumps([{"redirect_uris": [HTTPS_CB]}]), "application/json", id="array"),
        pytest.param(json.dumps("https://app.example.com/cb"), "application/json", id="string"),
        pytest.param(b"\xff\xfe{}", "application/json", id="not-utf8"),
    ],
)
def test_dcr_01_non_json_object_body_is_invalid_client_metadata(client, body, content_type):
    """DCR-01 / DCR-06: only a JSON object in an application/json body registers a client."""
    before = row_counts()
    response = client.post(REGISTER, data=body, content_type=content_type)
    assert_registration_error(response, "invalid_client_metadata")
    assert row_counts() == before


def test_dcr_02_anonymous_registration_is_allowed(client):
    """DCR-02: open registration, no initial access token and no logged-in user."""
    response = register(client, public_metadata())
    assert response.status_code == 201
    application = Application.objects.get(client_id=response.json()["client_id"])
    assert application.user is None


# --- DCR-04 / DCR-05 / DCR-20: the success response ----------------------------------------


FULL_METADATA = {
    "redirect_uris": ["https://app.example.com/cb", "https://app.example.com/cb2"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "client_secret_basic",
    "client_name": "Acme Agent",
    "client_uri": "https://app.example.com/",
    "logo_uri": "https://app.example.com/logo.png",
    "scope": "items:read items:write",
    "software_id": "4NRB1-0XZABZI9E6-5SM3R",
    "software_version": "2.1.0",
    "contacts": ["ops@app.example.com"],
    "application_type": "web",
}


def test_dcr_04_confidential_registration_echoes_everything(client):
    """DCR-03 / DCR-04: every RFC 7591 field accepted; 201, no-store, client_id + issue time, secret with expiry 0, all metadata, RFC 7592 handles."""
    started = int(time.time())
    response = register(client, FULL_METADATA)
    assert response.status_code == 201, response.content
    assert response["Content-Type"].startswith("application/json")
    assert "no-store" in response["Cache-Control"]
    body = response.json()

    for key, value in FULL_METADATA.items():
        assert body[key] == value, key
    assert isinstance(body["client_id"], str)
    assert body["client_id"]
    assert isinstance(body["client_id_issued_at"], int)
    assert started - 5 <= body["client_id_issued_at"] <= int(time.time()) + 5
    assert isinstance(body["client_secret"], str)
    assert len(body["client_secret"]) >= 32
    assert body["client_secret_expires_at"] == 0
    assert isinstance(body["registration_access_token"], str)
    assert len(body["registration_access_token"]) >= 32
    assert urlsplit(body["registration_client_uri"]).path == f"/register/{body['client_id']}/"

    application = Application.objects.get(client_id=body["client_id"])
    assert application.client_type == Application.CLIENT_CONFIDENTIAL


def test_dcr_04_public_client_gets_no_secret(client):
    """DCR-04 / DCR-16: token_endpoint_auth_method none is a public client: no client_secret."""
    response = register(client, public_metadata())
    assert response.status_code == 201
    body = response.json()
    assert body["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in body
    assert "client_secret_expires_at" not in body
    assert body["registration_access_token"]
    assert (
        Application.objects.get(client_id=body["client_id"]).client_type
        == Application.CLIENT_PUBLIC
    )


def test_dcr_21_client_secrets_are_unique(client):
    """DCR-21: two confidential registrations get different ids and secrets."""
    first = register(client, FULL_METADATA).json()
    second = register(client, FULL_METADATA).json()
    assert first["client_id"] != second["client_id"]
    assert first["client_secret"] != second["client_secret"]
    assert first["registration_access_token"] != second["registration_access_token"]


def test_dcr_05_unknown_metadata_is_ignored_and_not_echoed(client):
    """DCR-05: unknown fields do not fail the registration and are not echoed back."""
    response = register(
        client,
        public_metadata(
            favourite_colour="blue", x_vendor={"nested": True}, tls_client_auth_san_dns="x"
        ),
    )
    assert response.status_code == 201
    body = response.json()
    assert "favourite_colour" not in body
    assert "x_vendor" not in body
    assert "tls_client_auth_san_dns" not in body


def test_dcr_20_client_chosen_id_and_secret_are_ignored(client):
    """DCR-20 / AS-61 / BCP-16: the server picks client_id and secret; never an https:// id."""
    response = register(
        client,
        {
            **FULL_METADATA,
            "client_id": "https://victim.example/client.json",
            "client_secret": "chosen-by-the-attacker",
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert body["client_id"] != "https://victim.example/client.json"
    assert not body["client_id"].lower().startswith("https://")
    assert not body["client_id"].lower().startswith("http")
    assert body["client_secret"] != "chosen-by-the-attacker"
    assert not Application.objects.filter(client_id="https://victim.example/client.json").exists()


# --- Redirect URI policy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({"token_endpoint_auth_method": "none"}, id="missing"),
        pytest.param({"redirect_uris": [], "token_endpoint_auth_method": "none"}, id="empty"),
        pytest.param(
            {"redirect_uris": HTTPS_CB, "token_endpoint_auth_method": "none"}, id="not-a-list"
        ),
    ],
)
def test_dcr_10_redirect_uris_are_required(client, metadata):
    """DCR-10: the code grant needs registered redirect URIs: invalid_redirect_uri."""
    before = row_counts()
    assert_registration_error(register(client, metadata), "invalid_redirect_uri")
    assert row_counts() == before


@pytest.mark.parametrize(
    "uri",
    [
        "http://evil.example.com/cb",
        "http://app.example/cb",
        "http://10.0.0.5/cb",
        "http://127.0.0.1.evil.example/cb",
        "http://localhost.evil.example/cb",
    ],
)
def test_dcr_11_http_off_loopback_is_refused(client, uri):
    """DCR-11 / BCP-14: http redirect URIs only on loopback."""
    before = row_counts()
    assert_registration_error(
        register(client, public_metadata(redirect_uris=[uri])), "invalid_redirect_uri"
    )
    assert row_counts() == before


@pytest.mark.parametrize(
    "uri",
    ["http://127.0.0.1:5555/cb", "http://[::1]:5555/cb", "http://localhost:5555/cb"],
)
def test_dcr_11_http_loopback_is_allowed_for_native_clients(client, uri):
    """DCR-11 / RFC 8252: native clients may register http loopback redirect URIs."""
    response = register(client, public_metadata(redirect_uris=[uri], application_type="native"))
    assert response.status_code == 201, response.content
    assert response.json()["redirect_uris"] == [uri]


def test_dcr_11_loopback_without_application_type_defaults_to_native(client):
    """DCR-11 / AS-62: a loopback-only client without application_type is not rejected as 'web'."""
    metadata = public_metadata(redirect_uris=["http://127.0.0.1:5555/cb"])
    del metadata["application_type"]
    response = register(client, metadata)
    assert response.status_code == 201, response.content
    assert response.json()["application_type"] == "native"


@pytest.mark.parametrize(
    "uri",
    [
        "/cb",
        "app.example.com/cb",
        "//app.example.com/cb",
        "https://app.example.com/cb#x",
        "https://app.example.com/cb#",
    ],
)
def test_dcr_12_relative_or_fragment_redirect_uris_are_refused(client, uri):
    """DCR-12: redirect URIs are absolute and carry no fragment."""
    before = row_counts()
    assert_registration_error(
        register(client, public_metadata(redirect_uris=[uri])), "invalid_redirect_uri"
    )
    assert row_counts() == before


@pytest.mark.parametrize(
    "uri",
    [
        "javascript:alert(document.cookie)",
        "JavaScript://app.example.com/%0Aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "vbscript:msgbox(1)",
        "blob:https://app.example.com/0b7a3c1e",
    ],
)
def test_dcr_13_url_02_dangerous_schemes_are_refused(client, uri):
    """DCR-13 / URL-02: the AS never becomes a delivery vector for script URLs."""
    before = row_counts()
    assert_registration_error(
        register(client, public_metadata(redirect_uris=[uri])), "invalid_redirect_uri"
    )
    assert row_counts() == before


WILDCARD_URIS = [
    "https://*.app.example/cb",
    "http://127.0.0.1:*/cb",
    "https://app.example.com:*/cb",
    "https://app.example.com/*",
]


@pytest.mark.parametrize("uri", WILDCARD_URIS)
def test_dcr_14_cd_32_wildcard_redirect_uris_are_refused(client, uri):
    """DCR-14 / CD-32: no patterns, including DOT's port wildcard."""
    before = row_counts()
    assert_registration_error(
        register(client, public_metadata(redirect_uris=[uri], application_type="native")),
        "invalid_redirect_uri",
    )
    assert row_counts() == before


@pytest.mark.parametrize("uri", WILDCARD_URIS)
def test_dcr_14_cd_32_wildcard_redirect_uri_at_authorize_is_an_error_page(client, uri):
    """DCR-14 / CD-32 / AS-50: a pattern was never registered, so /authorize answers 400, not 500."""
    registered = MCPClientFactory(
        redirect_uris=[HTTPS_CB, "http://127.0.0.1:5555/cb"], application_type="native"
    )
    response = authorize(client, authorize_params(registered.application.client_id, uri))
    assert_error_page_without_redirect(response)


def test_dcr_12_one_bad_uri_refuses_the_whole_registration(client):
    """DCR-12 / DCR-11: a good URI next to a bad one does not register a partial client."""
    before = row_counts()
    response = register(
        client, public_metadata(redirect_uris=[HTTPS_CB, "http://evil.example.com/cb"])
    )
    assert_registration_error(response, "invalid_redirect_uri")
    assert row_counts() == before


# --- Grants, auth methods, keys, scope, names --------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"grant_types": ["implicit"]}, id="implicit"),
        pytest.param({"grant_types": ["authorization_code", "implicit"]}, id="code+implicit"),
        pytest.param({"grant_types": ["password"]}, id="password"),
        pytest.param({"grant_types": ["authorization_code", "password"]}, id="code+password"),
        pytest.param({"grant_types": ["client_credentials"]}, id="client_credentials"),
        pytest.param({"grant_types": ["refresh_token"]}, id="refresh-only"),
        pytest.param({"response_types": ["token"]}, id="response-token"),
        pytest.param({"response_types": ["code", "token"]}, id="response-code+token"),
    ],
)
def test_dcr_15_only_code_and_refresh_grants(client, overrides):
    """DCR-15 / BCP-06 / BCP-07: implicit, password and client credentials are refused."""
    before = row_counts()
    assert_registration_error(
        register(client, public_metadata(**overrides)), "invalid_client_metadata"
    )
    assert row_counts() == before


@pytest.mark.parametrize(
    "method", ["private_key_jwt", "client_secret_jwt", "tls_client_auth", "bogus"]
)
def test_dcr_16_unsupported_token_endpoint_auth_method(client, method):
    """DCR-16: only none, client_secret_basic and client_secret_post."""
    before = row_counts()
    response = register(client, public_metadata(token_endpoint_auth_method=method))
    assert_registration_error(response, "invalid_client_metadata")
    assert row_counts() == before


def test_dcr_16_client_secret_post_is_supported(client):
    """DCR-16: client_secret_post is a supported confidential method."""
    response = register(client, public_metadata(token_endpoint_auth_method="client_secret_post"))
    assert response.status_code == 201
    assert response.json()["token_endpoint_auth_method"] == "client_secret_post"
    assert response.json()["client_secret"]


def test_dcr_17_jwks_and_jwks_uri_together_are_refused(client):
    """DCR-17: jwks and jwks_uri are mutually exclusive."""
    before = row_counts()
    response = register(
        client, public_metadata(jwks={"keys": []}, jwks_uri="https://app.example.com/jwks.json")
    )
    assert_registration_error(response, "invalid_client_metadata")
    assert row_counts() == before


def test_dcr_18_unknown_scopes_are_narrowed_in_the_response(client):
    """DCR-18: a scope this server does not have is dropped, and the response shows it."""
    response = register(client, public_metadata(scope="items:read admin:everything items:read"))
    assert response.status_code == 201
    assert response.json()["scope"] == "items:read"


def test_dcr_18_only_unknown_scopes_leave_no_scope(client):
    """DCR-18: nothing known requested, nothing registered."""
    response = register(client, public_metadata(scope="admin:everything"))
    assert response.status_code == 201
    assert "admin:everything" not in json.dumps(response.json())


def test_dcr_19_overlong_client_name_is_refused(client):
    """DCR-19: self-asserted names are length-limited."""
    before = row_counts()
    response = register(client, public_metadata(client_name="A" * 81))
    assert_registration_error(response, "invalid_client_metadata")
    assert row_counts() == before


@pytest.mark.parametrize(
    "name",
    ["Acme\u202eAgent", "Acme\x00Agent", "Acme\nAgent"],
    ids=["bidi-override", "nul", "newline"],
)
def test_dcr_19_control_characters_in_client_name_are_refused(client, name):
    """DCR-19: no control or bidi-override characters that spoof the name on the consent page."""
    assert_registration_error(
        register(client, public_metadata(client_name=name)), "invalid_client_metadata"
    )


@pytest.mark.parametrize("field", ["client_uri", "logo_uri"])
@pytest.mark.parametrize("value", ["javascript:alert(1)", "http://app.example.com/", "/relative"])
def test_dcr_19_client_and_logo_uri_must_be_https(client, field, value):
    """DCR-19 / URL-02: URIs shown next to the client are https URLs."""
    assert_registration_error(
        register(client, public_metadata(**{field: value})), "invalid_client_metadata"
    )


def test_as_62_web_application_with_loopback_redirect_is_explained(client):
    """AS-62: application_type web with a loopback URI gets invalid_redirect_uri and says why."""
    before = row_counts()
    response = register(
        client, public_metadata(redirect_uris=["http://127.0.0.1:5555/cb"], application_type="web")
    )
    body = assert_registration_error(response, "invalid_redirect_uri")
    assert "application_type" in body["error_description"]
    assert "native" in body["error_description"]
    assert row_counts() == before


def test_as_62_unknown_application_type_is_refused(client):
    """AS-62: application_type is native or web."""
    assert_registration_error(
        register(client, public_metadata(application_type="desktop")), "invalid_client_metadata"
    )


# --- Rows ------------------------------------------------------------------------------------


def test_registration_writes_application_client_and_one_row_per_redirect_uri(client):
    """DCR-04: the DOT Application, the MCPClient and one RedirectURI per registered URI."""
    uris = ["https://app.example.com/cb", "https://app.example.com/cb2", "http://127.0.0.1:5555/cb"]
    before = row_counts()
    response = register(client, public_metadata(redirect_uris=uris, application_type="native"))
    assert response.status_code == 201, response.content
    assert row_counts() == (before[0] + 1, before[1] + 1, before[2] + 3)

    application = Application.objects.get(client_id=response.json()["client_id"])
    assert application.redirect_uris.split() == uris
    assert application.name == "Acme Agent"
    mcp_client = MCPClient.objects.get(application=application)
    assert mcp_client.registration_source == "dcr"
    assert mcp_client.verified is False
    assert list(mcp_client.redirect_uris.values_list("uri", flat=True)) == uris
    assert not mcp_client.redirect_uris.filter(removed_at__isnull=False).exists()


def test_duplicate_redirect_uris_are_registered_once(client):
    """DCR-04: the registered (deduplicated) list is what is stored and echoed."""
    response = register(client, public_metadata(redirect_uris=[HTTPS_CB, HTTPS_CB]))
    assert response.status_code == 201
    assert response.json()["redirect_uris"] == [HTTPS_CB]
    assert (
        RedirectURI.objects.filter(
            client__application__client_id=response.json()["client_id"]
        ).count()
        == 1
    )


# --- RFC 7592 management -----------------------------------------------------------------------


@pytest.fixture
def registered(client) -> dict[str, Any]:
    """A confidential client registered through the endpoint, with its RFC 7592 handles."""
    response = register(client, FULL_METADATA)
    assert response.status_code == 201
    return response.json()


def management_path(info: dict[str, Any]) -> str:
    """MGMT-01: clients use registration_client_uri as given, never a constructed URL."""
    return urlsplit(info["registration_client_uri"]).path


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def put(client: Client, info: dict[str, Any], body: Any, token: str | None = None) -> Any:
    return client.put(
        management_path(info),
        data=json.dumps(body),
        content_type="application/json",
        **bearer(token or info["registration_access_token"]),
    )


def updated_metadata(info: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"client_id": info["client_id"], **FULL_METADATA, **changes}


def test_mgmt_02_read_returns_full_client_information(client, registered):
    """MGMT-01 / MGMT-02: GET with the registration access token returns all registered metadata."""
    response = client.get(
        management_path(registered), **bearer(registered["registration_access_token"])
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["client_id"] == registered["client_id"]
    assert body["client_id_issued_at"] == registered["client_id_issued_at"]
    for key, value in FULL_METADATA.items():
        assert body[key] == value, key
    assert body["registration_client_uri"] == registered["registration_client_uri"]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"HTTP_AUTHORIZATION": "Bearer not-the-token"}, id="wrong"),
        pytest.param({"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"}, id="basic"),
    ],
)
@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_mgmt_02_missing_or_wrong_token_is_401(client, registered, headers, method):
    """MGMT-02 / MGMT-05: without the client's token: 401 with a Bearer challenge, nothing changes."""
    kwargs: dict[str, Any] = dict(headers)
    if method == "put":
        kwargs.update(
            data=json.dumps(updated_metadata(registered, client_name="Hijacked")),
            content_type="application/json",
        )
    response = getattr(client, method)(management_path(registered), **kwargs)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    application = Application.objects.get(client_id=registered["client_id"])
    assert application.name == "Acme Agent"


def test_mgmt_05_token_of_one_client_does_not_manage_another(client, registered):
    """MGMT-05: a registration access token is bound to one client."""
    other = register(client, public_metadata(client_name="Other")).json()
    response = client.get(management_path(registered), **bearer(other["registration_access_token"]))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    response = client.delete(
        management_path(registered), **bearer(other["registration_access_token"])
    )
    assert response.status_code == 401
    assert Application.objects.filter(client_id=registered["client_id"]).exists()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda info: {k: v for k, v in updated_metadata(info).items() if k != "client_id"},
            id="no-id",
        ),
        pytest.param(lambda info: updated_metadata(info, client_id="someone-else"), id="other-id"),
        pytest.param(
            lambda info: updated_metadata(
                info, registration_access_token=info["registration_access_token"]
            ),
            id="with-rat",
        ),
        pytest.param(
            lambda info: updated_metadata(
                info, registration_client_uri=info["registration_client_uri"]
            ),
            id="with-rcu",
        ),
        pytest.param(
            lambda info: updated_metadata(info, client_id_issued_at=0), id="with-issued-at"
        ),
        pytest.param(
            lambda info: updated_metadata(info, client_secret_expires_at=0), id="with-expires-at"
        ),
    ],
)
def test_mgmt_03_update_must_name_the_same_client_and_no_server_fields(client, registered, change):
    """MGMT-03: PUT needs the same client_id and must not carry server-managed fields → 400."""
    response = put(client, registered, change(registered))
    assert response.status_code == 400
    assert response.json()["error"] in {"invalid_request", "invalid_client_metadata"}
    assert (
        Application.objects.get(client_id=registered["client_id"]).redirect_uris.split()
        == FULL_METADATA["redirect_uris"]
    )


def test_mgmt_03_update_applies_our_redirect_uri_policy(client, registered):
    """MGMT-03 / DCR-11: an update cannot sneak in an http redirect URI off loopback (DOT's gap)."""
    response = put(
        client, registered, updated_metadata(registered, redirect_uris=["http://evil.example/cb"])
    )
    assert_registration_error(response, "invalid_redirect_uri")
    application = Application.objects.get(client_id=registered["client_id"])
    assert "evil.example" not in application.redirect_uris
    assert not RedirectURI.objects.filter(uri="http://evil.example/cb").exists()


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"redirect_uris": ["https://app.example.com:*/cb"]}, id="port-wildcard"),
        pytest.param({"grant_types": ["authorization_code", "implicit"]}, id="implicit"),
        pytest.param({"token_endpoint_auth_method": "none"}, id="confidential-to-public"),
    ],
)
def test_mgmt_03_invalid_update_is_refused(client, registered, changes):
    """MGMT-03: invalid values get RFC 7591 errors and change nothing."""
    response = put(client, registered, updated_metadata(registered, **changes))
    assert response.status_code == 400
    assert response.json()["error"] in {"invalid_redirect_uri", "invalid_client_metadata"}
    application = Application.objects.get(client_id=registered["client_id"])
    assert application.redirect_uris.split() == FULL_METADATA["redirect_uris"]
    assert application.client_type == Application.CLIENT_CONFIDENTIAL


def test_mgmt_03_valid_update_replaces_redirect_uris(client, registered):
    """MGMT-03 / MGMT-06 / CD-31: 200, URI history kept, metadata_version bumped, old URI dead."""
    mcp_client = MCPClient.objects.get(application__client_id=registered["client_id"])
    version = mcp_client.metadata_version
    new_uris = ["https://app.example.com/cb", "https://app.example.com/new-cb"]

    response = put(client, registered, updated_metadata(registered, redirect_uris=new_uris))
    assert response.status_code == 200, response.content
    assert "no-store" in response["Cache-Control"]
    assert response.json()["client_id"] == registered["client_id"]

    mcp_client.refresh_from_db()
    assert mcp_client.metadata_version == version + 1
    rows = {r.uri: r for r in mcp_client.redirect_uris.all()}
    assert rows["https://app.example.com/cb2"].removed_at is not None
    assert rows["https://app.example.com/cb"].removed_at is None
    assert rows["https://app.example.com/new-cb"].removed_at is None
    application = Application.objects.get(client_id=registered["client_id"])
    assert application.redirect_uris.split() == new_uris

    # CD-31: the removed redirect URI no longer works at /authorize; the new one does.
    response = authorize(
        client, authorize_params(registered["client_id"], rows["https://app.example.com/cb2"].uri)
    )
    assert_error_page_without_redirect(response)
    assert (
        authorize(client, authorize_params(registered["client_id"], new_uris[1])).status_code == 200
    )

    # MGMT-02: a later read shows the update, and the token still works.
    read = client.get(
        management_path(registered), **bearer(registered["registration_access_token"])
    )
    assert read.status_code == 200
    assert read.json()["redirect_uris"] == new_uris


def test_mgmt_03_update_response_shows_the_updated_metadata(client, registered):
    """MGMT-03: the 200 response to a PUT carries the client information as updated."""
    new_uris = ["https://app.example.com/cb", "https://app.example.com/new-cb"]
    response = put(
        client,
        registered,
        updated_metadata(registered, redirect_uris=new_uris, software_version="2.2.0"),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["redirect_uris"] == new_uris
    assert body["software_version"] == "2.2.0"
    assert body["client_name"] == "Acme Agent"


def test_mgmt_03_update_without_displayed_change_keeps_metadata_version(client, registered):
    """MGMT-06: only a change of what the consent page shows invalidates consents."""
    mcp_client = MCPClient.objects.get(application__client_id=registered["client_id"])
    version = mcp_client.metadata_version
    response = put(client, registered, updated_metadata(registered, software_version="2.2.0"))
    assert response.status_code == 200
    read = client.get(
        management_path(registered), **bearer(registered["registration_access_token"])
    )
    assert read.json()["software_version"] == "2.2.0"
    mcp_client.refresh_from_db()
    assert mcp_client.metadata_version == version


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"client_name": "Renamed Agent"}, id="name"),
        pytest.param({"logo_uri": "https://app.example.com/other-logo.png"}, id="logo"),
    ],
)
def test_mgmt_06_update_of_displayed_metadata_bumps_metadata_version(client, registered, changes):
    """MGMT-06 / CD-04: a new name or logo is a new version of the client (consents re-asked)."""
    mcp_client = MCPClient.objects.get(application__client_id=registered["client_id"])
    version = mcp_client.metadata_version
    response = put(client, registered, updated_metadata(registered, **changes))
    assert response.status_code == 200
    mcp_client.refresh_from_db()
    assert mcp_client.metadata_version == version + 1


def test_mgmt_04_delete_removes_the_client(client, registered):
    """MGMT-04 / MGMT-05: 204, then the token and the client_id are dead; /authorize shows an error page."""
    token = registered["registration_access_token"]
    response = client.delete(management_path(registered), **bearer(token))
    assert response.status_code == 204
    assert response.content == b""

    assert not Application.objects.filter(client_id=registered["client_id"]).exists()
    assert not MCPClient.objects.filter(application__client_id=registered["client_id"]).exists()
    assert not RedirectURI.objects.filter(uri="https://app.example.com/cb2").exists()

    response = client.get(management_path(registered), **bearer(token))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")

    response = authorize(
        client, authorize_params(registered["client_id"], FULL_METADATA["redirect_uris"][0])
    )
    assert_error_page_without_redirect(response)


# --- Consent page escaping ---------------------------------------------------------------------


def test_cd_10_as_54_dcr_19_script_client_name_is_rendered_escaped(client):
    """CD-10 / AS-54 / DCR-19: a <script> name is stored as given, shown HTML-escaped."""
    name = "<script>alert(1)</script>"
    response = register(client, public_metadata(client_name=name))
    assert response.status_code == 201
    info = response.json()
    assert info["client_name"] == name

    page = authorize(client, authorize_params(info["client_id"], HTTPS_CB))
    assert page.status_code == 200
    html = page.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html
    assert "<script" not in html.lower()
    assert "Location" not in page


def test_as_54_reflected_state_is_escaped(client):
    """AS-54: a hostile, unencoded state reflected into the consent form is escaped."""
    registered = MCPClientFactory(redirect_uris=[HTTPS_CB])
    query = urlencode(authorize_params(registered.application.client_id, HTTPS_CB, state="s"))
    page = client.get(
        "/authorize/?" + query.replace("state=s", 'state="><script>alert(1)</script>')
    )
    html = page.content.decode()
    assert page.status_code == 200, html
    assert "<script" not in html.lower()
    assert '"><' not in html


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.com/cb?x=<b>",
        'https://app.example.com/c"b',
        "https://app.example.com/{cb}",
    ],
)
def test_dcr_12_redirect_uri_that_is_not_an_rfc3986_uri_is_refused(client, uri):
    """DCR-12: a redirect URI is an absolute RFC 3986 URI; one oauthlib cannot use is refused."""
    assert_registration_error(
        register(client, public_metadata(redirect_uris=[uri])), "invalid_redirect_uri"
    )


# --- DCR-11 / DCR-13 (revised 2026-12): private-use URI schemes of native clients ---------------


@pytest.mark.parametrize(
    "uri",
    [
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "vscode://vscode.github-authentication/did-authenticate",
        "com.example.app:/oauth2redirect",
        "claude:/callback",
    ],
)
@pytest.mark.parametrize("application_type", ["native", None])
def test_dcr_11_private_use_scheme_is_accepted_for_native_clients(client, uri, application_type):
    """DCR-11 (RFC 8252 §7.1): a desktop app's own scheme, with or without a dot."""
    metadata = public_metadata(redirect_uris=[uri], application_type=application_type)
    if application_type is None:
        del metadata["application_type"]
    response = register(client, metadata)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["redirect_uris"] == [uri]
    assert body["application_type"] == "native"
    assert RedirectURI.objects.filter(uri=uri).exists()


def test_dcr_13_private_use_scheme_is_refused_for_web_clients(client):
    """DCR-13 / AS-62: a web client redirects over https; the description says what to change."""
    before = row_counts()
    response = register(
        client,
        public_metadata(
            redirect_uris=["cursor://anysphere.cursor-mcp/oauth/callback"], application_type="web"
        ),
    )
    body = assert_registration_error(response, "invalid_redirect_uri")
    assert "'cursor:'" in body["error_description"]
    assert "application_type 'native'" in body["error_description"]
    assert row_counts() == before


@pytest.mark.parametrize(
    "uri",
    [
        "about:blank",
        "filesystem:https://app.example.com/temporary/x",
        "view-source:https://app.example.com/",
        "chrome://settings/",
        "chrome-extension://abcdefghijklmnop/cb.html",
        "edge://settings/",
        "moz-extension://0b7a3c1e/cb.html",
        "intent://cb#Intent;scheme=http;end",
        "ws://127.0.0.1:8080/cb",
        "wss://app.example.com/cb",
        "mailto:someone@app.example.com",
    ],
)
@pytest.mark.parametrize("application_type", ["native", None])
def test_dcr_13_browser_internal_and_non_redirect_schemes_are_refused(
    client, uri, application_type
):
    """DCR-13: browser-internal schemes and schemes that are no redirect target, even for native."""
    metadata = public_metadata(redirect_uris=[uri], application_type=application_type)
    if application_type is None:
        del metadata["application_type"]
    before = row_counts()
    body = assert_registration_error(register(client, metadata), "invalid_redirect_uri")
    assert "scheme" in body["error_description"]
    assert row_counts() == before


@pytest.mark.parametrize(
    "uri",
    ["cursor:", "cursor://", "cursor:///callback", "cursor:callback", "Cursor://x/cb", "1app:/cb"],
)
def test_dcr_12_malformed_private_use_uris_are_refused(client, uri):
    """DCR-12: scheme:/path or scheme://authority/path; nothing that aliases or has no target.

    ``cursor:///callback`` aliases ``cursor:/callback``; an upper-case scheme would be sent
    back in another spelling than registered (RFC 3986 schemes compare case-insensitively).
    """
    before = row_counts()
    assert_registration_error(
        register(client, public_metadata(redirect_uris=[uri], application_type="native")),
        "invalid_redirect_uri",
    )
    assert row_counts() == before
