"""The referrer policy of every page and redirect a person's browser meets (CD-15, CD-13, issue 9).

One mechanism decides it (mcp_consent.views.common.protect_page): a page whose form posts back
to us is "same-origin" -- under "no-referrer" Chromium sends ``Origin: null`` with the POST and
Django's CSRF check refuses it (every Connected apps button failed that way) -- and everything
else, the redirects that carry codes and state and the error pages, is "no-referrer".
"""

from __future__ import annotations

import re

import pytest
from django.http import HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver

from mcp_consent import urls as app_urls
from tests.browser_client import PROXY_HOST, Browser, authorize_params, form_fields
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db

FORM_PAGE = "same-origin"
NO_REFERRER = "no-referrer"

# The app's URLs a person's browser visits (all wrapped by protect_page); every other URL of the
# app is a machine endpoint answering JSON (metadata, token, revoke, introspect, register).
BROWSER_URLS = {"authorize", "upstream-callback", "connections"}
MACHINE_URLS = {
    "oauth-server-metadata",
    "token",
    "revoke-token",
    "introspect",
    "dcr-register",
    "dcr-register-management",
    "protected-resource-metadata",
    "protected-resource-metadata-path",
}


def url_names(patterns: list[URLPattern | URLResolver]) -> set[str]:
    return {p.name for p in patterns if isinstance(p, URLPattern) and p.name}


def posts_back(response: HttpResponse) -> bool:
    return bool(re.search(r'<form method="post"', response.content.decode()))


def test_every_url_of_the_app_is_a_browser_page_or_a_machine_endpoint() -> None:
    """A new page of the app must be added to the table below (and so get its policy checked)."""
    names = url_names(app_urls.urlpatterns) | url_names(app_urls.oauth2_urls[0])
    assert names == BROWSER_URLS | MACHINE_URLS


def test_referrer_policy_of_every_page() -> None:
    """CD-15 + CD-13: forms that post back are same-origin; redirects and error pages send nothing."""
    client = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    browser = Browser()
    seen: dict[str, tuple[HttpResponse, str]] = {}

    def page(name: str, response: HttpResponse, expected: str) -> HttpResponse:
        seen[name] = (response, expected)
        return response

    params = authorize_params(client)
    consent = page("consent page", browser.authorize(params), FORM_PAGE)
    page("consent page, no decision", browser.post_form(consent, "maybe"), FORM_PAGE)
    page(
        "consent page, changed request",
        browser.post_form(consent, "approve", fingerprint="stale"),
        FORM_PAGE,
    )
    page("deny redirect", browser.post_form(browser.authorize(params), "deny"), NO_REFERRER)
    page(
        "error page: client not approved yet (SEC-03)",
        browser.authorize(authorize_params(client, scope="nope")),
        NO_REFERRER,
    )
    page(
        "error page: unknown client",
        browser.authorize(authorize_params(client, client_id="no-such-client")),
        NO_REFERRER,
    )
    page(
        "error page: callback refused",
        browser.get("/upstream/callback/?state=forged&code=x"),
        NO_REFERRER,
    )
    page(
        "CSRF failure page",
        Client(enforce_csrf_checks=True).post(
            f"/authorize/?{browser.authorize(params).request['QUERY_STRING']}",
            {"decision": "approve"},
            HTTP_HOST=PROXY_HOST,
        ),
        NO_REFERRER,
    )
    to_upstream = page(
        "approve redirect to the upstream",
        browser.post_form(browser.authorize(params), "approve"),
        NO_REFERRER,
    )
    browser.login_upstream()
    to_callback = browser.through_upstream(to_upstream["Location"])
    page("callback redirect to the client", browser.get(to_callback["Location"]), NO_REFERRER)
    page(
        "error redirect to the approved client",
        browser.authorize(authorize_params(client, scope="nope")),
        NO_REFERRER,
    )

    signed_in = page("Connected apps, signed in", browser.get("/connections/"), FORM_PAGE)
    token = form_fields(signed_in.content.decode())["csrfmiddlewaretoken"]
    consent_pk = re.search(r'name="consent" value="(\d+)"', signed_in.content.decode())
    assert consent_pk
    post = browser.client.post
    page(
        "Connected apps, revoke redirect",
        post(
            "/connections/",
            {"action": "revoke", "consent": consent_pk.group(1), "csrfmiddlewaretoken": token},
            HTTP_HOST=PROXY_HOST,
        ),
        NO_REFERRER,
    )
    page(
        "Connected apps, sign-out redirect",
        post(
            "/connections/",
            {"action": "sign-out", "csrfmiddlewaretoken": token},
            HTTP_HOST=PROXY_HOST,
        ),
        NO_REFERRER,
    )
    anonymous = page("Connected apps, signed out", browser.get("/connections/"), FORM_PAGE)
    token = form_fields(anonymous.content.decode())["csrfmiddlewaretoken"]
    page(
        "Connected apps, sign-in redirect to the upstream",
        post(
            "/connections/",
            {"action": "sign-in", "csrfmiddlewaretoken": token},
            HTTP_HOST=PROXY_HOST,
        ),
        NO_REFERRER,
    )

    statuses = {name: response.status_code for name, (response, _) in seen.items()}
    assert statuses == {
        "consent page": 200,
        "consent page, no decision": 400,
        "consent page, changed request": 409,
        "deny redirect": 303,
        "error page: client not approved yet (SEC-03)": 400,
        "error redirect to the approved client": 302,
        "error page: unknown client": 400,
        "error page: callback refused": 400,
        "CSRF failure page": 403,
        "approve redirect to the upstream": 303,
        "callback redirect to the client": 302,
        "Connected apps, signed in": 200,
        "Connected apps, revoke redirect": 303,
        "Connected apps, sign-out redirect": 303,
        "Connected apps, signed out": 200,
        "Connected apps, sign-in redirect to the upstream": 303,
    }
    policies = {name: response["Referrer-Policy"] for name, (response, _) in seen.items()}
    assert policies == {name: expected for name, (_, expected) in seen.items()}
    for name, (response, _) in seen.items():
        # The rule itself: same-origin exactly where a form posts back to us.
        assert (response["Referrer-Policy"] == FORM_PAGE) == posts_back(response), name
