"""upstream_tokens.upstream_session and upstream.UpstreamAPISession: the upstream API with a consent's token.

What a tool author gets (a requests.Session) and what it will not do for them: reach
another host, follow a redirect, send any token but the consent's upstream token, or use
another consent's grant (TP-03, RS-11, UP-08, UP-10, SSRF-01..03).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
import requests
from asgiref.sync import async_to_sync
from django.utils import timezone
from mcp.server.mcpserver.exceptions import ToolError

from mcp_consent import audit, resource, upstream, vault
from mcp_consent.flows import revocation
from mcp_consent.flows.upstream_tokens import consent_for, upstream_session
from mcp_consent.integrations import mcp_sdk
from mcp_consent.models import Consent, UpstreamToken
from project.demo_upstream.models import Token as DemoHubToken
from tests.factories import MCPClientFactory
from tests.mcp_tokens import (
    OTHER_RESOURCE,
    REDIRECT_URI,
    RESOURCE,
    issue_token,
    upstream_tokens_of,
)
from tests.upstream_fakes import UPSTREAM_ORIGIN

pytestmark = pytest.mark.django_db

API = f"{UPSTREAM_ORIGIN}/demo-upstream/"


@pytest.fixture
def issued():
    return issue_token()


def verified(issued: Any) -> resource.VerifiedToken:
    return resource.verify_token(issued.access_token)


class Answer(requests.adapters.BaseAdapter):
    """A fixed answer for one URL prefix, recording what reached it."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self.status, self.headers, self.seen = status, headers or {}, []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.seen.append(request)
        response = requests.Response()
        response.status_code = self.status
        response.headers.update(self.headers)
        response._content = b"{}"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def mount():
    session = upstream.http_session()
    mounted: list[str] = []

    def do(prefix: str, adapter: requests.adapters.BaseAdapter) -> None:
        session.mount(prefix, adapter)
        mounted.append(prefix)

    yield do
    for prefix in mounted:
        session.adapters.pop(prefix, None)


# --- UP-10 / SSRF: only the configured API -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/user",
        "//evil.example/user",
        "http://localhost:8001/admin/",  # same host, outside the API base
        "/admin/",
        "../admin/",
        "api/%2e%2e/%2e%2e/admin/",
        "api%2Fitems",
        "api\\..\\admin",
        "http://user:pass@localhost:8001/demo-upstream/user",
        "user#fragment",
    ],
)
def test_up10_urls_outside_the_api_are_refused_before_any_connection(
    issued, upstream_http, url
) -> None:
    upstream_http.requests.clear()
    with upstream_session(verified(issued)) as api, pytest.raises(upstream.UpstreamError):
        api.get(url)
    assert upstream_http.requests == []


def test_up10_paths_under_the_api_base_work(issued) -> None:
    with upstream_session(verified(issued)) as api:
        assert api.get("user").json()["login"] == "octocat"
        assert api.get(f"{API}api/items").status_code == 200


def test_ssrf03_redirects_are_never_followed(issued, mount) -> None:
    """SSRF-03: a redirect would carry the token to its target; it is returned, not followed."""
    elsewhere = Answer(200)
    mount(f"{API}api/moved", Answer(302, {"Location": "http://169.254.169.254/latest/"}))
    mount("http://169.254.169.254/", elsewhere)
    with upstream_session(verified(issued)) as api:
        response = api.get("api/moved")
    assert response.status_code == 302
    assert elsewhere.seen == []


# --- TP-03: exactly the consent's upstream token ------------------------------------------------------


def test_tp03_a_callers_authorization_header_is_replaced(issued, upstream_http) -> None:
    upstream_access, _ = upstream_tokens_of(issued)
    upstream_http.requests.clear()
    with upstream_session(verified(issued)) as api:
        api.get("user", headers={"Authorization": issued.authorization, "Cookie": "a=b"})
    (sent,) = upstream_http.requests
    assert sent.headers["Authorization"] == f"Bearer {upstream_access}"
    assert "Cookie" not in sent.headers


