"""The token endpoint /token/ (and RFC 7009 /revoke/), as a client developer or attacker uses it.

Codes come from whole flows run by a ``Browser``: consent page, Approve, the demo upstream,
the callback. The only rows looked at are the ones that say whether a secret was stored or
a token still works (DOT's token and grant tables).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.http import HttpResponse
from django.test import Client, override_settings
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from mcp_consent import audit
from mcp_consent.flows import revocation
from mcp_consent.models import Consent, UpstreamToken
from mcp_consent.oauth import MCPOAuth2Validator
from project.demo_upstream.models import Account
from project.demo_upstream.models import Token as DemoHubToken
from tests.browser_client import PROXY_HOST, Browser, authorize_params, code_from, pkce_pair
from tests.factories import MCPClientFactory
from tests.upstream_fakes import DjangoClientAdapter

pytestmark = pytest.mark.django_db

RESOURCE = "http://127.0.0.1:8000/mcp"
OTHER_RESOURCE = "http://127.0.0.1:8000/other-mcp"
REDIRECT_URI = "https://app.example/cb"

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
Grant = get_grant_model()


@pytest.fixture(autouse=True)
def _fast_upstream_login(settings) -> None:
    """Speed only: the seeded demo accounts get a cheap password hash (same password)."""
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "mcp_consent.hashers.ClientSecretHasher",
    ]
    Account.objects.update(password=make_password("demo"))


# --- helpers ---------------------------------------------------------------------------------


@dataclass
class Authorized:
    """A client holding a fresh code from a completed flow, and its PKCE verifier."""

    client: Any
    code: str
    verifier: str
    browser: Browser
    redirect: HttpResponse

    @property
    def client_id(self) -> str:
        return self.client.application.client_id

    def redeem(self, **overrides: str | None) -> HttpResponse:
        data = {
            "grant_type": "authorization_code",
            "code": self.code,
            "client_id": self.client_id,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": self.verifier,
            "resource": RESOURCE,
        }
        data.update(overrides)
        return post_token({k: v for k, v in data.items() if v is not None})


def authorized(client: Any = None, browser: Browser | None = None, **params: str) -> Authorized:
    """Run a whole flow (consent, upstream, callback) and return the code."""
    client = client or MCPClientFactory(redirect_uris=[REDIRECT_URI])
    if browser is None:
        browser = Browser()
        browser.login_upstream()
    verifier, challenge = pkce_pair()
    query = {
        k: v
        for k, v in authorize_params(client, challenge=challenge, **params).items()
        if v is not None
    }
    final = browser.run_flow(query)
    return Authorized(client, code_from(final), verifier, browser, final)


def post_token(data: dict[str, str] | list[tuple[str, str]], path: str = "/token/") -> HttpResponse:
    return Client().post(
        path,
        urlencode(data),
        content_type="application/x-www-form-urlencoded",
        HTTP_HOST=PROXY_HOST,
    )


def refresh(refresh_token: str, client_id: str, **extra: str) -> HttpResponse:
    return post_token(
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
            **extra,
        }
    )


def assert_token_error(response: HttpResponse, *errors: str) -> dict[str, Any]:
    """AS-48: 400, JSON, not cached, one of the expected codes."""
    assert response.status_code == 400, (response.status_code, response.content)
    assert response["Content-Type"].startswith("application/json")
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["error"] in errors, body
    assert "access_token" not in body
    assert "refresh_token" not in body
    return body


def tokens(response: HttpResponse) -> dict[str, Any]:
    assert response.status_code == 200, response.content
    return response.json()


def checksum(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def access_token_row(raw: str):
    return AccessToken.objects.filter(token_checksum=checksum(raw)).first()


@pytest.fixture
def code() -> Authorized:
    return authorized()


@pytest.fixture
def issued(code: Authorized) -> tuple[Authorized, dict[str, Any]]:
    return code, tokens(code.redeem())


@pytest.fixture
def two_resources() -> Any:
    with override_settings(
        MCP_CONSENT={**settings.MCP_CONSENT, "RESOURCES": [RESOURCE, OTHER_RESOURCE]}
    ):
        yield


# --- AS-42, AS-47: a good exchange and what is stored ---------------------------------------


def test_as42_code_exchange_returns_a_bearer_token(code: Authorized) -> None:
    """AS-42: 200 JSON, not cached, access and refresh token, Bearer, expiry, scope."""
    response = code.redeem()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["access_token"]
    assert body["refresh_token"]
    assert body["access_token"] != body["refresh_token"]
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int)  # AS-43
    assert 0 < body["expires_in"] <= 3600
    assert body["scope"] == "items:read"


def test_as47_tokens_are_stored_as_checksums_only(issued) -> None:
    """AS-47: the database holds no usable MCP access or refresh token."""
    _code, body = issued
    access = AccessToken.objects.get(token_checksum=checksum(body["access_token"]))
    refresh_row = RefreshToken.objects.get(token_checksum=checksum(body["refresh_token"]))
    assert access.token == ""
    assert refresh_row.token == ""
    for raw in (body["access_token"], body["refresh_token"]):
        assert not AccessToken.objects.filter(token=raw).exists()
        assert not RefreshToken.objects.filter(token=raw).exists()


def test_as47_grant_never_stores_the_raw_code(code: Authorized) -> None:
    """AS-47: right after the callback a Grant exists, but not under the code itself."""
    assert Grant.objects.filter(application=code.client.application).exists()
    assert not Grant.objects.filter(code=code.code).exists()


def test_as40_code_is_bound_to_resource_scope_and_user(code: Authorized) -> None:
    """AS-40, AS-33: the token carries the approved scope and audience, for a real user."""
    body = tokens(code.redeem())
    row = access_token_row(body["access_token"])
    assert row.resource == [RESOURCE]
    assert row.scope == "items:read"
    assert row.user is not None
    assert row.application == code.client.application


# --- AS-23, AS-40: PKCE and code binding -------------------------------------------------------


def test_as23_wrong_code_verifier(code: Authorized) -> None:
    """AS-23: BASE64URL(SHA256(verifier)) must equal the challenge."""
    assert_token_error(code.redeem(code_verifier=pkce_pair()[0]), "invalid_grant")


def test_as23_missing_code_verifier(code: Authorized) -> None:
    """AS-23: a challenge was sent, so the verifier is required."""
    assert_token_error(code.redeem(code_verifier=None), "invalid_grant", "invalid_request")


def test_as40_code_of_client_a_cannot_be_redeemed_by_client_b(code: Authorized) -> None:
    """AS-40: codes are bound to the client they were issued to."""
    other = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    assert_token_error(code.redeem(client_id=other.application.client_id), "invalid_grant")
    assert not AccessToken.objects.filter(
        application=other.application, user__isnull=False
    ).exists()


def test_as40_expired_code(code: Authorized) -> None:
    """AS-40: an expired code is invalid_grant."""
    Grant.objects.filter(application=code.client.application).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    assert_token_error(code.redeem(), "invalid_grant")


@pytest.mark.parametrize(
    "redirect_uri",
    ["https://app.example/other", "https://app.example/cb/", "https://evil.example/cb"],
)
def test_as40_redirect_uri_must_match_the_authorization_request(
    code: Authorized, redirect_uri: str
) -> None:
    """AS-40: the code is bound to the redirect URI it was sent to."""
    assert_token_error(code.redeem(redirect_uri=redirect_uri), "invalid_grant", "invalid_request")


def test_as40_unknown_code(code: Authorized) -> None:
    """AS-40: a guessed code is invalid_grant."""
    assert_token_error(code.redeem(code="not-a-code"), "invalid_grant")


# --- AS-41 / BCP-10: single use ------------------------------------------------------------


def test_as41_second_redemption_fails_and_revokes_the_first_tokens(issued) -> None:
    """AS-41, BCP-10: a replayed code means it leaked; what it bought is revoked."""
    code, first = issued
    assert access_token_row(first["access_token"]) is not None

    assert_token_error(code.redeem(), "invalid_grant")

    row = access_token_row(first["access_token"])
    assert row is None or not row.is_valid()
    assert_token_error(refresh(first["refresh_token"], code.client_id), "invalid_grant")


def test_as41_replay_by_another_client_does_not_revoke_the_owners_tokens(issued) -> None:
    """AS-41: a replay that is not otherwise valid (wrong client) is just refused."""
    code, first = issued
    other = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    assert_token_error(code.redeem(client_id=other.application.client_id), "invalid_grant")
    assert access_token_row(first["access_token"]) is not None


# --- AS-31, AS-34, AS-35: resource indicators at /token ----------------------------------------


def test_as34_resource_not_in_the_grant_is_invalid_target(code: Authorized) -> None:
    """AS-34, AS-31: a token for an audience nobody approved."""
    assert_token_error(code.redeem(resource="https://attacker.example/"), "invalid_target")
    assert not AccessToken.objects.filter(
        application=code.client.application, user__isnull=False
    ).exists()


@pytest.mark.parametrize(
    "resource",
    [
        "https://unknown.example/mcp",
        "mcp.example.com",
        "http://127.0.0.1:8000/mcp#x",
        "http://127.0.0.1:8000/mcp?x=1",
    ],
)
def test_as31_resource_not_configured_is_invalid_target(code: Authorized, resource: str) -> None:
    """AS-31: only configured MCP servers are audiences, at /token too."""
    assert_token_error(code.redeem(resource=resource), "invalid_target")


def test_as31_repeated_resource_with_one_bad_value_is_invalid_target(code: Authorized) -> None:
    """AS-31: every repeated `resource` value is checked, not only the last."""
    data = [
        ("grant_type", "authorization_code"),
        ("code", code.code),
        ("client_id", code.client_id),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", code.verifier),
        ("resource", "https://attacker.example/"),
        ("resource", RESOURCE),
    ]
    assert_token_error(post_token(data), "invalid_target")


@pytest.mark.parametrize("resource", ["HTTP://127.0.0.1:8000/mcp", "http://127.0.0.1:8000/mcp/"])
def test_as32_canonical_variant_of_the_granted_resource_is_accepted(
    code: Authorized, resource: str
) -> None:
    """AS-32: the same server named with an uppercase scheme or a trailing slash."""
    body = tokens(code.redeem(resource=resource))
    assert access_token_row(body["access_token"]).resource == [RESOURCE]


def test_as34_dot_gap_no_resource_at_authorize_then_attacker_resource_at_token() -> None:
    """AS-34, AS-35 (DOT 3.4 checks the syntax of resource only): the grant carries the configured resource, so no other."""
    code = authorized(resource=None)
    assert Grant.objects.get(application=code.client.application).resource == [RESOURCE]
    assert_token_error(code.redeem(resource="https://attacker.example/"), "invalid_target")
    body = tokens(code.redeem(resource=None))
    assert access_token_row(body["access_token"]).resource == [RESOURCE]


@pytest.mark.usefixtures("two_resources")
def test_as34_configured_but_not_granted_resource_is_refused() -> None:
    """AS-34: authorized for server A, the code cannot buy a token for server B."""
    code = authorized(resource=RESOURCE)
    response = code.redeem(resource=OTHER_RESOURCE)
    assert response.status_code == 400
    assert json.loads(response.content)["error"] == "invalid_target"
    assert not AccessToken.objects.filter(
        application=code.client.application, user__isnull=False
    ).exists()
    body = tokens(code.redeem(resource=RESOURCE))
    assert access_token_row(body["access_token"]).resource == [RESOURCE]


@pytest.mark.usefixtures("two_resources")
def test_as34_refresh_cannot_widen_the_audience() -> None:
    """AS-34, AS-45, BCP-08: a refresh token stays within the resources of its grant."""
    code = authorized(resource=RESOURCE)
    body = tokens(code.redeem(resource=RESOURCE))
    for resource in (OTHER_RESOURCE, "https://attacker.example/"):
        response = refresh(body["refresh_token"], code.client_id, resource=resource)
        assert response.status_code == 400
        assert json.loads(response.content)["error"] == "invalid_target"
    rotated = tokens(refresh(body["refresh_token"], code.client_id, resource=RESOURCE))
    assert access_token_row(rotated["access_token"]).resource == [RESOURCE]


@pytest.mark.usefixtures("two_resources")
def test_as48_invalid_target_for_a_configured_but_not_granted_resource_is_a_proper_error() -> None:
    """AS-48, AS-34: every /token error is 400 JSON with Cache-Control: no-store."""
    code = authorized(resource=RESOURCE)
    assert_token_error(code.redeem(resource=OTHER_RESOURCE), "invalid_target")


@pytest.mark.usefixtures("two_resources")
def test_as48_invalid_target_on_refresh_is_a_proper_error() -> None:
    """AS-48, AS-34: the same at refresh."""
    code = authorized(resource=RESOURCE)
    body = tokens(code.redeem(resource=RESOURCE))
    assert_token_error(
        refresh(body["refresh_token"], code.client_id, resource=OTHER_RESOURCE), "invalid_target"
    )


# --- AS-44, AS-45 / BCP-08: refresh tokens -----------------------------------------------


def test_as44_refresh_rotates_and_replay_revokes_the_family(issued) -> None:
    """AS-44, BCP-08: RT1 -> RT2; RT1 again -> invalid_grant and RT2 is dead too."""
    code, first = issued
    second = tokens(refresh(first["refresh_token"], code.client_id))
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["token_type"] == "Bearer"
    assert second["scope"] == "items:read"

    assert_token_error(refresh(first["refresh_token"], code.client_id), "invalid_grant")

    assert_token_error(refresh(second["refresh_token"], code.client_id), "invalid_grant")
    row = access_token_row(second["access_token"])
    assert row is None or not row.is_valid()


def reuse_events() -> list[Any]:
    from mcp_consent.models import AuditEvent

    return list(
        AuditEvent.objects.filter(action=AuditEvent.Action.REFRESH_TOKEN_REUSE).values_list(
            "client_id", "subject_user_id"
        )
    )


def test_as44_only_a_rotated_token_of_this_client_is_audited_as_reused(issued) -> None:
    """AS-44's audit names a reuse only when this client presents one of its own rotated
    refresh tokens. A made-up token, or another client's rotated one, is refused with no
    REFRESH_TOKEN_REUSE event: an attacker's junk must not write a reuse (with "family
    revoked") against a real person, nor against a client that did not do it."""
    code, first = issued
    assert tokens(refresh(first["refresh_token"], code.client_id))["refresh_token"]
    other = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    assert_token_error(refresh("made-up-refresh-token", code.client_id), "invalid_grant")
    assert_token_error(
        refresh(first["refresh_token"], other.application.client_id), "invalid_grant"
    )
    assert reuse_events() == []
    assert_token_error(refresh(first["refresh_token"], code.client_id), "invalid_grant")
    person = Consent.objects.get(client=code.client).user_id
    assert reuse_events() == [(code.client_id, person)]


