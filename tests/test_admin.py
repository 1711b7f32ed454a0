"""The operator's registration in the admin: the same policy and flow as DCR and CIMD."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from oauth2_provider.models import get_application_model

from mcp_consent.models import MCPClient, RedirectURI, UpstreamToken
from tests.browser_client import Browser, authorize_params

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "x")
    client.force_login(user)
    return client


def test_operator_registers_a_verified_client_through_the_flow(operator) -> None:
    """Admin registration writes Application, MCPClient and RedirectURI rows; verified on the page."""
    response = operator.post(
        reverse("admin:mcp_consent_mcpclient_register"),
        {
            "client_name": "Company Agent",
            "redirect_uris": "https://agent.example.com/cb\nhttp://127.0.0.1:7777/cb",
        },
    )
    assert response.status_code == 302
    client = MCPClient.objects.get()
    assert client.registration_source == "admin" and client.verified
    assert client.application.client_type == "public"
    assert list(RedirectURI.objects.values_list("uri", flat=True)) == [
        "https://agent.example.com/cb",
        "http://127.0.0.1:7777/cb",
    ]
    page = Browser().authorize(authorize_params(client))
    assert page.status_code == 200 and "Verified" in page.content.decode()
    assert "Self-registered" not in page.content.decode()


@pytest.mark.parametrize(
    "uri", ["http://evil.example/cb", "https://*.example.com/cb", "javascript:alert(1)"]
)
def test_operator_registration_follows_the_redirect_uri_policy(operator, uri) -> None:
    """DCR-11, DCR-13, DCR-14 apply to operators too; nothing is written on refusal."""
    response = operator.post(
        reverse("admin:mcp_consent_mcpclient_register"), {"client_name": "X", "redirect_uris": uri}
    )
    assert response.status_code == 200
    assert "redirect URI" in response.content.decode()
    assert not get_application_model().objects.exists() and not MCPClient.objects.exists()


def test_confidential_client_secret_is_shown_once(operator) -> None:
    response = operator.post(
        reverse("admin:mcp_consent_mcpclient_register"),
        {
            "client_name": "Server",
            "redirect_uris": "https://srv.example.com/cb",
            "confidential": "on",
        },
        follow=True,
    )
    assert "client_secret (shown once" in response.content.decode()
    assert MCPClient.objects.get().application.client_type == "confidential"


def test_dot_application_admin_cannot_add_or_edit_security_fields(operator) -> None:
    """No way around the registration policy through DOT's own Application admin."""
    add = operator.get(reverse("admin:oauth2_provider_application_add"))
    assert add.status_code == 403
    operator.post(
        reverse("admin:mcp_consent_mcpclient_register"),
        {"client_name": "A", "redirect_uris": "https://a.example/cb"},
    )
    application = get_application_model().objects.get()
    change = operator.get(
        reverse("admin:oauth2_provider_application_change", args=[application.pk])
    )
    assert change.status_code == 200
    assert 'name="redirect_uris"' not in change.content.decode()


def test_upstream_token_admin_never_shows_secrets(operator) -> None:
    """UP-07: the admin shows no ciphertext or token of the vault."""
    from tests.factories import MCPClientFactory

    browser = Browser()
    browser.login_upstream()
    browser.run_flow(authorize_params(MCPClientFactory()))
    token = UpstreamToken.objects.get()
    page = operator.get(
        reverse("admin:mcp_consent_upstreamtoken_change", args=[token.pk])
    ).content.decode()
    assert token.access_token_encrypted not in page and token.refresh_token_encrypted not in page