def test_rs11_the_grant_used_is_the_one_of_this_tokens_client() -> None:
    """RS-11: one person, two clients, two consents: each token uses its own client's grant."""
    first = issue_token()
    second = issue_token(
        client=MCPClientFactory(redirect_uris=[REDIRECT_URI]), browser=first.browser
    )
    tokens = {
        issued.client_id: vault.upstream_access_token(
            UpstreamToken.objects.get(consent__client=issued.client)
        )
        for issued in (first, second)
    }
    assert len(set(tokens.values())) == 2
    for issued in (first, second):
        consent = consent_for(verified(issued))
        assert consent is not None
        assert consent.client == issued.client
        assert vault.upstream_access_token(consent.upstream_token) == tokens[issued.client_id]


def test_rs11_two_people_of_one_client_each_reach_only_their_own_upstream_grant() -> None:
    """RS-11, TP-03 (the confused deputy at the MCP server): two people approve the same
    client; each one's MCP token must reach that person's upstream grant and never the other
    one's, whichever of the two consents was used last. Fails when the consent is looked up
    by client and resource without the token's user."""
    first = issue_token(username="octocat")
    client = first.client
    second = issue_token(client=client, username="hubot")
    by_user = {
        consent.user_id: vault.upstream_access_token(consent.upstream_token)
        for consent in Consent.objects.select_related("upstream_token").filter(client=client)
    }
    assert len(by_user) == 2
    assert len(set(by_user.values())) == 2
    for issued in (first, second, first):
        token = verified(issued)
        consent = consent_for(token)
        assert consent is not None
        assert consent.user_id == token.user_id
        assert vault.upstream_access_token(consent.upstream_token) == by_user[token.user_id]
        Consent.objects.filter(pk=consent.pk).update(last_used_at=timezone.now())


def test_a_revoked_consent_gives_no_upstream_session(issued) -> None:
    """The consent behind the token is gone: only a new authorization helps (RS-11)."""
    consent = Consent.objects.get()
    token = verified(issued)  # verified before the revocation cascaded
    revocation.revoke_consent(consent, actor=audit.SYSTEM, reason="test")
    with pytest.raises(upstream.UpstreamAuthorizationRequired):
        upstream_session(token)


def test_an_expired_consent_gives_no_upstream_session(issued) -> None:
    """SEC-01: a token verified just before its consent expired reaches no upstream grant."""
    token = verified(issued)  # verified before the expiry (afterwards verification refuses)
    Consent.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(upstream.UpstreamAuthorizationRequired):
        upstream_session(token)


def test_a_token_whose_scopes_its_consent_does_not_cover_reaches_no_upstream_grant() -> None:
    """RS-11: the upstream grant is handed out only for a consent that covers every scope of
    the token. The consent narrowed to items:read (as a database writer would narrow it) no
    longer speaks for a token of items:read items:write; the control case first."""
    issued = issue_token(scope="items:read items:write")
    token = verified(issued)
    assert consent_for(token) is not None
    Consent.objects.update(scopes="items:read")
    assert consent_for(token) is None
    with pytest.raises(upstream.UpstreamAuthorizationRequired):
        upstream_session(token)


