"""upstream_tokens.upstream_session and upstream.UpstreamAPISession: the upstream API with a consent's token.

What a tool author gets (a requests.Session) and what it will not do for them: reach
another host, follow a redirect, send any token but the consent's upstream token, or use
another consent's grant (TP-03, RS-11, UP-08, UP-10, SSRF-01..03).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone

from mcp_consent import audit, resource, upstream, vault
from mcp_consent.flows import revocation
from mcp_consent.flows.upstream_tokens import consent_for, upstream_session
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
    assert len(by_user) == 2 and len(set(by_user.values())) == 2
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
