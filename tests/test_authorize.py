"""The authorization endpoint /authorize/ and OUR consent page, seen from outside.

Three kinds of people use this endpoint and each test takes one of their seats: the person
in the browser (what the page shows, what one click does), the client developer (what comes
back to the redirect URI), and the attacker (crafted links, forged form posts, framing).
Nothing here looks at internals except the rows a leak would leave behind: requests the
demo upstream logged (``RequestLog``), pending upstream hops (``AuthorizationTransaction``)
and stored consents.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.http import HttpResponse
from django.test import Client, override_settings
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from mcp_consent import audit
from mcp_consent.flows import clients, revocation
from mcp_consent.models import AuditEvent, AuthorizationTransaction, Consent, RegistrationSource
from mcp_consent.registration import clean_client_metadata
from project.demo_upstream.models import Account, RequestLog
from tests.browser_client import (
    PROXY_HOST,
    Browser,
    authorize_params,
    code_from,
    form_fields,
    pkce_pair,
    query_of,
)
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db

ISSUER = "http://127.0.0.1:8000"
RESOURCE = "http://127.0.0.1:8000/mcp"
CALLBACK = "http://127.0.0.1:8000/upstream/callback/"
TX_COOKIE = "__Host-mcp_consent_tx"
UPSTREAM = settings.MCP_CONSENT["UPSTREAM"]


@pytest.fixture(autouse=True)
def _fast_upstream_login(settings) -> None:
    """Speed only: the seeded demo accounts get a cheap password hash (same password)."""
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "mcp_consent.hashers.ClientSecretHasher",
    ]
    Account.objects.update(password=make_password("demo"))


# --- helpers ---------------------------------------------------------------------------------


class Effects:
    """What a request may have set in motion: upstream requests, pending hops, consents."""

    def __init__(self) -> None:
        self.before = self.snapshot()

    @staticmethod
    def snapshot() -> dict[str, int]:
        return {
            "upstream requests": RequestLog.objects.count(),
            "transactions": AuthorizationTransaction.objects.count(),
            "consents": Consent.objects.count(),
        }

    def assert_nothing_happened(self) -> None:
        assert self.snapshot() == self.before


def get_authorize(browser: Browser, params: dict[str, str] | list[tuple[str, str]], **headers: str):
    """GET /authorize/ with ``params`` (a list keeps repeated parameters)."""
    return browser.get(f"/authorize/?{urlencode(params)}", **headers)


def without(params: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in params.items() if k not in names}


def html(response: HttpResponse) -> str:
    return response.content.decode()


def assert_error_page(response: HttpResponse) -> None:
    """AS-50: a 400 page for the person, never a redirect anywhere."""
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert response["Content-Type"].startswith("text/html")
    assert TX_COOKIE not in response.cookies


def assert_error_redirect(
    response: HttpResponse, redirect_uri: str, error: str, state: str = "client-state-123"
) -> dict[str, str]:
    """AS-51: back to the validated redirect URI, each parameter once, state and iss.

    Only to a redirect URI the person approved before, or after their own Deny (SEC-03).
    """
    assert response.status_code in (302, 303), response.status_code
    assert TX_COOKIE not in response.cookies
    return assert_error_response_uri(response["Location"], redirect_uri, error, state)


def error_link(response: HttpResponse) -> str:
    """The href of the error page's link back to the client (SEC-03)."""
    match = re.search(r'<a id="client-error-link" href="([^"]*)"', html(response))
    assert match, "the error page offers no link back to the client"
    return unescape(match.group(1))


def assert_error_shown(
    response: HttpResponse, redirect_uri: str, error: str, state: str = "client-state-123"
) -> dict[str, str]:
    """SEC-03 (BCP-02, AS-53): an unapproved client's error is OUR page, never a redirect.

    The page names the client's host and links (the person's own click) to the redirect URI
    with the same AS-51 error response the redirect would have carried.
    """
    assert_error_page(response)
    link = error_link(response)
    host = urlsplit(redirect_uri).netloc
    assert f"go back to <strong>{host}</strong> with this error" in html(response)
    return assert_error_response_uri(link, redirect_uri, error, state)


def assert_error_response_uri(
    location: str, redirect_uri: str, error: str, state: str
) -> dict[str, str]:
    assert location.split("?")[0] == redirect_uri.split("?")[0]
    pairs = parse_qsl(urlsplit(location).query, keep_blank_values=True)
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"a parameter appears twice: {location}"
    query = dict(pairs)
    assert query["error"] == error
    assert query["state"] == state
    assert query["iss"] == ISSUER
    assert "code" not in query
    return query


def redirect_text(response: HttpResponse) -> str:
    """The redirect URI as the page shows it, tags stripped."""
    match = re.search(r'<div class="uri" id="redirect-uri">(.*?)</div>', html(response), re.S)
    assert match, "the page shows no redirect URI"
    return unescape(re.sub(r"<[^>]+>", "", match.group(1)))


def is_consent_page(response: HttpResponse) -> bool:
    return response.status_code == 200 and 'name="decision" value="approve"' in html(response)


def upstream_query(location: str) -> dict[str, list[str]]:
    assert location.startswith(UPSTREAM["AUTHORIZE_URL"] + "?"), location
    return query_of(location)


@pytest.fixture
def client_app():
    return MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])


@pytest.fixture
def browser() -> Browser:
    return Browser()


@pytest.fixture
def remember_consent() -> Iterator[None]:
    with override_settings(MCP_CONSENT={**settings.MCP_CONSENT, "REMEMBER_CONSENT": True}):
        yield


def issuer_from_metadata() -> str:
    response = Client().get("/.well-known/oauth-authorization-server", HTTP_HOST=PROXY_HOST)
    assert response.status_code == 200
    return response.json()["issuer"]


# --- AS-50 / CD-30 / BCP-02: bad client or redirect URI -> error page, never a redirect -----


def test_as50_unknown_client_id_gets_an_error_page_and_nothing_moves(
    browser: Browser, client_app
) -> None:
    """AS-50, BCP-02: an unknown client_id is never redirected anywhere."""
    effects = Effects()
    response = get_authorize(browser, authorize_params(client_app, client_id="no-such-client"))
    assert_error_page(response)
    effects.assert_nothing_happened()


def test_as50_missing_client_id_gets_an_error_page(browser: Browser, client_app) -> None:
    """AS-50: no client_id at all."""
    effects = Effects()
    response = get_authorize(browser, without(authorize_params(client_app), "client_id"))
    assert_error_page(response)
    effects.assert_nothing_happened()


def test_as50_disabled_client_is_unknown(browser: Browser, client_app) -> None:
    """AS-50: a client an operator disabled gets the error page, even with a page already open."""
    page = browser.authorize(authorize_params(client_app))
    client_app.disabled_at = timezone.now()
    client_app.save(update_fields=["disabled_at"])
    effects = Effects()
    assert_error_page(browser.authorize(authorize_params(client_app)))
    assert_error_page(browser.post_form(page, "approve"))
    effects.assert_nothing_happened()


@pytest.mark.parametrize("duplicate", ["client_id", "redirect_uri"])
def test_as50_repeated_client_id_or_redirect_uri_is_an_error_page(
    browser: Browser, client_app, duplicate: str
) -> None:
    """AS-50, BCP-02: which of two values would win is not a question a redirect may answer."""
    params = list(authorize_params(client_app).items())
    params.append(
        (duplicate, "https://evil.example/cb" if duplicate == "redirect_uri" else "other-client")
    )
    effects = Effects()
    assert_error_page(get_authorize(browser, params))
    effects.assert_nothing_happened()


