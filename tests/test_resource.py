"""mcp_consent.resource and the RFC 9728 metadata: what an MCP endpoint accepts, as attackers try.

Every token comes from a real flow (tests/mcp_tokens.py). The endpoint is a Django view
protected by ``require_bearer_token``; the MCP SDK endpoint (tests/test_mcp_sdk.py) goes
through the same ``verify_token``.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.http import HttpRequest, JsonResponse
from django.test import Client, RequestFactory
from django.urls import include
from django.urls import path as route
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from mcp_consent import audit, resource
from mcp_consent.flows import clients
from mcp_consent.models import AuditEvent, Consent, MCPClient, UpstreamToken
from mcp_consent.resource import require_bearer_token
from project.demo_upstream.models import Token as DemoHubToken
from tests.browser_client import PROXY_HOST
from tests.factories import MCPClientFactory
from tests.mcp_tokens import OTHER_RESOURCE, RESOURCE, issue_token, post_form, upstream_tokens_of

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()
PRM_URL = "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"


@require_bearer_token(resource=RESOURCE)
def whoami(request: HttpRequest) -> JsonResponse:
    token = request.mcp_token  # type: ignore[attr-defined]
    return JsonResponse({"sub": token.subject, "client_id": token.client_id})


@require_bearer_token(["items:write"], resource=RESOURCE)
def write_item(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"written": True})


@require_bearer_token(["items:read", "items:write"], resource=RESOURCE)
def move_item(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"moved": True})


@require_bearer_token(["items:read"], resource=RESOURCE)
def read_items(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"items": []})


@require_bearer_token(["items:read"], resource=RESOURCE)
async def read_items_async(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"items": [], "sub": request.mcp_token.subject})  # type: ignore[attr-defined]


# Served by Django's own handler and middleware (pytest.mark.urls): what the decorator promises
# a project's urls.py (docs/mcp-endpoint.md: sync and async views, CSRF- and login-exempt).
# The demo project's URLs stay in place for the flow that issues the tokens.
urlpatterns = [
    route("whoami", whoami),
    route("items-async", read_items_async),
    route("", include("project.urls")),
]


def call(view: Any, authorization: str | None = None, *, path: str = "/mcp", **kwargs: Any) -> Any:
    factory = RequestFactory()
    headers = {"Authorization": authorization} if authorization else {}
    method = kwargs.pop("method", "get")
    request = getattr(factory, method)(path, headers=headers, HTTP_HOST=PROXY_HOST, **kwargs)
    response = view(request)
    if asyncio.iscoroutine(response):
        # As Django's handlers do: from sync code through async_to_sync, so the ORM work
        # runs on this thread (and its test transaction).
        async def wait() -> Any:
            return await response

        response = async_to_sync(wait)()
    return response


def challenge(response: Any) -> dict[str, str]:
    """The auth-params of the single Bearer challenge."""
    header = response["WWW-Authenticate"]
    assert header.startswith("Bearer "), header
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


@pytest.fixture
def issued():
    return issue_token()


# --- RS-04 / RS-05: no token ---------------------------------------------------------------------


def test_rs04_no_token_is_401_with_metadata_and_scope_but_no_error() -> None:
    """RS-04 / RS-05 / RFC 6750 §3.1: where to authorize and for what; no error code."""
    response = call(read_items)
    assert response.status_code == 401
    params = challenge(response)
    assert params == {"resource_metadata": PRM_URL, "scope": "items:read"}
    assert "no-store" in response["Cache-Control"]


def test_rs05_no_token_for_an_operation_without_scopes_asks_for_the_minimal_set(settings) -> None:
    """RS-05 / SM-01: the basic set (PRM_SCOPES), never offline_access (SM-06)."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "PRM_SCOPES": ["items:read", "offline_access"]}
    params = challenge(call(whoami))
    assert params["scope"] == "items:read"
    assert "error" not in params


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Token abc", "bearer", "Bearer "])
def test_rs04_other_schemes_and_empty_bearer_get_no_access(header: str) -> None:
    response = call(whoami, header)
    assert response.status_code == 401
    assert "sub" not in response.content.decode()


# --- Tokens that must not work --------------------------------------------------------------------


