"""The upstream leg: state, browser binding, single use, expiry, upstream failures (CD-40..48, UP-*)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.contrib.auth import SESSION_KEY
from django.utils import timezone

from mcp_consent import audit, upstream, vault
from mcp_consent.adapter import DefaultConsentAdapter
from mcp_consent.app_settings import app_settings
from mcp_consent.flows import authorization, clients, revocation
from mcp_consent.models import (
    AuditEvent,
    AuthorizationTransaction,
    Consent,
    RegistrationSource,
    UpstreamIdentity,
    UpstreamToken,
)
from mcp_consent.registration import clean_client_metadata
from mcp_consent.views.common import BINDING_SALT
from project.demo_upstream.models import RequestLog, Token
from tests.browser_client import Browser, assert_styled, authorize_params, query_of, shown
from tests.factories import MCPClientFactory
from tests.upstream_fakes import issued_by_upstream, revocations_at_upstream

pytestmark = pytest.mark.django_db

UPSTREAM_AUTHORIZE = "http://localhost:8001/demo-upstream/login/oauth/authorize"


@pytest.fixture
def client_a():
    return MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])


def approved(browser: Browser, client) -> str:
    """Approve on our page; returns the upstream authorize URL (with the upstream state)."""
    page = browser.authorize(authorize_params(client))
    return browser.post_form(page, "approve")["Location"]


def upstream_callback(browser: Browser, client) -> str:
    """Approve and pass the upstream; returns the callback URL the upstream redirected to."""
    browser.login_upstream()
    return browser.through_upstream(approved(browser, client))["Location"]


def exchanges() -> int:
    return RequestLog.objects.filter(path__endswith="/login/oauth/access_token").count()


def test_success_redirects_to_client_with_code_state_iss_and_logs_user_in(client_a) -> None:
    """UP-02..05, AS-52, MU-01: the callback resumes the stored request and logs the user in."""
    browser = Browser()
    callback = upstream_callback(browser, client_a)
    assert callback.startswith("http://127.0.0.1:8000/upstream/callback/?")
    session_before = (
        browser.client.cookies["__Host-sessionid"].value
        if "__Host-sessionid" in browser.client.cookies
        else None
    )
    final = browser.get(callback)
    assert final.status_code == 302
    query = query_of(final["Location"])
    assert final["Location"].startswith("https://app.example/cb?")
    assert query["state"] == ["client-state-123"]
    assert query["iss"] == ["http://127.0.0.1:8000"]
    assert len(query["code"][0]) >= 20
    # Logged in with a fresh session (session fixation).
    assert browser.client.session[SESSION_KEY]
    assert browser.client.cookies["__Host-sessionid"].value != session_before
    identity = UpstreamIdentity.objects.get()
    assert identity.login == "octocat"
    consent = Consent.objects.get()
    assert (consent.user, consent.client, consent.redirect_uri) == (
        identity.user,
        client_a,
        "https://app.example/cb",
    )
    assert consent.scopes == "items:read"
    assert consent.upstream_scopes == "read:user repo:read"
    tx = AuthorizationTransaction.objects.get()
    assert tx.outcome == "completed"
    assert tx.consumed_at is not None


def test_upstream_token_is_encrypted_at_rest(client_a, upstream_http) -> None:
    """UP-07 / AS-47: the upstream tokens are stored encrypted, never in clear."""
    browser = Browser()
    browser.get(upstream_callback(browser, client_a))
    sent = [r for r in upstream_http.requests if r.url.endswith("/demo-upstream/user")]
    upstream_access_token = sent[-1].headers["Authorization"].split()[1]
    row = UpstreamToken.objects.get()
    assert upstream_access_token not in row.access_token_encrypted
    assert vault.upstream_access_token(row) == upstream_access_token
    assert row.refresh_token_encrypted
    assert vault.upstream_refresh_token(row)


def test_callback_state_from_another_browser_is_refused(client_a) -> None:
    """CD-43 / CD-47: a callback URL replayed in another browser (login CSRF) is refused."""
    attacker = Browser()
    callback = upstream_callback(attacker, client_a)
    victim = Browser()
    before = exchanges()
    response = victim.get(callback)
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert exchanges() == before  # no code exchange with the upstream
    assert response["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(
    "query", [{}, {"code": "x"}, {"code": "x", "state": ""}, {"code": "x", "state": "forged-state"}]
)
def test_missing_or_unknown_state_is_refused(client_a, query) -> None:
    """CD-44 / CD-47: no pending state, no exchange, no redirect."""
    browser = Browser()
    before = exchanges()
    response = browser.get(f"/upstream/callback/?{urlencode(query)}")
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert exchanges() == before


def test_tampered_binding_cookie_is_refused(client_a) -> None:
    """CD-22: a cookie with one byte changed counts as absent."""
    browser = Browser()
    callback = upstream_callback(browser, client_a)
    cookie = browser.client.cookies["__Host-mcp_consent_tx"]
    value = cookie.value
    cookie.set(cookie.key, value[:-1] + ("A" if value[-1] != "A" else "B"), cookie.coded_value)
    browser.client.cookies[cookie.key] = value[:-1] + ("A" if value[-1] != "A" else "B")
    before = exchanges()
    assert browser.get(callback).status_code == 400
    assert exchanges() == before


def test_cd22_binding_cookie_older_than_the_ttl_is_refused(client_a) -> None:
    """CD-22: the binding cookie's own signed age counts (max_age), not only the row's expiry.

    The transaction is still live here; only the cookie is older than TRANSACTION_TTL. A
    control with the same nonce signed now completes, so the refusal is the cookie's age.
    """
    from django.core import signing
    from django.http import HttpRequest, HttpResponse

    from mcp_consent.app_settings import app_settings

    browser = Browser()
    callback = upstream_callback(browser, client_a)
    name = app_settings.TRANSACTION_COOKIE_NAME
    seen = HttpRequest()
    seen.COOKIES[name] = browser.client.cookies[name].value
    nonce = seen.get_signed_cookie(name, salt=BINDING_SALT)

    def signed(*, age: int) -> str:
        """The same nonce in a cookie signed ``age`` seconds ago, as the proxy signs it."""
        real = signing.TimestampSigner.timestamp
        signing.TimestampSigner.timestamp = lambda self: signing.b62_encode(  # type: ignore[method-assign]
            int(time.time()) - age
        )
        try:
            response = HttpResponse()
            response.set_signed_cookie(name, nonce, salt=BINDING_SALT)
        finally:
            signing.TimestampSigner.timestamp = real  # type: ignore[method-assign]
        return response.cookies[name].value

    AuthorizationTransaction.objects.update(expires_at=timezone.now() + timedelta(hours=1))
    browser.client.cookies[name] = signed(age=app_settings.TRANSACTION_TTL + 5)
    before = exchanges()
    assert browser.get(callback).status_code == 400
    assert exchanges() == before
    browser.client.cookies[name] = signed(age=0)  # control: the same nonce, signed now
    assert browser.get(callback).status_code == 302


def test_replayed_callback_is_refused(client_a) -> None:
    """CD-45: the state is single use."""
    browser = Browser()
    callback = upstream_callback(browser, client_a)
    assert browser.get(callback).status_code == 302
    before = exchanges()
    again = browser.get(callback)
    assert again.status_code == 400
    assert not again.has_header("Location")
    assert exchanges() == before


def test_callback_after_ten_minutes_is_refused(client_a) -> None:
    """CD-46: the pending transaction expires 10 minutes after approval."""
    browser = Browser()
    callback = upstream_callback(browser, client_a)
    tx = AuthorizationTransaction.objects.get()
    assert tx.expires_at - tx.created_at == timedelta(minutes=10)
    AuthorizationTransaction.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    before = exchanges()
    assert browser.get(callback).status_code == 400
    assert exchanges() == before
    expired = AuthorizationTransaction.objects.get()
    # Used up and failed, with the reason, in the row and in the audit trail.
    assert (expired.failure_reason, expired.outcome) == ("expired", "failed")
    assert expired.consumed_at is not None
    refused = AuditEvent.objects.get(action=AuditEvent.Action.CALLBACK_REFUSED)
    assert refused.details["reason"] == "state expired"


def test_cd46_a_callback_at_the_expiry_instant_is_refused(client_a, monkeypatch) -> None:
    """CD-46: the transaction lives until its expires_at, that instant excluded."""
    browser = Browser()
    callback = upstream_callback(browser, client_a)
    tx = AuthorizationTransaction.objects.get()
    monkeypatch.setattr(authorization.timezone, "now", lambda: tx.expires_at)
    assert browser.get(callback).status_code == 400
    assert AuthorizationTransaction.objects.get().failure_reason == "expired"


def test_second_claim_of_one_state_fails(client_a) -> None:
    """CD-45: consume_transaction claims with a conditional UPDATE; a second claim fails.

    (Parallel claims on PostgreSQL are exercised by the concurrency tests.)
    """
    from django.http import HttpRequest

    browser = Browser()
    location = approved(browser, client_a)
    state = query_of(location)["state"][0]
    request = HttpRequest()
    request.COOKIES = {
        "__Host-mcp_consent_tx": browser.client.cookies["__Host-mcp_consent_tx"].value
    }
    binding = request.get_signed_cookie(
        "__Host-mcp_consent_tx", salt="mcp_consent.upstream-binding"
    )
    assert authorization.consume_transaction(state, binding, request).consumed_at is not None
    with pytest.raises(authorization.CallbackRefused, match="^state already used$"):
        authorization.consume_transaction(state, binding, request)
    refused = AuditEvent.objects.filter(action=AuditEvent.Action.CALLBACK_REFUSED).last()
    assert refused is not None
    assert refused.details["reason"] == "state already used"


def test_cd45_a_callback_claims_its_own_transaction_only(client_a) -> None:
    """CD-45, CD-46: three people are at the upstream at once. One comes back after the ten
    minutes, one in time; the third still completes: each callback claims, expires or fails
    only its own transaction. Must not allow one callback to use up or expire the pending
    transactions of others (everyone else's sign-in would then fail as "already used")."""
    browsers = {name: Browser() for name in ("late", "first", "third")}
    callbacks = {}
    for name, browser in browsers.items():
        browser.login_upstream("hubot" if name == "third" else "octocat")
        callbacks[name] = browser.through_upstream(approved(browser, client_a))["Location"]
    late = AuthorizationTransaction.objects.order_by("pk").first()
    assert late is not None
    AuthorizationTransaction.objects.filter(pk=late.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert browsers["late"].get(callbacks["late"]).status_code == 400
    for name in ("first", "third"):
        landed = browsers[name].get(callbacks[name])
        assert landed.status_code == 302, (name, landed.content[:300])
        assert "code" in query_of(landed["Location"]), name
    outcomes = dict(
        AuthorizationTransaction.objects.order_by("pk").values_list("pk", "failure_reason")
    )
    assert outcomes[late.pk] == "expired"
    assert [reason for pk, reason in outcomes.items() if pk != late.pk] == ["", ""]


def test_state_is_only_ever_stored_hashed(client_a) -> None:
    """CD-40 / CD-41: 256-bit random state; the database holds only its hash."""
    browser = Browser()
    location = approved(browser, client_a)
    state = query_of(location)["state"][0]
    assert len(state) >= 43
    tx = AuthorizationTransaction.objects.get()
    assert state not in tx.state_hash
    assert len(tx.state_hash) == 64


def sent_to_the_token_endpoint(upstream_http) -> dict[str, list[str]]:
    exchange = [r for r in upstream_http.requests if r.url.endswith("/login/oauth/access_token")]
    assert len(exchange) == 1
    body = exchange[0].body
    return parse_qs(body.decode() if isinstance(body, bytes) else body)


def test_up01_cd40_a_256_bit_state_and_a_384_bit_pkce_verifier_go_upstream(
    client_a, upstream_http
) -> None:
    """CD-40: the upstream state is 32 random bytes (43 characters). UP-01: the upstream leg
    uses PKCE S256 with 48 random bytes (64 characters, inside RFC 7636's 43..128); the
    challenge that went upstream is the verifier's, and the verifier goes only to the token
    endpoint."""
    browser = Browser()
    browser.login_upstream()
    to_upstream = approved(browser, client_a)
    sent = query_of(to_upstream)
    assert len(sent["state"][0]) == 43
    assert sent["code_challenge_method"] == ["S256"]
    browser.get(browser.through_upstream(to_upstream)["Location"])
    verifier = sent_to_the_token_endpoint(upstream_http)["code_verifier"][0]
    assert len(verifier) == 64
    assert sent["code_challenge"] == [upstream.pkce_challenge(verifier)]


def test_up01_an_upstream_without_pkce_gets_no_challenge_and_no_verifier(
    client_a, upstream_http, settings
) -> None:
    """UP-01: with PKCE off (a provider that refuses it), neither the challenge nor any
    verifier is sent; the flow still completes."""
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "UPSTREAM": {**settings.MCP_CONSENT["UPSTREAM"], "PKCE": False},
    }
    browser = Browser()
    browser.login_upstream()
    to_upstream = approved(browser, client_a)
    assert "code_challenge" not in query_of(to_upstream)
    final = browser.get(browser.through_upstream(to_upstream)["Location"])
    assert "code" in query_of(final["Location"])
    assert "code_verifier" not in sent_to_the_token_endpoint(upstream_http)


def test_callback_uses_only_stored_values(client_a) -> None:
    """CD-48: parameters added to the callback cannot redirect the code elsewhere."""
    browser = Browser()
    callback = upstream_callback(browser, client_a)
    evil = callback + "&redirect_uri=https%3A%2F%2Fattacker.example%2Fcb&client_id=other&state=zzz"
    response = browser.get(evil)
    # The duplicated state makes Django's GET.get take the last value: refused, or if it
    # were accepted, the redirect would still go to the stored redirect URI.
    if response.status_code == 302:
        assert response["Location"].startswith("https://app.example/cb?")
    else:
        assert response.status_code == 400
    assert "attacker.example" not in response.get("Location", "")


def test_upstream_denial_returns_access_denied_to_client(client_a) -> None:
    """UP-06: cancel at the upstream -> access_denied with the client's state and iss."""
    browser = Browser()
    browser.login_upstream()
    to_upstream = approved(browser, client_a)
    callback = browser.through_upstream(to_upstream, decision="cancel")["Location"]
    final = browser.get(callback)
    query = query_of(final["Location"])
    assert final["Location"].startswith("https://app.example/cb?")
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["client-state-123"]
    assert query["iss"] == ["http://127.0.0.1:8000"]
    assert "code" not in query
    assert "denied the request" not in final["Location"]  # the upstream's own text is not relayed
    assert not Consent.objects.exists()


EVIL = "Your session expired: sign in again at https://evil.example/login"
EVIL_URI = "https://evil.example/help"


def test_up06_a_declined_sign_in_reaches_the_client_in_our_words_only(client_a) -> None:
    """UP-06: cancelled at the upstream, whose answer carries its own (here an attacker's)
    error_description and error_uri: the client gets exactly access_denied, our fixed
    description, its state and our iss; none of the upstream's words, no code. The
    transaction is denied with its reason, audited as this browser's request."""
    browser = Browser()
    browser.login_upstream()
    callback = browser.through_upstream(approved(browser, client_a), decision="cancel")["Location"]
    assert "error=access_denied" in callback
    parts = urlsplit(callback)
    query = {**parse_qs(parts.query), "error_description": [EVIL], "error_uri": [EVIL_URI]}
    tampered = f"{parts.path}?{urlencode(query, doseq=True)}"
    final = browser.get(tampered, **{"User-Agent": "Browser/1.0"})
    assert final["Location"].startswith("https://app.example/cb?")
    assert query_of(final["Location"]) == {
        "error": ["access_denied"],
        "error_description": ["Authorization was declined at the provider."],
        "state": ["client-state-123"],
        "iss": ["http://127.0.0.1:8000"],
    }
    tx = AuthorizationTransaction.objects.get()
    assert (tx.outcome, tx.failure_reason) == ("denied", "upstream returned an error")
    event = refusal_event(client_a)
    assert event.details == {
        "reason": "upstream returned an error",
        "outcome": "denied",
        "correlation_id": tx.pk,
    }
    assert (event.actor_type, event.ip_address, event.user_agent) == (
        "anonymous",
        "127.0.0.1",
        "Browser/1.0",
    )


def test_upstream_iss_mismatch_aborts(client_a) -> None:
    """MU-03 / UP-04: a response carrying another issuer is refused before any exchange."""
    browser = Browser()
    callback = upstream_callback(browser, client_a).replace(
        "iss=", "iss=https%3A%2F%2Fevil.example&old_iss="
    )
    before = exchanges()
    response = browser.get(callback)
    assert response.status_code == 400
    assert exchanges() == before
    assert not Consent.objects.exists()


def test_upstream_response_without_required_iss_aborts(client_a) -> None:
    """MU-03: an upstream configured to send `iss` (REQUIRE_ISS) must send it."""
    browser = Browser()
    callback = upstream_callback(browser, client_a).replace("iss=", "was_iss=")
    before = exchanges()
    assert browser.get(callback).status_code == 400
    assert exchanges() == before
    assert AuthorizationTransaction.objects.get().outcome == "failed"


def test_upstream_token_endpoint_failure_leaves_nothing_half_written(
    client_a, upstream_http, settings
) -> None:
    """UP-06 / faults: upstream refuses the code -> server_error at the client, no grant rows."""
    from oauth2_provider.models import get_grant_model

    browser = Browser()
    callback = upstream_callback(browser, client_a)
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "UPSTREAM": {**settings.MCP_CONSENT["UPSTREAM"], "CLIENT_SECRET": "wrong-secret"},
    }
    final = browser.get(callback)
    query = query_of(final["Location"])
    assert query["error"] == ["server_error"]
    assert query["state"] == ["client-state-123"]
    assert not Consent.objects.exists()
    assert not UpstreamToken.objects.exists()
    assert not get_grant_model().objects.exists()
    assert AuthorizationTransaction.objects.get().outcome == "failed"