def test_as44_an_orphaned_refresh_token_refreshes_nothing(issued) -> None:
    """AS-44 / AS-46: a live refresh token whose access token was deleted out of band (a
    cleanup) has nothing to refresh against: invalid_grant, no 500 and nothing minted."""
    code, first = issued
    access_token_row(first["access_token"]).delete()
    rows = RefreshToken.objects.count()
    assert_token_error(refresh(first["refresh_token"], code.client_id), "invalid_grant")
    assert RefreshToken.objects.count() == rows
    assert not AccessToken.objects.filter(user__isnull=False).exists()


def test_as44_a_refresh_token_revoked_while_being_rotated_is_not_rotated(
    issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AS-44: the rotation only retires a still-live refresh token. A revocation that got in
    after the token was validated (on SQLite, FOR UPDATE locks nothing) makes the refresh
    invalid_grant: no second family member and no new access token (the error rolls the
    request's transaction back, the simulated revocation with it)."""
    code, first = issued
    original = MCPOAuth2Validator._check_and_set_request_resource

    def revoked_meanwhile(self: Any, request: Any) -> None:
        RefreshToken.objects.filter(token_checksum=checksum(first["refresh_token"])).update(
            revoked=timezone.now()
        )
        original(self, request)

    monkeypatch.setattr(MCPOAuth2Validator, "_check_and_set_request_resource", revoked_meanwhile)
    rows = RefreshToken.objects.count()
    assert_token_error(refresh(first["refresh_token"], code.client_id), "invalid_grant")
    assert RefreshToken.objects.count() == rows
    assert list(AccessToken.objects.filter(user__isnull=False)) == [
        access_token_row(first["access_token"])
    ]


def test_as44_refresh_response_is_not_cached(issued) -> None:
    """AS-42: refresh responses carry tokens too."""
    code, first = issued
    response = refresh(first["refresh_token"], code.client_id)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


def test_sec01_a_consent_past_its_expiry_refreshes_nothing(issued) -> None:
    """SEC-01: expiry holds at the token endpoint by itself (no cleanup has run). The refresh
    grant of a consent past its expires_at is invalid_grant and rotates nothing: a rotation
    would hand out a fresh refresh token each time, so the access would never end. The
    consent is retired on the spot, with its tokens and the upstream grant."""
    code, first = issued
    assert tokens(refresh(first["refresh_token"], code.client_id))  # control: live, it works
    current = RefreshToken.objects.get(application=code.client.application, revoked__isnull=True)
    Consent.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    rows = RefreshToken.objects.count()
    response = refresh(first["refresh_token"], code.client_id)
    assert_token_error(response, "invalid_grant")
    assert RefreshToken.objects.count() == rows  # nothing minted
    current.refresh_from_db()
    assert current.revoked is not None
    assert not AccessToken.objects.filter(user__isnull=False).exists()
    consent = Consent.objects.get()
    assert consent.expired_at is not None
    assert not UpstreamToken.objects.exists()
    assert not DemoHubToken.objects.filter(revoked_at__isnull=True).exists()


def expired_beside_live_consents() -> tuple[Any, Consent, Any, Any]:
    """octocat's consent at a client, just expired; hubot's live one at that client and
    octocat's live one at another: (mine, my consent, theirs, elsewhere)."""
    from tests.mcp_tokens import issue_token

    mine = issue_token(username="octocat")
    my_consent = Consent.objects.get()
    theirs = issue_token(client=mine.client, username="hubot")
    elsewhere = issue_token(username="octocat")
    Consent.objects.filter(pk=my_consent.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    return mine, my_consent, theirs, elsewhere


def test_sec01_no_other_live_consent_keeps_an_expired_one_alive() -> None:
    """SEC-01: a consent's expiry is its own. Another person's live consent at the same
    client, or the same person's live consent at another client, keeps neither the access
    token nor the refresh grant of the expired one alive; theirs keep working."""
    from tests.mcp_tokens import access_token_valid

    mine, _my_consent, theirs, elsewhere = expired_beside_live_consents()
    assert not access_token_valid(mine.access_token)
    assert_token_error(mine.refresh(), "invalid_grant")
    assert access_token_valid(theirs.access_token)
    assert access_token_valid(elsewhere.access_token)
    assert theirs.refresh().status_code == 200
    assert elsewhere.refresh().status_code == 200


def test_sec01_a_refresh_right_after_expiry_is_refused_whatever_else_is_live() -> None:
    """SEC-01 at the token endpoint alone: the first thing after a consent's expiry is its
    client's refresh (no verification ran to retire the consent). Refused and the consent
    retired, although this person has a live consent at another client and another person
    one at this client; theirs keep working."""
    mine, my_consent, theirs, elsewhere = expired_beside_live_consents()
    assert_token_error(mine.refresh(), "invalid_grant")
    my_consent.refresh_from_db()
    assert my_consent.expired_at is not None
    assert theirs.refresh().status_code == 200
    assert elsewhere.refresh().status_code == 200


def test_sec01_a_person_with_two_live_consents_at_one_client_uses_both() -> None:
    """Two consents of one person at one client (CD-04: other scopes, another consent): each
    token verifies and refreshes. The SEC-01 subquery takes the latest expiry of the two, one
    value (on PostgreSQL a subquery of two rows would be an error, not a token refused)."""
    from tests.mcp_tokens import access_token_valid, issue_token

    reader = issue_token(username="octocat", scope="items:read")
    writer = issue_token(client=reader.client, username="octocat", scope="items:write")
    assert Consent.objects.filter(client=reader.client).count() == 2
    assert access_token_valid(reader.access_token)
    assert access_token_valid(writer.access_token)
    assert reader.refresh().status_code == 200
    assert writer.refresh().status_code == 200


def test_as44_a_rotation_retires_only_the_refresh_token_presented() -> None:
    """AS-44: rotating one person's refresh token retires that one: another person's at the
    same client stays live and rotates in turn."""
    from tests.mcp_tokens import issue_token

    mine = issue_token(username="octocat")
    theirs = issue_token(client=mine.client, username="hubot")
    assert mine.refresh().status_code == 200
    assert theirs.refresh().status_code == 200


def test_as41_a_replayed_code_revokes_what_it_bought_not_another_codes() -> None:
    """AS-41: two codes pending at one client (two people). Redeeming the first marks only
    its own transaction as redeemed, so a replay of the second, later, revokes the second's
    tokens and leaves the first's working."""
    from mcp_consent.models import AuthorizationTransaction

    client = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    hubot = Browser()
    hubot.login_upstream("hubot")
    first, second = authorized(client), authorized(client, browser=hubot)
    first_tokens = first.redeem().json()
    octocat = access_token_row(first_tokens["access_token"]).user_id
    pending = AuthorizationTransaction.objects.filter(code_redeemed_at__isnull=True)
    assert list(pending.values_list("user_id", flat=True)) == [
        Consent.objects.exclude(user_id=octocat).get().user_id
    ]
    second_tokens = second.redeem().json()

    assert_token_error(second.redeem(), "invalid_grant")  # the second code, replayed
    assert_token_error(refresh(second_tokens["refresh_token"], first.client_id), "invalid_grant")
    assert refresh(first_tokens["refresh_token"], first.client_id).status_code == 200


def test_as44_a_rotated_refresh_token_records_when_it_was_retired(issued) -> None:
    """AS-44: the rotated row says when it was revoked (``revoked`` and ``updated``, as DOT's
    revoke() leaves it) and no longer points at its access token, which is gone."""
    code, first = issued
    before = RefreshToken.objects.get(token_checksum=checksum(first["refresh_token"]))
    assert refresh(first["refresh_token"], code.client_id).status_code == 200
    after = RefreshToken.objects.get(pk=before.pk)
    assert after.revoked is not None
    assert after.updated == after.revoked
    assert after.updated > before.updated
    assert after.access_token_id is None
    assert not AccessToken.objects.filter(pk=before.access_token_id).exists()


def test_as41_an_unknown_code_revokes_nothing_already_issued() -> None:
    """AS-41: only the replay of a redeemed code revokes what it bought; a made-up code
    sent by the same client is just invalid_grant, and the tokens issued stay live."""
    from tests.mcp_tokens import access_token_valid, issue_token, post_form

    issued = issue_token()
    made_up = post_form(
        "/token/",
        {
            "grant_type": "authorization_code",
            "code": "made-up-code",
            "client_id": issued.client_id,
            "redirect_uri": "https://app.example/cb",
            "code_verifier": "v" * 43,
        },
    )
    assert_token_error(made_up, "invalid_grant")
    assert access_token_valid(issued.access_token)
    assert issued.refresh().status_code == 200


def test_sec01_a_code_of_a_consent_revoked_before_redemption_buys_nothing(code) -> None:
    """The token request checks the consent under its lock (SEC-12): a code redeemed after
    its consent was revoked is invalid_grant."""
    revocation.revoke_consent(Consent.objects.get(), actor=audit.SYSTEM, reason="test")
    assert_token_error(code.redeem(), "invalid_grant")
    assert not AccessToken.objects.filter(user__isnull=False).exists()


def test_as45_refresh_token_is_bound_to_its_client(issued) -> None:
    """AS-45: another client cannot use a stolen refresh token."""
    code, first = issued
    other = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    assert_token_error(
        refresh(first["refresh_token"], other.application.client_id), "invalid_grant"
    )
    assert not AccessToken.objects.filter(
        application=other.application, user__isnull=False
    ).exists()


def test_as45_refresh_cannot_add_scopes(issued) -> None:
    """AS-45, AS-70: a scope the user never approved is invalid_scope."""
    code, first = issued
    assert_token_error(
        refresh(first["refresh_token"], code.client_id, scope="items:read items:write"),
        "invalid_scope",
    )


def test_as45_refresh_with_the_granted_scope_works(issued) -> None:
    """AS-45: a refresh asking the granted scope gets it."""
    code, first = issued
    assert (
        tokens(refresh(first["refresh_token"], code.client_id, scope="items:read"))["scope"]
        == "items:read"
    )


# --- AS-48: grants that do not exist here ------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            {"grant_type": "password", "username": "octocat", "password": "demo"}, id="password"
        ),
        pytest.param({"grant_type": "client_credentials"}, id="client_credentials"),
        pytest.param({"grant_type": "implicit"}, id="implicit"),
    ],
)
def test_as48_unsupported_grant_types(data: dict[str, str]) -> None:
    """AS-48, BCP-07: only the code and refresh grants exist; 400 JSON, no-store."""
    client = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    response = post_token({**data, "client_id": client.application.client_id})
    assert_token_error(response, "unsupported_grant_type")