def test_rs08_a_token_issued_for_this_resource_works(issued) -> None:
    """RS-08: the baseline: a token from a completed flow opens the endpoint."""
    response = call(whoami, issued.authorization)
    assert response.status_code == 200
    body = json.loads(response.content)
    assert body["client_id"] == issued.client_id
    user = get_user_model().objects.get(upstream_identities__login="octocat")
    assert body["sub"] == str(user.pk)


def test_tp01_an_upstream_token_is_refused(issued) -> None:
    """TP-01: Demo Hub's own access token (the one in our vault) is not our token."""
    upstream_access, upstream_refresh = upstream_tokens_of(issued)
    for token in (upstream_access, upstream_refresh):
        response = call(whoami, f"Bearer {token}")
        assert response.status_code == 401
        assert challenge(response)["error"] == "invalid_token"


def test_tp02_a_token_minted_for_another_resource_is_refused(settings) -> None:
    """TP-02 / BCP-09: same issuer, same user, same client, other audience -> 401."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RESOURCES": [RESOURCE, OTHER_RESOURCE]}
    other = issue_token(resource=OTHER_RESOURCE)
    response = call(whoami, other.authorization)
    assert response.status_code == 401
    params = challenge(response)
    assert params["error"] == "invalid_token"
    # ... while the other server accepts it.
    verified = resource.verify_token(other.access_token, resource=OTHER_RESOURCE)
    assert verified.resource == OTHER_RESOURCE


def test_tp02_a_token_without_any_audience_is_refused(issued) -> None:
    """TP-02: DOT reads an empty resource list as "any audience"; here it means none."""
    AccessToken.objects.filter(token_checksum=resource.checksum(issued.access_token)).update(
        resource=[]
    )
    assert call(whoami, issued.authorization).status_code == 401


def test_rs04_an_expired_token_is_refused(issued) -> None:
    """RS-04: the token's lifetime is over (the clock moved on) -> 401 invalid_token."""
    AccessToken.objects.filter(token_checksum=resource.checksum(issued.access_token)).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    response = call(whoami, issued.authorization)
    assert response.status_code == 401
    assert challenge(response)["error"] == "invalid_token"


def test_rs08_a_revoked_token_is_refused_at_once(issued) -> None:
    """RS-08: the client revokes (RFC 7009); the very next request fails (no caching)."""
    assert call(whoami, issued.authorization).status_code == 200
    response = post_form("/revoke/", {"token": issued.access_token, "client_id": issued.client_id})
    assert response.status_code == 200
    assert call(whoami, issued.authorization).status_code == 401


def test_a_token_refreshed_away_is_refused(issued) -> None:
    """AS-44 meets RS-08: after a refresh the old access token opens nothing."""
    response = post_form(
        "/token/",
        {
            "grant_type": "refresh_token",
            "refresh_token": issued.refresh_token,
            "client_id": issued.client_id,
        },
    )
    assert response.status_code == 200
    assert call(whoami, issued.authorization).status_code == 401
    assert call(whoami, f"Bearer {response.json()['access_token']}").status_code == 200


def test_a_registration_access_token_is_not_an_mcp_token() -> None:
    """RFC 7592 registration tokens are DOT access tokens without a user or audience."""
    client = MCPClientFactory()
    rat = client.registered.registration_access_token  # type: ignore[attr-defined]
    assert rat
    assert call(whoami, f"Bearer {rat}").status_code == 401


def test_a_disabled_clients_token_is_refused(issued) -> None:
    """An operator disables the client: its tokens stop working (fail closed)."""
    clients.disable_client(issued.client, actor=audit.SYSTEM, reason="test")
    assert call(whoami, issued.authorization).status_code == 401


def test_a_client_disabled_with_its_tokens_in_place_is_refused(issued) -> None:
    """The disabled-client check of verification on its own: the flag set with every token
    left in place (a database writer, or a disable whose cascade did not run). The test
    above passes through the cascade too, which deletes the tokens."""
    assert call(whoami, issued.authorization).status_code == 200
    MCPClient.objects.filter(pk=issued.client.pk).update(disabled_at=timezone.now())
    assert AccessToken.objects.filter(token_checksum=resource.checksum(issued.access_token))
    response = call(whoami, issued.authorization)
    assert response.status_code == 401
    assert challenge(response)["error"] == "invalid_token"