@pytest.mark.parametrize("raw", ["state=%ZZ", "resource=%G0", "code_challenge=%zz"])
def test_as54_malformed_query_is_a_400_page_not_a_server_error(client_app, raw: str) -> None:
    """AS-54, AS-50: every received value is validated; garbage is the client's error, not ours."""
    params = urlencode(without(authorize_params(client_app), raw.split("=")[0]))
    response = Client(raise_request_exception=False).get(
        f"/authorize/?{params}&{raw}", HTTP_HOST=PROXY_HOST
    )
    assert_error_page(response)


@pytest.mark.parametrize(
    "redirect_uri",
    [
        pytest.param("https://app.example/cb/", id="trailing-slash"),
        pytest.param("https://APP.example/cb", id="host-case"),
        pytest.param("HTTPS://app.example/cb", id="scheme-case"),
        pytest.param("https://app.example/CB", id="path-case"),
        pytest.param("https://app.example/cb?x=1", id="extra-query"),
        pytest.param("https://app.example/cb#f", id="fragment"),
        pytest.param("https://app.example.evil.com/cb", id="other-host-suffix"),
        pytest.param("https://evil.example/cb", id="other-host"),
        pytest.param("https://app.example@evil.example/cb", id="userinfo"),
        pytest.param("https://app.example/x/../cb", id="dot-dot"),
        pytest.param("https://app.example/cb/../cb", id="dot-dot-same"),
        pytest.param("https://app.example/%63b", id="percent-encoded-path"),
        pytest.param("https%3A%2F%2Fapp.example%2Fcb", id="percent-encoded-whole"),
        pytest.param("https://app.example:444/cb", id="other-port"),
        pytest.param("https://app.example:443/cb", id="explicit-default-port"),
        pytest.param("http://app.example/cb", id="http-downgrade"),
        pytest.param("", id="empty"),
    ],
)
def test_cd30_redirect_uri_must_match_exactly(
    browser: Browser, client_app, redirect_uri: str
) -> None:
    """CD-30, BCP-01, BCP-02, AS-50: any variant of the registered URI is a 400 page."""
    effects = Effects()
    response = get_authorize(browser, authorize_params(client_app, redirect_uri=redirect_uri))
    assert_error_page(response)
    effects.assert_nothing_happened()


def test_cd30_bad_redirect_uri_on_the_approve_post_is_not_redirected(
    browser: Browser, client_app
) -> None:
    """CD-30, AS-50: a form posted to a URL with a foreign redirect_uri is refused, not followed."""
    page = browser.authorize(authorize_params(client_app))
    effects = Effects()
    tampered = authorize_params(client_app, redirect_uri="https://evil.example/cb")
    response = browser.client.post(
        f"/authorize/?{urlencode(tampered)}",
        {**form_fields(html(page)), "decision": "approve"},
        HTTP_HOST=PROXY_HOST,
    )
    assert_error_page(response)
    effects.assert_nothing_happened()


def test_cd31_redirect_uri_changed_without_re_registration(browser: Browser) -> None:
    """CD-31: the same client_id with a URI it never registered (or no longer has) -> 400."""
    client = MCPClientFactory(redirect_uris=["https://app.example/cb"])
    assert_error_page(
        browser.authorize(authorize_params(client, redirect_uri="https://app.example/cb2"))
    )

    clients.update_client(
        client,
        clean_client_metadata(
            {
                "client_name": "Acme Agent",
                "redirect_uris": ["https://app.example/cb2"],
                "token_endpoint_auth_method": "none",
            },
            RegistrationSource.DCR,
        ),
    )
    assert_error_page(
        browser.authorize(authorize_params(client, redirect_uri="https://app.example/cb"))
    )
    assert is_consent_page(
        browser.authorize(authorize_params(client, redirect_uri="https://app.example/cb2"))
    )


def test_cd33_loopback_port_may_vary(browser: Browser) -> None:
    """CD-33, BCP-01: RFC 8252 native clients pick a port at run time."""
    client = MCPClientFactory(redirect_uris=["http://127.0.0.1:5555/cb"])
    page = browser.authorize(authorize_params(client, redirect_uri="http://127.0.0.1:6666/cb"))
    assert is_consent_page(page)
    assert redirect_text(page) == "http://127.0.0.1:6666/cb"  # CD-12: where it will really go


def test_cd33_loopback_port_variance_does_not_extend_to_https(browser: Browser) -> None:
    """CD-33: an https URI keeps its exact port."""
    client = MCPClientFactory(redirect_uris=["https://app.example/cb"])
    effects = Effects()
    assert_error_page(
        browser.authorize(authorize_params(client, redirect_uri="https://app.example:444/cb"))
    )
    effects.assert_nothing_happened()


def test_cd33_loopback_path_still_matches_exactly(browser: Browser) -> None:
    """CD-33: only the port varies; another path on loopback is refused."""
    client = MCPClientFactory(redirect_uris=["http://127.0.0.1:5555/cb"])
    assert_error_page(
        browser.authorize(authorize_params(client, redirect_uri="http://127.0.0.1:6666/other"))
    )


def test_cd34_redirect_uri_required_when_several_are_registered(browser: Browser) -> None:
    """CD-34: with two registered URIs the AS cannot guess; 400 page."""
    client = MCPClientFactory(redirect_uris=["https://app.example/cb", "https://app.example/cb2"])
    effects = Effects()
    assert_error_page(browser.authorize(without(authorize_params(client), "redirect_uri")))
    effects.assert_nothing_happened()


def test_cd34_redirect_uri_may_be_omitted_when_one_is_registered(
    browser: Browser, client_app
) -> None:
    """CD-34: the single registered URI is used and shown."""
    page = browser.authorize(without(authorize_params(client_app), "redirect_uri"))
    assert is_consent_page(page)
    assert redirect_text(page) == "https://app.example/cb"


# --- AS-20..22, AS-31, AS-48, AS-51: other errors: state and iss, redirected only when approved


def test_as20_missing_code_challenge_is_invalid_request(browser: Browser, client_app) -> None:
    """AS-20, BCP-05: no PKCE, no page and no upstream hop."""
    effects = Effects()
    response = browser.authorize(
        without(authorize_params(client_app), "code_challenge", "code_challenge_method")
    )
    assert_error_shown(response, "https://app.example/cb", "invalid_request")
    effects.assert_nothing_happened()


@pytest.mark.parametrize(
    "method", ["plain", "S512", "s256", None], ids=["plain", "S512", "lowercase", "omitted"]
)
def test_as21_only_s256_is_accepted_before_any_page(
    browser: Browser, client_app, method: str | None
) -> None:
    """AS-21: plain, unknown, or omitted (= plain) method -> invalid_request before the page."""
    params = authorize_params(client_app)
    params = (
        without(params, "code_challenge_method")
        if method is None
        else {**params, "code_challenge_method": method}
    )
    effects = Effects()
    response = browser.authorize(params)
    assert_error_shown(response, "https://app.example/cb", "invalid_request")
    effects.assert_nothing_happened()


