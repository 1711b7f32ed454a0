"""Issue 11, "the operators' admin at scale": every admin list and change page runs the same
SQL statements with 300 rows of everything as with 10, and its HTML does not grow with the
number of clients or users (at 100,000 clients the consent list was 100,010 statements and
12 MB). The million-row timings are in benchmarks/admin_scale.py."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_grant_model,
    get_refresh_token_model,
)
from oauth2_provider.settings import oauth2_settings

from mcp_consent.models import (
    AuditEvent,
    AuthorizationTransaction,
    Consent,
    MCPClient,
    RedirectURI,
    UpstreamIdentity,
    UpstreamToken,
)

pytestmark = pytest.mark.django_db
# Every seeded consent and event falls in one month, so a month's page fills up like the rest.
BASE = datetime(2026, 6, 15, 12, tzinfo=UTC)

CHANGELISTS = [
    "mcp_consent_mcpclient",
    "mcp_consent_consent",
    "mcp_consent_upstreamtoken",
    "mcp_consent_upstreamidentity",
    "mcp_consent_authorizationtransaction",
    "mcp_consent_auditevent",
    "oauth2_provider_application",
    "oauth2_provider_accesstoken",
    "oauth2_provider_refreshtoken",
    "oauth2_provider_grant",
    "oauth2_provider_idtoken",
]
# Lists with their filters and drill-downs, as an operator clicks them.
FILTERED = [
    ("mcp_consent_consent", "status=active"),
    ("mcp_consent_consent", "client={client_id}"),
    ("mcp_consent_consent", "user={username}"),
    ("mcp_consent_consent", "granted_at__year={year}"),
    ("mcp_consent_consent", "granted_at__year={year}&granted_at__month={month}"),
    ("mcp_consent_consent", "q=Agent"),
    ("mcp_consent_mcpclient", "verified__exact=0"),
    ("mcp_consent_auditevent", "created_at__year={year}&created_at__month={month}"),
    ("mcp_consent_auditevent", "action__exact=consent_approved"),
    ("oauth2_provider_accesstoken", "kind=registration"),
    ("oauth2_provider_accesstoken", "client={client_id}"),
]


def seed(count: int) -> dict[str, object]:
    """``count`` of everything, written in bulk (the flows would take minutes at 300)."""
    now = timezone.now()
    batch = secrets.token_hex(3)
    users = get_user_model().objects.bulk_create(
        get_user_model()(username=f"person{i}-{batch}") for i in range(count)
    )
    applications = get_application_model().objects.bulk_create(
        get_application_model()(
            client_id=f"client-{i}-{secrets.token_hex(4)}",
            name=f"Agent {i}",
            client_type="public",
            authorization_grant_type="authorization-code",
            redirect_uris=f"https://app{i}.example/cb",
            client_secret="",
            registration_source="dcr",
        )
        for i in range(count)
    )
    clients = MCPClient.objects.bulk_create(
        MCPClient(application=a, registration_source="dcr") for a in applications
    )
    RedirectURI.objects.bulk_create(
        RedirectURI(client=c, uri=c.application.redirect_uris) for c in clients
    )
    consents = Consent.objects.bulk_create(
        Consent(
            user=users[i],
            client=clients[i],
            redirect_uri=clients[i].application.redirect_uris,
            scopes="mcp",
            resource="http://testserver/mcp",
            client_metadata_version=1,
            granted_at=BASE - timedelta(seconds=i),
            expires_at=now + timedelta(days=30),
        )
        for i in range(count)
    )
    identities = UpstreamIdentity.objects.bulk_create(
        UpstreamIdentity(
            provider="https://up.example", subject=f"{i}-{batch}", user=users[i], login=f"p{i}"
        )
        for i in range(count)
    )
    UpstreamToken.objects.bulk_create(
        UpstreamToken(consent=consents[i], identity=identities[i], access_token_encrypted="x")
        for i in range(count)
    )
    AuthorizationTransaction.objects.bulk_create(
        AuthorizationTransaction(
            state_hash=secrets.token_hex(32),
            binding_hash="b",
            client=clients[i],
            authorization_query="",
            redirect_uri="https://x/cb",
            scopes="mcp",
            upstream_scopes="",
            resource="",
            expires_at=now,
        )
        for i in range(count)
    )
    tokens = get_access_token_model().objects.bulk_create(
        get_access_token_model()(
            user=users[i] if i % 2 else None,
            application=applications[i],
            token=secrets.token_hex(16),
            token_checksum=secrets.token_hex(32),
            expires=now + timedelta(hours=1) if i % 2 else now + timedelta(days=36500),
            scope="mcp" if i % 2 else oauth2_settings.DCR_REGISTRATION_SCOPE,
        )
        for i in range(count)
    )
    get_refresh_token_model().objects.bulk_create(
        get_refresh_token_model()(
            user=users[i],
            application=applications[i],
            token=secrets.token_hex(16),
            token_checksum=secrets.token_hex(32),
            access_token=tokens[i] if i % 2 else None,
            token_family=uuid.uuid4(),
        )
        for i in range(count)
    )
    get_grant_model().objects.bulk_create(
        get_grant_model()(
            user=users[i],
            application=applications[i],
            code=secrets.token_hex(16),
            expires=now,
            redirect_uri="https://x/cb",
            code_challenge="c",
            code_challenge_method="S256",
        )
        for i in range(count)
    )
    AuditEvent.objects.bulk_create(
        AuditEvent(
            created_at=BASE - timedelta(seconds=i),
            action="consent_approved",
            actor_type="user",
            actor_label=f"person{i}",
            client_id=applications[i].client_id,
            consent_id=consents[i].pk,
            ip_address="203.0.113.7",
            user_agent="Mozilla/5.0",
            previous_hash="0" * 64,
            hash=secrets.token_hex(32),
        )
        for i in range(count)
    )
    return {
        "client_id": applications[0].client_id,
        "username": users[0].username,
        "year": BASE.year,
        "month": BASE.month,
        "objects": {
            "mcp_consent_mcpclient": clients[0].pk,
            "mcp_consent_consent": consents[0].pk,
            "mcp_consent_upstreamtoken": UpstreamToken.objects.first().pk,  # type: ignore[union-attr]
            "mcp_consent_upstreamidentity": identities[0].pk,
            "mcp_consent_authorizationtransaction": AuthorizationTransaction.objects.first().pk,  # type: ignore[union-attr]
            "mcp_consent_auditevent": AuditEvent.objects.first().pk,  # type: ignore[union-attr]
            "oauth2_provider_application": applications[0].pk,
            "oauth2_provider_accesstoken": tokens[1].pk,
            "oauth2_provider_refreshtoken": get_refresh_token_model().objects.first().pk,  # type: ignore[union-attr]
            "oauth2_provider_grant": get_grant_model().objects.first().pk,  # type: ignore[union-attr]
        },
    }


def measure(client, url: str) -> tuple[int, int, list[str]]:  # type: ignore[no-untyped-def]
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(queries), len(response.content), [q["sql"] for q in queries.captured_queries]


def pages(seeded: dict[str, object]) -> list[str]:
    urls = [reverse(f"admin:{name}_changelist") for name in CHANGELISTS]
    urls += [
        reverse(f"admin:{name}_changelist") + "?" + query.format(**seeded)
        for name, query in FILTERED
    ]
    objects: dict[str, int] = seeded["objects"]  # type: ignore[assignment]
    urls += [reverse(f"admin:{name}_change", args=[pk]) for name, pk in objects.items()]
    return urls


@pytest.fixture
def operator(client):  # type: ignore[no-untyped-def]
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "x")
    client.force_login(user)
    return client


def test_every_admin_page_costs_the_same_at_10_and_at_300_rows(operator, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 11: statements per page do not grow with rows, and neither does the HTML of a
    full page (a filter listing every client or user would). Pages of 5 rows, so that 10
    rows already fill them."""
    from django.contrib import admin

    for model_admin in admin.site._registry.values():
        monkeypatch.setattr(model_admin, "list_per_page", 5)
    small = seed(10)
    for url in pages(small):  # per-process caches (content types, sites) filled once
        operator.get(url)
    at_10 = {url: measure(operator, url) for url in pages(small)}
    seed(290)
    at_300 = {url: measure(operator, url) for url in pages(small)}
    for url, (queries, html_10, statements) in at_10.items():
        assert at_300[url][0] == queries, "\n".join(
            [url, *statements, "-- at 300:", *at_300[url][2]]
        )
        html_300 = at_300[url][1]
        assert html_300 <= html_10 * 1.05 + 500, (url, html_10, html_300)
        # No COUNT(*) without a bound, no second full count, no SELECT DISTINCT of dates.
        for sql in at_300[url][2]:
            upper = sql.upper()
            if upper.startswith("SELECT COUNT("):
                assert "LIMIT" in upper, (url, sql)
            assert "DISTINCT" not in upper, (url, sql)