def test_sec01_a_token_of_an_expired_consent_is_refused_and_its_grant_retired(issued) -> None:
    """SEC-01: the consent passed its expires_at and no cleanup has run. The access token,
    itself still within its lifetime, is refused at the next request, and that request
    retires the consent: its tokens are revoked and the upstream grant revoked upstream,
    without waiting for the cron."""
    assert call(whoami, issued.authorization).status_code == 200
    Consent.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = call(whoami, issued.authorization)
    assert response.status_code == 401
    assert challenge(response)["error"] == "invalid_token"
    consent = Consent.objects.get()
    assert consent.expired_at is not None
    assert not UpstreamToken.objects.filter(consent=consent).exists()
    assert not DemoHubToken.objects.filter(revoked_at__isnull=True).exists()
    assert not AccessToken.objects.filter(user__isnull=False).exists()
    assert AuditEvent.objects.filter(action=AuditEvent.Action.CONSENT_EXPIRED).count() == 1
    assert call(whoami, issued.authorization).status_code == 401


def test_sec01_introspection_calls_a_token_of_an_expired_consent_inactive(issued) -> None:
    """SEC-01 for separate MCP servers: introspection applies the same expiry, and retires the
    lapsed consent as the MCP endpoint does: its tokens and its upstream grant go at once,
    not at the next cleanup."""
    assert resource.introspect(issued.access_token, resources=[RESOURCE])["active"] is True
    assert Consent.objects.get().expired_at is None  # an active token retires nothing
    Consent.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert resource.introspect(issued.access_token, resources=[RESOURCE]) == {"active": False}
    consent = Consent.objects.get()
    assert consent.expired_at is not None
    assert not UpstreamToken.objects.filter(consent=consent).exists()
    assert not DemoHubToken.objects.filter(revoked_at__isnull=True).exists()
    assert not AccessToken.objects.filter(user__isnull=False).exists()


def test_int02_a_malformed_token_is_inactive_without_a_lookup(django_assert_num_queries) -> None:
    """INT-02: junk (empty, longer than MAX_TOKEN_LENGTH, outside RFC 6750's b64token) is
    exactly ``{"active": false}``, answered without touching the database: a caller's
    garbage costs no query."""
    for raw in ("", "A" * 513, "<script>", "Zm9v%3D", "abc def"):
        with django_assert_num_queries(0):
            assert resource.introspect(raw, resources=[RESOURCE]) == {"active": False}, raw


def test_tp02_as32_the_audience_is_compared_in_canonical_form(issued) -> None:
    """TP-02 / AS-32: a token row whose audience is another spelling of this resource (scheme
    case, trailing slash: a row written by an older version or by hand) names this resource:
    it opens this endpoint and introspects active with the canonical ``aud``, also for a
    caller that spells its resource that way; it opens no other resource."""
    AccessToken.objects.filter(token_checksum=resource.checksum(issued.access_token)).update(
        resource=["HTTP://127.0.0.1:8000/mcp/"]
    )
    assert resource.verify_token(issued.access_token).audiences == (RESOURCE,)
    assert call(whoami, issued.authorization).status_code == 200
    answer = resource.introspect(issued.access_token, resources=["HTTP://127.0.0.1:8000/mcp/"])
    assert answer["active"] is True
    assert answer["aud"] == [RESOURCE]
    assert resource.introspect(issued.access_token, resources=[OTHER_RESOURCE]) == {"active": False}


def test_a_deactivated_users_token_is_refused(issued) -> None:
    get_user_model().objects.filter(upstream_identities__login="octocat").update(is_active=False)
    assert call(whoami, issued.authorization).status_code == 401


@pytest.mark.parametrize(
    "token",
    ["x" * 600, "abc def", "abc\x00", "<script>", "Zm9v%3D"],
    ids=["too-long", "space", "nul", "markup", "percent"],
)
def test_malformed_tokens_are_invalid_token(token: str) -> None:
    response = call(whoami, f"Bearer {token}")
    assert response.status_code == 401
    assert challenge(response)["error"] == "invalid_token"


