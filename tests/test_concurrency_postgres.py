"""Races on PostgreSQL: real threads, one database connection each, released by a barrier
(issue 5.3).

Single use and "exactly one" are promises about concurrent requests, and only a database
with real row locks and concurrent transactions can break or keep them, so these tests run
on PostgreSQL (``make test-postgres``) and skip on SQLite. Each thread drives the proxy
through its own Django test client; the threads wait at a barrier so that their requests
overlap in the database, and every race is repeated for a few rounds.

* many parallel redemptions of one code: exactly one token, the rest invalid_grant, and
  what the code bought is revoked (AS-41, BCP-10);
* many parallel callbacks with one upstream state: exactly one grant, one code exchange
  upstream (CD-45);
* many parallel refreshes with one refresh token: the reuse revokes the family (AS-44);
* many parallel approvals of one consent (one person, many tabs): one consent row;
* refreshes in many token families against a revocation or a disable: no deadlock, and
  nothing of the consent survives (SEC-12).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from mcp_consent import audit
from mcp_consent import upstream as upstream_module
from mcp_consent.flows import clients, revocation
from mcp_consent.models import AuthorizationTransaction, Consent, UpstreamIdentity, UpstreamToken
from tests.browser_client import (
    PROXY_HOST,
    Browser,
    authorize_params,
    form_action,
    form_fields,
    pkce_pair,
    query_of,
)
from tests.db_state import audit_event_model, require_postgresql
from tests.factories import MCPClientFactory
from tests.upstream_fakes import TOKEN_URL, UPSTREAM_ORIGIN, RecordingAdapter, mounted

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 12
ROUNDS = 3
REDIRECT_URI = "https://app.example/cb"
RESOURCE = "http://127.0.0.1:8000/mcp"

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
Grant = get_grant_model()


@pytest.fixture(autouse=True)
def _postgresql(settings: Any) -> None:
    require_postgresql("real row locks, one connection per thread")
    from project.demo_upstream.seed import seed_demo_data

    seed_demo_data()  # transaction=True: the tables were flushed after the previous test
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RATE_LIMITS": {}}


@pytest.fixture(autouse=True)
def recorder() -> Iterator[RecordingAdapter]:
    """The demo upstream in-process, one test client per thread (the conftest one is shared)."""
    adapter = RecordingAdapter()
    with mounted(UPSTREAM_ORIGIN + "/", adapter):
        yield adapter


# --- the race harness -------------------------------------------------------------------------


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    location: str

    @classmethod
    def of(cls, response: Any) -> Outcome:
        body: dict[str, Any] = {}
        if response.get("Content-Type", "").startswith("application/json"):
            body = response.json()
        return cls(response.status_code, body, response.get("Location", ""))


def race(n: int, prepare: Callable[[int], Any], go: Callable[[int, Any], Any]) -> list[Any]:
    """Run ``go(i, prepare(i))`` in ``n`` threads released together by a barrier.

    ``prepare`` runs before the barrier (clients built, connection open) so that the raced
    requests start within microseconds of each other. Each thread closes its own database
    connection. An exception in a thread is returned as the result, never swallowed.
    """
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        try:
            prepared = prepare(i)
            connection.ensure_connection()
            barrier.wait(timeout=60)
            results[i] = go(i, prepared)
        except BaseException as exc:  # noqa: BLE001 -- reported by the caller
            barrier.abort()
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,), name=f"racer-{i}") for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), f"{thread.name} is stuck (deadlock?)"
    crashed = [r for r in results if isinstance(r, BaseException)]
    assert not crashed, crashed
    return results


def proxy_client() -> Client:
    # A crash must come back as the 500 a client would get, not be re-raised in the thread.
    return Client(raise_request_exception=False)


# --- flows to set the races up ----------------------------------------------------------------


def new_code(browser: Browser | None = None, client: Any = None) -> tuple[Any, str, str, Browser]:
    client = client or MCPClientFactory(redirect_uris=[REDIRECT_URI])
    if browser is None:
        browser = Browser()
        browser.login_upstream()
    verifier, challenge = pkce_pair()
    final = browser.run_flow(authorize_params(client, challenge=challenge))
    return client, query_of(final["Location"])["code"][0], verifier, browser


def redeem_data(client: Any, code: str, verifier: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client.application.client_id,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        "resource": RESOURCE,
    }


def usable_tokens(application: Any) -> tuple[int, int]:
    """(valid access tokens, unrevoked refresh tokens) of the users of ``application``."""
    access = [
        t
        for t in AccessToken.objects.filter(application=application, user__isnull=False)
        if t.is_valid()
    ]
    refresh = RefreshToken.objects.filter(application=application, revoked__isnull=True).count()
    return len(access), refresh


def post_form(http: Client, data: dict[str, str]) -> Any:
    return http.post("/token/", data, HTTP_HOST=PROXY_HOST)


def race_token_requests(data: dict[str, str]) -> list[Outcome]:
    """THREADS clients POST the same /token/ request at once."""
    return race(
        THREADS, lambda i: proxy_client(), lambda i, http: Outcome.of(post_form(http, data))
    )


def race_gets(url: str, cookies: dict[str, str]) -> list[Outcome]:
    """THREADS clients holding the same cookies GET the same URL at once."""

    def prepare(i: int) -> Client:
        http = proxy_client()
        for key, value in cookies.items():
            http.cookies[key] = value
        return http

    return race(THREADS, prepare, lambda i, http: Outcome.of(http.get(url, HTTP_HOST=PROXY_HOST)))


# --- 1. one code, many redemptions (AS-41, BCP-10) ----------------------------------------


def test_parallel_redemptions_of_one_code_give_exactly_one_token() -> None:
    """AS-41 / BCP-10: of N simultaneous redemptions of one code exactly one gets a token;
    every other one is a proper invalid_grant (400 JSON), never a 500 or a second token."""
    browser: Browser | None = None
    for _round in range(ROUNDS):
        client, code, verifier, browser = new_code(browser)
        data = redeem_data(client, code, verifier)
        results = race_token_requests(data)
        statuses = sorted(r.status for r in results)
        assert statuses.count(200) == 1, statuses
        for r in results:
            if r.status != 200:
                assert r.status == 400, r
                assert r.body.get("error") == "invalid_grant", r
        winner = next(r for r in results if r.status == 200)
        assert winner.body["access_token"]
        assert winner.body["refresh_token"]


def test_parallel_redemptions_of_one_code_leave_no_usable_token() -> None:
    """AS-41: N-1 of the racers replayed the code, so what it bought is revoked; and the
    losers did not leave tokens of their own behind."""
    browser: Browser | None = None
    for _round in range(ROUNDS):
        client, code, verifier, browser = new_code(browser)
        data = redeem_data(client, code, verifier)
        race_token_requests(data)
        assert usable_tokens(client.application) == (0, 0)
        assert (
            AccessToken.objects.filter(application=client.application, user__isnull=False).count()
            <= 1
        )


# --- 2. one upstream state, many callbacks (CD-45) ------------------------------------------


def test_parallel_callbacks_with_one_state_give_exactly_one_grant(
    recorder: RecordingAdapter,
) -> None:
    """CD-45: the conditional UPDATE claims the transaction once: one code for the client,
    one code exchange with the upstream, one consent and upstream token; the other callbacks
    get the error page (400), never a 500 or a second grant."""
    browser = Browser()
    browser.login_upstream()
    client = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    latest = 0
    for round_ in range(ROUNDS):
        page = browser.authorize(authorize_params(client))
        to_upstream = browser.post_form(page, "approve")
        callback = browser.through_upstream(to_upstream["Location"])["Location"]
        cookies = {key: morsel.value for key, morsel in browser.client.cookies.items()}
        exchanges = recorder.calls_to(TOKEN_URL)
        grants = Grant.objects.count()
        results = race_gets(callback, cookies)
        statuses = sorted(r.status for r in results)
        assert statuses.count(302) == 1, statuses
        assert statuses.count(400) == THREADS - 1, statuses
        winner = next(r for r in results if r.status == 302)
        assert winner.location.startswith(REDIRECT_URI + "?")
        assert query_of(winner.location)["code"]
        assert recorder.calls_to(TOKEN_URL) == exchanges + 1  # the upstream code, exchanged once
        assert Grant.objects.count() == grants + 1
        assert Consent.objects.count() == 1
        assert UpstreamToken.objects.count() == 1
        tx = AuthorizationTransaction.objects.order_by("-pk").first()
        assert tx.outcome == AuthorizationTransaction.Outcome.COMPLETED
        model = audit_event_model()
        accepted = model.objects.filter(action=model.Action.CALLBACK_ACCEPTED).count()
        assert accepted == round_ + 1
        # Each loser is refused as a used state, whether it read the row before or after
        # the winner's claim (the conditional UPDATE's answer, or the row it read).
        refused = model.objects.filter(action=model.Action.CALLBACK_REFUSED, pk__gt=latest)
        assert [e.details["reason"] for e in refused] == ["state already used"] * (THREADS - 1)
        latest = model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


# --- 3. one refresh token, many refreshes (AS-44) -----------------------------------------


def test_parallel_refresh_token_reuse_revokes_the_family() -> None:
    """AS-44 / BCP-08: N simultaneous refreshes with one refresh token are a reuse: at most
    one succeeds (with real tokens), the others are invalid_grant, and afterwards no token of
    the family works -- whoever won the race, the replay killed the family."""
    browser: Browser | None = None
    for _round in range(ROUNDS):
        client, code, verifier, browser = new_code(browser)
        issued = Outcome.of(post_form(proxy_client(), redeem_data(client, code, verifier)))
        assert issued.status == 200, issued
        data = {
            "grant_type": "refresh_token",
            "refresh_token": issued.body["refresh_token"],
            "client_id": client.application.client_id,
        }
        results = race_token_requests(data)
        statuses = sorted(r.status for r in results)
        assert set(statuses) <= {200, 400}, statuses
        assert statuses.count(200) <= 1, statuses
        for r in results:
            if r.status == 200:
                assert r.body["access_token"], r.body
                assert r.body["refresh_token"], r.body
            else:
                assert r.body.get("error") == "invalid_grant", r
        assert usable_tokens(client.application) == (0, 0)
        for r in results:
            if r.status == 200:
                again = Outcome.of(
                    post_form(proxy_client(), {**data, "refresh_token": r.body["refresh_token"]})
                )
                assert again.status == 400
                assert again.body["error"] == "invalid_grant"


# --- 4. one person, many tabs: parallel approvals of one consent ----------------------------


def preapprove_upstream(browser: Browser) -> None:
    """Demo Hub remembers the proxy's static client for this browser (its consent cookie)."""
    browser.login_upstream()
    url = upstream_module.authorization_url(
        state="preapproval", scopes=["read:user", "repo:read"], code_verifier=None
    )
    browser.through_upstream(url)


