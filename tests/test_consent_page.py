"""What the authorization endpoint's pages say and hold: the consent page's context (the
variables docs/templates.md lists for a project's own template), the address it shows
(LH-02, DCR-13), the name it shows (CD-10), and the words of each page it answers instead
(AS-50, AS-54, CD-17, SEC-03).

An override of ``mcp_consent/consent.html`` reads these variables: a renamed or missing one
is an empty warning or a blank address on that project's page, so each is pinned here.
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from mcp_consent.app_settings import app_settings
from tests.browser_client import (
    PROXY_HOST,
    Browser,
    assert_styled,
    authorize_params,
    form_fields,
    query_of,
)
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db
RESOURCE = "http://127.0.0.1:8000/mcp"
TEMPLATES_DOC = Path(__file__).resolve().parents[1] / "docs" / "templates.md"


def text(response: Any) -> str:
    """The page's words, as a person reads them (tags dropped, whitespace collapsed)."""
    words = re.sub(r"<[^>]+>", " ", response.content.decode())
    return re.sub(r"\s+", " ", unescape(words)).strip()


def page_for(redirect_uri: str, **client: Any) -> Any:
    made = MCPClientFactory(redirect_uris=[redirect_uri], **client)
    response = Browser().authorize(authorize_params(made, scope="items:read items:write"))
    assert response.status_code == 200
    return made, response


def test_the_consent_page_context_holds_every_documented_variable() -> None:
    """docs/templates.md: each variable of the consent page's context, with its value for a
    self-registered client; and the doc lists exactly the variables the page gets."""
    client, response = page_for("https://app.example/cb", client_name="Acme Agent")
    context = response.context
    expected = {
        "client": client,
        "client_name": "Acme Agent",
        "client_id": client.application.client_id,
        "verified": False,
        "source": "dcr",
        "is_cimd": False,
        "cimd_host": "",
        "redirect_uri": "https://app.example/cb",
        "redirect_scheme": "https://",
        "redirect_host": "app.example",
        "redirect_rest": "/cb",
        "private_scheme": "",
        "scopes": [
            {
                "name": "items:read",
                "description": "Read your items",
                "upstream_scopes": ["repo:read"],
            },
            {
                "name": "items:write",
                "description": "Create and change your items",
                "upstream_scopes": ["repo:read", "repo:write"],
            },
        ],
        "upstream_name": app_settings.UPSTREAM.name,
        "upstream_scopes": ["read:user", "repo:read", "repo:write"],
        "base_upstream_scopes": ["read:user"],
        "resource": RESOURCE,
        "form_action": response.wsgi_request.get_full_path(),
        "notice": "",
    }
    for name, value in expected.items():
        assert context[name] == value, name
    assert context["fingerprint"] == form_fields(response.content.decode())["fingerprint"]
    first_columns = re.findall(r"^\| (`[^|]+) \|", context_table(), flags=re.M)
    documented = {name for column in first_columns for name in re.findall(r"`(\w+)`", column)}
    assert documented == {*expected, "fingerprint", *RISK_VARIABLES}


# views/risk.py adds these (the warnings); tests/test_consent_warnings.py proves their values.
RISK_VARIABLES = {
    "first_time",
    "namesake_destinations",
    "namesakes_more",
    "namesake_approved",
    "redirect_destination",
    "host_lead",
    "host_domain",
    "host_tail",
    "remote_unverified",
    "loopback_only",
}


def context_table() -> str:
    doc = TEMPLATES_DOC.read_text()
    start = doc.index("### The consent page's variables")
    return doc[start : doc.index("\n## ", start)]


def test_risk_variables_are_those_views_risk_gives() -> None:
    """The doc's warning variables are exactly what views/risk.py puts in the context."""
    client, response = page_for("https://app.example/cb")
    from mcp_consent.views.risk import risk_context

    given = risk_context(response.wsgi_request, client, "https://app.example/cb")
    assert set(given) == RISK_VARIABLES