def test_every_refusal_says_the_same_thing(issued, settings) -> None:
    """An attacker learns nothing from the message about why a value failed."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RESOURCES": [RESOURCE, OTHER_RESOURCE]}
    unknown = call(whoami, "Bearer " + "A" * 30)
    upstream_access, _ = upstream_tokens_of(issued)
    upstream = call(whoami, f"Bearer {upstream_access}")
    assert unknown.content == upstream.content
    assert unknown["WWW-Authenticate"] == upstream["WWW-Authenticate"]


MALFORMED = "The access token is malformed."
MISSING = "The access token is missing."
UNKNOWN = "The access token is invalid, expired or revoked."
FOREIGN = "The access token was not issued for this resource."
LACKING = "The access token lacks scopes this operation needs."
OUTSIDE = "Send the access token in the Authorization header only."


def test_rs04_rs06_rs07_each_refusal_gives_its_status_code_and_description(
    issued, settings
) -> None:
    """RS-04 / RS-06 / RS-07 / RS-09 / TP-02: the whole answer to each kind of refused
    request, at an endpoint of one of two configured resources: the status and error code
    the client acts on, the error_description it shows (in the challenge and the JSON body
    alike), this resource's metadata URL and every scope of the operation. No credentials get
    no error code; an unknown token and an expired one get the same words; a token for the
    other resource is told so; one in the URL is told where it belongs, even next to a good
    header or a form body; a lacking one steps up. None of them reaches the view."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RESOURCES": [RESOURCE, OTHER_RESOURCE]}
    other = issue_token(resource=OTHER_RESOURCE)
    expired = issue_token()
    AccessToken.objects.filter(token_checksum=resource.checksum(expired.access_token)).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    writer = issue_token(scope="items:write")  # covers move_item (items:write implies read)
    form = {"method": "post", "data": "note=1", "content_type": "application/x-www-form-urlencoded"}
    cases: list[tuple[str | None, dict[str, Any], int, str | None, str]] = [
        (None, {}, 401, None, ""),
        ("Basic dXNlcjpwYXNz", {}, 401, None, ""),
        ("Bearer " + "A" * 513, {}, 401, "invalid_token", MALFORMED),  # past MAX_TOKEN_LENGTH
        ("Bearer <script>", {}, 401, "invalid_token", MALFORMED),  # not an RFC 6750 b64token
        ("Bearer Zm9v%3D", {}, 401, "invalid_token", MALFORMED),
        ("Bearer abc def", {}, 401, "invalid_token", MISSING),  # not one token after "Bearer"
        ("Bearer", {}, 401, "invalid_token", MISSING),
        ("Bearer " + "A" * 512, {}, 401, "invalid_token", UNKNOWN),  # the longest looked up
        ("Bearer " + "A" * 30, {}, 401, "invalid_token", UNKNOWN),
        (expired.authorization, {}, 401, "invalid_token", UNKNOWN),
        (other.authorization, {}, 401, "invalid_token", FOREIGN),
        (issued.authorization, {}, 403, "insufficient_scope", LACKING),  # items:read only
        (None, {"path": "/mcp?access_token=abc"}, 400, "invalid_request", OUTSIDE),
        (writer.authorization, {"path": "/mcp?access_token="}, 400, "invalid_request", OUTSIDE),
        (
            writer.authorization,
            {"path": "/mcp?access_token", **form},
            400,
            "invalid_request",
            OUTSIDE,
        ),
    ]
    for authorization, request, status, error, description in cases:
        response = call(move_item, authorization, **request)
        expected = {"error": error, "error_description": description} if error else {}
        assert response.status_code == status, (authorization, request)
        assert challenge(response) == {
            **expected,
            "scope": "items:read items:write",
            "resource_metadata": PRM_URL,
        }, (authorization, request)
        assert json.loads(response.content) == expected
        assert response["Cache-Control"] == "no-store"
    assert call(move_item, writer.authorization, **form).status_code == 200


# --- RS-09 / TP-04: only the Authorization header -------------------------------------------------


