"""What one authorization writes, record by record: the audit events (who, what, from where,
SM-04), the consent (CD-04), the pending transaction (CD-40..48, AS-41) and the signal.

The other tests prove what a client or a person sees. These prove what an operator reads
afterwards: each field of each row, so that an event without its address, a consent without
its grant time or a transaction without its code hash cannot pass unnoticed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from mcp_consent import signals
from mcp_consent.adapter import DefaultConsentAdapter
from mcp_consent.app_settings import app_settings
from mcp_consent.models import AuditEvent, AuthorizationTransaction, Consent, MCPClient
from mcp_consent.vault import secret_hash
from tests.browser_client import Browser, authorize_params, query_of
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db
A = AuditEvent.Action
RESOURCE = "http://127.0.0.1:8000/mcp"
UA = "RecordsTest/1.0 (an MCP client's browser)"
BOTH = "items:read items:write"

FIELDS = (
    "action",
    "actor_type",
    "actor_user_id",
    "actor_label",
    "subject_user_id",
    "client_id",
    "consent_id",
    "ip_address",
    "user_agent",
    "details",
)


def events_after(pk: int) -> list[dict[str, Any]]:
    return list(AuditEvent.objects.filter(pk__gt=pk).order_by("pk").values(*FIELDS))


def last_event_pk() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def person(username: str = "octocat") -> Browser:
    browser = Browser()
    browser.client.defaults["HTTP_USER_AGENT"] = UA
    browser.login_upstream(username)
    return browser


def approve(browser: Browser, client: MCPClient, scope: str, **extra: str) -> str:
    """Our consent page, Approve: the upstream authorize URL."""
    page = browser.authorize(authorize_params(client, scope=scope, **extra))
    assert page.status_code == 200, page.get("Location")
    to_upstream = browser.post_form(page, "approve")
    assert to_upstream.status_code == 303
    return to_upstream["Location"]


def connect(browser: Browser, client: MCPClient, scope: str) -> str:
    """A whole authorization: the redirect to the client (with the code)."""
    to_callback = browser.through_upstream(approve(browser, client, scope))
    final = browser.get(to_callback["Location"])
    assert final.status_code == 302
    return final["Location"]


def test_sm04_a_first_authorization_records_who_approved_what_from_where(
    django_capture_on_commit_callbacks,
) -> None:
    """SM-04, CD-04, AS-41: every event, the consent, the transaction and the signal."""
    client = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    client_id = client.application.client_id
    granted_signals: list[dict[str, Any]] = []

    def on_granted(**kwargs: Any) -> None:
        granted_signals.append(kwargs)

    signals.consent_granted.connect(on_granted)
    before = last_event_pk()
    browser = person()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            redirect = connect(browser, client, BOTH)
    finally:
        signals.consent_granted.disconnect(on_granted)

    consent = Consent.objects.get()
    tx = AuthorizationTransaction.objects.get()
    user = consent.user
    where = {"ip_address": "127.0.0.1", "user_agent": UA, "client_id": client_id}
    anonymous = {"actor_type": "anonymous", "actor_user_id": None, "actor_label": ""}
    # The person is known only after the upstream sign-in: the consent's events name them.
    the_person = {"actor_type": "user", "actor_user_id": user.pk, "actor_label": "octocat@upstream"}
    assert events_after(before) == [
        {
            "action": A.CONSENT_SHOWN,
            **anonymous,
            "subject_user_id": None,
            "consent_id": None,
            **where,
            "details": {
                "scopes": ["items:read", "items:write"],
                "redirect_uri": "https://app.example/cb",
            },
        },
        {
            "action": A.CONSENT_APPROVED,
            **anonymous,
            "subject_user_id": None,
            "consent_id": None,
            **where,
            "details": {
                "scopes_requested": ["items:read", "items:write"],
                "redirect_uri": "https://app.example/cb",
                "resource": RESOURCE,
                "remembered": False,
                "correlation_id": tx.pk,
            },
        },
        {
            "action": A.CONSENT_GRANTED,
            **the_person,
            "subject_user_id": user.pk,
            "consent_id": consent.pk,
            **where,
            "details": {
                "scopes": BOTH,
                "upstream_scopes": "read:user repo:read repo:write",
                "scopes_previously_granted": [],
                "elevation": ["items:read", "items:write"],
                "correlation_id": tx.pk,
            },
        },
        {
            "action": A.CALLBACK_ACCEPTED,
            **the_person,
            "subject_user_id": user.pk,
            "consent_id": consent.pk,
            **where,
            "details": {"correlation_id": tx.pk, "upstream_login": "octocat"},
        },
    ]

    # CD-04: the consent is exactly what the page showed, granted once, from this browser.
    assert (consent.client, consent.redirect_uri, consent.scopes, consent.resource) == (
        client,
        "https://app.example/cb",
        BOTH,
        RESOURCE,
    )
    assert consent.upstream_scopes == "read:user repo:read repo:write"
    assert consent.client_metadata_version == client.metadata_version
    assert (consent.ip_address, consent.user_agent) == ("127.0.0.1", UA)
    assert consent.last_used_at == consent.granted_at
    assert consent.expires_at - consent.granted_at == timedelta(
        seconds=app_settings.CONSENT_MAX_AGE
    )
    assert consent.granted_at > tx.created_at
    # The client was used at the grant (the admin's "last used").
    assert MCPClient.objects.get(pk=client.pk).last_used_at == consent.granted_at

    # CD-40..48, AS-41: the transaction, used once, names who completed it and which code.
    assert (tx.purpose, tx.outcome, tx.failure_reason) == ("authorize", "completed", "")
    assert (tx.user, tx.consent, tx.client) == (user, consent, client)
    assert tx.code_hash == secret_hash(query_of(redirect)["code"][0])
    assert (tx.ip_address, tx.user_agent) == ("127.0.0.1", UA)
    assert tx.consumed_at is not None
    assert tx.expires_at - tx.created_at == timedelta(seconds=app_settings.TRANSACTION_TTL)

    # The project's receivers hear of the new consent once, after the commit.
    assert granted_signals == [
        {"signal": signals.consent_granted, "sender": Consent, "consent": consent}
    ]


def granted_event(before: int) -> AuditEvent:
    return AuditEvent.objects.get(pk__gt=before, action=A.CONSENT_GRANTED)


def test_sm04_an_elevation_counts_only_this_persons_grants_at_this_client() -> None:
    """SM-04: "previously granted" is the union of this person's live consents at this client;
    another person's consent there, or this person's at another client, is no grant here."""
    client = MCPClientFactory(redirect_uris=["https://app.example/cb"])
    other_client = MCPClientFactory(redirect_uris=["https://other.example/cb"])
    octocat = person("octocat")
    connect(octocat, client, "items:read")
    connect(person("hubot"), client, "items:write")
    connect(octocat, other_client, "items:write")

    before = last_event_pk()
    connect(octocat, client, BOTH)
    granted = granted_event(before)
    assert granted.details["scopes_previously_granted"] == ["items:read"]
    assert granted.details["elevation"] == ["items:write"]
    assert granted.actor_label == "octocat@upstream"
    approved = AuditEvent.objects.get(pk__gt=before, action=A.CONSENT_APPROVED)
    assert granted.details["correlation_id"] == approved.details["correlation_id"]


def test_sm04_previously_granted_is_the_union_of_every_live_consent_of_the_person() -> None:
    """SM-04: two consents, one scope each: together they grant both, so no elevation."""
    client = MCPClientFactory(redirect_uris=["https://app.example/cb"])
    octocat = person("octocat")
    connect(octocat, client, "items:read")
    connect(octocat, client, "items:write")
    assert Consent.objects.live().filter(client=client).count() == 2

    before = last_event_pk()
    connect(octocat, client, BOTH)
    granted = granted_event(before)
    assert granted.details["scopes_previously_granted"] == ["items:read", "items:write"]
    assert granted.details["elevation"] == []


def test_sm04_the_elevation_is_of_the_person_the_upstream_signed_in() -> None:
    """SM-04: the person is known for certain only after the upstream sign-in. Approving in a
    browser the proxy does not know (no session here) is no grant of everything anew, and a
    proxy session of someone else does not lend their grants to the person signing in."""
    client = MCPClientFactory(redirect_uris=["https://app.example/cb"])
    connect(person("octocat"), client, "items:read")
    hubots = person("hubot")
    connect(hubots, client, BOTH)

    before = last_event_pk()
    connect(person("octocat"), client, BOTH)  # another browser: no proxy session, anonymous
    assert AuditEvent.objects.get(pk__gt=before, action=A.CONSENT_APPROVED).actor_type == (
        "anonymous"
    )
    granted = granted_event(before)
    assert granted.actor_label == "octocat@upstream"
    assert granted.details["scopes_previously_granted"] == ["items:read"]
    assert granted.details["elevation"] == ["items:write"]

    hubots.login_upstream("octocat")  # signed in here as hubot, at the upstream as octocat
    before = last_event_pk()
    connect(hubots, client, "items:write")
    assert AuditEvent.objects.get(pk__gt=before, action=A.CONSENT_APPROVED).actor_label == (
        "hubot@upstream"
    )
    granted = granted_event(before)
    assert granted.actor_label == "octocat@upstream"
    assert granted.details["scopes_previously_granted"] == ["items:read", "items:write"]
    assert granted.details["elevation"] == []


def test_sm04_a_renewal_grants_nothing_new() -> None:
    """SM-04: approving exactly what is already granted renews that consent: no consent, no
    consent_granted event, hence no elevation is recorded."""
    client = MCPClientFactory(redirect_uris=["https://app.example/cb"])
    octocat = person("octocat")
    connect(octocat, client, BOTH)
    before = last_event_pk()
    connect(octocat, client, BOTH)
    assert Consent.objects.live().filter(client=client).count() == 1
    assert not AuditEvent.objects.filter(pk__gt=before, action=A.CONSENT_GRANTED).exists()


def test_cd18_a_denial_records_the_decision_and_nothing_else() -> None:
    """CD-18, SM-04: the denial event says who denied what, from where; no consent, no
    transaction."""
    client = MCPClientFactory(redirect_uris=["https://app.example/cb"])
    browser = person()
    before = last_event_pk()
    page = browser.authorize(authorize_params(client, scope=BOTH))
    assert browser.post_form(page, "deny").status_code == 303
    where = {"ip_address": "127.0.0.1", "user_agent": UA, "client_id": client.application.client_id}
    anonymous = {"actor_type": "anonymous", "actor_user_id": None, "actor_label": ""}
    shown_and_denied = {
        "details": {
            "scopes": ["items:read", "items:write"],
            "redirect_uri": "https://app.example/cb",
        },
        "subject_user_id": None,
        "consent_id": None,
        **anonymous,
        **where,
    }
    assert events_after(before) == [
        {"action": A.CONSENT_SHOWN, **shown_and_denied},
        {"action": A.CONSENT_DENIED, **shown_and_denied},
    ]
    assert not Consent.objects.exists()
    assert not AuthorizationTransaction.objects.exists()


def test_cd04_a_renewed_consent_is_one_consent_granted_once_and_used_now() -> None:
    """CD-04: the same approval again renews the consent (no second consent, no second
    CONSENT_GRANTED); its expiry and last use move to the renewal, its grant time stays."""
    client = MCPClientFactory(redirect_uris=["https://app.example/cb"])
    browser = person()
    connect(browser, client, "items:read")
    first = Consent.objects.get()
    before = last_event_pk()
    connect(browser, client, "items:read")
    renewed = Consent.objects.get()
    assert renewed.pk == first.pk
    assert renewed.granted_at == first.granted_at
    assert renewed.last_used_at > first.last_used_at
    assert renewed.expires_at - renewed.last_used_at == first.expires_at - first.granted_at
    assert [event["action"] for event in events_after(before)] == [
        A.CONSENT_SHOWN,
        A.CONSENT_APPROVED,
        A.CALLBACK_ACCEPTED,
    ]
    tx = AuthorizationTransaction.objects.order_by("-pk").first()
    assert tx is not None
    assert tx.consent == renewed


class LifetimeAdapter(DefaultConsentAdapter):
    """A project that keeps consents of one client shorter, and asks per person."""

    asked: list[tuple[Any, Any]] = []

    def consent_lifetime(self, client: MCPClient, user: Any) -> int:
        self.asked.append((client.pk, user.get_username()))
        return 3600 if client.display_name == "Short-lived" else 7200


def test_the_adapter_sets_the_lifetime_of_a_consent_for_its_client_and_person() -> None:
    """The adapter's ``consent_lifetime(client, user)`` gets this client and this person."""
    LifetimeAdapter.asked = []
    client = MCPClientFactory(client_name="Short-lived", redirect_uris=["https://app.example/cb"])
    with override_settings(
        MCP_CONSENT={**settings.MCP_CONSENT, "ADAPTER": "tests.test_flow_records.LifetimeAdapter"}
    ):
        connect(person(), client, "items:read")
    consent = Consent.objects.get()
    assert consent.expires_at - consent.granted_at == timedelta(seconds=3600)
    assert LifetimeAdapter.asked == [(client.pk, consent.user.get_username())]