def test_as53_no_code_before_the_user_is_authenticated(client_a) -> None:
    """AS-53 / BCP-02: approving on our page yields no code; only the callback after the
    upstream authenticated the user redirects to the client with one."""
    browser = Browser()
    page = browser.authorize(authorize_params(client_a))
    to_upstream = browser.post_form(page, "approve")
    assert to_upstream["Location"].startswith("http://localhost:8001/")
    assert "code=" not in to_upstream["Location"].split("?", 1)[0]
    assert not Consent.objects.exists()


def test_bcp03_state_is_one_time_and_bound_to_the_user_agent(client_a) -> None:
    """BCP-03 (RFC 9700 §4.7.1): our upstream state is single use and bound to this browser;
    see the replay and other-browser tests above for the refusals."""
    browser = Browser()
    first = query_of(approved(browser, client_a))["state"][0]
    second = query_of(approved(browser, client_a))["state"][0]
    assert first != second
    assert AuthorizationTransaction.objects.values("binding_hash").distinct().count() == 1


def test_bcp04_mix_up_defence_uses_the_upstream_issuer(client_a) -> None:
    """BCP-04 / MU-03: the callback compares `iss` with the configured upstream issuer."""
    browser = Browser()
    callback = upstream_callback(browser, client_a)
    assert query_of(callback)["iss"] == [settings_upstream_issuer()]
    assert browser.get(callback).status_code == 302


