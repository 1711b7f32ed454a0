"""Abuse limits: per-IP rate limits (DCR-02) and the cap on unused DCR clients (issue 4)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from mcp_consent.models import AuditEvent, MCPClient
from tests.browser_client import PROXY_HOST, assert_styled, authorize_params
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db


def register(client: Client, ip: str = "203.0.113.7", **headers: str) -> Any:
    body = {"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"}
    return client.post(
        "/register/",
        json.dumps(body),
        content_type="application/json",
        HTTP_HOST=PROXY_HOST,
        REMOTE_ADDR=ip,
        **headers,
    )


def test_dcr02_registrations_over_the_limit_get_429(settings, monkeypatch) -> None:
    """DCR-02: 100 registrations a minute from one address -> 429 after the threshold."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RATE_LIMITS": {"register": (10, 60)}}
    # Within one instant: the bucket refills one token per 6 s, which a slow machine's loop
    # of 100 registrations would otherwise see (test_token_bucket_refills_... covers that).
    monkeypatch.setattr("mcp_consent.ratelimit.time.time", lambda: 1_000_000.0)
    client = Client()
    statuses = [register(client).status_code for _ in range(100)]
    assert statuses[:10] == [201] * 10
    assert set(statuses[10:]) == {429}
    limited = register(client)
    assert limited["Retry-After"].isdigit()
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert limited.json()["error"] == "temporarily_unavailable"
    assert "no-store" in limited["Cache-Control"]
    assert MCPClient.objects.count() == 10
    # Audited once per window, not once per flooded request.
    assert AuditEvent.objects.filter(action=AuditEvent.Action.REGISTRATION_REFUSED).count() == 1
    # Another address is not affected.
    assert register(client, ip="198.51.100.9").status_code == 201


def test_token_endpoint_is_rate_limited(settings) -> None:
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RATE_LIMITS": {"token": (3, 60)}}
    client = Client()
    answers = [
        client.post(
            "/token/",
            {"grant_type": "authorization_code", "code": "x", "client_id": "y"},
            HTTP_HOST=PROXY_HOST,
        )
        for _ in range(5)
    ]
    assert [a.status_code for a in answers][3:] == [429, 429]
    assert all(a.status_code != 429 for a in answers[:3])
    assert answers[-1].json()["error"] == "temporarily_unavailable"
    assert answers[-1]["Retry-After"]


def test_authorize_is_rate_limited_with_a_page(settings) -> None:
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RATE_LIMITS": {"authorize": (2, 60)}}
    params = authorize_params(MCPClientFactory())
    client = Client()
    codes = [client.get("/authorize/", params, HTTP_HOST=PROXY_HOST).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    page = client.get("/authorize/", params, HTTP_HOST=PROXY_HOST)
    assert page.status_code == 429
    assert page["Content-Type"].startswith("text/html")
    assert page.context["title"] == "Too many requests"
    retry = int(page["Retry-After"])
    assert 0 < retry <= 60
    assert page.context["message"] == (
        f"Too many requests from this address; retry after {retry} seconds."
    )
    assert page["X-Frame-Options"] == "DENY"
    assert_styled(page)
    # ABUSE-01: the flood is audited once, naming the endpoint and the address.
    (limited,) = AuditEvent.objects.filter(action=AuditEvent.Action.RATE_LIMITED)
    assert limited.details == {"reason": "rate limit", "endpoint": "authorize"}
    assert (limited.ip_address, limited.actor_type) == ("127.0.0.1", "anonymous")


def test_cap_on_unused_dcr_clients(settings) -> None:
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "MAX_UNUSED_DCR_CLIENTS": 3, "RATE_LIMITS": {}}
    client = Client()
    assert [register(client).status_code for _ in range(4)] == [201, 201, 201, 429]
    # A client that was used no longer counts against the cap.
    from django.utils import timezone

    MCPClient.objects.filter(pk=MCPClient.objects.first().pk).update(last_used_at=timezone.now())
    assert register(client).status_code == 201


# --- Token buckets with the defaults (ABUSE-01, ABUSE-02) --------------------------------------


def test_abuse_02_sixty_registrations_from_one_address_in_a_minute_succeed() -> None:
    """ABUSE-02: a NAT'd office registers 60 clients within a minute with the defaults."""
    client = Client()
    assert [register(client).status_code for _ in range(60)] == [201] * 60