def approve_in_tabs(browser: Browser, client: Any) -> list[Any]:
    """N tabs of one browser: consent page, Approve, Demo Hub, our callback -- the Approve
    POSTs and then the callbacks of all tabs raced."""
    params = authorize_params(client)
    page = browser.authorize(params)
    assert page.status_code == 200
    html = page.content.decode()
    action, fields = form_action(html), {**form_fields(html), "decision": "approve"}
    cookies = {key: morsel.value for key, morsel in browser.client.cookies.items()}
    callbacks = threading.Barrier(THREADS)

    def prepare(i: int) -> Browser:
        tab = Browser()
        tab.client.raise_request_exception = False
        for key, value in cookies.items():
            tab.client.cookies[key] = value
        return tab

    def go(i: int, tab: Browser) -> Outcome:
        approved = tab.client.post(action, fields, HTTP_HOST=PROXY_HOST)
        if approved.status_code != 303:
            callbacks.abort()
            return Outcome.of(approved)
        callback = tab.through_upstream(approved["Location"])["Location"]
        callbacks.wait(timeout=60)
        return Outcome.of(tab.get(callback))

    return race(THREADS, prepare, go)


def assert_one_consent(client: Any, results: list[Outcome]) -> None:
    assert all(r.status == 302 for r in results), [r.status for r in results]
    granted = [r for r in results if "code" in query_of(r.location)]
    assert granted, [r.location for r in results]
    for r in results:
        assert r.location.startswith(REDIRECT_URI + "?"), r.location
        query = query_of(r.location)
        assert "code" in query or query["error"][0] in {"temporarily_unavailable", "server_error"}
    assert Consent.objects.filter(client=client).count() == 1
    assert UpstreamToken.objects.count() == Consent.objects.count()
    assert UpstreamIdentity.objects.count() == 1