def settings_upstream_issuer() -> str:
    from django.conf import settings

    return settings.MCP_CONSENT["UPSTREAM"]["ISSUER"]


@pytest.fixture
def remembering(settings):
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "REMEMBER_CONSENT": True}


def test_cd03_consent_lives_server_side_and_cookies_cannot_forge_it(client_a, remembering) -> None:
    """CD-03: consent is a server-side record; copying or forging cookies grants nothing.

    The victim's browser-binding cookie, copied into another browser, does not make the
    remembered-consent path skip the page there (it needs the victim's session).
    """
    victim = Browser()
    victim.login_upstream()
    victim.run_flow(authorize_params(client_a))
    thief = Browser()
    thief.client.cookies["__Host-mcp_consent_tx"] = victim.client.cookies[
        "__Host-mcp_consent_tx"
    ].value
    thief.client.cookies["__Host-sessionid"] = "forged-session-value"
    page = thief.authorize(authorize_params(client_a), **{"Sec-Fetch-Site": "none"})
    assert page.status_code == 200
    assert "Approve" in page.content.decode()

    # Control: the same request with the victim's real session (the server-side record it
    # points to) does skip the page, so the refusal above is the missing session, nothing else.
    thief.client.cookies["__Host-sessionid"] = victim.client.cookies["__Host-sessionid"].value
    skipped = thief.authorize(authorize_params(client_a), **{"Sec-Fetch-Site": "none"})
    assert skipped.status_code == 302
    assert skipped["Location"].startswith(UPSTREAM_AUTHORIZE + "?")
    # ... and once the server-side consent is revoked, even the real session skips nothing.
    revocation.revoke_consents(list(Consent.objects.all()), actor=audit.SYSTEM, reason="test")
    again = thief.authorize(authorize_params(client_a), **{"Sec-Fetch-Site": "none"})
    assert again.status_code == 200
    assert "Approve" in again.content.decode()