def test_abuse_02_a_conformance_suite_from_one_machine_is_not_refused() -> None:
    """ABUSE-02: ~150 registrations and 100 authorizations at once from one address."""
    client = Client()
    assert [register(client).status_code for _ in range(150)] == [201] * 150
    params = authorize_params(MCPClient.objects.first())
    codes = [
        client.get("/authorize/", params, HTTP_HOST=PROXY_HOST, REMOTE_ADDR="203.0.113.7")
        for _ in range(100)
    ]
    assert {c.status_code for c in codes} == {200}


def test_abuse_01_a_tight_registration_flood_gets_429_with_retry_after_before_its_end() -> None:
    """ABUSE-01 / DCR-02: 300 registrations in a tight loop: 429 before the end, no 5xx."""
    client = Client()
    answers = [register(client) for _ in range(300)]
    statuses = [a.status_code for a in answers]
    assert 429 in statuses
    assert statuses.index(429) < 299
    assert all(s < 500 for s in statuses)
    assert set(statuses) == {201, 429}
    refusals = [a for a in answers if a.status_code == 429]
    assert all(int(a["Retry-After"]) >= 1 for a in refusals)
    # One aggregate audit event for the address, not one per refused request.
    assert AuditEvent.objects.filter(action=AuditEvent.Action.REGISTRATION_REFUSED).count() == 1


def test_token_bucket_refills_at_its_sustained_rate(settings, monkeypatch) -> None:
    """The bucket: `burst` at once, then one more per interval; Retry-After says when."""
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "RATE_LIMITS": {"register": {"burst": 5, "per_minute": 30}},
    }
    now = [1_000_000.0]
    monkeypatch.setattr("mcp_consent.ratelimit.time.time", lambda: now[0])
    client = Client()
    assert [register(client).status_code for _ in range(6)] == [201] * 5 + [429]
    assert register(client)["Retry-After"] == "2"
    now[0] += 2.0
    assert [register(client).status_code for _ in range(2)] == [201, 429]
    now[0] += 10.0
    assert [register(client).status_code for _ in range(6)] == [201] * 5 + [429]


JUNK = {
    "callback": lambda c, i: c.get(
        "/upstream/callback/", {"state": f"junk-{i}", "code": "x"}, HTTP_HOST=PROXY_HOST
    ),
    "revoke": lambda c, i: c.post(
        "/revoke/", {"token": f"junk-{i}", "client_id": "junk"}, HTTP_HOST=PROXY_HOST
    ),
    "introspect": lambda c, i: c.post(
        "/introspect/",
        {"token": f"junk-{i}"},
        HTTP_HOST=PROXY_HOST,
        HTTP_AUTHORIZATION="Basic anVuazpqdW5r",
    ),
    "token": lambda c, i: c.post(
        "/token/",
        {"grant_type": "authorization_code", "code": f"junk-{i}", "client_id": "junk"},
        HTTP_HOST=PROXY_HOST,
    ),
    "authorize": lambda c, i: c.get(
        "/authorize/", {"client_id": f"junk-{i}", "response_type": "code"}, HTTP_HOST=PROXY_HOST
    ),
    "connections": lambda c, i: c.post(
        "/connections/", {"action": "sign-in"}, HTTP_HOST=PROXY_HOST
    ),
    "connections-revoke": lambda c, i: c.post(
        "/connections/", {"action": "revoke", "consent": str(10_000 + i)}, HTTP_HOST=PROXY_HOST
    ),
    "connections-sign-out": lambda c, i: c.post(
        "/connections/", {"action": "sign-out"}, HTTP_HOST=PROXY_HOST
    ),
    "register": lambda c, i: c.post(
        "/register/", "{", content_type="application/json", HTTP_HOST=PROXY_HOST
    ),
}


@pytest.mark.parametrize("endpoint", list(JUNK))
def test_abuse_01_300_junk_requests_get_429_before_the_end_and_never_a_5xx(endpoint) -> None:
    """ABUSE-01: every anonymous endpoint that writes, fetches or checks tokens is throttled;
    refusals are audited in aggregate (one event per address and window)."""
    from mcp_consent.models import AuthorizationTransaction

    client = Client()
    answers = [JUNK[endpoint](client, i) for i in range(300)]
    statuses = [a.status_code for a in answers]
    assert all(s < 500 for s in statuses), sorted(set(statuses))
    assert 429 in statuses[:299], sorted(set(statuses))
    assert all(a["Retry-After"].isdigit() for a in answers if a.status_code == 429)
    # The refusals are audited once for the address and window, not one row each.
    action = (
        AuditEvent.Action.REGISTRATION_REFUSED
        if endpoint == "register"
        else AuditEvent.Action.RATE_LIMITED
    )
    assert AuditEvent.objects.filter(action=action, details__reason="rate limit").count() == 1
    assert AuditEvent.objects.filter(action=AuditEvent.Action.CALLBACK_REFUSED).count() <= 1
    assert AuditEvent.objects.count() <= 2
    # The anonymous sign-ins that got through stored at most one burst of pending hops.
    assert AuthorizationTransaction.objects.count() < 300
    # Meanwhile another address is not refused.
    other = Client(REMOTE_ADDR="198.51.100.44")
    assert JUNK[endpoint](other, 0).status_code != 429