def test_rs09_a_token_in_the_query_string_is_refused(issued) -> None:
    """RS-09 / TP-04: ?access_token= is invalid_request, and opens nothing."""
    response = call(whoami, path=f"/mcp?access_token={issued.access_token}")
    assert response.status_code == 400
    assert challenge(response)["error"] == "invalid_request"
    assert issued.client_id not in response.content.decode()


def test_rs09_a_query_token_is_refused_even_next_to_a_valid_header(issued) -> None:
    """RFC 6750 §3.1: more than one method is invalid_request."""
    response = call(whoami, issued.authorization, path=f"/mcp?access_token={issued.access_token}")
    assert response.status_code == 400


def test_rs09_a_token_in_a_form_body_is_refused(issued) -> None:
    response = call(
        whoami,
        method="post",
        data=f"access_token={issued.access_token}",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400
    assert challenge(response)["error"] == "invalid_request"


# --- RS-06 / SM-02 / SM-05: scopes ---------------------------------------------------------------


def test_rs06_insufficient_scope_is_403_naming_what_the_operation_needs(issued) -> None:
    """RS-06 / SM-02: 403 insufficient_scope, scope = the operation's scopes, metadata URL."""
    assert issued.scope == "items:read"
    response = call(write_item, issued.authorization)
    assert response.status_code == 403
    params = challenge(response)
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "items:write"
    assert params["resource_metadata"] == PRM_URL
    assert "written" not in response.content.decode()


def test_sm06_a_challenge_never_asks_for_offline_access() -> None:
    """SM-06: even an operation that lists offline_access among its scopes is challenged for
    the others only: a refresh token is the client's own business (SEP-2207)."""
    with pytest.raises(resource.MissingToken) as refused:
        resource.authenticate(authorization=None, scopes=["items:read", "offline_access"])
    params = dict(re.findall(r'(\w+)="([^"]*)"', refused.value.headers()["WWW-Authenticate"]))
    assert params["scope"] == "items:read"


def test_sm02_one_challenge_names_every_scope_of_the_operation(issued) -> None:
    """SM-02: all scopes of the operation in ONE challenge (also the one already granted)."""
    params = challenge(call(move_item, issued.authorization))
    assert params["scope"].split() == ["items:read", "items:write"]


def test_sm05_a_broader_scope_implies_the_narrower_one() -> None:
    """SM-05: a token for items:write (only) reads too: SCOPE_IMPLIES items:write -> items:read."""
    writer = issue_token(scope="items:write")
    assert writer.scope == "items:write"
    assert call(read_items, writer.authorization).status_code == 200
    assert call(write_item, writer.authorization).status_code == 200


def test_sm05_without_the_hierarchy_the_narrower_scope_is_missing(settings) -> None:
    writer = issue_token(scope="items:write")
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "SCOPE_IMPLIES": {}}
    assert call(read_items, writer.authorization).status_code == 403


def test_sm03_a_reduced_scope_token_works_for_what_it_covers(issued) -> None:
    """SM-03: down-scoped tokens are accepted for operations they cover."""
    assert call(read_items, issued.authorization).status_code == 200


# --- Both kinds of views, one query --------------------------------------------------------------


def test_async_views_are_protected_the_same_way(issued) -> None:
    assert call(read_items_async).status_code == 401
    response = call(read_items_async, issued.authorization)
    assert response.status_code == 200
    assert json.loads(response.content)["sub"]


@pytest.mark.urls(__name__)
def test_rs08_an_async_view_is_served_by_djangos_handler(issued) -> None:
    """RS-08 / RS-04: an async view behind the decorator, routed in a URLconf: the token opens
    it and no token is the 401 challenge. Wrapped as a sync view, Django's handler would get
    an unawaited coroutine back and fail every request with a 500 instead."""
    response = Client().get("/items-async", HTTP_AUTHORIZATION=issued.authorization)
    assert response.status_code == 200
    assert response.json()["sub"] == str(issued.consent.user_id)
    refused = Client().get("/items-async")
    assert refused.status_code == 401
    assert challenge(refused) == {"resource_metadata": PRM_URL, "scope": "items:read"}