def test_lh02_dcr13_a_private_use_scheme_is_shown_whole_with_its_warning() -> None:
    """DCR-13, LH-01, LH-02: an app-scheme address has no host: it is shown as registered,
    and the page warns that any program on this computer can claim the scheme."""
    _, response = page_for("com.example.app:/oauth/callback")
    context = response.context
    assert (context["redirect_scheme"], context["redirect_host"], context["redirect_rest"]) == (
        "",
        "",
        "com.example.app:/oauth/callback",
    )
    assert context["private_scheme"] == "com.example.app"
    words = text(response)
    assert "Where your access will be sent com.example.app:/oauth/callback" in words
    assert (
        "uses the app scheme com.example.app: , which any program on this computer can claim"
        in words
    )


def test_lh02_the_host_shown_is_the_authority_even_with_a_double_slash_in_the_path() -> None:
    """LH-02: the emphasised host is the URI's authority, not whatever follows the last
    ``//`` (a path like ``/r//evil.example`` must not put evil.example in bold)."""
    _, response = page_for("https://app.example/r//evil.example/cb")
    context = response.context
    assert (context["redirect_scheme"], context["redirect_host"], context["redirect_rest"]) == (
        "https://",
        "app.example",
        "/r//evil.example/cb",
    )
    assert (
        '<div class="uri" id="redirect-uri">https://<strong>app.example</strong>/r//evil.example/cb</div>'
        in response.content.decode()
    )


def test_lh01_a_loopback_address_names_its_host_in_the_warning() -> None:
    """LH-01: the loopback warning names the local address (host and port) it would go to."""
    _, response = page_for("http://127.0.0.1:33418/callback")
    assert response.context["redirect_host"] == "127.0.0.1:33418"
    assert "Its address is a local one ( 127.0.0.1:33418 )" in text(response)


@pytest.mark.parametrize(
    ("name", "shown"),
    [("Exactly10!", "Exactly10!"), ("Eleven char", "Eleven ch…")],
    ids=["at-the-limit", "one-over"],
)
def test_cd10_a_name_longer_than_the_limit_is_cut_with_an_ellipsis(name: str, shown: str) -> None:
    """CD-10: a name registered before the limit was lowered is shown within it: up to the
    limit whole, longer ones cut to one character less and an ellipsis."""
    client = MCPClientFactory(client_name=name)
    with override_settings(MCP_CONSENT={**settings.MCP_CONSENT, "CLIENT_NAME_MAX_LENGTH": 10}):
        response = Browser().authorize(authorize_params(client))
    assert response.context["client_name"] == shown
    assert f"Authorize {shown}?" in text(response)


def post_decision(browser: Browser, page: Any, **fields: str) -> Any:
    data = {**form_fields(page.content.decode()), **fields}
    return browser.client.post(page.wsgi_request.get_full_path(), data, HTTP_HOST=PROXY_HOST)


def test_cd17_a_post_without_a_decision_shows_the_page_again_asking_for_one() -> None:
    """CD-17: neither Approve nor Deny: the page again (400), saying what to do."""
    browser = Browser()
    page = browser.authorize(authorize_params(MCPClientFactory()))
    fields = form_fields(page.content.decode())
    response = browser.client.post(
        page.wsgi_request.get_full_path(),
        {name: value for name, value in fields.items() if name != "decision"},
        HTTP_HOST=PROXY_HOST,
    )
    assert response.status_code == 400
    assert response.context["notice"] == "Choose Approve or Deny."
    assert "Choose Approve or Deny." in text(response)


@pytest.mark.parametrize("fingerprint", [None, "", "0" * 64], ids=["missing", "empty", "wrong"])
def test_cd17_an_approval_without_the_pages_fingerprint_shows_the_page_again(
    fingerprint: str | None,
) -> None:
    """CD-17: an Approve that does not carry the fingerprint of the page shown (missing,
    empty or another) approves nothing: the page again (409), saying why."""
    browser = Browser()
    page = browser.authorize(authorize_params(MCPClientFactory()))
    fields = {**form_fields(page.content.decode()), "decision": "approve"}
    if fingerprint is None:
        del fields["fingerprint"]
    else:
        fields["fingerprint"] = fingerprint
    response = browser.client.post(page.wsgi_request.get_full_path(), fields, HTTP_HOST=PROXY_HOST)
    assert response.status_code == 409
    notice = "This request changed since the page was shown. Review it again."
    assert response.context["notice"] == notice
    assert notice in text(response)