def test_sm04_a_connected_apps_sign_in_records_a_transaction_of_no_client(settings) -> None:
    """A Connected apps sign-in is a pending transaction too (CD-40..46): of no client, for
    no redirect URI, scope or resource, asking the upstream for exactly the base scopes."""
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "UPSTREAM": {**settings.MCP_CONSENT["UPSTREAM"], "SCOPES": ["read:user", "user:email"]},
    }
    browser = Browser()
    browser.client.defaults["HTTP_USER_AGENT"] = UA
    callback = browser.connected_apps_sign_in()
    tx = AuthorizationTransaction.objects.get()
    assert (tx.purpose, tx.client, tx.outcome) == ("sign_in", None, "pending")
    assert (tx.authorization_query, tx.redirect_uri, tx.scopes, tx.resource) == ("", "", "", "")
    assert tx.upstream_scopes == "read:user user:email"
    assert (tx.ip_address, tx.user_agent) == ("127.0.0.1", UA)
    assert browser.get(callback).status_code == 302
    tx.refresh_from_db()
    assert tx.outcome == "completed"
    assert tx.user is not None
    assert tx.user.get_username() == "octocat@upstream"


def test_a_failure_reason_longer_than_its_column_is_cut_to_it(settings) -> None:
    """The reason a transaction failed is kept within its 255-character column (on
    PostgreSQL a longer one would make the failure itself fail): here an operator's subject
    field name longer than that, which the upstream's user info lacks."""
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "UPSTREAM": {**settings.MCP_CONSENT["UPSTREAM"], "SUBJECT_FIELD": "s" * 300},
    }
    client = MCPClientFactory(redirect_uris=["https://app.example/cb"])
    redirect = connect(person(), client, "items:read")
    assert query_of(redirect)["error"] == ["server_error"]
    tx = AuthorizationTransaction.objects.get()
    assert tx.outcome == "failed"
    assert tx.failure_reason == f"user info has no {'s' * 300!r}"[:255]