@pytest.mark.urls(__name__)
def test_rs08_an_mcp_clients_post_needs_its_token_not_a_csrf_token(issued) -> None:
    """RS-08: MCP clients POST JSON-RPC with a bearer token and no CSRF cookie. With Django's
    CSRF checks enforced, the token opens the view (a 403 CSRF page would lock out every
    client), and a POST without a token still gets the 401 challenge, never the view."""
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        "/whoami", "{}", content_type="application/json", HTTP_AUTHORIZATION=issued.authorization
    )
    assert response.status_code == 200
    assert response.json()["client_id"] == issued.client_id
    refused = client.post("/whoami", "{}", content_type="application/json")
    assert refused.status_code == 401
    assert "resource_metadata" in challenge(refused)


@pytest.mark.urls(__name__)
def test_rs04_login_required_middleware_leaves_the_token_check_to_the_decorator(
    issued, settings
) -> None:
    """RS-04 / RS-02: under Django's LoginRequiredMiddleware an MCP client without a session
    still gets the 401 challenge (where to authorize), not a redirect to a login page it cannot
    follow; with its token it gets the view."""
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "django.contrib.auth.middleware.LoginRequiredMiddleware",
    ]
    refused = Client().get("/whoami")
    assert refused.status_code == 401
    assert challenge(refused)["resource_metadata"] == PRM_URL
    response = Client().get("/whoami", HTTP_AUTHORIZATION=issued.authorization)
    assert response.status_code == 200


def test_the_hot_path_is_one_query(issued, django_assert_num_queries) -> None:
    """One query by token checksum (application, MCP client and user joined in)."""
    with django_assert_num_queries(1):
        verified = resource.verify_token(issued.access_token, scopes=["items:read"])
    assert verified.client_id == issued.client_id


def test_a_refused_token_costs_the_same_one_query(issued, django_assert_num_queries) -> None:
    """RS-08: refusing a token whose consent is still live (here the token itself expired)
    is the same one query: only a lapsed consent (SEC-01) is worth more work."""
    AccessToken.objects.filter(token_checksum=resource.checksum(issued.access_token)).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    with django_assert_num_queries(1), pytest.raises(resource.InvalidToken):
        resource.verify_token(issued.access_token)


def test_rs11_the_verified_token_is_the_token_rows_own(issued) -> None:
    """RS-11 / INT-03: everything the MCP server derives later (the consent's upstream grant,
    the SDK's principal, its expiry) comes from the VerifiedToken, whose every field is the
    verified token row's own, never a default or another token's."""
    row = AccessToken.objects.get(token_checksum=resource.checksum(issued.access_token))
    verified = resource.verify_token(issued.access_token, scopes=["items:read"])
    assert verified == resource.VerifiedToken(
        token_id=row.pk,
        client_id=issued.client_id,
        application_id=row.application_id,
        user_id=row.user_id,
        scopes=frozenset({"items:read"}),
        audiences=(RESOURCE,),
        resource=RESOURCE,
        issued_at=row.created,
        expires_at=row.expires,
        issuer="http://127.0.0.1:8000",
    )
    assert verified.subject == str(issued.consent.user_id)


def test_rs04_a_token_is_refused_from_the_instant_it_expires(issued, monkeypatch) -> None:
    """RS-04 / RS-08: a token works until its expiry instant and not at it (RFC 7519 ``exp``:
    "on or after which" it must not be accepted): no request is served at ``expires``."""
    row = AccessToken.objects.get(token_checksum=resource.checksum(issued.access_token))
    monkeypatch.setattr(timezone, "now", lambda: row.expires - timedelta(microseconds=1))
    assert call(whoami, issued.authorization).status_code == 200
    monkeypatch.setattr(timezone, "now", lambda: row.expires)
    response = call(whoami, issued.authorization)
    assert response.status_code == 401
    assert challenge(response)["error_description"] == UNKNOWN