def test_cd18_deny_tells_the_client_access_denied_in_the_standard_words() -> None:
    """CD-18 (RFC 6749 §4.1.2.1): Deny redirects with error, its description, state, iss."""
    browser = Browser()
    page = browser.authorize(
        authorize_params(MCPClientFactory(redirect_uris=["https://app.example/cb"]))
    )
    response = post_decision(browser, page, decision="deny")
    assert response.status_code == 303
    assert query_of(response["Location"]) == {
        "error": ["access_denied"],
        "error_description": ["The user denied the request."],
        "state": ["client-state-123"],
        "iss": ["http://127.0.0.1:8000"],
    }


def assert_page(response: Any, status: int, title: str, message: str) -> None:
    """Our page for this request (styled under its CSP nonce), with exactly these words."""
    assert response.status_code == status
    assert response.context["title"] == title
    assert response.context["message"] == message
    assert_styled(response)


def test_as50_an_unknown_client_reads_why_and_that_it_was_sent_nowhere() -> None:
    """AS-50: the page for an unknown client says so in full, with oauthlib's reason
    (without its final full stop)."""
    params = authorize_params(MCPClientFactory(), client_id="no-such-client")
    response = Browser().authorize(params)
    assert_page(
        response,
        400,
        "This sign-in request is not valid",
        (
            "The application that sent you here made a request this server cannot accept "
            "(Invalid client_id parameter value). You have not been sent anywhere. Close this "
            "page and contact the application's developer if the problem persists."
        ),
    )


def test_as54_a_malformed_request_reads_that_it_is_malformed() -> None:
    """AS-54: a malformed percent-escape is a page saying so, not a 500."""
    response = Browser().get("/authorize/?client_id=%zz&response_type=code")
    assert_page(
        response,
        400,
        "This sign-in request is not valid",
        ("The request is malformed. You have not been sent anywhere."),
    )


def test_sec03_the_page_instead_of_a_redirect_reads_in_full() -> None:
    """SEC-03: an error of an unapproved client is our page: its title and whole message."""
    phish = MCPClientFactory(redirect_uris=["https://phish.example/login"])
    response = Browser().authorize(authorize_params(phish, scope="admin:all"))
    assert_page(
        response,
        400,
        "This sign-in request cannot be completed",
        (
            "The application that sent you here made a request this server cannot accept "
            "(invalid_scope). You have not been sent anywhere and nothing was shared."
        ),
    )


def test_cimd13_the_page_for_a_blocked_domain_reads_in_full() -> None:
    """CIMD-13: the operators' refusal of an application's domain, word for word (403)."""
    from mcp_consent.models import CIMDDomainRule

    CIMDDomainRule.objects.create(domain=".example.org", policy="block")
    response = Browser().get(
        "/authorize/?client_id=https%3A%2F%2Fclient.example.org%2Fclient.json&response_type=code"
    )
    assert_page(
        response,
        403,
        "This application is not allowed here",
        (
            "This server's operators do not allow applications from client.example.org. "
            "You have not been sent anywhere."
        ),
    )


def test_as54_a_request_without_a_query_string_is_a_page_not_a_500(rf) -> None:
    """PEP 3333 lets a WSGI server leave QUERY_STRING out when there is none: that is an
    invalid request (no client), answered with the page."""
    from mcp_consent.views.authorize import AuthorizeView

    request = rf.get("/authorize/", HTTP_HOST=PROXY_HOST)
    del request.META["QUERY_STRING"]
    response = AuthorizeView.as_view()(request)
    assert response.status_code == 400
    assert "This sign-in request is not valid" in response.content.decode()


def test_only_get_and_post_are_allowed_and_the_answer_says_so() -> None:
    """RFC 9110 §15.5.6: any other method is 405 with an Allow header naming both (a PUT or
    DELETE is refused by the CSRF check before it gets here)."""
    response = Browser().client.options("/authorize/", HTTP_HOST=PROXY_HOST)
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"
