"""The adapter (mcp_consent/adapter.py): the project's hooks get the request, and sign-in
goes through the adapter's ``login`` (no authentication backend hard-coded in a view)."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, login
from django.test import override_settings

from mcp_consent.adapter import DefaultConsentAdapter, get_adapter
from tests.browser_client import PROXY_HOST, Browser, authorize_params, form_fields
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db

SEEN: list[tuple[str, Any]] = []
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

    def login(self, request: Any, user: Any) -> None:
        SEEN.append(("login", request))
        login(request, user, backend=PROJECT_BACKEND)


@pytest.fixture
def recording() -> Any:
    SEEN.clear()
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
    page = browser.get("/connections/")
    token = form_fields(page.content.decode())["csrfmiddlewaretoken"]
    to_upstream = browser.client.post(
        "/connections/", {"action": "sign-in", "csrfmiddlewaretoken": token}, HTTP_HOST=PROXY_HOST
    )
    browser.login_upstream()
    callback = browser.through_upstream(to_upstream["Location"])
    assert browser.get(callback["Location"])["Location"] == "/connections/"
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