@pytest.mark.parametrize(
    "challenge",
    [
        pytest.param("a" * 42, id="too-short"),
        pytest.param("a" * 129, id="too-long"),
        pytest.param("a" * 42 + "!", id="bad-character"),
        pytest.param("a" * 42 + "=", id="padding"),
        pytest.param("a" * 42 + "+", id="plus"),
        pytest.param("", id="empty"),
    ],
)
def test_as22_code_challenge_syntax(browser: Browser, client_app, challenge: str) -> None:
    """AS-22: RFC 7636 §4.2 code_challenge = 43*128unreserved."""
    effects = Effects()
    response = browser.authorize(authorize_params(client_app, challenge=challenge))
    assert_error_shown(response, "https://app.example/cb", "invalid_request")
    effects.assert_nothing_happened()


@pytest.mark.parametrize(
    "resources",
    [
        pytest.param(["mcp.example.com"], id="not-absolute"),
        pytest.param(["http://127.0.0.1:8000/mcp#x"], id="fragment"),
        pytest.param(["http://127.0.0.1:8000/mcp?x=1"], id="query"),
        pytest.param(["https://unknown.example/mcp"], id="unknown-server"),
        pytest.param(
            ["http://127.0.0.1:8000/mcp", "https://unknown.example/mcp"], id="good-then-bad"
        ),
        pytest.param(
            ["https://unknown.example/mcp", "http://127.0.0.1:8000/mcp"], id="bad-then-good"
        ),
    ],
)
def test_as31_resource_outside_the_allowlist_is_invalid_target(
    browser: Browser, client_app, resources: list[str]
) -> None:
    """AS-31: RFC 8707 resources must be configured MCP servers; every repeated value counts."""
    params = [(k, v) for k, v in authorize_params(client_app).items() if k != "resource"]
    params += [("resource", r) for r in resources]
    effects = Effects()
    response = get_authorize(browser, params)
    assert_error_shown(response, "https://app.example/cb", "invalid_target")
    effects.assert_nothing_happened()


@pytest.mark.parametrize("resource", ["HTTP://127.0.0.1:8000/mcp/", "http://127.0.0.1:8000/mcp/"])
def test_as32_resource_is_canonicalised(browser: Browser, client_app, resource: str) -> None:
    """AS-32: uppercase scheme and a trailing slash name the same MCP server."""
    page = browser.authorize(authorize_params(client_app, resource=resource))
    assert is_consent_page(page)
    assert f"<code>{RESOURCE}</code>" in html(page)


def test_as32_another_port_is_another_server(browser: Browser, client_app) -> None:
    """AS-31, AS-32: canonicalisation never merges a different port into the allowlist."""
    response = browser.authorize(authorize_params(client_app, resource="http://127.0.0.1:80/mcp"))
    assert_error_shown(response, "https://app.example/cb", "invalid_target")


def test_as35_no_resource_means_the_configured_one(browser: Browser, client_app) -> None:
    """AS-35: without `resource` the page is shown and the token is bound to the one MCP server."""
    browser.login_upstream()
    verifier, challenge = pkce_pair()
    params = without(authorize_params(client_app, challenge=challenge), "resource")
    page = browser.authorize(params)
    assert is_consent_page(page)
    assert f"<code>{RESOURCE}</code>" in html(page)

    final = browser.run_flow(params)
    response = Client().post(
        "/token/",
        urlencode(
            {
                "grant_type": "authorization_code",
                "code": code_from(final),
                "client_id": client_app.application.client_id,
                "redirect_uri": "https://app.example/cb",
                "code_verifier": verifier,
            }
        ),
        content_type="application/x-www-form-urlencoded",
        HTTP_HOST=PROXY_HOST,
    )
    assert response.status_code == 200, response.content
    token = get_access_token_model().objects.get(
        application=client_app.application, user__isnull=False
    )
    assert token.resource == [RESOURCE]


@pytest.mark.parametrize(
    ("response_type", "errors"),
    [
        ("token", {"unsupported_response_type"}),
        ("id_token", {"unsupported_response_type"}),
        # Hybrid and empty values: any OAuth error code that refuses them is fine.
        ("code token", {"unsupported_response_type", "unauthorized_client"}),
        ("", {"unsupported_response_type", "invalid_request"}),
    ],
)
def test_as48_implicit_and_other_response_types_are_refused(
    browser: Browser, client_app, response_type: str, errors: set[str]
) -> None:
    """AS-48, BCP-06: OAuth 2.1 has only response_type=code; no page, nothing upstream."""
    effects = Effects()
    response = browser.authorize(authorize_params(client_app, response_type=response_type))
    error = query_of(error_link(response))["error"][0]
    assert error in errors
    assert_error_shown(response, "https://app.example/cb", error)
    effects.assert_nothing_happened()


def test_unknown_scope_is_invalid_scope(browser: Browser, client_app) -> None:
    """AS-51: a scope this server does not have -> invalid_scope, no page."""
    effects = Effects()
    response = browser.authorize(authorize_params(client_app, scope="items:read admin:all"))
    assert_error_shown(response, "https://app.example/cb", "invalid_scope")
    effects.assert_nothing_happened()


@pytest.mark.parametrize(
    "state", ["a b&c=d", "x%2Fy", "ümlaut+plus", "iss=https://evil.example", "&&=="]
)
def test_as51_error_response_returns_state_unchanged(
    browser: Browser, client_app, state: str
) -> None:
    """AS-51: the client's state comes back byte for byte, each parameter exactly once."""
    params = without(authorize_params(client_app, state=state), "code_challenge")
    response = browser.authorize(params)
    assert_error_shown(response, "https://app.example/cb", "invalid_request", state=state)


def test_as51_error_response_without_state_has_no_state(browser: Browser, client_app) -> None:
    """AS-51: state is echoed only if the client sent one."""
    params = without(authorize_params(client_app), "state", "code_challenge")
    response = browser.authorize(params)
    assert_error_page(response)
    query = query_of(error_link(response))
    assert query["error"] == ["invalid_request"]
    assert "state" not in query
    assert query["iss"] == [ISSUER]


def test_as52_registered_query_is_kept_on_errors_and_success(browser: Browser) -> None:
    """AS-52, AS-51: a registered ?tenant=7 survives, code/state/iss are added once each."""
    client = MCPClientFactory(redirect_uris=["https://app.example/cb?tenant=7"])
    error = browser.authorize(without(authorize_params(client), "code_challenge"))
    query = assert_error_shown(error, "https://app.example/cb?tenant=7", "invalid_request")
    assert query["tenant"] == "7"

    browser.login_upstream()
    final = browser.run_flow(authorize_params(client))
    location = final["Location"]
    assert location.startswith("https://app.example/cb?")
    pairs = parse_qsl(urlsplit(location).query)
    names = [name for name, _ in pairs]
    assert sorted(names) == ["code", "iss", "state", "tenant"]
    query = dict(pairs)
    assert query["tenant"] == "7"
    assert query["state"] == "client-state-123"
    assert query["iss"] == ISSUER
    # Approved now (SEC-03): the same error is redirected, the registered query kept too.
    error = browser.authorize(without(authorize_params(client), "code_challenge"))
    query = assert_error_redirect(error, "https://app.example/cb?tenant=7", "invalid_request")
    assert query["tenant"] == "7"