# --- the token endpoint's records (AS-41, AS-43, AS-44, UP-09) --------------------------------


def token_events(client: MCPClient, *actions: str) -> list[dict[str, Any]]:
    return list(
        AuditEvent.objects.filter(client_id=client.application.client_id, action__in=actions)
        .order_by("pk")
        .values(*FIELDS)
    )


def test_sm04_issue_and_refresh_record_the_client_the_person_and_the_token_family() -> None:
    """SM-04, AS-41, AS-44: the code exchange and each refresh are audited as the client's,
    about the person, with what was granted for which resource and the token family; the
    transaction remembers which family its code bought; the consent was used then."""
    from oauth2_provider.models import get_refresh_token_model

    from tests.mcp_tokens import issue_token

    issued = issue_token(scope=BOTH)
    client, user = issued.client, issued.consent.user
    family = get_refresh_token_model().objects.get(user=user).token_family
    assert family is not None
    tx = AuthorizationTransaction.objects.get()
    assert tx.token_family == family
    assert tx.code_redeemed_at is not None
    used_at_issue = Consent.objects.get().last_used_at
    assert used_at_issue is not None
    assert used_at_issue >= tx.code_redeemed_at
    assert issued.refresh().status_code == 200

    as_the_client = {
        "actor_type": "client",
        "actor_user_id": None,
        "actor_label": issued.client_id,
        "subject_user_id": user.pk,
        "client_id": issued.client_id,
        "consent_id": None,
    }
    granted = {"scopes_granted": BOTH, "resource": [RESOURCE], "expires_in": 3600}
    events = token_events(client, A.TOKEN_ISSUED, A.TOKEN_REFRESHED)
    for event in events:
        event.pop("ip_address")
        event.pop("user_agent")
    assert events == [
        {
            "action": A.TOKEN_ISSUED,
            **as_the_client,
            "details": {"grant_type": "authorization_code", **granted, "family": str(family)},
        },
        {
            "action": A.TOKEN_REFRESHED,
            **as_the_client,
            "details": {"grant_type": "refresh_token", **granted, "family": str(family)},
        },
    ]
    assert Consent.objects.get().last_used_at >= used_at_issue