def test_abuse_01_a_busy_resource_server_is_never_refused(settings, monkeypatch) -> None:
    """ABUSE-01: introspection counts failed client authentication only, as axes does."""
    monkeypatch.setattr("mcp_consent.ratelimit.time.time", lambda: 1_000_000.0)  # no refill
    from mcp_consent.flows import resource_servers

    application, secret = resource_servers.create_resource_server("Billing MCP server")
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "INTROSPECTION_CLIENTS": {application.client_id: ["http://127.0.0.1:8000/mcp"]},
        "RATE_LIMITS": {"introspect": (5, 60)},
    }
    import base64

    good = "Basic " + base64.b64encode(f"{application.client_id}:{secret}".encode()).decode()
    client = Client()
    for i in range(30):
        answer = client.post(
            "/introspect/", {"token": f"t-{i}"}, HTTP_HOST=PROXY_HOST, HTTP_AUTHORIZATION=good
        )
        assert answer.status_code == 200
    bad = [
        client.post(
            "/introspect/", {"token": "t"}, HTTP_HOST=PROXY_HOST, HTTP_AUTHORIZATION="Basic eDp5"
        ).status_code
        for _ in range(7)
    ]
    assert bad == [401] * 5 + [429, 429]


# --- One client address (ABUSE-01, BCP-19) -------------------------------------------------------


def test_forwarded_for_is_ignored_without_a_trusted_proxy(settings) -> None:
    """BCP-19: without TRUSTED_PROXY_COUNT a forged X-Forwarded-For buys no fresh bucket."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RATE_LIMITS": {"register": (3, 60)}}
    client = Client()
    statuses = [
        register(client, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code for i in range(5)
    ]
    assert statuses == [201, 201, 201, 429, 429]


def test_behind_a_trusted_proxy_the_address_it_saw_counts(settings) -> None:
    """TRUSTED_PROXY_COUNT=1: the entry the proxy appended, never what the client wrote."""
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "RATE_LIMITS": {"register": (2, 60)},
        "TRUSTED_PROXY_COUNT": 1,
    }
    client = Client()
    spoofed = [
        register(client, ip="10.0.0.2", HTTP_X_FORWARDED_FOR=f"1.2.3.{i}, 203.0.113.50")
        for i in range(3)
    ]
    assert [a.status_code for a in spoofed] == [201, 201, 429]
    other = register(client, ip="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.51")
    assert other.status_code == 201
    event = (
        AuditEvent.objects.filter(action=AuditEvent.Action.CLIENT_REGISTERED).order_by("pk").last()
    )
    assert event is not None
    assert event.ip_address == "203.0.113.51"


def test_abuse_01_a_flood_across_a_clock_boundary_is_audited_once(monkeypatch) -> None:
    """ABUSE-01: the audit window starts at the first refusal. Windows aligned to the clock
    audited a flood twice when it straddled a boundary (seen as a flaky test, 14:55:00)."""
    from django.test import RequestFactory

    from mcp_consent import ratelimit

    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.77")
    monkeypatch.setattr(ratelimit.time, "time", lambda: 299.9)
    assert ratelimit.first_in_window("register", request)
    monkeypatch.setattr(ratelimit.time, "time", lambda: 300.1)
    assert not ratelimit.first_in_window("register", request)


# --- ABUSE-03: no global lock-out -----------------------------------------------------------------


def test_abuse_03_an_address_that_fills_its_budget_does_not_stop_another(settings) -> None:
    """ABUSE-03: never-used clients are bounded per address, not for everyone."""
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "MAX_UNUSED_CLIENTS_PER_ADDRESS": 5,
        "RATE_LIMITS": {},
    }
    client = Client()
    attacker = [register(client, ip="203.0.113.66").status_code for _ in range(8)]
    assert attacker == [201] * 5 + [429] * 3
    refused = register(client, ip="203.0.113.66")
    assert "never used" in refused.json()["error_description"]
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert register(client, ip="198.51.100.20").status_code == 201


def test_abuse_03_unused_clients_expire_out_of_the_budget(settings) -> None:
    """ABUSE-03: a client with no completed authorization after UNUSED_CLIENT_TTL no longer counts."""
    from datetime import timedelta

    from django.utils import timezone

    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "MAX_UNUSED_CLIENTS_PER_ADDRESS": 2,
        "RATE_LIMITS": {},
    }
    client = Client()
    assert [register(client).status_code for _ in range(3)] == [201, 201, 429]
    MCPClient.objects.update(created_at=timezone.now() - timedelta(seconds=3601))
    assert register(client).status_code == 201


def test_abuse_03_the_global_cap_is_a_logged_last_resort(settings, caplog) -> None:
    """ABUSE-03: MAX_UNUSED_DCR_CLIENTS still stops an attacker spread over many addresses,
    and says so in the log and the audit trail."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "MAX_UNUSED_DCR_CLIENTS": 3, "RATE_LIMITS": {}}
    client = Client()
    assert [register(client, ip=f"203.0.113.{i}").status_code for i in range(4)] == [201] * 3 + [
        429
    ]
    assert "MAX_UNUSED_DCR_CLIENTS" in caplog.text
    refused = AuditEvent.objects.filter(action=AuditEvent.Action.REGISTRATION_REFUSED).get()
    assert "all addresses" in refused.details["description"]