def test_a_misconfigured_endpoint_fails_loudly_with_what_to_fix(issued, settings) -> None:
    """TP-02: an endpoint whose ``resource=`` is not an absolute http(s) URI, or that names
    none while several RESOURCES are configured, raises for its developer with what to fix;
    it never guesses which resource it is (a guess would take another server's tokens)."""
    verify = partial(resource.verify_token, issued.access_token)
    authenticate = partial(resource.authenticate, authorization=issued.authorization)
    for bad in ("mcp", "ftp://127.0.0.1:8000/mcp"):
        for check in (verify, authenticate):
            with pytest.raises(ValueError) as refused:
                check(resource=bad)
            assert str(refused.value) == "resource must be an absolute http(s) URI"
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RESOURCES": [RESOURCE, OTHER_RESOURCE]}
    for check in (verify, authenticate):
        with pytest.raises(ValueError) as refused:
            check()
        assert str(refused.value) == (
            "several MCP_CONSENT['RESOURCES'] are configured: pass resource= to say which "
            "one this endpoint is"
        )


def test_the_plain_function_for_other_frameworks(issued) -> None:
    """``authenticate`` gives any framework the token or the complete HTTP answer."""
    verified = resource.authenticate(authorization=issued.authorization, scopes=["items:read"])
    assert verified.resource == RESOURCE
    assert verified.issuer == "http://127.0.0.1:8000"
    with pytest.raises(resource.InsufficientScope) as refused:
        resource.authenticate(authorization=issued.authorization, scopes=["items:write"])
    assert refused.value.status == 403
    assert 'error="insufficient_scope"' in refused.value.headers()["WWW-Authenticate"]
    assert list(refused.value.headers()) == ["WWW-Authenticate", "Cache-Control"]
    assert refused.value.headers()["Cache-Control"] == "no-store"
    assert refused.value.body() == {"error": "insufficient_scope", "error_description": LACKING}
    assert str(refused.value) == LACKING  # what a framework's log shows
    with pytest.raises(resource.InvalidRequest):
        resource.authenticate(
            authorization=issued.authorization, query_string=f"access_token={issued.access_token}"
        )


def test_the_async_function_for_other_frameworks(issued) -> None:
    """RS-08 / RS-06: ``aauthenticate`` from async code gives the same answers as
    ``authenticate``: the VerifiedToken for a token that covers the operation, the 403
    step-up for one that does not. Its ORM work runs thread-sensitively, on the thread of
    the request's other sync work (here: the test's transaction, where the token is)."""

    async def verify(scopes: list[str]) -> resource.VerifiedToken:
        return await resource.aauthenticate(authorization=issued.authorization, scopes=scopes)

    verified = async_to_sync(verify)(["items:read"])
    assert isinstance(verified, resource.VerifiedToken)
    assert verified.client_id == issued.client_id
    assert verified.resource == RESOURCE
    with pytest.raises(resource.InsufficientScope):
        async_to_sync(verify)(["items:write"])


def test_release_connections_ends_a_worker_threads_obsolete_connection_only(monkeypatch) -> None:
    """The MCP SDK's verifier and tools do their ORM work in worker threads that fire no
    request_finished: ``release_connections`` ends such a thread's connection once it is
    obsolete (its CONN_MAX_AGE is over), as Django's request end does, and never a
    connection inside an atomic block (the caller's transaction; here the test's)."""
    closed: list[str] = []

    def release_in_a_worker() -> None:
        worker = connections["default"]  # this thread's own connection
        worker.ensure_connection()
        worker.close_at = 0  # obsolete
        real_close = worker.close
        worker.close = lambda: closed.append("worker")  # type: ignore[method-assign]
        try:
            resource.release_connections()
        finally:
            del worker.close  # the instance attribute: the class's close again
            real_close()  # no connection left behind for the test database's teardown

    thread = threading.Thread(target=release_in_a_worker)
    thread.start()
    thread.join()
    assert closed == ["worker"]
    monkeypatch.setattr(connection, "close_at", 0)
    monkeypatch.setattr(connection, "close", lambda: closed.append("the test's transaction"))
    resource.release_connections()
    assert closed == ["worker"]


def test_sm05_a_verified_token_allows_what_its_scopes_cover(settings) -> None:
    """RS-06 / SM-05: ``VerifiedToken.allows`` (a tool's own check) says yes to the granted
    scope and to what it implies, and no to anything beyond it, alone or next to a granted one."""
    writer = resource.verify_token(issue_token(scope="items:write").access_token)
    assert writer.allows([]) is True
    assert writer.allows(["items:write"]) is True
    assert writer.allows(["items:read", "items:write"]) is True  # implied (SCOPE_IMPLIES)
    assert writer.allows(["items:admin"]) is False
    assert writer.allows(["items:read", "items:admin"]) is False
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "SCOPE_IMPLIES": {}}
    assert writer.allows(["items:read"]) is False


