"""The adapter (mcp_consent/adapter.py): the project's hooks get the request, and sign-in
goes through the adapter's ``login`` (no authentication backend hard-coded in a view)."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, login
from django.test import override_settings

from mcp_consent.adapter import DefaultConsentAdapter, get_adapter
from tests.browser_client import Browser, authorize_params
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db

SEEN: list[tuple[str, Any]] = []
UPDATED: list[tuple[Any, str]] = []
PROJECT_BACKEND = "tests.test_adapter.ProjectBackend"


class ProjectBackend:
    """A project's own authentication backend: finds users by primary key."""

    def get_user(self, user_id: Any) -> Any:
        from django.contrib.auth import get_user_model

        return get_user_model()._default_manager.filter(pk=user_id).first()

    def authenticate(self, request: Any, **credentials: Any) -> None:
        return None


class RecordingAdapter(DefaultConsentAdapter):
    def scope_descriptions(self, scopes: list[str]) -> list[dict[str, Any]]:
        SEEN.append(("scope_descriptions", self.request))
        return super().scope_descriptions(scopes)

    def create_user(self, grant: Any) -> Any:
        SEEN.append(("create_user", self.request))
        return super().create_user(grant)

    def update_user(self, user: Any, grant: Any) -> None:
        UPDATED.append((user.pk, grant.login))
        super().update_user(user, grant)

    def login(self, request: Any, user: Any) -> None:
        SEEN.append(("login", request))
        login(request, user, backend=PROJECT_BACKEND)


@pytest.fixture
def recording() -> Any:
    SEEN.clear()
    UPDATED.clear()
    with override_settings(
        MCP_CONSENT={**settings.MCP_CONSENT, "ADAPTER": "tests.test_adapter.RecordingAdapter"},
        AUTHENTICATION_BACKENDS=[*settings.AUTHENTICATION_BACKENDS, PROJECT_BACKEND],
    ):
        yield SEEN


def test_hooks_receive_the_request_and_login_is_the_adapters(recording: Any) -> None:
    """As allauth's get_adapter(request): each hook of one authorization sees that request;
    the person is signed in by the adapter's login, with the project's backend."""
    client = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    browser = Browser()
    browser.login_upstream()
    final = browser.run_flow(authorize_params(client))
    assert final.status_code == 302
    assert final["Location"].startswith("https://app.example/cb?")
    assert [name for name, _ in recording] == ["scope_descriptions", "create_user", "login"]
    for name, request in recording:
        assert request is not None, f"{name} got no request"
        assert request.path in ("/authorize/", "/upstream/callback/"), (name, request.path)
    assert browser.client.session[BACKEND_SESSION_KEY] == PROJECT_BACKEND


def test_get_adapter_without_a_request_still_works() -> None:
    """Management commands and old callers: no request, the same hooks."""
    adapter = get_adapter()
    assert isinstance(adapter, DefaultConsentAdapter)
    assert adapter.request is None


def test_connected_apps_sign_in_hooks_receive_the_callbacks_request(recording: Any) -> None:
    """The Connected apps sign-in (no client) calls the same hooks with the callback's
    request, as an authorization does: a project's create_user that reads self.request (its
    address, its language) must not get None there."""
    browser = Browser()
    callback = browser.connected_apps_sign_in()
    assert browser.get(callback)["Location"] == "/connections/"
    assert [name for name, _ in recording] == ["create_user", "login"]
    for name, request in recording:
        assert request is not None, f"{name} got no request"
        assert request.path == "/upstream/callback/", (name, request.path)


def test_a_returning_person_is_not_created_again(recording: Any) -> None:
    """The adapter's create_user runs once per upstream identity: a person signing in again
    is found by their (upstream, subject) and only updated. Must not allow a second
    create_user for a known person (a project's hook may send a welcome mail, provision an
    account or assign groups: none of that may happen twice, even if rolled back after)."""
    client = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    browser = Browser()
    browser.login_upstream()
    assert browser.run_flow(authorize_params(client)).status_code == 302
    assert [name for name, _ in recording].count("create_user") == 1
    recording.clear()
    assert browser.run_flow(authorize_params(client)).status_code == 302
    assert "create_user" not in [name for name, _ in recording]
    assert "login" in [name for name, _ in recording]