@pytest.mark.parametrize(
    "extra", [{"device_code": "x"}, {}], ids=["with-device-code", "without-device-code"]
)
def test_as48_device_code_grant_is_unsupported(extra: dict[str, str]) -> None:
    """AS-48: the device grant is not offered, so it is unsupported_grant_type like the others."""
    client = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    data = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "client_id": client.application.client_id,
    }
    response = Client(raise_request_exception=False).post(
        "/token/",
        urlencode({**data, **extra}),
        content_type="application/x-www-form-urlencoded",
        HTTP_HOST=PROXY_HOST,
    )
    assert_token_error(response, "unsupported_grant_type")


def test_as48_missing_grant_type_is_invalid_request() -> None:
    """AS-48: a request without grant_type."""
    client = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    assert_token_error(
        post_token({"client_id": client.application.client_id}),
        "invalid_request",
        "unsupported_grant_type",
    )


# --- TP-05: the upstream token never reaches the MCP client ------------------------------


def upstream_access_tokens(upstream_http: DjangoClientAdapter) -> list[str]:
    """The upstream access tokens the proxy used, read off its calls to the user endpoint."""
    found = []
    for request in upstream_http.requests:
        if request.url and request.url.split("?")[0].endswith("/demo-upstream/user"):
            scheme, _, token = request.headers["Authorization"].partition(" ")
            assert scheme == "Bearer"
            assert token
            found.append(token)
    assert found, "the proxy never called the upstream user endpoint"
    return found