def test_cd06_cleared_cookies_show_the_page_again(client_a, remembering) -> None:
    """CD-06: with remembering on, a browser without the user's session gets the page."""
    browser = Browser()
    browser.login_upstream()
    browser.run_flow(authorize_params(client_a))
    remembered = browser.authorize(authorize_params(client_a), **{"Sec-Fetch-Site": "none"})
    assert remembered.status_code == 302  # straight upstream: the user is known here
    browser.client.cookies.clear()
    page = browser.authorize(authorize_params(client_a), **{"Sec-Fetch-Site": "none"})
    assert page.status_code == 200
    assert "Approve" in page.content.decode()


# --- SEC-04 / CD-01: a remembered consent is used only for the person who gave it -------------


def live_upstream_tokens(login: str) -> int:
    return Token.objects.filter(account__login=login, revoked_at__isnull=True).count()


def test_sec04_remembered_consent_of_a_is_never_granted_to_b(client_a, remembering) -> None:
    """SEC-04, CD-01 (one browser, two people): A's remembered consent skipped the page, the
    upstream then signed in B. No consent for B, no code to the client, B's new upstream
    tokens revoked, and a page saying why."""
    browser = Browser()
    browser.login_upstream("octocat")
    assert browser.run_flow(authorize_params(client_a))["Location"].startswith(
        "https://app.example/cb?code="
    )
    browser.login_upstream("hubot")  # same browser, another account at the upstream
    skipped = browser.authorize(authorize_params(client_a), **{"Sec-Fetch-Site": "none"})
    assert skipped.status_code == 302, "the remembered consent of octocat skipped the page"
    callback = browser.through_upstream(skipped["Location"])["Location"]
    refused = browser.get(callback)

    assert refused.status_code == 403
    assert not refused.has_header("Location")
    assert "another account" in refused.content.decode()
    hubot = UpstreamIdentity.objects.filter(login="hubot").first()
    assert hubot is None or not Consent.objects.filter(user=hubot.user).exists()
    assert Consent.objects.count() == 1  # octocat's, nothing else
    assert Token.objects.filter(account__login="hubot").count() == 1  # issued to us ...
    assert live_upstream_tokens("hubot") == 0  # ... and revoked at the upstream, not left live
    tx = AuthorizationTransaction.objects.latest("pk")
    assert (tx.outcome, tx.failure_reason) == ("failed", "remembered consent of another person")
    assert tx.code_hash == ""


def test_sec04_the_same_person_still_completes_with_a_remembered_consent(
    client_a, remembering
) -> None:
    """SEC-04 control: the person whose consent was remembered gets their code."""
    browser = Browser()
    browser.login_upstream("octocat")
    browser.run_flow(authorize_params(client_a))
    skipped = browser.authorize(authorize_params(client_a), **{"Sec-Fetch-Site": "none"})
    assert skipped.status_code == 302
    final = browser.get(browser.through_upstream(skipped["Location"])["Location"])
    assert final.status_code == 302
    assert query_of(final["Location"])["code"]


def test_sec04_an_explicit_approval_completes_for_whoever_signs_in(client_a, remembering) -> None:
    """SEC-04 boundary: a person who pressed Approve on the page approved for themselves,
    whichever upstream account they then use (the page was shown, nothing was skipped)."""
    browser = Browser()
    browser.login_upstream("octocat")
    browser.run_flow(authorize_params(client_a))
    browser.login_upstream("hubot")
    page = browser.authorize(authorize_params(client_a))  # no fetch metadata: the page
    assert page.status_code == 200
    final = browser.get(
        browser.through_upstream(browser.post_form(page, "approve")["Location"])["Location"]
    )
    assert final.status_code == 302
    assert query_of(final["Location"])["code"]
    assert Consent.objects.filter(user__upstream_identities__login="hubot").count() == 1


# --- SEC-05: a client disabled or changed while the person is at the upstream -----------------


def disable(client) -> None:
    clients.disable_client(client, actor=audit.SYSTEM, reason="test")


def add_redirect_uri(client) -> None:
    clients.update_client(
        client,
        clean_client_metadata(
            {
                "client_name": "Acme Agent",
                "redirect_uris": ["https://app.example/cb", "https://app.example/other"],
                "token_endpoint_auth_method": "none",
            },
            RegistrationSource.DCR,
        ),
    )


def rename(client) -> None:
    clients.update_client(
        client,
        clean_client_metadata(
            {
                "client_name": "Totally Different",
                "redirect_uris": ["https://app.example/cb"],
                "token_endpoint_auth_method": "none",
            },
            RegistrationSource.DCR,
        ),
    )


CHANGES = {"disabled": disable, "redirect-uri-added": add_redirect_uri, "renamed": rename}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_sec05_client_changed_before_the_callback_gets_a_clear_page(client_a, change) -> None:
    """SEC-05: changed while the person was at the upstream: 409 page, no exchange, no code."""
    browser = Browser()
    callback = upstream_callback(browser, client_a)
    CHANGES[change](client_a)
    before = exchanges()
    response = browser.get(callback)
    assert response.status_code == 409
    assert not response.has_header("Location")
    assert "changed or was disabled" in response.content.decode()
    assert exchanges() == before  # the upstream code was never redeemed
    assert not Consent.objects.exists()
    assert not UpstreamToken.objects.exists()
    tx = AuthorizationTransaction.objects.get()
    assert tx.outcome == "failed"
    # The operator reads in the transaction and the audit trail what changed (SEC-05).
    # The operator reads in the transaction and the audit trail what changed (SEC-05). A
    # disabled client is refused by DOT's own re-validation first.
    reason = "authorization request no longer valid" if change == "disabled" else CHANGED
    assert tx.failure_reason == reason
    refused = AuditEvent.objects.get(action=AuditEvent.Action.CALLBACK_REFUSED)
    assert refused.details["reason"] == reason