def test_abuse_03_the_budget_counts_exactly_what_the_orm_would(settings) -> None:
    """ABUSE-03: the hand-written count before each registration (registration/budget.py)
    counts what ``Count`` over the same queryset counts: only never-used DCR and CIMD
    clients younger than the TTL, all addresses and this one. An operator's clients, used
    ones, expired ones and other addresses' are each left out where they must be."""
    from datetime import timedelta

    from django.db.models import Count, Q
    from django.utils import timezone

    from mcp_consent.models import RegistrationSource
    from mcp_consent.registration.budget import UNUSED_SOURCES, unused_client_counts

    def made(source: str = RegistrationSource.DCR, **fields: Any) -> None:
        client = MCPClientFactory(source=source)
        MCPClient.objects.filter(pk=client.pk).update(**fields)

    now = timezone.now()
    made(registered_from="203.0.113.1")
    made(registered_from="203.0.113.1")
    made(RegistrationSource.CIMD, registered_from="203.0.113.1")
    made(registered_from="198.51.100.2")
    made(registered_from=None)
    made(registered_from="203.0.113.1", last_used_at=now)  # used: never counted
    made(registered_from="203.0.113.1", created_at=now - timedelta(hours=2))  # expired
    made(RegistrationSource.ADMIN, registered_from="203.0.113.1")  # an operator's
    since = now - timedelta(hours=1)
    unused = MCPClient.objects.filter(
        registration_source__in=UNUSED_SOURCES, last_used_at__isnull=True, created_at__gt=since
    )
    for address in ("203.0.113.1", "198.51.100.2", "192.0.2.9"):
        expected = unused.aggregate(
            everyone=Count("pk"), mine=Count("pk", filter=Q(registered_from=address))
        )
        assert unused_client_counts(since, address) == (expected["everyone"], expected["mine"])
    assert unused_client_counts(since, "203.0.113.1") == (5, 3)
    assert unused_client_counts(since, None) == (5, 0)
    assert unused_client_counts(now + timedelta(seconds=1), "203.0.113.1") == (0, 0)


def test_abuse_03_the_budget_is_read_from_its_index_alone() -> None:
    """ABUSE-03's count runs before every registration: on SQLite it must be answered from
    the partial index alone, not by reading the table (it grows with every registration)."""
    from datetime import timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from mcp_consent.registration.budget import unused_client_counts

    if connection.vendor != "sqlite":
        pytest.skip("the query plan checked is SQLite's")
    with CaptureQueriesContext(connection) as queries:
        unused_client_counts(timezone.now() - timedelta(hours=1), "203.0.113.1")
    (query,) = queries.captured_queries
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + query["sql"])
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    assert "USING COVERING INDEX mcp_client_unused_idx" in plan, plan


# --- docs/abuse-limits.md says what the code does ---------------------------------------------


def _doc_table_rows(heading: str) -> list[list[str]]:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "abuse-limits.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # without the header row