# --- RFC 9728 protected resource metadata ---------------------------------------------------------


def prm(path: str, host: str = PROXY_HOST) -> Any:
    return Client().get(path, HTTP_HOST=host)


def test_rs01_rs03_metadata_at_the_path_inserted_well_known_url() -> None:
    """RS-01 / RS-03: resource is exactly the canonical URI; the issuer; header only."""
    response = prm("/.well-known/oauth-protected-resource/mcp")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert data["resource"] == RESOURCE  # byte for byte
    assert data["authorization_servers"] == ["http://127.0.0.1:8000"]
    assert data["bearer_methods_supported"] == ["header"]
    metadata = Client().get("/.well-known/oauth-authorization-server", HTTP_HOST=PROXY_HOST).json()
    assert data["authorization_servers"][0] == metadata["issuer"]


def test_rs02_metadata_at_the_root_well_known_url_too() -> None:
    """RS-02: clients fall back to the root; it describes the one resource on this origin."""
    assert prm("/.well-known/oauth-protected-resource").json()["resource"] == RESOURCE


def test_rs02_the_challenge_points_at_a_document_about_this_resource() -> None:
    """RS-02 / RS-03: following resource_metadata gives `resource` = what the client asked."""
    url = challenge(call(whoami))["resource_metadata"]
    assert url == PRM_URL
    assert prm(url.removeprefix("http://127.0.0.1:8000")).json()["resource"] == RESOURCE


def test_rs02_a_resource_at_an_origin_root_points_at_the_root_metadata(settings) -> None:
    """RS-02 / RFC 9728 §3.1: a resource without a path has its metadata at the root
    well-known URL itself, with nothing inserted after it."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RESOURCES": ["http://127.0.0.1:8000"]}
    with pytest.raises(resource.MissingToken) as refused:
        resource.authenticate(authorization=None)
    params = dict(re.findall(r'(\w+)="([^"]*)"', refused.value.headers()["WWW-Authenticate"]))
    root = "http://127.0.0.1:8000/.well-known/oauth-protected-resource"
    assert params["resource_metadata"] == root
    # RFC 9728 §3.1: the slash that ends such an identifier is removed before inserting.
    assert resource.metadata_url("http://127.0.0.1:8000/") == root


def test_sm01_sm06_scopes_supported_is_minimal_and_never_offline_access(settings) -> None:
    """SM-01: the basic set only (not DOT's whole catalogue); SM-06: no offline_access."""
    assert prm("/.well-known/oauth-protected-resource/mcp").json()["scopes_supported"] == [
        "items:read"
    ]
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "PRM_SCOPES": ["items:read", "offline_access"]}
    scopes = prm("/.well-known/oauth-protected-resource/mcp").json()["scopes_supported"]
    assert scopes == ["items:read"]


def test_rs03_no_metadata_for_what_is_not_a_configured_resource() -> None:
    """RS-03: a document's `resource` must be the URL it was fetched for: unknown -> 404."""
    for path in (
        "/.well-known/oauth-protected-resource/other",
        "/.well-known/oauth-protected-resource/mcp/x",
    ):
        assert prm(path).status_code == 404
    # the same path on another allowed host names another resource: not ours
    assert (
        prm("/.well-known/oauth-protected-resource/mcp", host="localhost:8001").status_code == 404
    )


def test_rs02_several_resources_each_have_their_document_and_the_root_is_not_a_guess(
    settings,
) -> None:
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RESOURCES": [RESOURCE, OTHER_RESOURCE]}
    assert (
        prm("/.well-known/oauth-protected-resource/other-mcp").json()["resource"] == OTHER_RESOURCE
    )
    assert prm("/.well-known/oauth-protected-resource/mcp").json()["resource"] == RESOURCE
    assert prm("/.well-known/oauth-protected-resource").status_code == 404