def test_parallel_approvals_of_one_consent_give_one_consent_row() -> None:
    """CD-01: one person approving the same client in many tabs at once has one consent
    (the returning user's identity row is the lock that serializes the callbacks)."""
    browser = Browser()
    preapprove_upstream(browser)
    new_code(browser)  # the person has used the proxy before (with another client)
    client = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    for _round in range(2):
        grants = Grant.objects.filter(application=client.application).count()
        results = approve_in_tabs(browser, client)
        assert_one_consent(client, results)
        issued = [r for r in results if "code" in query_of(r.location)]
        assert Grant.objects.filter(application=client.application).count() == grants + len(issued)


def test_parallel_first_sign_ins_give_one_user_identity_and_consent() -> None:
    """CD-01: a person new to the proxy, many tabs at once: one user, one upstream identity,
    one consent; a tab that lost the race gets a proper OAuth error, never a 500."""
    from django.contrib.auth import get_user_model

    browser = Browser()
    preapprove_upstream(browser)
    client = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    results = approve_in_tabs(browser, client)
    assert_one_consent(client, results)
    assert get_user_model().objects.filter(upstream_identities__isnull=False).count() == 1


CLIENTS = 6


@pytest.mark.parametrize("atomic_requests", [False, True])
def test_parallel_first_sign_ins_at_different_clients_give_one_person(
    monkeypatch: pytest.MonkeyPatch, atomic_requests: bool
) -> None:
    """CD-01: a person new to the proxy authorizes six clients at once. The client lock does
    not serialise these (six clients), so the first sign-ins race for the person's user and
    identity: the losers run their grant's transaction again (identities.in_one_transaction)
    and continue as the winner's user. Every tab gets its code; one user, one identity, six
    consents, upstream tokens and codes, all the person's; with ATOMIC_REQUESTS too (the
    grant's transaction then a savepoint of the request's)."""
    from django.contrib.auth import get_user_model
    from django.db import connections

    from mcp_consent.models import AuditEvent

    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", atomic_requests)
    browser = Browser()
    preapprove_upstream(browser)
    clients_ = [MCPClientFactory(redirect_uris=[REDIRECT_URI]) for _ in range(CLIENTS)]
    cookies = {key: morsel.value for key, morsel in browser.client.cookies.items()}

    def prepare(i: int) -> tuple[Browser, str]:
        tab = Browser()
        tab.client.raise_request_exception = False
        for key, value in cookies.items():
            tab.client.cookies[key] = value
        page = tab.authorize(authorize_params(clients_[i]))
        html = page.content.decode()
        approved = tab.client.post(
            form_action(html), {**form_fields(html), "decision": "approve"}, HTTP_HOST=PROXY_HOST
        )
        assert approved.status_code == 303
        return tab, tab.through_upstream(approved["Location"])["Location"]

    results = race(CLIENTS, prepare, lambda i, tab: Outcome.of(tab[0].get(tab[1])))
    assert [r.status for r in results] == [302] * CLIENTS
    assert all("code" in query_of(r.location) for r in results), [r.location for r in results]
    user = get_user_model().objects.get(upstream_identities__isnull=False)
    assert UpstreamIdentity.objects.get().user == user
    assert Consent.objects.filter(user=user).count() == CLIENTS == Consent.objects.count()
    assert UpstreamToken.objects.count() == CLIENTS
    assert Grant.objects.filter(user=user).count() == CLIENTS == Grant.objects.count()
    granted = AuditEvent.objects.filter(action=AuditEvent.Action.CONSENT_GRANTED)
    assert [e.actor_label for e in granted] == [user.get_username()] * CLIENTS