def test_tp05_upstream_token_is_never_returned_to_the_client(
    upstream_http: DjangoClientAdapter,
) -> None:
    """TP-05, UP-07: not in the redirect, the token response, refreshes or error bodies."""
    code = authorized()
    other = authorized()
    responses = [code.redirect, other.redirect]

    good = code.redeem()
    first = tokens(good)
    responses += [
        good,
        code.redeem(),  # replay: invalid_grant
        code.redeem(code_verifier=pkce_pair()[0]),
        post_token({"grant_type": "password", "client_id": code.client_id}),
        refresh(first["refresh_token"], code.client_id),
        refresh(first["refresh_token"], code.client_id),  # rotated away: invalid_grant
        refresh("bogus", other.client_id),
    ]
    other_tokens = other.redeem()
    responses.append(other_tokens)

    secrets = upstream_access_tokens(upstream_http)
    assert len(set(secrets)) == 2
    for response in responses:
        text = response.content.decode() + "".join(f"{k}: {v}" for k, v in response.items())
        for secret in secrets:
            assert secret not in text


# --- REV-01..04: RFC 7009 revocation -----------------------------------------------------


def revoke(token: str, client_id: str, hint: str | None = None) -> HttpResponse:
    data = {"token": token, "client_id": client_id}
    if hint:
        data["token_type_hint"] = hint
    return post_token(data, path="/revoke/")