def test_a_token_marks_only_this_persons_consent_at_this_client_used() -> None:
    """The consent's ``last_used_at`` (what Connected apps and the admin show as last used)
    moves for the person and client a token was issued to: not for another person at the
    same client, nor for this person at another client."""
    from tests.mcp_tokens import issue_token

    mine = issue_token(username="octocat")
    issue_token(client=mine.client, username="hubot")  # another person, same client
    elsewhere = issue_token(username="octocat")  # this person, another client
    Consent.objects.update(last_used_at=None)
    assert mine.refresh().status_code == 200
    (used,) = Consent.objects.exclude(last_used_at=None)
    assert used.client == mine.client
    assert used.user == Consent.objects.get(client=elsewhere.client).user


def test_as44_a_reused_refresh_token_is_audited_with_its_family_revoked() -> None:
    """AS-44: a rotated refresh token presented again: its family is revoked, and the event
    names the person and the family."""
    from oauth2_provider.models import get_refresh_token_model

    from tests.mcp_tokens import issue_token

    issued = issue_token()
    family = get_refresh_token_model().objects.get(user=issued.consent.user).token_family
    assert issued.refresh().status_code == 200
    assert issued.refresh().status_code == 400  # the first refresh token, again
    (reuse,) = token_events(issued.client, A.REFRESH_TOKEN_REUSE)
    assert (reuse["actor_type"], reuse["actor_label"]) == ("client", issued.client_id)
    assert reuse["subject_user_id"] == issued.consent.user.pk
    assert reuse["details"] == {"family": str(family), "family_revoked": True}


