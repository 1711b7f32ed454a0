"""CD-00: the confused-deputy attack of the MCP security best practices, end to end.

The victim approved client A before, so the upstream (like GitHub) remembers consent for
the proxy's static client ID in a cookie and would skip its own page. The attacker
registers client B with a redirect URI of its own and sends the victim an authorize link.
"""

from __future__ import annotations

import json

import pytest

from mcp_consent.models import AuthorizationTransaction, Consent
from project.demo_upstream.models import RequestLog
from tests.browser_client import Browser, authorize_params, code_from, query_of
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db

ATTACKER_CB = "https://attacker.example/cb"


@pytest.fixture
def victim() -> Browser:
    """A browser that completed a legitimate flow with client A (upstream consent cookie set)."""
    browser = Browser()
    browser.login_upstream("octocat")
    client_a = MCPClientFactory(
        client_name="Legit Desktop App", redirect_uris=["http://127.0.0.1:33418/cb"]
    )
    final = browser.run_flow(authorize_params(client_a))
    assert final.status_code == 302
    assert final["Location"].startswith("http://127.0.0.1:33418/cb?code=")
    # Precondition of the attack: the upstream now skips its consent page for the static client.
    again = browser.get(_upstream_authorize_of(browser, client_a))
    assert again.status_code == 302
    assert "code=" in again["Location"]
    return browser


def _upstream_authorize_of(browser: Browser, client) -> str:
    page = browser.authorize(authorize_params(client))
    return browser.post_form(page, "approve")["Location"]


def _register_attacker_client(browser: Browser) -> str:
    attacker = Browser()
    response = attacker.client.post(
        "/register/",
        json.dumps(
            {
                "client_name": "Legit Desktop App",
                "redirect_uris": [ATTACKER_CB],
                "token_endpoint_auth_method": "none",
            }
        ),
        content_type="application/json",
        HTTP_HOST="127.0.0.1:8000",
    )
    assert response.status_code == 201
    return response.json()["client_id"]


def attacker_params(client_b: str) -> dict[str, str]:
    """The authorize link the attacker sends the victim (client B, B's own redirect URI)."""
    return {
        "response_type": "code",
        "client_id": client_b,
        "redirect_uri": ATTACKER_CB,
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        "state": "x",
        "resource": "http://127.0.0.1:8000/mcp",
    }


def test_cd00_attacker_client_lands_on_our_consent_page_and_nothing_reaches_upstream(
    victim: Browser,
) -> None:
    """CD-00, CD-02, CD-41: consent page for B, no redirect upstream, no pending state, no code."""
    client_b = _register_attacker_client(victim)
    upstream_requests = RequestLog.objects.count()
    transactions = AuthorizationTransaction.objects.count()

    params = attacker_params(client_b)
    page = victim.authorize(params)

    assert page.status_code == 200
    assert "Self-registered, unverified" in page.content.decode()
    assert "attacker.example" in page.content.decode()  # CD-12: the victim sees where it goes
    assert not page.has_header("Location")
    assert RequestLog.objects.count() == upstream_requests  # the upstream saw nothing
    assert AuthorizationTransaction.objects.count() == transactions  # no state before approval
    assert not any(name.startswith("__Host-mcp_consent") for name in page.cookies)


def test_cd00_attacker_receives_nothing_when_victim_denies(victim: Browser) -> None:
    """CD-00, CD-18: Deny sends access_denied (no code) and stores no consent for B."""
    client_b = _register_attacker_client(victim)
    params = attacker_params(client_b)
    upstream_requests = RequestLog.objects.count()
    denied = victim.post_form(victim.authorize(params), "deny")
    assert denied.status_code == 303
    query = query_of(denied["Location"])
    assert query["error"] == ["access_denied"]
    assert "code" not in query
    assert query["state"] == ["x"]
    assert query["iss"] == ["http://127.0.0.1:8000"]
    assert RequestLog.objects.count() == upstream_requests
    assert not Consent.objects.filter(client__application__client_id=client_b).exists()


def test_cd00_code_reaches_attacker_only_after_explicit_approval(victim: Browser) -> None:
    """CD-00: the only way to B's redirect URI with a code is the victim pressing Approve."""
    client_b = _register_attacker_client(victim)
    params = attacker_params(client_b)
    final = victim.run_flow(params)
    assert final["Location"].startswith(ATTACKER_CB + "?")
    assert code_from(final)
    assert Consent.objects.filter(client__application__client_id=client_b).count() == 1