# --- 5. refreshes against revocation and disable: one lock order (SEC-12) -------------------

FAMILIES = 6


def token_families(n: int) -> tuple[Any, list[str], Browser]:
    """One person, one consent, ``n`` token families (``n`` codes redeemed): n refresh tokens."""
    client, code, verifier, browser = new_code()
    refresh_tokens = []
    for i in range(n):
        if i:
            _client, code, verifier, browser = new_code(browser, client)
        issued = Outcome.of(post_form(proxy_client(), redeem_data(client, code, verifier)))
        assert issued.status == 200, issued
        refresh_tokens.append(issued.body["refresh_token"])
    assert Consent.objects.filter(client=client).count() == 1
    return client, refresh_tokens, browser


def race_refreshes_against(client: Any, refresh_tokens: list[str], end: Callable[[], Any]) -> None:
    """Every family refreshes over and over while one more thread runs ``end`` (a revocation
    or a disable) in the middle of them. Returns once every thread is done."""
    application = client.application

    def refresh_loop(http: Client, token: str) -> list[Outcome]:
        outcomes = []
        for _ in range(4):
            outcome = Outcome.of(
                post_form(
                    http,
                    {
                        "grant_type": "refresh_token",
                        "refresh_token": token,
                        "client_id": application.client_id,
                    },
                )
            )
            outcomes.append(outcome)
            if outcome.status != 200:
                break
            token = outcome.body["refresh_token"]
        return outcomes

    def go(i: int, http: Client) -> Any:
        if i == len(refresh_tokens):
            time.sleep(0.05)  # into the middle of the first refreshes
            return end()
        return refresh_loop(http, refresh_tokens[i])

    results = race(len(refresh_tokens) + 1, lambda i: proxy_client(), go)
    for outcomes in results[:-1]:
        for outcome in outcomes:
            # A deadlock aborted on PostgreSQL is a 500 here (or an exception in the ending
            # thread, reported by race()); a refused refresh is an OAuth error.
            assert outcome.status in {200, 400, 401}, outcome
            if outcome.status != 200:
                assert outcome.body.get("error") in {"invalid_grant", "invalid_client"}, outcome