def test_sec13_a_token_for_two_resources_reaches_its_upstream_grant_at_each(settings) -> None:
    """SEC-13: a token minted for two MCP servers (the consent records "A B") finds its
    upstream grant at both of them. Compared as one string, neither matched: the client got
    401 at every call and looped through re-authorisation."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RESOURCES": [RESOURCE, OTHER_RESOURCE]}
    issued = issue_token(resource=[RESOURCE, OTHER_RESOURCE])
    assert Consent.objects.get().resource.split() == [RESOURCE, OTHER_RESOURCE]
    for at in (RESOURCE, OTHER_RESOURCE):
        token = resource.verify_token(issued.access_token, resource=at)
        consent = consent_for(token)
        assert consent is not None, at
        assert consent.client == issued.client
        with upstream_session(token) as api:
            assert api.get("user").json()["login"] == "octocat"


def test_sec13_a_consent_for_other_resources_is_not_this_ones(settings) -> None:
    """SEC-13, the other side: the resource is matched as a whole item of the list, so a
    consent for ".../mcp-other" or ".../mcp/x" never serves a token verified for ".../mcp"."""
    issued = issue_token()
    token = verified(issued)
    for stored in (f"{RESOURCE}-other", f"{RESOURCE}/x", f"{OTHER_RESOURCE} {RESOURCE}x"):
        Consent.objects.update(resource=stored)
        assert consent_for(token) is None, stored
    Consent.objects.update(resource=f"{OTHER_RESOURCE} {RESOURCE}")
    assert consent_for(token) is not None


# --- UP-08 / RS-11: refresh ---------------------------------------------------------------------------


def test_up08_an_expired_upstream_token_without_refresh_token_needs_authorization(issued) -> None:
    UpstreamToken.objects.update(
        expires_at=timezone.now() - timedelta(seconds=1), refresh_token_encrypted=""
    )
    with pytest.raises(upstream.UpstreamAuthorizationRequired):
        upstream_session(verified(issued))


def test_rs11_a_refused_refresh_needs_authorization(issued) -> None:
    DemoHubToken.objects.update(revoked_at=timezone.now())
    with upstream_session(verified(issued)) as api:
        with pytest.raises(upstream.UpstreamAuthorizationRequired):
            api.get("user")


def test_rs11_a_token_endpoint_outage_is_not_a_reauthorization(issued, mount) -> None:
    """An outage (5xx) stays UpstreamError: retry later, do not send the user through consent."""
    DemoHubToken.objects.update(access_expires_at=timezone.now() - timedelta(seconds=1))
    mount(f"{API}login/oauth/access_token", Answer(503))
    with upstream_session(verified(issued)) as api:
        with pytest.raises(upstream.UpstreamError) as failure:
            api.get("user")
    assert not isinstance(failure.value, upstream.UpstreamAuthorizationRequired)


def test_rs11_still_401_after_a_refresh_needs_authorization(issued, mount) -> None:
    mount(f"{API}user", Answer(401))
    with upstream_session(verified(issued)) as api:
        with pytest.raises(upstream.UpstreamAuthorizationRequired):
            api.get("user")


def test_closing_a_session_keeps_the_process_wide_pool(issued) -> None:
    with upstream_session(verified(issued)) as api:
        api.get("user")
    with upstream_session(verified(issued)) as api:
        assert api.get("user").status_code == 200
    assert upstream.http_session().adapters


# --- RS-11: which consent's grant, of several ---------------------------------------------------------


def sent_upstream(upstream_http: Any, token: resource.VerifiedToken) -> str:
    """The upstream access token that one API call with ``token`` carried to the upstream."""
    upstream_http.requests.clear()
    with upstream_session(token) as api:
        assert api.get("user").status_code == 200
    (sent,) = upstream_http.requests
    return str(sent.headers["Authorization"]).removeprefix("Bearer ")


def test_rs11_of_one_persons_consents_at_one_client_the_last_used_one_is_used(
    upstream_http,
) -> None:
    """RS-11: one person approved one client twice, for different scopes: two live consents,
    each with its own upstream grant, and both cover an items:read token. The grant used is
    the one of the consent last used for an authorization; of two used at the same time the
    one granted last; of two granted at the same instant the one made last; a consent never
    used comes after a used one. Must not allow the grant to depend on the order the database
    happens to return the rows in, nor a never-used consent to win over the one in use."""
    first = issue_token(scope="items:read")
    issue_token(client=first.client, browser=first.browser, scope="items:read items:write")
    older, newer = Consent.objects.filter(client=first.client).order_by("pk")
    grant = {c.pk: vault.upstream_access_token(c.upstream_token) for c in (older, newer)}
    assert len(set(grant.values())) == 2
    token = verified(first)
    assert token.scopes == {"items:read"}
    now = timezone.now()
    earlier = now - timedelta(hours=1)

    def arrange(consent: Consent, *, last_used_at: Any, granted_at: Any) -> None:
        Consent.objects.filter(pk=consent.pk).update(
            last_used_at=last_used_at, granted_at=granted_at
        )

    # used last, though granted first
    arrange(older, last_used_at=now, granted_at=earlier)
    arrange(newer, last_used_at=earlier, granted_at=now)
    assert sent_upstream(upstream_http, token) == grant[older.pk]
    # used at the same time: the one granted last, though made first
    arrange(older, last_used_at=now, granted_at=now)
    arrange(newer, last_used_at=now, granted_at=earlier)
    assert sent_upstream(upstream_http, token) == grant[older.pk]
    # used and granted at the same instant: the one made last
    arrange(older, last_used_at=now, granted_at=now)
    arrange(newer, last_used_at=now, granted_at=now)
    assert sent_upstream(upstream_http, token) == grant[newer.pk]
    # never used (no last_used_at) comes after one in use, whatever the database's NULL order
    arrange(older, last_used_at=now, granted_at=earlier)
    arrange(newer, last_used_at=None, granted_at=now)
    assert sent_upstream(upstream_http, token) == grant[older.pk]


def test_rs11_a_covering_consent_is_found_behind_any_number_of_narrower_ones(
    upstream_http,
) -> None:
    """RS-11: a person who approved one client for items:read items:write, then 25 times
    more narrowly (other redirect URIs or requests of the client, each its own live consent,
    each used since), still reaches the grant of the one consent that covers the token. Must
    not allow a cap on the consents looked at to lock the person out of the client for good
    (a reconnect only adds another consent); the narrower grants are never handed out."""
    issued = issue_token(scope="items:read items:write")
    covering = Consent.objects.select_related("upstream_token").get()
    grant = vault.upstream_access_token(covering.upstream_token)
    token = verified(issued)
    now = timezone.now()
    for n in range(25):
        narrower = Consent.objects.get(pk=covering.pk)
        narrower.pk = None
        narrower.scopes = "items:read"
        narrower.redirect_uri = f"https://app.example/cb{n}"
        narrower.last_used_at = now
        narrower.save()
        row = UpstreamToken.objects.get(consent=covering)
        row.pk, row.consent = None, narrower
        row.access_token_encrypted = vault.encrypt(
            f"narrower-{n}", vault.upstream_token_context(narrower.pk, "access")
        )
        row.save()
    Consent.objects.filter(pk=covering.pk).update(last_used_at=now - timedelta(days=1))
    consent = consent_for(token)
    assert consent is not None
    assert consent.pk == covering.pk
    assert sent_upstream(upstream_http, token) == grant


def test_rs11_a_live_consent_without_its_upstream_token_is_passed_over(upstream_http) -> None:
    """RS-11: a live consent whose upstream token row is gone (deleted by a project's code or
    by hand in the database) has no grant to lend: another live consent of the person and
    client that has one is used, though the first was used last; with none left, only a new
    authorization helps. Must not allow a crash (a 500 instead of the 401 that makes the
    client reconnect) nor a call without an upstream token."""
    first = issue_token(scope="items:read")
    issue_token(client=first.client, browser=first.browser, scope="items:read items:write")
    kept, emptied = Consent.objects.filter(client=first.client).order_by("pk")
    grant = vault.upstream_access_token(kept.upstream_token)
    now = timezone.now()
    Consent.objects.filter(pk=kept.pk).update(last_used_at=now - timedelta(hours=1))
    Consent.objects.filter(pk=emptied.pk).update(last_used_at=now)
    UpstreamToken.objects.filter(consent=emptied).delete()
    token = verified(first)
    assert sent_upstream(upstream_http, token) == grant
    UpstreamToken.objects.all().delete()
    upstream_http.requests.clear()
    with pytest.raises(upstream.UpstreamAuthorizationRequired):
        upstream_session(token)
    assert upstream_http.requests == []


# --- RS-11: why a client must reconnect, for the operator ---------------------------------------------


def no_live_consent(issued: Any, mount: Any) -> None:
    revocation.revoke_consent(Consent.objects.get(), actor=audit.SYSTEM, reason="test")


def expired_without_refresh_token(issued: Any, mount: Any) -> None:
    UpstreamToken.objects.update(
        expires_at=timezone.now() - timedelta(seconds=1), refresh_token_encrypted=""
    )


def rejected_without_refresh_token(issued: Any, mount: Any) -> None:
    UpstreamToken.objects.update(refresh_token_encrypted="")
    mount(f"{API}user", Answer(401))


def refresh_refused(issued: Any, mount: Any) -> None:
    DemoHubToken.objects.update(revoked_at=timezone.now())  # "Revoke access" at Demo Hub


def still_401(issued: Any, mount: Any) -> None:
    mount(f"{API}user", Answer(401))


@pytest.mark.parametrize(
    ("situation", "reason"),
    [
        (no_live_consent, "no live consent with an upstream grant"),
        (expired_without_refresh_token, "the upstream grant has no refresh token"),
        (rejected_without_refresh_token, "the upstream grant has no refresh token"),
        (refresh_refused, "token endpoint refused the refresh token: HTTP 400 invalid_grant"),
        (still_401, "the upstream API refused the refreshed token"),
    ],
)
def test_rs11_the_operator_is_told_why_a_client_must_reconnect(
    issued, mount, caplog, situation, reason
) -> None:
    """RS-11: when only a new authorization helps, the tool fails with "connect this app
    again" and the operator's log says which client and why: no live consent, no refresh
    token, the upstream's refusal of the refresh (its error code, never its body), or a 401
    even after a refresh. Must not allow a reason-less line that leaves the operator guessing
    why a client keeps reconnecting."""
    token = verified(issued)
    situation(issued, mount)
    with caplog.at_level(logging.INFO, logger="mcp_consent"):
        with pytest.raises(ToolError, match="connect this app again"):
            async_to_sync(mcp_sdk.call_upstream)(token, lambda api: api.get("user"))
    (line,) = [r for r in caplog.records if r.name == "mcp_consent.integrations.mcp_sdk"]
    assert (line.levelno, line.getMessage()) == (
        logging.INFO,
        f"upstream grant of client {issued.client_id} needs a new authorization: {reason}",
    )


# --- UP-08: refreshed before it expires, around the margin -------------------------------------------

MARGIN = timedelta(seconds=60)  # upstream_tokens.REFRESH_MARGIN


def paths(adapter: Any) -> list[str]:
    """The upstream paths called, in order."""
    return [(r.url or "").removeprefix(API) for r in adapter.requests]


@pytest.mark.parametrize(
    ("expires_in", "refresh_token", "expected"),
    [
        (None, True, "used as stored"),  # a grant that never expires (GitHub's OAuth apps)
        (MARGIN + timedelta(microseconds=1), True, "used as stored"),
        (MARGIN, True, "refreshed first"),
        (timedelta(seconds=30), True, "refreshed first"),
        (timedelta(0), True, "refreshed first"),
        (timedelta(seconds=30), False, "used as stored"),  # still valid, nothing to refresh with
        (timedelta(0), False, "reconnect"),
        (timedelta(seconds=-1), False, "reconnect"),
    ],
    ids=[
        "never-expires",
        "just-outside-the-margin",
        "at-the-margin",
        "within-the-margin",
        "at-expiry",
        "within-the-margin-no-refresh-token",
        "at-expiry-no-refresh-token",
        "expired-no-refresh-token",
    ],
)
def test_up08_an_upstream_token_is_refreshed_from_the_margin_before_its_expiry(
    issued, upstream_http, monkeypatch, expires_in, refresh_token, expected
) -> None:
    """UP-08: from 60 seconds before its expiry (that instant included) the stored upstream
    token is refreshed server-side before the call; at its expiry instant it is expired
    (as a consent is: live only while expires_at is later than now), so one without a refresh
    token needs a new authorization. Must not allow a stale or expired token to be sent to the
    upstream when it can be refreshed, an expired one to be sent at all, a refresh the
    token does not need yet, nor a crash on a token that never expires."""
    stored, _ = upstream_tokens_of(issued)
    token = verified(issued)
    now = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: now)  # the instant stands still
    UpstreamToken.objects.update(
        expires_at=None if expires_in is None else now + expires_in,
        **({} if refresh_token else {"refresh_token_encrypted": ""}),
    )
    upstream_http.requests.clear()
    if expected == "reconnect":
        with pytest.raises(upstream.UpstreamAuthorizationRequired):
            with upstream_session(token) as api:
                api.get("user")
        assert upstream_http.requests == []
        return
    with upstream_session(token) as api:
        assert api.get("user").status_code == 200
    (current, _) = upstream_tokens_of(issued)
    *_, call = upstream_http.requests
    assert call.headers["Authorization"] == f"Bearer {current}"
    if expected == "refreshed first":
        assert paths(upstream_http) == ["login/oauth/access_token", "user"]
        assert current != stored
    else:
        assert paths(upstream_http) == ["user"]
        assert current == stored