@pytest.mark.parametrize("hint", [None, "refresh_token", "access_token"])
def test_rev01_rev04_revoking_the_refresh_token_kills_the_grant(issued, hint: str | None) -> None:
    """REV-01, REV-04: refresh token revoked -> it no longer refreshes and its access token is gone."""
    code, body = issued
    response = revoke(body["refresh_token"], code.client_id, hint)
    assert response.status_code == 200

    row = access_token_row(body["access_token"])
    assert row is None or not row.is_valid()
    assert_token_error(refresh(body["refresh_token"], code.client_id), "invalid_grant")


def test_rev01_revoking_the_access_token(issued) -> None:
    """REV-01 (SHOULD for access tokens): the access token stops being valid."""
    code, body = issued
    assert revoke(body["access_token"], code.client_id).status_code == 200
    row = access_token_row(body["access_token"])
    assert row is None or not row.is_valid()


@pytest.mark.parametrize("hint", [None, "refresh_token", "access_token"])
def test_rev03_unknown_token_is_200(hint: str | None) -> None:
    """REV-03: RFC 7009 §2.2 answers 200 for invalid tokens too (no token oracle)."""
    client = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    assert revoke("no-such-token", client.application.client_id, hint).status_code == 200


def revoked_events() -> list[Any]:
    from mcp_consent.models import AuditEvent

    return list(
        AuditEvent.objects.filter(action=AuditEvent.Action.TOKEN_REVOKED).values_list(
            "client_id", "subject_user_id"
        )
    )