def test_the_loser_of_a_first_sign_in_race_continues_as_the_winners_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CD-01, SEC-04: two tabs of a person new to the proxy sign in at once; the other tab
    commits the person's user and identity between this tab's lookup (which found nothing)
    and its insert, which hits the unique key. This tab continues with the identity the
    other one recorded: one user for the person, the consent theirs, no 500. Others'
    identities (the same subject at another upstream, another person of this upstream) are
    never taken. Deterministic here; tests/test_concurrency_postgres.py races it for real."""
    from django.contrib.auth import get_user_model
    from django.db.models.query import QuerySet

    from mcp_consent.models import Consent, UpstreamIdentity
    from project.demo_upstream.models import Account

    octocat = str(Account.objects.get(login="octocat").pk)
    User = get_user_model()
    for provider, subject, username in (
        ("https://other-upstream.example", octocat, "same-subject-elsewhere"),
        (settings.UPSTREAM["ISSUER"], "someone-else", "another-person"),
        (settings.UPSTREAM["ISSUER"], octocat, "winner-tab"),  # the other tab's, committed
    ):
        UpstreamIdentity.objects.create(
            provider=provider, subject=subject, user=User.objects.create_user(username)
        )
    first = QuerySet.first
    missed: list[bool] = []

    def looked_up_before_the_other_tab_committed(self: QuerySet) -> Any:
        if self.model is UpstreamIdentity and not missed:
            missed.append(True)
            return None
        return first(self)

    monkeypatch.setattr(QuerySet, "first", looked_up_before_the_other_tab_committed)
    client = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    browser = Browser()
    browser.login_upstream()
    final = browser.run_flow(authorize_params(client))
    assert missed == [True]
    assert final.status_code == 302
    assert "code=" in final["Location"]
    winner = User.objects.get(username="winner-tab")
    assert Consent.objects.get().user_id == winner.pk
    assert browser.client.session["_auth_user_id"] == str(winner.pk)
    # This tab's own user went with its savepoint: one user for the person.
    assert User.objects.count() == 3


def integrity_error_every_time(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """create_user hits a unique key at every try: an IntegrityError that is no race (a
    project's user model with a unique e-mail, say). The calls are counted."""
    from django.db import IntegrityError

    calls: list[int] = []

    def create_user(self: Any, grant: Any) -> Any:
        calls.append(1)
        raise IntegrityError("duplicate key value violates unique constraint (e-mail)")

    monkeypatch.setattr(DefaultConsentAdapter, "create_user", create_user)
    return calls


def test_a_first_sign_in_that_keeps_failing_is_retried_once_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """in_one_transaction runs the grant's transaction twice at most: a second loss is no
    race; the client gets temporarily_unavailable (never a 500), and nothing is left."""
    from mcp_consent.models import Consent, UpstreamIdentity
    from tests.browser_client import query_of

    client = MCPClientFactory(redirect_uris=["https://app.example/cb"])
    browser = Browser()
    browser.login_upstream()
    to_upstream = browser.post_form(browser.authorize(authorize_params(client)), "approve")
    callback = browser.through_upstream(to_upstream["Location"])["Location"]
    calls = integrity_error_every_time(monkeypatch)
    browser.client.raise_request_exception = False
    response = browser.get(callback)
    assert len(calls) == 2
    assert response.status_code == 302
    assert query_of(response["Location"])["error"] == ["temporarily_unavailable"]
    assert not Consent.objects.exists()
    assert not UpstreamIdentity.objects.exists()


def test_a_connected_apps_sign_in_that_cannot_be_recorded_shows_a_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Connected apps sign-in in the same case: a styled 503 page, nobody signed in, the
    transaction failed with its reason (it was a bare 500)."""
    from django.contrib.auth import SESSION_KEY

    from mcp_consent.models import AuthorizationTransaction, UpstreamIdentity

    browser = Browser()
    callback = browser.connected_apps_sign_in()
    calls = integrity_error_every_time(monkeypatch)
    browser.client.raise_request_exception = False
    response = browser.get(callback)
    assert len(calls) == 2
    assert response.status_code == 503
    assert "Temporarily unavailable" in response.content.decode()
    assert SESSION_KEY not in browser.client.session
    assert not UpstreamIdentity.objects.exists()
    tx = AuthorizationTransaction.objects.get()
    assert (tx.outcome, tx.failure_reason) == ("failed", "database error while signing in")


def test_update_user_gets_the_user_and_the_upstream_grant_at_every_sign_in(
    recording: Any,
) -> None:
    """The adapter's update_user (profile fields from the upstream) is called with the local
    user and what the upstream returned, at the first sign-in and at every later one."""
    from mcp_consent.models import UpstreamIdentity

    client = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    browser = Browser()
    browser.login_upstream()
    assert browser.run_flow(authorize_params(client)).status_code == 302
    user_id = UpstreamIdentity.objects.get().user_id
    assert UPDATED == [(user_id, "octocat")]
    assert browser.run_flow(authorize_params(client)).status_code == 302
    assert UPDATED == [(user_id, "octocat"), (user_id, "octocat")]


class SelfRequestAdapter(DefaultConsentAdapter):
    """A project's adapter whose hooks read the request as ``self.request`` (as documented)."""

    def create_user(self, grant: Any) -> Any:
        SEEN.append(("create_user", self.request))
        return super().create_user(grant)

    def login(self, request: Any, user: Any) -> None:
        SEEN.append(("login", self.request))
        super().login(request, user)


def test_connected_apps_sign_in_hooks_see_the_callback_request_as_self_request() -> None:
    """As allauth's get_adapter(request): on the Connected apps sign-in too, each hook that
    reads ``self.request`` gets the callback's request, never None."""
    SEEN.clear()
    with override_settings(
        MCP_CONSENT={**settings.MCP_CONSENT, "ADAPTER": "tests.test_adapter.SelfRequestAdapter"}
    ):
        browser = Browser()
        landed = browser.get(browser.connected_apps_sign_in())
    assert landed["Location"] == "/connections/"
    assert [name for name, _ in SEEN] == ["create_user", "login"]
    for name, request in SEEN:
        assert request is not None, f"{name} got no request"
        assert request.path == "/upstream/callback/", (name, request.path)


def test_authorization_callback_hooks_see_the_callback_request_as_self_request() -> None:
    """As allauth's get_adapter(request): at the callback of an authorization, create_user
    and login that read ``self.request`` get the callback's request, never None."""
    SEEN.clear()
    client = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    with override_settings(
        MCP_CONSENT={**settings.MCP_CONSENT, "ADAPTER": "tests.test_adapter.SelfRequestAdapter"}
    ):
        browser = Browser()
        browser.login_upstream()
        final = browser.run_flow(authorize_params(client))
    assert final["Location"].startswith("https://app.example/cb?code=")
    assert [name for name, _ in SEEN] == ["create_user", "login"]
    for name, request in SEEN:
        assert request is not None, f"{name} got no request"
        assert request.path == "/upstream/callback/", (name, request.path)