def test_abuse_02_docs_state_each_rate_limit_and_its_default_as_the_code_has_it() -> None:
    """ABUSE-02: every endpoint's bucket in the docs, with the burst and rate the code uses."""
    from mcp_consent.app_settings import DEFAULT_RATE_LIMITS

    documented = {}
    for row in _doc_table_rows("Rate limits: token buckets"):
        key = row[0].rsplit("(`", 1)[1].rstrip("`)")
        documented[key] = {"burst": float(row[2]), "per_minute": float(row[3])}
    assert documented == {
        k: {n: float(v) for n, v in r.items()} for k, r in DEFAULT_RATE_LIMITS.items()
    }


def test_abuse_03_docs_state_each_budget_setting_and_its_default_as_the_code_has_it(
    settings,
) -> None:
    """ABUSE-03: each never-used-client setting in the docs, with the default the code uses."""
    from mcp_consent.app_settings import app_settings

    names = [
        "MAX_UNUSED_CLIENTS_PER_ADDRESS",
        "UNUSED_CLIENT_TTL",
        "MAX_UNUSED_DCR_CLIENTS",
        "TRANSACTION_RETENTION",
        "UNUSED_CLIENT_DAYS",
    ]
    settings.MCP_CONSENT = {k: v for k, v in settings.MCP_CONSENT.items() if k not in names}
    documented = {
        row[0].strip("`"): int(row[1].split()[0]) for row in _doc_table_rows("Never-used clients")
    }
    assert documented == {name: getattr(app_settings, name) for name in names}


def test_abuse_01_a_busy_client_refreshing_its_tokens_is_never_refused(
    settings, monkeypatch
) -> None:
    """ABUSE-01: /token/ counts failed requests only; a client that redeems and refreshes far
    more often than the failure budget keeps getting tokens, and its guessing does not."""
    from tests.mcp_tokens import issue_token, post_form

    monkeypatch.setattr("mcp_consent.ratelimit.time.time", lambda: 1_000_000.0)  # no refill
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RATE_LIMITS": {"token": (3, 60)}}
    issued = issue_token()
    for _ in range(10):
        answer = issued.refresh()
        assert answer.status_code == 200, answer.content
        issued.refresh_token = answer.json()["refresh_token"]
    junk = {"grant_type": "refresh_token", "refresh_token": "junk", "client_id": issued.client_id}
    statuses = [post_form("/token/", junk).status_code for _ in range(5)]
    assert statuses == [400] * 3 + [429] * 2


def test_abuse_01_real_sign_ins_are_never_counted_at_the_upstream_callback(
    settings, monkeypatch
) -> None:
    """ABUSE-01: /upstream/callback/ counts refused callbacks only; a busy address signing
    in more often than the budget is not refused, junk states from it then are."""
    from tests.mcp_tokens import issue_token

    monkeypatch.setattr("mcp_consent.ratelimit.time.time", lambda: 1_000_000.0)  # no refill
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RATE_LIMITS": {"callback": (2, 60)}}
    for _ in range(4):
        issue_token()  # each asserts its flow reached the client and the code redeemed
    client = Client()
    statuses = [
        client.get("/upstream/callback/", {"state": f"junk-{i}", "code": "x"}, HTTP_HOST=PROXY_HOST)
        for i in range(4)
    ]
    assert [s.status_code for s in statuses] == [400, 400, 429, 429]
    page = statuses[2]
    assert page["Content-Type"].startswith("text/html")  # the person's browser: a page
    assert page.context["title"] == "Too many requests"
    assert page.context["message"] == (
        f"Too many requests from this address; retry after {page['Retry-After']} seconds."
    )
    assert_styled(page)
    (limited,) = AuditEvent.objects.filter(action=AuditEvent.Action.RATE_LIMITED)
    assert limited.details == {"reason": "rate limit", "endpoint": "callback"}
    assert limited.ip_address == "127.0.0.1"


def test_abuse_02_a_conformance_suite_completes_150_registrations_and_100_whole_flows() -> None:
    """ABUSE-02: from one machine with the defaults, ~150 registrations and 100 whole
    authorizations (consent page, approval, upstream, callback) within a minute all pass."""
    from tests.browser_client import Browser

    client = Client()
    registered = [register(client, ip="127.0.0.1") for _ in range(150)]  # the Browser's address
    assert {r.status_code for r in registered} == {201}
    browser = Browser()
    browser.login_upstream()
    clients = MCPClient.objects.order_by("pk")[:100]
    for mcp_client in clients:
        final = browser.run_flow(authorize_params(mcp_client))  # asserts each step's status
        assert final.status_code == 302
        assert final["Location"].startswith("https://app.example/cb?code=")