CHANGED = "client metadata changed during the upstream sign-in"


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_sec05_client_changed_during_the_upstream_exchange_revokes_the_new_tokens(
    client_a, change, monkeypatch
) -> None:
    """SEC-05: changed while we were redeeming the upstream code (after the first check): no
    500, a 409 page, no consent, no code, and the upstream grant just obtained revoked."""
    from mcp_consent import upstream

    browser = Browser()
    callback = upstream_callback(browser, client_a)
    real_exchange = upstream.exchange_code

    def exchange_then_change(code: str, verifier: str | None) -> dict:
        tokens = real_exchange(code, verifier)
        CHANGES[change](client_a)  # an operator or the client, while the exchange ran
        return tokens

    monkeypatch.setattr(upstream, "exchange_code", exchange_then_change)
    response = browser.get(callback)
    assert response.status_code == 409
    assert not response.has_header("Location")
    assert "changed or was disabled" in response.content.decode()
    assert not Consent.objects.exists()
    assert not UpstreamToken.objects.exists()
    assert Token.objects.filter(account__login="octocat").count() == 1  # it was issued ...
    assert live_upstream_tokens("octocat") == 0  # ... and revoked at the upstream
    tx = AuthorizationTransaction.objects.get()
    assert tx.outcome == "failed"
    assert tx.code_hash == ""
    # Found under the client's lock, after the exchange: the reason says which change.
    reason = "client disabled during the upstream sign-in" if change == "disabled" else CHANGED
    assert tx.failure_reason == reason


# --- what a refused grant shows, revokes and audits (SEC-04, SEC-05, UP-09) ------------------


def refusal_event(client) -> Any:
    return AuditEvent.objects.filter(
        action=AuditEvent.Action.CALLBACK_REFUSED, client_id=client.application.client_id
    ).get()


def test_sec04_the_other_account_reads_why_and_both_its_upstream_tokens_are_revoked(
    client_a, remembering, upstream_http
) -> None:
    """SEC-04, UP-09: the person the upstream signed in instead of the one who approved
    before reads, in a 403 page rendered for their request, that another account signed
    in and nothing was shared. The upstream is asked to revoke both tokens it issued for
    that account (refresh and access token, never only one left live), and the refusal is
    audited as this browser's (its signed-in person, address and user agent), not as a
    system event: no code, no page without the account, no grant half-revoked."""
    browser = Browser()
    browser.login_upstream("octocat")
    browser.run_flow(authorize_params(client_a))
    octocat = UpstreamIdentity.objects.get(login="octocat").user
    browser.login_upstream("hubot")
    skipped = browser.authorize(authorize_params(client_a), **{"Sec-Fetch-Site": "none"})
    callback = browser.through_upstream(skipped["Location"])["Location"]
    refused = browser.get(callback, **{"User-Agent": "Browser/1.0"})

    assert refused.status_code == 403
    assert shown(refused) == {
        "title": "This sign-in cannot be completed",
        "heading": "This sign-in cannot be completed",
        "message": "You signed in at Demo Hub with another account than the one that approved "
        "this application before. Nothing was shared with the application. Start again from "
        "your application to review its request.",
    }
    assert_styled(refused)
    assert revocations_at_upstream(upstream_http) == issued_by_upstream("hubot")
    event = refusal_event(client_a)
    assert (event.actor_type, event.actor_user_id) == ("user", octocat.pk)
    assert (event.ip_address, event.user_agent) == ("127.0.0.1", "Browser/1.0")
    assert event.details["reason"] == "remembered consent of another person"
    assert event.details["outcome"] == "failed"


def test_sec05_a_client_changed_during_the_exchange_is_told_on_a_409_page_and_both_tokens_revoked(
    client_a, monkeypatch, upstream_http
) -> None:
    """SEC-05, UP-09: a client disabled while we redeemed the upstream code: the person reads,
    in a 409 page rendered for their request, that the application changed or was disabled
    and nothing was shared; the upstream is asked to revoke both tokens it just issued; the
    refusal is audited with this browser's address and user agent (an anonymous person),
    not as a system event."""
    from mcp_consent import upstream

    browser = Browser()
    callback = upstream_callback(browser, client_a)
    real_exchange = upstream.exchange_code

    def exchange_then_disable(code: str, verifier: str | None) -> dict:
        tokens = real_exchange(code, verifier)
        disable(client_a)
        return tokens

    monkeypatch.setattr(upstream, "exchange_code", exchange_then_disable)
    refused = browser.get(callback, **{"User-Agent": "Browser/1.0"})

    assert refused.status_code == 409
    assert shown(refused) == {
        "title": "This sign-in cannot be completed",
        "heading": "This sign-in cannot be completed",
        "message": "The application's registration changed or was disabled while you were "
        "signing in. Nothing was shared with it.",
    }
    assert_styled(refused)
    assert revocations_at_upstream(upstream_http) == issued_by_upstream("octocat")
    event = refusal_event(client_a)
    assert (event.actor_type, event.actor_user_id) == ("anonymous", None)
    assert (event.ip_address, event.user_agent) == ("127.0.0.1", "Browser/1.0")
    assert event.details["reason"] == "client disabled during the upstream sign-in"


def test_sec05_a_redirect_uri_removed_during_the_exchange_of_an_older_transaction_is_refused(
    client_a, monkeypatch, upstream_http
) -> None:
    """SEC-05, UP-09: a transaction that carries no client metadata version (started before
    the proxy kept one) passes the version check; the approved redirect URI removed while we
    redeemed the upstream code is then caught where DOT mints the code. No code is sent
    anywhere, no 500: the person reads the 409 page (rendered for the request), both new
    upstream tokens are revoked, and the transaction fails with that reason, audited."""
    from mcp_consent import upstream

    browser = Browser()
    callback = upstream_callback(browser, client_a)
    AuthorizationTransaction.objects.update(client_metadata_version=None)
    real_exchange = upstream.exchange_code

    def exchange_then_move(code: str, verifier: str | None) -> dict:
        tokens = real_exchange(code, verifier)
        clients.update_client(
            client_a,
            clean_client_metadata(
                {
                    "client_name": "Acme Agent",
                    "redirect_uris": ["https://app.example/other"],
                    "token_endpoint_auth_method": "none",
                },
                RegistrationSource.DCR,
            ),
        )
        return tokens

    monkeypatch.setattr(upstream, "exchange_code", exchange_then_move)
    refused = browser.get(callback, **{"User-Agent": "Browser/1.0"})

    assert refused.status_code == 409
    assert not refused.has_header("Location")
    assert shown(refused)["message"] == (
        "The application's registration changed or was disabled while you were signing in. "
        "Nothing was shared with it."
    )
    assert_styled(refused)
    assert not Consent.objects.exists()
    assert revocations_at_upstream(upstream_http) == issued_by_upstream("octocat")
    tx = AuthorizationTransaction.objects.get()
    assert (tx.outcome, tx.failure_reason, tx.code_hash) == (
        "failed",
        "authorization request no longer valid",
        "",
    )
    event = refusal_event(client_a)
    assert event.details["reason"] == "authorization request no longer valid"
    assert (event.ip_address, event.user_agent) == ("127.0.0.1", "Browser/1.0")