def test_mu01_iss_equals_metadata_issuer_on_success_error_and_denial(
    browser: Browser, client_app
) -> None:
    """MU-01, AS-52: success, error and denial redirects all carry the metadata issuer exactly."""
    issuer = issuer_from_metadata()
    assert issuer == ISSUER

    error = browser.authorize(authorize_params(client_app, scope="nope"))
    assert query_of(error_link(error))["iss"] == [issuer]  # SEC-03: a link, not a redirect

    denied = browser.post_form(browser.authorize(authorize_params(client_app)), "deny")
    assert query_of(denied["Location"])["iss"] == [issuer]

    browser.login_upstream()
    final = browser.run_flow(authorize_params(client_app))
    query = query_of(final["Location"])
    assert query["iss"] == [issuer]
    assert query["state"] == ["client-state-123"]
    assert query["code"][0]

    error = browser.authorize(authorize_params(client_app, scope="nope"))  # approved now
    assert query_of(error["Location"])["iss"] == [issuer]


# --- SEC-03 (RFC 9700 §4.11.2, BCP-02, AS-53): no open redirector ----------------------------

PHISH = "https://phish.example/login"


@pytest.fixture
def phish():
    """Anyone can self-register a client whose redirect URI is a phishing page."""
    return MCPClientFactory(client_name="Totally Legit", redirect_uris=[PHISH])


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        pytest.param({"prompt": "none"}, "login_required", id="prompt-none"),
        pytest.param({"code_challenge_method": "plain"}, "invalid_request", id="plain-pkce"),
        pytest.param({"scope": "admin:all"}, "invalid_scope", id="unknown-scope"),
        pytest.param({"response_type": "token"}, "unsupported_response_type", id="implicit"),
        pytest.param({"resource": "https://unknown.example/mcp"}, "invalid_target", id="resource"),
    ],
)
def test_sec03_self_registered_phishing_redirect_uri_gets_no_redirect(
    browser: Browser, phish, extra: dict[str, str], error: str
) -> None:
    """SEC-03: an attacker's link answers our page, not a 302 to the phishing site."""
    effects = Effects()
    response = browser.authorize(authorize_params(phish, **extra))
    assert_error_shown(response, PHISH, error)
    assert "phish.example" not in response.get("Location", "")
    effects.assert_nothing_happened()


def test_sec03_prompt_none_of_a_signed_in_person_who_never_approved_gets_no_redirect(
    browser: Browser, client_app, phish
) -> None:
    """SEC-03: being signed in (approved another client) does not open a redirect for this one."""
    browser.login_upstream()
    assert browser.run_flow(authorize_params(client_app)).status_code == 302
    response = browser.authorize(authorize_params(phish, prompt="none"))
    assert_error_shown(response, PHISH, "consent_required")


def test_sec03_another_redirect_uri_of_an_approved_client_gets_no_redirect(
    browser: Browser,
) -> None:
    """SEC-03: the approval is for a client AND a redirect URI; a second URI is unapproved."""
    client = MCPClientFactory(redirect_uris=["https://app.example/cb", PHISH])
    browser.login_upstream()
    assert browser.run_flow(authorize_params(client)).status_code == 302
    approved = browser.authorize(authorize_params(client, scope="admin:all"))
    assert_error_redirect(approved, "https://app.example/cb", "invalid_scope")
    other = browser.authorize(authorize_params(client, scope="admin:all", redirect_uri=PHISH))
    assert_error_shown(other, PHISH, "invalid_scope")


def test_sec03_another_client_with_an_approved_redirect_uri_gets_no_redirect(
    browser: Browser, client_app
) -> None:
    """SEC-03, CD-23: the approval is for a client AND a redirect URI. A client someone else
    registered with the very redirect URI this person approved for another client (its
    errors would carry the attacker's client_id and parameters to it) gets our page, not a
    redirect: only the approved client's own errors go back to it unseen."""
    browser.login_upstream()
    assert browser.run_flow(authorize_params(client_app)).status_code == 302
    copycat = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    assert_error_redirect(
        browser.authorize(authorize_params(client_app, scope="admin:all")),
        "https://app.example/cb",
        "invalid_scope",
    )
    assert_error_shown(
        browser.authorize(authorize_params(copycat, scope="admin:all")),
        "https://app.example/cb",
        "invalid_scope",
    )


def test_sec03_a_revoked_approval_no_longer_redirects(browser: Browser, client_app) -> None:
    """SEC-03: only a live consent counts as the person's approval."""
    browser.login_upstream()
    browser.run_flow(authorize_params(client_app))
    assert_error_redirect(
        browser.authorize(authorize_params(client_app, prompt="none")),
        "https://app.example/cb",
        "consent_required",
    )
    revocation.revoke_consents(list(Consent.objects.all()), actor=audit.SYSTEM, reason="test")
    assert_error_shown(
        browser.authorize(authorize_params(client_app, prompt="none")),
        "https://app.example/cb",
        "consent_required",
    )


def test_sec03_another_persons_approval_does_not_redirect_for_me(client_app) -> None:
    """SEC-03: the approval is this person's; someone else's consent opens nothing."""
    someone = Browser()
    someone.login_upstream()
    someone.run_flow(authorize_params(client_app))
    me = Browser()
    me.login_upstream("hubot")
    me.run_flow(authorize_params(MCPClientFactory(redirect_uris=["https://other.example/cb"])))
    assert_error_shown(
        me.authorize(authorize_params(client_app, scope="admin:all")),
        "https://app.example/cb",
        "invalid_scope",
    )


# --- CD-10..12, LH-01/02, DCR-19, AS-54: what the consent page shows ------------------------


def test_cd10_client_name_is_shown(browser: Browser, client_app) -> None:
    """CD-10: the client is identified by its name."""
    page = browser.authorize(authorize_params(client_app))
    assert is_consent_page(page)
    assert '<span id="client-name">Acme Agent</span>' in html(page)