def test_sec12_refreshes_racing_a_revocation_neither_deadlock_nor_survive_it() -> None:
    """SEC-12: a person revokes (Connected apps' flow) while the client refreshes in several
    token families at once. One lock order (flows: client, consent, then tokens) means no
    deadlock error on either side, and afterwards the consent is revoked and no token of it
    works: a refresh that won the race was revoked by the cascade, one that lost it was
    refused."""
    for _round in range(ROUNDS):
        client, refresh_tokens, _browser = token_families(FAMILIES)
        consent = Consent.objects.get(client=client)

        revoke = functools.partial(
            revocation.revoke_consent, consent, actor=audit.SYSTEM, reason="SEC-12 race"
        )
        race_refreshes_against(client, refresh_tokens, revoke)
        consent.refresh_from_db()
        assert consent.revoked_at is not None
        assert usable_tokens(client.application) == (0, 0)
        assert not UpstreamToken.objects.filter(consent=consent).exists()


def test_sec12_refreshes_racing_a_disable_neither_deadlock_nor_survive_it() -> None:
    """SEC-12: an operator disables the client while it refreshes in several token families:
    no deadlock, and afterwards the client is disabled, its consent revoked, no token live."""
    for _round in range(ROUNDS):
        client, refresh_tokens, _browser = token_families(FAMILIES)

        disable = functools.partial(
            clients.disable_client, client, actor=audit.SYSTEM, reason="SEC-12 race"
        )
        race_refreshes_against(client, refresh_tokens, disable)
        client.refresh_from_db()
        assert client.disabled_at is not None
        consent = Consent.objects.get(client=client)
        assert consent.revoked_at is not None
        assert usable_tokens(client.application) == (0, 0)
        assert not UpstreamToken.objects.filter(consent=consent).exists()