def test_rev02_a_revocation_of_no_token_of_this_client_ends_nothing(issued) -> None:
    """UP-09's cascade follows only a token of the revoking client: a made-up token, or
    another client's real one, sent to /revoke/ is answered 200 (REV-03) and records no
    revocation against anyone, nor ends any consent, at either client."""
    code, body = issued
    other = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    assert revoke("made-up-token", code.client_id).status_code == 200
    assert revoke(body["refresh_token"], other.application.client_id).status_code == 200
    assert revoke(body["access_token"], other.application.client_id).status_code == 200
    assert revoked_events() == []
    assert Consent.objects.get(client=code.client).status == Consent.Status.ACTIVE
    assert revoke(body["refresh_token"], code.client_id).status_code == 200
    person = Consent.objects.get(client=code.client).user_id
    assert revoked_events() == [(code.client_id, person)]


def test_rev02_another_client_cannot_revoke_my_token(issued) -> None:
    """REV-02: the token stays valid when a different client asks to revoke it."""
    code, body = issued
    other = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    revoke(body["refresh_token"], other.application.client_id)
    row = access_token_row(body["access_token"])
    assert row is not None
    assert row.is_valid()
    assert tokens(refresh(body["refresh_token"], code.client_id))["access_token"]


# --- AS-01, AS-24, AS-25, AS-46, BCP-09 ------------------------------------------------------