REASONS_BEFORE_THE_CALLBACK = {
    "disabled": "authorization request no longer valid",
    "redirect-uri-added": "client metadata changed during the upstream sign-in",
    "renamed": "client metadata changed during the upstream sign-in",
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_sec05_a_client_changed_before_the_callback_is_audited_with_why(client_a, change) -> None:
    """SEC-05, CD-48: the stored request re-validated at the callback no longer holds: the
    person reads the styled 409 page; the transaction fails with the reason (DOT's refusal
    of a disabled client, or the changed metadata), audited as this browser's request;
    the upstream code is never redeemed, so there is nothing to revoke."""
    browser = Browser()
    callback = upstream_callback(browser, client_a)
    CHANGES[change](client_a)
    before = exchanges()
    response = browser.get(callback, **{"User-Agent": "Browser/1.0"})
    assert response.status_code == 409
    assert shown(response)["message"] == (
        "The application's registration changed or was disabled while you were signing in. "
        "Nothing was shared with it."
    )
    assert_styled(response)
    assert exchanges() == before
    reason = REASONS_BEFORE_THE_CALLBACK[change]
    tx = AuthorizationTransaction.objects.get()
    assert (tx.outcome, tx.failure_reason) == ("failed", reason)
    event = refusal_event(client_a)
    assert event.details["reason"] == reason
    assert (event.actor_type, event.ip_address, event.user_agent) == (
        "anonymous",
        "127.0.0.1",
        "Browser/1.0",
    )


REFUSED_CALLBACK = {
    "title": "This sign-in cannot be completed",
    "heading": "This sign-in cannot be completed",
    "message": "The sign-in link is expired, was already used, or was started in another "
    "browser. Nothing was shared with any application. Start again from your application.",
}


@pytest.mark.parametrize("case", ["unknown state", "replayed", "another browser"])
def test_cd43_45_a_refused_callback_tells_the_person_what_happened(client_a, case) -> None:
    """CD-43..45, CD-47: a callback with an unknown state, replayed, or opened in another
    browser than the one that approved shows a styled 400 page saying the link is expired,
    used or from another browser and nothing was shared; no redirect to any client."""
    browser = Browser()
    if case == "unknown state":
        response = browser.get("/upstream/callback/?state=forged-state&code=x")
    else:
        callback = upstream_callback(browser, client_a)
        if case == "replayed":
            assert browser.get(callback).status_code == 302
            response = browser.get(callback)
        else:
            response = Browser().get(callback)
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert shown(response) == REFUSED_CALLBACK
    assert_styled(response)


def test_a_changed_upstream_login_or_email_is_written_at_once(django_user_model) -> None:
    """Connected apps names the upstream account a person signed in with: a login or email the upstream now
    returns is stored at the next sign-in, even within LAST_LOGIN_RESOLUTION; only an
    unchanged identity signed in moments ago skips the write."""
    from types import SimpleNamespace

    from mcp_consent.flows import identities

    recent = timezone.now() - timedelta(seconds=30)
    identity = UpstreamIdentity.objects.create(
        provider="https://up.example",
        subject="42",
        user=django_user_model.objects.create_user("u42"),
        login="octocat",
        email="octo@example.com",
        last_login_at=recent,
    )

    def sign_in(login: str, email: str) -> UpstreamIdentity:
        grant: Any = SimpleNamespace(login=login, email=email)
        identities._record_sign_in(identity, grant)
        return UpstreamIdentity.objects.get(pk=identity.pk)

    unchanged = sign_in("octocat", "octo@example.com")
    assert unchanged.last_login_at == recent  # nothing new to say: no write
    renamed = sign_in("octocat-renamed", "octo@example.com")
    assert renamed.login == "octocat-renamed"
    assert renamed.last_login_at > recent
    moved = sign_in("octocat-renamed", "new@example.com")
    assert moved.email == "new@example.com"


def test_cd04_the_same_approval_again_renews_the_one_consent(client_a) -> None:
    """CD-04: a person who approves exactly the same request again has their consent renewed
    (its expiry moves on), never a second consent row beside it."""
    browser = Browser()
    assert "code" in query_of(browser.get(upstream_callback(browser, client_a))["Location"])
    first = Consent.objects.get()
    assert "code" in query_of(browser.get(upstream_callback(browser, client_a))["Location"])
    renewed = Consent.objects.get()
    assert renewed.pk == first.pk
    assert renewed.expires_at > first.expires_at
    assert UpstreamToken.objects.filter(consent=renewed).count() == 1


def test_cd04_a_renewed_consent_carries_the_upstream_grant_just_given(
    client_a, upstream_http
) -> None:
    """CD-04 / UP-08: the consent renewed by a second approval holds the upstream grant of
    that approval (the access token the upstream just issued, its refresh token and expiry),
    not the first one's, and the row says when it was replaced (the admin's "updated at";
    a refresh that waited for the row's lock tells by it that the grant changed meanwhile).
    Must not allow the renewed consent to keep calling the upstream with the grant the
    person replaced (revoked, narrowed or expired at the upstream by now)."""
    browser = Browser()
    browser.get(upstream_callback(browser, client_a))
    first = UpstreamToken.objects.get()
    first_access, first_refresh = (
        vault.upstream_access_token(first),
        vault.upstream_refresh_token(first),
    )
    upstream_http.requests.clear()
    browser.get(upstream_callback(browser, client_a))
    (identity_call,) = [r for r in upstream_http.requests if r.url.endswith("/demo-upstream/user")]
    just_given = identity_call.headers["Authorization"].split()[1]
    row = UpstreamToken.objects.get()
    assert row.consent_id == first.consent_id
    assert vault.upstream_access_token(row) == just_given != first_access
    assert vault.upstream_refresh_token(row) not in ("", first_refresh)
    assert row.expires_at > first.expires_at
    assert row.updated_at > first.updated_at


class LinkingAdapter(DefaultConsentAdapter):
    """A project's adapter that links a first-seen upstream identity to an existing user."""

    def create_user(self, grant: Any) -> Any:
        from django.contrib.auth import get_user_model

        return get_user_model().objects.get(email=grant.email)


def test_cd04_an_adapter_linking_an_existing_user_renews_their_consent(client_a, settings) -> None:
    """CD-04 / issue 11: only a user the stock adapter has just inserted is known to have no
    consent yet; one an adapter links (here by e-mail) keeps their consent, renewed, not
    doubled by the first sign-in of a new upstream identity."""
    browser = Browser()
    browser.get(upstream_callback(browser, client_a))
    consent = Consent.objects.get()
    UpstreamIdentity.objects.all().delete()  # the next sign-in is a first-seen identity
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "ADAPTER": "tests.test_upstream_callback.LinkingAdapter",
    }
    other_browser = Browser()
    final = other_browser.get(upstream_callback(other_browser, client_a))
    assert "code" in query_of(final["Location"]), final["Location"]
    assert UpstreamIdentity.objects.get().user == consent.user
    assert list(Consent.objects.values_list("pk", flat=True)) == [consent.pk]