def test_as41_a_replayed_code_is_audited_naming_its_transaction() -> None:
    """AS-41: the second redemption of a code revokes what the first bought; the event names
    the transaction and the person."""
    from tests.browser_client import code_from, pkce_pair
    from tests.mcp_tokens import post_form

    client = MCPClientFactory(redirect_uris=["https://app.example/cb"])
    verifier, challenge = pkce_pair()
    browser = person()
    final = browser.run_flow(authorize_params(client, challenge=challenge))
    redeem = {
        "grant_type": "authorization_code",
        "code": code_from(final),
        "client_id": client.application.client_id,
        "redirect_uri": "https://app.example/cb",
        "code_verifier": verifier,
        "resource": RESOURCE,
    }
    assert post_form("/token/", redeem).status_code == 200
    assert post_form("/token/", redeem).status_code == 400
    tx = AuthorizationTransaction.objects.get()
    (reuse,) = token_events(client, A.CODE_REUSE)
    assert reuse["subject_user_id"] == tx.user_id
    assert (reuse["actor_type"], reuse["actor_label"]) == ("client", client.application.client_id)
    assert reuse["details"] == {"correlation_id": tx.pk, "tokens_revoked": True}


def test_up09_a_client_revoking_its_last_token_ends_the_consent_on_the_record() -> None:
    """UP-09, RFC 7009: the client revokes its refresh token: audited as the client's, saying
    no grant is left, and the consent is revoked with that reason."""
    from tests.mcp_tokens import issue_token, post_form

    issued = issue_token()
    revoked = post_form("/revoke/", {"token": issued.refresh_token, "client_id": issued.client_id})
    assert revoked.status_code == 200
    (event,) = token_events(issued.client, A.TOKEN_REVOKED)
    assert (event["actor_type"], event["actor_label"]) == ("client", issued.client_id)
    assert event["subject_user_id"] == issued.consent.user.pk
    assert event["details"] == {"grant_still_active": False}
    consent = Consent.objects.get()
    assert consent.revoked_at is not None
    assert consent.revoke_reason == "the client revoked its tokens (RFC 7009)"