def test_as01_confidential_client_must_authenticate_at_the_token_endpoint() -> None:
    """AS-01 / AS-03: OAuth 2.1 for confidential clients too: the code alone is not enough."""
    client = MCPClientFactory(
        redirect_uris=[REDIRECT_URI], token_endpoint_auth_method="client_secret_basic"
    )
    secret = client.registered.client_secret
    flow = authorized(client)
    for attempt in (flow.redeem(), flow.redeem(client_secret="wrong")):
        assert attempt.status_code == 401
        assert attempt.json()["error"] == "invalid_client"
        assert "no-store" in attempt["Cache-Control"]
    response = flow.redeem(client_secret=secret)
    assert tokens(response)["access_token"]


def test_as24_no_code_can_exist_without_a_challenge() -> None:
    """AS-24 / BCP-05: PKCE is mandatory, so a code_verifier can never meet a code issued without
    a code_challenge: an authorization request without one is refused before any page."""
    client = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    params = authorize_params(client)
    del params["code_challenge"], params["code_challenge_method"]
    response = Browser().authorize(params)
    # SEC-03: an unapproved client's error is our page (a link back carries the error).
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert "error=invalid_request" in response.content.decode()
    assert not get_grant_model().objects.exists()


def test_as25_code_challenge_is_never_returned() -> None:
    """AS-25: the client's challenge does not travel on: not to the upstream (which gets our
    own challenge), not in the redirect to the client, not in the token response."""
    client = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    verifier, challenge = pkce_pair()
    browser = Browser()
    browser.login_upstream()
    page = browser.authorize(authorize_params(client, challenge=challenge))
    to_upstream = browser.post_form(page, "approve")["Location"]
    assert "code_challenge=" in to_upstream
    assert challenge not in to_upstream
    final = browser.get(browser.through_upstream(to_upstream)["Location"])
    assert challenge not in final["Location"]
    body = post_token(
        {
            "grant_type": "authorization_code",
            "code": code_from(final),
            "client_id": client.application.client_id,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        }
    )
    assert body.status_code == 200
    assert challenge not in body.content.decode()


def test_as46_refresh_token_expires_after_its_lifetime(issued) -> None:
    """AS-46 / BCP-08: refresh tokens have a lifetime (REFRESH_TOKEN_EXPIRE_SECONDS)."""
    flow, body = issued
    lifetime = settings.OAUTH2_PROVIDER["REFRESH_TOKEN_EXPIRE_SECONDS"]
    assert lifetime
    assert lifetime <= 60 * 60 * 24 * 90
    old = timezone.now() - timedelta(seconds=lifetime + 3600)
    AccessToken.objects.filter(pk=access_token_row(body["access_token"]).pk).update(
        expires=old, created=old
    )
    RefreshToken.objects.filter(token_checksum=checksum(body["refresh_token"])).update(created=old)
    assert_token_error(refresh(body["refresh_token"], flow.client_id), "invalid_grant")
    # An expired token is not a stolen one: no AS-44 reuse alarm ("family revoked") for it.
    assert reuse_events() == []


def test_bcp09_access_token_is_audience_restricted(issued) -> None:
    """BCP-09 / AS-33 / AS-30: the token is bound to the MCP resource it was requested for."""
    _flow, body = issued
    assert access_token_row(body["access_token"]).resource == [RESOURCE]