SESSION_COOKIE = "__Host-sessionid"


def test_session_fixation_a_planted_session_key_is_never_signed_in(client_a) -> None:
    """Session fixation: a session cookie an attacker planted (a key naming no stored session)
    is not the session the person is signed in with; theirs has a key made at sign-in."""
    from django.contrib.sessions.models import Session

    browser = Browser()
    planted = "attackerchosenkey0123456789abcde"
    browser.client.cookies[SESSION_COOKIE] = planted
    final = browser.get(upstream_callback(browser, client_a))
    assert "code" in query_of(final["Location"])
    signed_in = browser.client.cookies[SESSION_COOKIE].value
    assert signed_in != planted
    assert not Session.objects.filter(session_key=planted).exists()
    assert Session.objects.get(session_key=signed_in).get_decoded()[SESSION_KEY]


def test_session_fixation_an_existing_anonymous_session_is_rotated(client_a) -> None:
    """Session fixation: a stored anonymous session (whose key another party may know) is
    replaced at sign-in by one under a new key; the old key signs nobody in."""
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session

    anonymous = SessionStore()
    anonymous["seen"] = True
    anonymous.create()
    browser = Browser()
    browser.client.cookies[SESSION_COOKIE] = anonymous.session_key
    final = browser.get(upstream_callback(browser, client_a))
    assert "code" in query_of(final["Location"])
    signed_in = browser.client.cookies[SESSION_COOKIE].value
    assert signed_in != anonymous.session_key
    assert not Session.objects.filter(session_key=anonymous.session_key).exists()
    assert Session.objects.get(session_key=signed_in).get_decoded()[SESSION_KEY]


def test_an_identity_is_keyed_by_the_upstreams_issuer(client_a, settings) -> None:
    """An upstream identity is the pair (the upstream authorization server, its subject): the
    server is named by its issuer (RFC 9207 ``iss``, the one identifier it vouches for), so a
    person keeps their local user when the authorize URL moves. Must not allow the key to be
    the authorize URL when an issuer is configured."""
    browser = Browser()
    assert "code" in query_of(browser.get(upstream_callback(browser, client_a))["Location"])
    identity = UpstreamIdentity.objects.get()
    assert identity.provider == settings.UPSTREAM["ISSUER"]
    assert identity.provider != settings.UPSTREAM["AUTHORIZE_URL"]
    # Connected apps names the upstream account and says when it last signed in, from the
    # first sign-in on.
    from project.demo_upstream.models import Account

    account = Account.objects.get(login="octocat")
    assert (identity.subject, identity.login, identity.email) == (
        str(account.pk),
        "octocat",
        account.email,
    )
    assert account.email
    assert identity.last_login_at is not None
    assert timezone.now() - identity.last_login_at < timedelta(minutes=1)


def test_sec04_the_same_subject_at_another_upstream_is_another_person(
    client_a, settings, django_user_model
) -> None:
    """SEC-04 (the grant goes to the person the upstream vouched for): an identity with the
    same subject, recorded under another upstream (an earlier provider, or a second one the
    project used), belongs to someone else. Signing in here with that subject must give this
    upstream's person their own user, never the other one's consents or tokens."""
    from project.demo_upstream.models import Account

    octocat = str(Account.objects.get(login="octocat").pk)  # the subject the upstream returns
    stranger = django_user_model.objects.create_user("stranger")
    UpstreamIdentity.objects.create(
        provider="https://other-upstream.example",
        subject=octocat,
        user=stranger,
        login="someone-else",
    )
    browser = Browser()
    assert "code" in query_of(browser.get(upstream_callback(browser, client_a))["Location"])
    consent = Consent.objects.get()
    assert consent.user_id != stranger.pk
    mine = UpstreamIdentity.objects.get(provider=settings.UPSTREAM["ISSUER"])
    assert mine.subject == octocat
    assert consent.user_id == mine.user_id
    assert browser.client.session[SESSION_KEY] == str(mine.user_id)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sec12_the_callback_locks_the_identity_row_not_its_user(client_a) -> None:
    """SEC-12 (one lock order, flows/locks.py): a returning person's callback locks their
    upstream identity's row, reading the user in the same query without locking it. Must not
    allow the user row to be locked as well: an operator's edit of the user, or the user's
    other sign-in writing last_login, would wait on it outside the documented order."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from project.demo_upstream.seed import seed_demo_data
    from tests.db_state import require_postgresql

    require_postgresql("row locks")
    seed_demo_data()  # transaction=True: an earlier such test may have flushed the tables
    browser = Browser()
    assert "code" in query_of(browser.get(upstream_callback(browser, client_a))["Location"])
    callback = upstream_callback(browser, client_a)
    with CaptureQueriesContext(connection) as ctx:
        assert "code" in query_of(browser.get(callback)["Location"])
    (locking,) = [
        q["sql"]
        for q in ctx.captured_queries
        if 'FROM "mcp_consent_upstreamidentity"' in q["sql"] and "FOR UPDATE" in q["sql"]
    ]
    assert locking.endswith('FOR UPDATE OF "mcp_consent_upstreamidentity"'), locking


# --- what the upstream said about the person and the grant, kept as it said it ----------------

GRANTS_SEEN: list[Any] = []


class ProfileAdapter(DefaultConsentAdapter):
    """A project's adapter that keeps profile fields of the upstream identity (update_user)."""

    def update_user(self, user: Any, grant: Any) -> None:
        GRANTS_SEEN.append(grant)


@pytest.fixture
def profile_adapter(settings) -> list[Any]:
    GRANTS_SEEN.clear()
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "ADAPTER": "tests.test_upstream_callback.ProfileAdapter",
    }
    return GRANTS_SEEN