def test_cd10_client_name_is_html_escaped(browser: Browser) -> None:
    """CD-10, AS-54: a name with markup is text, not markup."""
    client = MCPClientFactory(client_name="<script>alert(1)</script>")
    page = browser.authorize(authorize_params(client))
    assert "<script>alert(1)" not in html(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html(page)


def test_cd10_overlong_client_name_cannot_be_registered() -> None:
    """CD-10, DCR-19: a name long enough to push the real details off the page is refused."""
    response = Client().post(
        "/register/",
        {
            "client_name": "A" * 500,
            "redirect_uris": ["https://app.example/cb"],
            "token_endpoint_auth_method": "none",
        },
        content_type="application/json",
        HTTP_HOST=PROXY_HOST,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"


def test_cd10_client_without_name_shows_its_client_id(browser: Browser) -> None:
    """CD-10: no name -> the client_id identifies it."""
    client = MCPClientFactory(client_name="")
    page = browser.authorize(authorize_params(client))
    assert is_consent_page(page)
    assert f'<span id="client-name">{client.application.client_id}</span>' in html(page)


def test_cd11_page_lists_mcp_scopes_and_the_upstream_scopes(browser: Browser, client_app) -> None:
    """CD-11, SM-07: each MCP scope with its description and the upstream permissions it needs."""
    page = browser.authorize(authorize_params(client_app, scope="items:read items:write"))
    body = html(page)
    assert "Read your items" in body
    assert "Create and change your items" in body
    assert "<code>items:read</code>" in body
    assert "<code>items:write</code>" in body
    assert "<code>repo:read</code>" in body
    assert "<code>repo:write</code>" in body


def test_cd11_page_does_not_list_upstream_scopes_that_were_not_requested(
    browser: Browser, client_app
) -> None:
    """CD-11, SM-07: read-only request -> no write permission on the page."""
    page = browser.authorize(authorize_params(client_app, scope="items:read"))
    body = html(page)
    assert "<code>repo:read</code>" in body
    assert "repo:write" not in body
    assert "Create and change your items" not in body


@pytest.mark.parametrize(
    ("uri", "host"),
    [("https://app.example/cb", "app.example"), ("http://127.0.0.1:33418/cb", "127.0.0.1:33418")],
)
def test_cd12_exact_redirect_uri_shown_with_host_emphasised(
    browser: Browser, uri: str, host: str
) -> None:
    """CD-12, LH-02: the exact URI the code goes to, its host in <strong>."""
    client = MCPClientFactory(redirect_uris=[uri])
    page = browser.authorize(authorize_params(client))
    assert redirect_text(page) == uri
    assert f"<strong>{host}</strong>" in html(page)


def test_lh01_loopback_only_client_gets_a_warning(browser: Browser) -> None:
    """LH-01: any local program could be listening on a loopback redirect URI."""
    client = MCPClientFactory(redirect_uris=["http://127.0.0.1:33418/cb"])
    page = browser.authorize(authorize_params(client))
    assert 'id="loopback-warning"' in html(page)


def test_lh01_https_client_gets_no_loopback_warning(browser: Browser, client_app) -> None:
    """LH-01: the warning is for loopback-only clients."""
    page = browser.authorize(authorize_params(client_app))
    assert 'id="loopback-warning"' not in html(page)


def test_dcr19_self_registered_client_is_marked_unverified(browser: Browser, client_app) -> None:
    """DCR-19: a DCR client's name is self-asserted."""
    body = html(browser.authorize(authorize_params(client_app)))
    assert "Self-registered, unverified" in body
    assert 'class="badge verified"' not in body


def test_dcr19_operator_registered_client_is_marked_verified(browser: Browser) -> None:
    """DCR-19: an admin-registered client is vouched for by the operators."""
    client = MCPClientFactory(source=RegistrationSource.ADMIN)
    body = html(browser.authorize(authorize_params(client)))
    assert '<span class="badge verified">Verified</span>' in body
    assert "Self-registered, unverified" not in body


@pytest.mark.parametrize(
    "state",
    [
        '"><script>alert(1)</script>',
        "'><img src=x onerror=alert(1)>",
        "</form><form action=https://evil.example>",
    ],
)
def test_as54_state_is_never_reflected_unescaped(browser: Browser, client_app, state: str) -> None:
    """AS-54: state (and the rest of the query) only ever appears escaped."""
    page = browser.authorize(authorize_params(client_app, state=state))
    assert is_consent_page(page)
    body = html(page)
    assert state not in body
    assert "<script" not in body
    assert "<img" not in body
    assert body.count("<form") == 1


# --- CD-13..17: the decision is a same-site POST, the page cannot be framed or leak ---------


def test_cd13_approve_without_csrf_token_is_refused(client_app) -> None:
    """CD-13: a forged approve (e.g. an auto-submitted form on another site) -> 403."""
    client = Client(enforce_csrf_checks=True)
    page = client.get(
        f"/authorize/?{urlencode(authorize_params(client_app))}", HTTP_HOST=PROXY_HOST
    )
    fields = form_fields(html(page))
    fields.pop("csrfmiddlewaretoken")
    effects = Effects()
    response = client.post(
        f"/authorize/?{urlencode(authorize_params(client_app))}",
        {**fields, "decision": "approve"},
        HTTP_HOST=PROXY_HOST,
    )
    assert response.status_code == 403
    assert not response.has_header("Location")
    assert TX_COOKIE not in response.cookies
    effects.assert_nothing_happened()


def test_cd13_approve_with_another_sessions_csrf_token_is_refused(client_app) -> None:
    """CD-13: the attacker's own valid token does not work in the victim's browser."""
    params = authorize_params(client_app)
    attacker, victim = Browser(), Browser()
    attacker_fields = form_fields(html(attacker.authorize(params)))
    victim.authorize(params)  # the victim has a CSRF cookie of its own
    effects = Effects()
    response = victim.client.post(
        f"/authorize/?{urlencode(params)}",
        {**attacker_fields, "decision": "approve"},
        HTTP_HOST=PROXY_HOST,
    )
    assert response.status_code == 403
    assert not response.has_header("Location")
    assert TX_COOKIE not in response.cookies
    effects.assert_nothing_happened()


def test_cd13_cross_origin_post_is_refused(browser: Browser, client_app) -> None:
    """CD-13: a POST carrying a foreign Origin is refused even with a valid token."""
    page = browser.authorize(authorize_params(client_app))
    effects = Effects()
    response = browser.client.post(
        f"/authorize/?{urlencode(authorize_params(client_app))}",
        {**form_fields(html(page)), "decision": "approve"},
        HTTP_HOST=PROXY_HOST,
        HTTP_ORIGIN="https://evil.example",
    )
    assert response.status_code == 403
    assert TX_COOKIE not in response.cookies
    effects.assert_nothing_happened()


def test_cd13_get_with_decision_approve_does_not_approve(browser: Browser, client_app) -> None:
    """CD-13: approval needs the POST; a link with ?decision=approve just shows the page."""
    effects = Effects()
    response = browser.authorize(authorize_params(client_app, decision="approve"))
    assert is_consent_page(response)
    assert not response.has_header("Location")
    assert TX_COOKIE not in response.cookies
    effects.assert_nothing_happened()


def test_cd13_post_without_a_decision_does_not_approve(browser: Browser, client_app) -> None:
    """CD-13: only the Approve button approves."""
    page = browser.authorize(authorize_params(client_app))
    fields = form_fields(html(page))
    effects = Effects()
    response = browser.client.post(
        f"/authorize/?{urlencode(authorize_params(client_app))}", fields, HTTP_HOST=PROXY_HOST
    )
    assert response.status_code == 400
    assert not response.has_header("Location")
    effects.assert_nothing_happened()


def _bad_request(browser: Browser, client_app) -> HttpResponse:
    return browser.authorize(authorize_params(client_app, client_id="no-such-client"))


@pytest.fixture(params=["demo middleware", "no XFrameOptionsMiddleware"])
def framing_middleware(request, settings) -> None:
    """The app's own headers must hold in a project without Django's clickjacking middleware."""
    if request.param == "no XFrameOptionsMiddleware":
        settings.MIDDLEWARE = [
            m for m in settings.MIDDLEWARE if not m.endswith("XFrameOptionsMiddleware")
        ]
        assert not any("XFrameOptions" in m for m in settings.MIDDLEWARE)


@pytest.mark.usefixtures("framing_middleware")
@pytest.mark.parametrize("which", ["consent page", "error page", "callback page", "connections"])
def test_cd14_pages_cannot_be_framed(browser: Browser, client_app, which: str) -> None:
    """CD-14, BCP-13: X-Frame-Options DENY and CSP frame-ancestors 'none', set by the app
    itself (protect_page), not borrowed from the project's middleware."""
    if which == "consent page":
        response, status = browser.authorize(authorize_params(client_app)), 200
    elif which == "error page":
        response, status = _bad_request(browser, client_app), 400
    elif which == "callback page":
        response, status = browser.get("/upstream/callback/?state=unknown&code=x"), 400
    else:
        response, status = browser.get("/connections/"), 200
    assert response.status_code == status
    assert response["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]


# Referrer policies that never send this page's URL (state, code_challenge) to another origin.
# The consent page may use "same-origin": under "no-referrer" browsers send `Origin: null`
# with the form POST, which the CSRF check (CD-13) must refuse.
NO_CROSS_ORIGIN_REFERER = {"no-referrer", "same-origin"}


@pytest.mark.parametrize("which", ["consent page", "error page"])
def test_cd15_pages_leak_nothing_through_referer_caches_or_third_parties(
    browser: Browser, client_app, which: str
) -> None:
    """CD-15, BCP-11: no Referer to other sites, not cached, no third-party resources."""
    response = (
        browser.authorize(authorize_params(client_app))
        if which == "consent page"
        else _bad_request(browser, client_app)
    )
    policy = response["Referrer-Policy"]
    assert policy in NO_CROSS_ORIGIN_REFERER if which == "consent page" else policy == "no-referrer"
    assert "no-store" in response["Cache-Control"]
    body = html(response)
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", body, re.I)
    for tag in ("script", "img", "link", "iframe", "object", "embed"):
        assert not re.search(rf"<{tag}\b", body, re.I), tag
    meta = re.search(r'<meta[^>]+name="referrer"[^>]+content="([^"]+)"', body)
    assert meta is None or meta.group(1) in NO_CROSS_ORIGIN_REFERER
    assert "default-src 'none'" in response["Content-Security-Policy"]


def test_cd15_redirects_away_from_the_page_send_no_referer(browser: Browser, client_app) -> None:
    """CD-15, BCP-11: neither the upstream nor the client learns the consent page URL."""
    params = authorize_params(client_app)
    approved = browser.post_form(browser.authorize(params), "approve")
    denied = browser.post_form(browser.authorize(params), "deny")
    error = browser.authorize(authorize_params(client_app, scope="nope"))
    for response in (approved, denied, error):
        assert response["Referrer-Policy"] == "no-referrer"
        assert "no-store" in response["Cache-Control"]


def test_cd16_approve_and_deny_answer_303(browser: Browser, client_app) -> None:
    """CD-16, BCP-12: never 307 (which would re-POST the form to the next site)."""
    params = authorize_params(client_app)
    approved = browser.post_form(browser.authorize(params), "approve")
    assert approved.status_code == 303
    denied = browser.post_form(browser.authorize(params), "deny")
    assert denied.status_code == 303


@pytest.mark.parametrize("method", ["get", "options"])
def test_cd17_no_cors_on_the_authorization_endpoint(client_app, method: str) -> None:
    """CD-17, BCP-15: a foreign origin gets no Access-Control-Allow-Origin."""
    url = f"/authorize/?{urlencode(authorize_params(client_app))}"
    response = getattr(Client(), method)(
        url, HTTP_HOST=PROXY_HOST, HTTP_ORIGIN="https://evil.example"
    )
    assert not response.has_header("Access-Control-Allow-Origin")
    assert not response.has_header("Access-Control-Allow-Credentials")


def test_cd18_deny_returns_access_denied_and_stores_nothing(browser: Browser, client_app) -> None:
    """CD-18: Deny -> access_denied with the client's state and iss; nothing upstream or stored."""
    page = browser.authorize(authorize_params(client_app, state="s-42"))
    effects = Effects()
    denied = browser.post_form(page, "deny")
    assert_error_redirect(denied, "https://app.example/cb", "access_denied", state="s-42")
    effects.assert_nothing_happened()
    assert not Consent.objects.filter(client=client_app).exists()


# --- CD-20..22, CD-40..42, UP-01, UP-05: the approval and the upstream hop ------------------


def test_cd41_showing_the_page_sets_no_state(browser: Browser, client_app) -> None:
    """CD-41, CD-47: the page alone creates no pending state and no state cookie."""
    effects = Effects()
    page = browser.authorize(authorize_params(client_app))
    assert is_consent_page(page)
    assert TX_COOKIE not in page.cookies
    effects.assert_nothing_happened()


def test_cd42_approve_sets_the_host_cookie_and_goes_upstream(browser: Browser, client_app) -> None:
    """CD-20, CD-21, CD-42, UP-01, UP-03, UP-05, SM-07, CD-40: one response does both."""
    page = browser.authorize(authorize_params(client_app, scope="items:read items:write"))
    before = AuthorizationTransaction.objects.count()
    response = browser.post_form(page, "approve")

    assert response.status_code == 303
    cookie = response.cookies[TX_COOKIE]
    assert cookie.value
    assert cookie["secure"] is True
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert cookie["domain"] == ""
    assert AuthorizationTransaction.objects.count() == before + 1

    query = upstream_query(response["Location"])
    assert query["client_id"] == [UPSTREAM["CLIENT_ID"]]
    assert query["redirect_uri"] == [CALLBACK]
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", query["code_challenge"][0])
    expected = set(UPSTREAM["SCOPES"]) | {"repo:read", "repo:write"}
    assert set(query["scope"][0].split()) == expected
    assert len(query["scope"][0].split()) == len(expected)
    state = query["state"][0]
    assert len(state) >= 43
    assert client_app.application.client_id not in state


def test_cd22_tampered_state_cookie_is_worthless(browser: Browser, client_app) -> None:
    """CD-22: the browser-binding cookie is signed; one changed character and the callback refuses."""
    browser.login_upstream()
    to_upstream = browser.post_form(browser.authorize(authorize_params(client_app)), "approve")
    value = browser.client.cookies[TX_COOKIE].value
    flipped = value[:-1] + ("A" if value[-1] != "A" else "B")
    browser.client.cookies[TX_COOKIE] = flipped
    callback = browser.through_upstream(to_upstream["Location"])["Location"]
    assert callback.startswith(CALLBACK)
    response = browser.get(callback)
    assert_error_page(response)
    assert not response.has_header("Location")


def test_up05_upstream_scope_is_exactly_the_mapping_of_the_approved_scopes(
    browser: Browser, client_app
) -> None:
    """UP-05, SM-07: approving items:read asks the upstream for nothing broader."""
    response = browser.post_form(
        browser.authorize(authorize_params(client_app, scope="items:read")), "approve"
    )
    scopes = upstream_query(response["Location"])["scope"][0].split()
    assert sorted(scopes) == sorted(set(UPSTREAM["SCOPES"]) | {"repo:read"})


def test_cd40_every_approval_gets_a_fresh_upstream_state(browser: Browser, client_app) -> None:
    """CD-40: 20 approvals, 20 distinct states of >= 256 bits, 20 distinct PKCE challenges."""
    page = browser.authorize(authorize_params(client_app))
    states, challenges = set(), set()
    for _ in range(20):
        query = upstream_query(browser.post_form(page, "approve")["Location"])
        assert len(query["state"][0]) >= 43
        states.add(query["state"][0])
        challenges.add(query["code_challenge"][0])
    assert len(states) == 20
    assert len(challenges) == 20


def test_reloaded_page_keeps_the_first_form_working(browser: Browser, client_app) -> None:
    """Reload, prefetch or a second tab of the same request must not break the first form."""
    params = authorize_params(client_app)
    first = browser.authorize(params)
    second = browser.authorize(params)
    assert is_consent_page(first)
    assert is_consent_page(second)
    response = browser.post_form(first, "approve")
    assert response.status_code == 303
    upstream_query(response["Location"])


def test_two_tabs_approving_two_clients_both_complete(browser: Browser) -> None:
    """CD-45, CD-48: two pending hops in one browser each end at their own client."""
    browser.login_upstream()
    client_a = MCPClientFactory(client_name="Tab A", redirect_uris=["https://a.example/cb"])
    client_b = MCPClientFactory(client_name="Tab B", redirect_uris=["https://b.example/cb"])
    page_a = browser.authorize(authorize_params(client_a, state="state-a"))
    page_b = browser.authorize(authorize_params(client_b, state="state-b"))
    to_upstream_a = browser.post_form(page_a, "approve")
    to_upstream_b = browser.post_form(page_b, "approve")

    final_b = browser.get(browser.through_upstream(to_upstream_b["Location"])["Location"])
    final_a = browser.get(browser.through_upstream(to_upstream_a["Location"])["Location"])

    for final, uri, state in (
        (final_a, "https://a.example/cb", "state-a"),
        (final_b, "https://b.example/cb", "state-b"),
    ):
        assert final.status_code == 302
        assert final["Location"].startswith(uri + "?")
        query = query_of(final["Location"])
        assert query["state"] == [state]
        assert query["iss"] == [ISSUER]
        assert query["code"][0]
    assert code_from(final_a) != code_from(final_b)


def test_client_changed_since_the_page_was_shown_asks_again(browser: Browser, client_app) -> None:
    """CD-04, CIMD-12, MGMT-06: approval of a page showing other metadata does not count."""
    page = browser.authorize(authorize_params(client_app))
    clients.update_client(
        client_app,
        clean_client_metadata(
            {
                "client_name": "Totally Different App",
                "redirect_uris": ["https://app.example/cb"],
                "token_endpoint_auth_method": "none",
            },
            RegistrationSource.DCR,
        ),
    )
    effects = Effects()
    response = browser.post_form(page, "approve")
    assert response.status_code == 409
    assert not response.has_header("Location")
    assert TX_COOKIE not in response.cookies
    assert "Totally Different App" in html(response)
    effects.assert_nothing_happened()

    # The page shown now is the one that counts.
    again = browser.post_form(response, "approve")
    assert again.status_code == 303
    upstream_query(again["Location"])


def test_changed_request_parameters_are_not_approved_with_an_old_form(
    browser: Browser, client_app
) -> None:
    """CD-04: a form for items:read posted to a URL asking items:write does not approve it."""
    page = browser.authorize(authorize_params(client_app, scope="items:read"))
    wider = authorize_params(client_app, scope="items:read items:write")
    effects = Effects()
    response = browser.client.post(
        f"/authorize/?{urlencode(wider)}",
        {**form_fields(html(page)), "decision": "approve"},
        HTTP_HOST=PROXY_HOST,
    )
    assert response.status_code == 409
    assert not response.has_header("Location")
    effects.assert_nothing_happened()


def test_cd48_approve_post_body_cannot_change_the_request(browser: Browser, client_app) -> None:
    """CD-48: what was shown is what is approved; form fields cannot add scope or a target."""
    browser.login_upstream()
    page = browser.authorize(authorize_params(client_app, scope="items:read"))
    response = browser.post_form(
        page,
        "approve",
        redirect_uri="https://evil.example/cb",
        scope="items:write",
        client_id="other",
        state="evil",
    )
    assert response.status_code == 303
    assert sorted(upstream_query(response["Location"])["scope"][0].split()) == sorted(
        set(UPSTREAM["SCOPES"]) | {"repo:read"}
    )
    final = browser.get(browser.through_upstream(response["Location"])["Location"])
    assert final["Location"].startswith("https://app.example/cb?")
    assert query_of(final["Location"])["state"] == ["client-state-123"]


@pytest.mark.parametrize("state", ["a b&c=d", "ümlaut/+?=#", "x" * 500])
def test_as52_success_returns_state_unchanged(browser: Browser, client_app, state: str) -> None:
    """AS-52: the code comes back with the exact state, once, and iss."""
    browser.login_upstream()
    final = browser.run_flow(authorize_params(client_app, state=state))
    pairs = parse_qsl(urlsplit(final["Location"]).query)
    assert sorted(name for name, _ in pairs) == ["code", "iss", "state"]
    assert dict(pairs)["state"] == state


def test_as51_fragment_response_mode_is_refused_or_clean(browser: Browser, client_app) -> None:
    """AS-51, AS-52, MU-01: either refuse response_mode=fragment, or put everything in the fragment once."""
    params = authorize_params(client_app, response_mode="fragment")
    first = browser.authorize(params)
    if first.status_code == 400:  # refused; SEC-03: shown, the client was never approved
        assert_error_shown(first, "https://app.example/cb", "invalid_request")
        return
    browser.login_upstream()
    final = browser.run_flow(params)
    base, _, fragment = final["Location"].partition("#")
    assert base == "https://app.example/cb"
    pairs = parse_qsl(fragment)
    assert sorted(name for name, _ in pairs) == ["code", "iss", "state"]
    assert dict(pairs)["iss"] == ISSUER


# --- CD-01, CD-04: remembered consent (opt-in) ----------------------------------------------


@pytest.fixture
def returning_user(client_app) -> Browser:
    """A browser that approved client_app once (now signed in at the proxy as octocat)."""
    browser = Browser()
    browser.login_upstream("octocat")
    final = browser.run_flow(authorize_params(client_app))
    assert code_from(final)
    return browser


@pytest.mark.usefixtures("remember_consent")
@pytest.mark.parametrize("fetch_site", ["none", "same-origin"])
def test_cd01_same_user_same_request_direct_navigation_skips_the_page(
    returning_user: Browser, client_app, fetch_site: str
) -> None:
    """CD-01: remembered consent, a typed or bookmarked navigation (``none``) or one from a
    page of this server (``same-origin``) -> straight upstream; the pending transaction and
    the approval's audit event say the consent was remembered, not given on a page."""
    response = returning_user.authorize(
        authorize_params(client_app), **{"Sec-Fetch-Site": fetch_site}
    )
    assert response.status_code == 302
    upstream_query(response["Location"])
    assert TX_COOKIE in response.cookies
    pending = AuthorizationTransaction.objects.order_by("-pk").first()
    assert pending is not None
    assert pending.remembered is True
    approved = (
        AuditEvent.objects.filter(action=AuditEvent.Action.CONSENT_APPROVED).order_by("pk").last()
    )
    assert approved is not None
    assert approved.details["remembered"] is True


@pytest.mark.usefixtures("remember_consent")
@pytest.mark.parametrize("fetch_site", ["cross-site", "same-site", None])
def test_cd01_cross_site_or_unknown_navigation_always_shows_the_page(
    returning_user: Browser, client_app, fetch_site: str | None
) -> None:
    """CD-00, CD-01: a link on another site (or a browser without fetch metadata) -> page."""
    headers = {"Sec-Fetch-Site": fetch_site} if fetch_site else {}
    effects = Effects()
    response = returning_user.authorize(authorize_params(client_app), **headers)
    assert is_consent_page(response)
    effects.assert_nothing_happened()


@pytest.mark.usefixtures("remember_consent")
def test_cd01_consent_is_per_user(returning_user: Browser, client_app) -> None:
    """CD-01: hubot, signed in at the proxy through another client, still sees the page for A."""
    hubot = Browser()
    hubot.login_upstream("hubot")
    other = MCPClientFactory(client_name="Other", redirect_uris=["https://other.example/cb"])
    assert code_from(hubot.run_flow(authorize_params(other)))
    effects = Effects()
    response = hubot.authorize(authorize_params(client_app), **{"Sec-Fetch-Site": "none"})
    assert is_consent_page(response)
    effects.assert_nothing_happened()


@pytest.mark.usefixtures("remember_consent")
def test_cd04_wider_scope_asks_again(returning_user: Browser, client_app) -> None:
    """CD-04, AS-70: a remembered items:read consent does not cover items:write."""
    response = returning_user.authorize(
        authorize_params(client_app, scope="items:read items:write"), **{"Sec-Fetch-Site": "none"}
    )
    assert is_consent_page(response)


@pytest.mark.usefixtures("remember_consent")
def test_cd04_other_client_is_not_covered(returning_user: Browser, client_app) -> None:
    """CD-23, CD-04: a consent for client A is no consent for client B."""
    other = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    response = returning_user.authorize(authorize_params(other), **{"Sec-Fetch-Site": "none"})
    assert is_consent_page(response)


@pytest.mark.usefixtures("remember_consent")
def test_cd04_another_redirect_uri_of_the_client_asks_again() -> None:
    """CD-04, CD-22: a remembered consent is for the redirect URI it was given to; the same
    client's other registered redirect URI (another device, or one an attacker added through
    a client they control) gets the page again, never a code sent there unseen."""
    client = MCPClientFactory(
        client_name="Acme Agent",
        redirect_uris=["https://app.example/cb", "https://app.example/other-cb"],
    )
    browser = Browser()
    browser.login_upstream("octocat")
    assert code_from(browser.run_flow(authorize_params(client)))
    again = browser.authorize(authorize_params(client), **{"Sec-Fetch-Site": "none"})
    assert again.status_code == 302  # the control: the remembered request itself skips
    effects = Effects()
    elsewhere = browser.authorize(
        authorize_params(client, redirect_uri="https://app.example/other-cb"),
        **{"Sec-Fetch-Site": "none"},
    )
    assert is_consent_page(elsewhere)
    effects.assert_nothing_happened()


def test_cd04_another_mcp_server_asks_again(client_app) -> None:
    """CD-04, TP-02: a remembered consent is for the MCP server (resource) it was given for;
    a request for another server of this proxy gets the page again."""
    other = "http://127.0.0.1:8000/other-mcp"
    with override_settings(
        MCP_CONSENT={
            **settings.MCP_CONSENT,
            "REMEMBER_CONSENT": True,
            "RESOURCES": [*settings.MCP_CONSENT["RESOURCES"], other],
        }
    ):
        browser = Browser()
        browser.login_upstream("octocat")
        assert code_from(browser.run_flow(authorize_params(client_app)))
        again = browser.authorize(authorize_params(client_app), **{"Sec-Fetch-Site": "none"})
        assert again.status_code == 302  # the control
        effects = Effects()
        response = browser.authorize(
            authorize_params(client_app, resource=other), **{"Sec-Fetch-Site": "none"}
        )
        assert is_consent_page(response)
        effects.assert_nothing_happened()


@pytest.mark.usefixtures("remember_consent")
def test_cd04_changed_client_metadata_asks_again(returning_user: Browser, client_app) -> None:
    """CD-04, MGMT-06: a consent given to the old name is not consent for the new one."""
    clients.update_client(
        client_app,
        clean_client_metadata(
            {
                "client_name": "Renamed",
                "redirect_uris": ["https://app.example/cb"],
                "token_endpoint_auth_method": "none",
            },
            RegistrationSource.DCR,
        ),
    )
    response = returning_user.authorize(authorize_params(client_app), **{"Sec-Fetch-Site": "none"})
    assert is_consent_page(response)


@pytest.mark.usefixtures("remember_consent")
def test_cd04_metadata_version_alone_asks_again(returning_user: Browser, client_app) -> None:
    """CD-04 by its own mechanism: a new redirect URI bumps the metadata version and leaves
    the consent for https://app.example/cb live (only a removed URI's consents are revoked),
    so only the version check in the remembered-consent rule can ask again here."""
    consent = Consent.objects.get()
    version = client_app.metadata_version
    clients.update_client(
        client_app,
        clean_client_metadata(
            {
                "client_name": "Acme Agent",
                "redirect_uris": ["https://app.example/cb", "https://app.example/cb2"],
                "token_endpoint_auth_method": "none",
            },
            RegistrationSource.DCR,
        ),
    )
    consent.refresh_from_db()
    client_app.refresh_from_db()
    assert consent.revoked_at is None  # still live
    assert consent.expired_at is None
    assert client_app.metadata_version == version + 1
    response = returning_user.authorize(authorize_params(client_app), **{"Sec-Fetch-Site": "none"})
    assert is_consent_page(response)


@pytest.mark.usefixtures("remember_consent")
def test_cd01_one_browser_two_people(returning_user: Browser, client_app) -> None:
    """CD-01 in ONE browser: octocat's remembered consent skips the page for octocat; once
    hubot signs in to the proxy in that same browser, the same link shows hubot the page."""
    direct = {"Sec-Fetch-Site": "none"}
    assert returning_user.authorize(authorize_params(client_app), **direct).status_code == 302
    returning_user.login_upstream("hubot")
    other = MCPClientFactory(client_name="Other", redirect_uris=["https://other.example/cb"])
    assert code_from(returning_user.run_flow(authorize_params(other)))  # now hubot here
    effects = Effects()
    response = returning_user.authorize(authorize_params(client_app), **direct)
    assert is_consent_page(response)
    effects.assert_nothing_happened()


def test_cd01_remembering_is_off_by_default(returning_user: Browser, client_app) -> None:
    """CD-01, CD-02: without the opt-in every request shows the page."""
    default = {k: v for k, v in settings.MCP_CONSENT.items() if k != "REMEMBER_CONSENT"}
    with override_settings(MCP_CONSENT=default):
        effects = Effects()
        response = returning_user.authorize(
            authorize_params(client_app), **{"Sec-Fetch-Site": "none"}
        )
        assert is_consent_page(response)
        effects.assert_nothing_happened()


# --- Mutation testing (issue 8): the error answer's form ------------------------------------


def test_cd16_an_error_redirect_after_a_post_is_a_303_and_after_a_get_a_302(
    browser: Browser, client_app
) -> None:
    """CD-16 / BCP-12: a POSTed request that fails validation goes back to its (approved)
    client with 303, so the browser never re-sends the consent form there; a GET with 302."""
    browser.login_upstream()
    browser.run_flow(authorize_params(client_app))
    got = browser.authorize(authorize_params(client_app, scope="nope"))
    assert got.status_code == 302
    assert_error_redirect(got, "https://app.example/cb", "invalid_scope")
    page = browser.authorize(authorize_params(client_app))
    posted = browser.client.post(
        f"/authorize/?{urlencode(authorize_params(client_app, scope='nope'))}",
        {**form_fields(page.content.decode()), "decision": "approve"},
        HTTP_HOST=PROXY_HOST,
    )
    assert posted.status_code == 303
    assert_error_redirect(posted, "https://app.example/cb", "invalid_scope")


def test_sec03_the_error_page_says_which_error_the_request_had(browser: Browser, phish) -> None:
    """SEC-03: the page shown instead of a redirect names the OAuth error and its
    description (without the final full stop), so the person can tell the developer."""
    plain = browser.authorize(authorize_params(phish, code_challenge_method="plain"))
    assert "(invalid_request: Transform algorithm not supported)" in html(plain)
    scope = browser.authorize(authorize_params(phish, scope="admin:all"))
    assert "(invalid_scope)" in html(scope)
    silent = browser.authorize(authorize_params(phish, prompt="none"))
    assert "(login_required)" in html(silent)