def test_the_adapter_and_the_identity_get_the_upstreams_profile_as_it_said_it(
    client_a, profile_adapter
) -> None:
    """Adapter (identity -> user, STYLE 5): a project's update_user gets the person's
    upstream login, e-mail, display name and the whole user-info answer, and the identity
    row keeps the login and e-mail: nothing the upstream said is dropped or replaced."""
    from project.demo_upstream.models import Account

    browser = Browser()
    assert "code" in query_of(browser.get(upstream_callback(browser, client_a))["Location"])
    account = Account.objects.get(login="octocat")
    [grant] = profile_adapter
    assert (grant.subject, grant.login, grant.email, grant.name) == (
        str(account.pk),
        "octocat",
        "octocat@demohub.example",
        "The Octocat",
    )
    assert grant.raw_identity == {
        "id": account.pk,
        "login": "octocat",
        "name": "The Octocat",
        "email": "octocat@demohub.example",
    }
    identity = UpstreamIdentity.objects.get()
    assert (identity.login, identity.email) == ("octocat", "octocat@demohub.example")
    assert identity.user.email == "octocat@demohub.example"


def test_odd_profile_fields_are_cut_to_the_column_or_left_empty_never_invented(
    client_a, profile_adapter
) -> None:
    """An upstream whose user info has a 300-character login, an object for the e-mail and a
    null name: the login is kept to its 255-character column, the others are empty, never
    a Python repr ("None", "{'primary': ...}") or a made-up value shown as the person's
    e-mail or name."""
    from tests.upstream_fakes import USERINFO_URL, FaultAdapter, make_response, mounted

    odd = {"id": 4242, "login": "L" * 300, "email": {"primary": "x@example.com"}, "name": None}
    browser = Browser()
    callback = upstream_callback(browser, client_a)
    with mounted(USERINFO_URL, FaultAdapter(lambda request: make_response(request, 200, odd))):
        final = browser.get(callback)
    assert "code" in query_of(final["Location"])
    identity = UpstreamIdentity.objects.get()
    assert (identity.subject, identity.login, identity.email) == ("4242", "L" * 255, "")
    [grant] = profile_adapter
    assert (grant.login, grant.email, grant.name) == ("L" * 255, "", "")


def test_up08_the_stored_upstream_grant_expires_when_the_upstream_said(client_a) -> None:
    """UP-08: the upstream token is stored with the expiry of its access token and of its
    refresh token as the upstream gave them (expires_in, refresh_token_expires_in), so the
    refresh before a call is due on time, not never."""
    from project.demo_upstream.views import ACCESS_TOKEN_EXPIRES_IN, REFRESH_TOKEN_EXPIRES_IN

    browser = Browser()
    callback = upstream_callback(browser, client_a)
    before = timezone.now()
    browser.get(callback)
    after = timezone.now()
    row = UpstreamToken.objects.get()
    access, refresh = (
        timedelta(seconds=s) for s in (ACCESS_TOKEN_EXPIRES_IN, REFRESH_TOKEN_EXPIRES_IN)
    )
    assert before + access <= row.expires_at <= after + access
    assert before + refresh <= row.refresh_expires_at <= after + refresh


@pytest.mark.parametrize("state", ["", "s" * 513], ids=["empty", "over-512"])
def test_cd44_a_missing_or_overlong_state_is_refused_unread(state: str, rf) -> None:
    """CD-44, ABUSE-01: a callback whose state is empty or longer than any we issue is
    refused as a missing state without a database lookup (bounded work per junk callback),
    and audited with that reason, not as an unknown one."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        with pytest.raises(authorization.CallbackRefused, match="^missing state$"):
            authorization.consume_transaction(state, "some-binding", rf.get("/upstream/callback/"))
    assert not [q for q in ctx.captured_queries if "authorizationtransaction" in q["sql"]]
    refused = AuditEvent.objects.get(action=AuditEvent.Action.CALLBACK_REFUSED)
    assert refused.details["reason"] == "missing state"


def test_cd44_a_state_of_512_characters_is_still_looked_up(rf) -> None:
    """The bound is 512 characters, that length included: such a state is looked up (and,
    naming no transaction, refused as unknown)."""
    with pytest.raises(authorization.CallbackRefused, match="^unknown state$"):
        authorization.consume_transaction("s" * 512, "some-binding", rf.get("/upstream/callback/"))


@pytest.mark.parametrize(
    ("query", "reason"),
    [("code=x", "missing state"), ("code=x&state=nobody-issued-this", "unknown state")],
    ids=["no-state", "unknown-state"],
)
def test_abuse01_a_junk_callback_is_audited_with_the_address_it_came_from(
    query: str, reason: str, caplog
) -> None:
    """ABUSE-01, SM-04: a callback without a state, or with one nobody issued, is refused
    (400) and audited as coming from its address, so an operator can tell which address
    sends junk. The event stands for every such refusal from that address in the audit
    window (it says how long); each one is still logged with its reason."""
    response = Browser().get(f"/upstream/callback/?{query}")
    assert response.status_code == 400
    refused = AuditEvent.objects.get(action=AuditEvent.Action.CALLBACK_REFUSED)
    assert refused.details == {
        "reason": reason,
        "correlation_id": None,
        "aggregated_seconds": app_settings.RATE_LIMIT_AUDIT_WINDOW,
    }
    assert refused.ip_address == "127.0.0.1"
    assert refused.actor_type == AuditEvent.Actor.ANONYMOUS
    caplog.clear()
    with caplog.at_level("INFO", logger="mcp_consent"):
        assert Browser().get(f"/upstream/callback/?{query}").status_code == 400
    assert AuditEvent.objects.filter(action=AuditEvent.Action.CALLBACK_REFUSED).count() == 1
    assert f"upstream callback refused: {reason}" in caplog.messages


def test_cd43_cd45_refused_callbacks_are_audited_with_their_transaction_and_address(
    client_a,
) -> None:
    """CD-43, CD-45, SM-04: a callback URL opened in another browser (a stolen or planted
    callback), and the same callback replayed, are refused and audited each with its
    reason, the transaction it named, its client and the address it came from: an operator
    can follow an attempt from the approval to the refusal."""
    browser = Browser()
    callback = upstream_callback(browser, client_a)
    tx = AuthorizationTransaction.objects.get()
    assert Browser().get(callback).status_code == 400  # another browser: no binding cookie
    assert "code" in query_of(browser.get(callback)["Location"])  # the person's own: fine
    assert browser.get(callback).status_code == 400  # replayed
    refused = list(
        AuditEvent.objects.filter(action=AuditEvent.Action.CALLBACK_REFUSED).order_by("pk")
    )
    assert [e.details["reason"] for e in refused] == [
        "state not bound to this browser",
        "state already used",
    ]
    for event in refused:
        # Not aggregated: each refusal that names a transaction is its own event.
        assert set(event.details) == {"reason", "correlation_id"}
        assert event.details["correlation_id"] == tx.pk
        assert event.client_id == client_a.application.client_id
        assert event.ip_address == "127.0.0.1"
    # The replay came from the person, signed in by their own callback: it names them.
    assert [(e.actor_type, e.actor_label) for e in refused] == [
        (AuditEvent.Actor.ANONYMOUS, ""),
        (AuditEvent.Actor.USER, "octocat@upstream"),
    ]
