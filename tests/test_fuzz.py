"""Property-based fuzzing of the five endpoints an attacker can reach (issue 5.2).

Targets: POST /register/, GET /authorize/, the consent POST, GET /upstream/callback/ and
POST /token/. Inputs: malformed and duplicated JSON keys, huge bodies, unicode, control and
bidi characters, NUL, broken percent-escapes, duplicated parameters, wrong content types,
garbage Authorization headers -- mixed with valid values so requests get deep into the code.
Every string parameter is sometimes seeded with an HTML marker.

Properties, for every input:
1. never a 5xx;
2. every redirect goes to a redirect URI registered for the client_id of the request (loopback:
   any port), to the configured upstream authorize URL (consent POST only), or to a local
   path -- never anywhere else;
3. no marker comes back unescaped in an HTML response (AS-54, CD-10); machine endpoints
   answer JSON, never HTML;
4. the database holds no row beyond the ones the answer implies (a refused registration
   leaves no client, a refused consent no transaction, a refused callback no consent,
   upstream token or grant, a refused token request no token).

Reproducible: hypothesis is derandomized (same examples on every run) with no example
database; MCP_CONSENT_FUZZ_EXAMPLES=<n> runs more examples per target locally. No socket is
opened: CIMD fetches are refused by a stub, the upstream is the in-process demo upstream.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from django.test import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oauth2_provider.cimd import CIMDError, SafeMetadataFetcher

from mcp_consent.app_settings import app_settings
from mcp_consent.models import MCPClient
from mcp_consent.registration import is_loopback_host
from tests.browser_client import PROXY_HOST, Browser, form_fields, pkce_pair, query_of
from tests.db_state import grown, snapshot
from tests.factories import MCPClientFactory

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db]

EXAMPLES = int(os.environ.get("MCP_CONSENT_FUZZ_EXAMPLES", "0") or 0)
ON_POSTGRES = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=EXAMPLES or examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


RESOURCE = "http://127.0.0.1:8000/mcp"
ISSUER = "http://127.0.0.1:8000"
HTTPS_URI = "https://app.example/cb"
QUERY_URI = "https://app.example/cb?tenant=1"
LOOPBACK_URI = "http://127.0.0.1:33418/cb"

MARKERS = ["<x-fuzz>", "\"'><svg onload=alert(1)>"]
RAW_MARKER_RE = re.compile(r"<x-fuzz|<svg onload", re.IGNORECASE)

# --- strategies --------------------------------------------------------------------------

INTERESTING = [
    "",
    " ",
    "%",
    "%zz",
    "%00",
    "%ff%fe",
    "\x00",
    "\r\nSet-Cookie: x=1",
    "\u202egnp.exe",
    "\ud7ff\ufeff\u200b",
    "..",
    "../../etc/passwd",
    "https://attacker.example/cb",
    "//attacker.example/cb",
    "http://127.0.0.1:1/cb",
    "http://127.0.0.1:33418/cb#frag",
    "https://app.example/cb/",
    "https://APP.example/cb",
    "https://app.example/cb?tenant=2",
    "https://app.example.attacker.example/cb",
    "javascript:alert(1)",
    "data:text/html,<x-fuzz>",
    "https://*.app.example/cb",
    "S256",
    "plain",
    "code",
    "token",
    "none",
    "approve",
    "deny",
    "null",
    "[]",
    "{}",
    "0",
    "-1",
    "9" * 40,
    "a" * 300,
]

unicode_text = st.text(max_size=30)
control_text = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x9F, exclude_categories=["Cs"]),
    max_size=12,
)
huge_text = st.builds(
    lambda ch, n: ch * n,
    st.sampled_from(["a", "é", "%", "<", "\u202e"]),
    st.integers(2_000, 20_000),
)
marked_text = st.builds(
    lambda a, m, b: a + m + b, st.text(max_size=6), st.sampled_from(MARKERS), st.text(max_size=6)
)
fuzz_str = st.one_of(
    unicode_text, control_text, marked_text, st.sampled_from(INTERESTING), huge_text
)
fuzz_short = st.one_of(unicode_text, control_text, marked_text, st.sampled_from(INTERESTING))


def param_pairs(
    valid: dict[str, str], extra_keys: list[str]
) -> st.SearchStrategy[list[tuple[str, str]]]:
    """A parameter list close to ``valid``: up to three parameters fuzzed, dropped or repeated
    (the rest kept valid, so requests get past the first check), a few extra parameters,
    sometimes in a shuffled order."""
    keys = list(valid)
    mutation = st.one_of(
        st.just("drop"),
        fuzz_str.map(lambda v: ("fuzz", v)),
        st.lists(
            st.one_of(fuzz_str, st.sampled_from(list(valid.values()))), min_size=2, max_size=3
        ).map(lambda vs: ("repeat", vs)),
    )

    def build(
        mutations: dict[str, Any], extras: list[tuple[str, str]], shuffle: bool
    ) -> st.SearchStrategy[list[tuple[str, str]]]:
        pairs: list[tuple[str, str]] = []
        for key in keys:
            change = mutations.get(key)
            if change is None:
                pairs.append((key, valid[key]))
            elif change == "drop":
                continue
            elif change[0] == "fuzz":
                pairs.append((key, change[1]))
            else:
                pairs.extend((key, v) for v in change[1])
        pairs.extend(extras)
        return st.permutations(pairs) if shuffle else st.just(pairs)

    return st.builds(
        build,
        st.dictionaries(st.sampled_from(keys), mutation, max_size=3),
        st.lists(
            st.tuples(st.one_of(st.sampled_from(extra_keys), fuzz_short), fuzz_str), max_size=2
        ),
        st.booleans(),
    ).flatmap(lambda strategy: strategy)


def as_query(pairs: list[tuple[str, str]], raw: bool) -> str:
    """urlencoded, or raw (as a hostile client would send it: unescaped, WSGI latin-1)."""
    if raw:
        text = "&".join(f"{k}={v}" for k, v in pairs).replace("#", "%23")
        return text.encode("utf-8", "surrogatepass").decode("latin-1")
    return urlencode(pairs)


# --- properties --------------------------------------------------------------------------


def registered_uris(client_ids: list[str]) -> list[str]:
    uris: list[str] = []
    for client in MCPClient.objects.filter(application__client_id__in=client_ids):
        uris.extend(client.redirect_uris.values_list("uri", flat=True))
    return uris


def redirect_allowed(location: str, registered: list[str], *, upstream: bool) -> bool:
    parts = urlsplit(location)
    if not parts.scheme and not parts.netloc:
        return location.startswith("/") and not location.startswith("//")
    base = location.split("?", 1)[0]
    if upstream and base == app_settings.UPSTREAM.authorize_url.split("?", 1)[0]:
        return True
    for uri in registered:
        if base == uri.split("?", 1)[0]:
            return True
        candidate = urlsplit(uri)
        if (
            candidate.scheme == "http"
            and is_loopback_host(candidate.hostname)
            and parts.scheme == "http"
            and parts.hostname == candidate.hostname
            and parts.path == candidate.path
        ):
            return True  # CD-33: loopback redirect URIs match on any port
    return False


def assert_sane(
    response: Any, *, registered: list[str], upstream: bool = False, json_only: bool = False
) -> None:
    status = response.status_code
    assert status < 500, (status, response.content[:500])
    if 300 <= status < 400:
        assert status != 307, "CD-16: never 307"
        location = response["Location"]
        assert redirect_allowed(location, registered, upstream=upstream), location
    content_type = response.get("Content-Type", "")
    if json_only:
        assert content_type.startswith("application/json"), (
            status,
            content_type,
            response.content[:200],
        )
    if content_type.startswith("text/html"):
        body = response.content.decode("utf-8", "replace")
        found = RAW_MARKER_RE.search(body)
        assert found is None, body[max(0, found.start() - 200) : found.end() + 100]
        # CD-15 / BCP-11: pages whose URL carries state or codes leak no Referer.
        assert response.get("Referrer-Policy") in {"no-referrer", "same-origin"}, response.items()


def values(pairs: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in pairs if k == key]


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_network_no_limits(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No CIMD fetch reaches the network, no socket opens, rate limits do not cut fuzzing short."""

    def refuse(fetcher: Any, client_id: str) -> tuple[dict[str, Any], int]:
        raise CIMDError("fuzzing: no network")

    def tripwire(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"a socket was opened to {address!r} while fuzzing")

    monkeypatch.setattr(SafeMetadataFetcher, "fetch", refuse)
    monkeypatch.setattr(socket.socket, "connect", tripwire)
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RATE_LIMITS": {}}
    yield


@pytest.fixture
def clients() -> dict[str, Any]:
    return {
        "https": MCPClientFactory(client_name="Acme Agent", redirect_uris=[HTTPS_URI, QUERY_URI]),
        "loopback": MCPClientFactory(client_name="Local CLI", redirect_uris=[LOOPBACK_URI]),
    }


def valid_authorize(client: Any, redirect_uri: str | None = None) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client.application.client_id,
        "redirect_uri": redirect_uri or client.redirect_uris.first().uri,
        "code_challenge": pkce_pair()[1],
        "code_challenge_method": "S256",
        "state": "st",
        "resource": RESOURCE,
        "scope": "items:read",
    }


AUTHORIZE_EXTRA_KEYS = [
    "prompt",
    "response_mode",
    "nonce",
    "request",
    "request_uri",
    "approval_prompt",
    "iss",
    "code",
]


# --- 1. the registration endpoint ------------------------------------------------------------

uri_like = st.one_of(
    st.sampled_from(
        [
            HTTPS_URI,
            LOOPBACK_URI,
            "http://localhost:9/cb",
            "http://[::1]:7/cb",
            "http://app.example/cb",
            "https://app.example:*/cb",
            "http://127.0.0.1:*/cb",
            "com.example.app:/cb",
            "myapp:/cb",
        ]
    ),
    fuzz_short,
    st.builds(lambda m: f"https://app.example/{m}", st.sampled_from(MARKERS)),
)
metadata_values = {
    "redirect_uris": st.one_of(st.lists(uri_like, max_size=4), uri_like, st.none(), st.integers()),
    "client_name": st.one_of(marked_text, fuzz_str),
    "token_endpoint_auth_method": st.one_of(
        st.sampled_from(
            [
                "none",
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
                "client_secret_jwt",
            ]
        ),
        fuzz_short,
    ),
    "grant_types": st.one_of(
        st.lists(
            st.sampled_from(
                [
                    "authorization_code",
                    "refresh_token",
                    "implicit",
                    "password",
                    "client_credentials",
                ]
            ),
            max_size=3,
        ),
        fuzz_short,
    ),
    "response_types": st.one_of(
        st.lists(st.sampled_from(["code", "token", "id_token"]), max_size=2), fuzz_short
    ),
    "application_type": st.one_of(st.sampled_from(["web", "native"]), fuzz_short),
    "scope": fuzz_short,
    "client_uri": uri_like,
    "logo_uri": uri_like,
    "tos_uri": uri_like,
    "policy_uri": uri_like,
    "jwks_uri": uri_like,
    "jwks": st.one_of(st.just({"keys": []}), fuzz_short),
    "contacts": st.lists(fuzz_short, max_size=2),
    "software_id": fuzz_str,
    "software_version": fuzz_short,
    "software_statement": fuzz_short,
    "client_id": fuzz_short,
    "client_secret": fuzz_short,
    "registration_access_token": fuzz_short,
}
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), fuzz_short)
json_any = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(fuzz_short, children, max_size=4)
    ),
    max_leaves=12,
)
VALID_METADATA = {
    "redirect_uris": [HTTPS_URI],
    "client_name": "Fuzzed Agent",
    "token_endpoint_auth_method": "none",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "application_type": "web",
}


def _metadata(
    base: dict[str, Any], changes: dict[str, Any], dropped: list[str], extra: dict[str, Any]
) -> dict[str, Any]:
    doc = {**extra, **base, **changes}
    for key in dropped:
        doc.pop(key, None)
    return doc


# A valid document with up to three members changed or dropped and unknown members added.
metadata_docs = st.builds(
    _metadata,
    st.sampled_from(
        [
            VALID_METADATA,
            {**VALID_METADATA, "redirect_uris": [LOOPBACK_URI], "application_type": "native"},
            {**VALID_METADATA, "token_endpoint_auth_method": "client_secret_basic"},
        ]
    ),
    st.sets(st.sampled_from(list(metadata_values)), max_size=3).flatmap(
        lambda keys: st.fixed_dictionaries({k: metadata_values[k] for k in sorted(keys)})
    ),
    st.lists(st.sampled_from(list(VALID_METADATA)), max_size=1),
    st.dictionaries(fuzz_short, json_any, max_size=2),
)


def duplicated_keys(doc: dict[str, Any]) -> bytes:
    """A JSON text with every key twice (first a decoy, then the real value)."""
    members = [
        f"{json.dumps(k)}: {json.dumps('https://attacker.example/cb')}, {json.dumps(k)}: {json.dumps(v)}"
        for k, v in doc.items()
    ]
    return ("{" + ", ".join(members) + "}").encode()


registration_bodies = st.one_of(
    metadata_docs.map(lambda d: ("application/json", json.dumps(d).encode())),
    metadata_docs.map(
        lambda d: (
            "application/json; charset=utf-8",
            json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass"),
        )
    ),
    metadata_docs.map(lambda d: ("application/json", duplicated_keys(d))),
    json_any.map(lambda v: ("application/json", json.dumps(v).encode())),
    st.binary(max_size=300).map(lambda b: ("application/json", b)),
    st.sampled_from(
        [
            b"{",
            b'{"redirect_uris": [',
            b"\xef\xbb\xbf{}",
            b"[]",
            b"null",
            b'"x"',
            b"{}",
            b'{"a":1}' + b" " * 70_000,
        ]
    ).map(lambda b: ("application/json", b)),
    metadata_docs.map(
        lambda d: (
            "application/x-www-form-urlencoded",
            urlencode({k: json.dumps(v) for k, v in d.items()}).encode(),
        )
    ),
    metadata_docs.map(lambda d: ("text/plain", json.dumps(d).encode())),
    metadata_docs.map(lambda d: ("", json.dumps(d).encode())),
)


@fuzz_settings(120)
@given(body=registration_bodies)
def test_fuzz_registration(body: tuple[str, bytes]) -> None:
    """DCR-01, DCR-05, DCR-06, DCR-11..20: garbage in -> 201 with a policy-clean client, or a
    400 JSON error with no row written."""
    content_type, data = body
    before = snapshot()
    response = Client().generic(
        "POST", "/register/", data, content_type=content_type, HTTP_HOST=PROXY_HOST
    )
    assert_sane(response, registered=[], json_only=True)
    assert response.status_code in {201, 400}, (response.status_code, response.content[:300])
    event(f"registration: {response.status_code}")
    added = grown(before)
    if response.status_code != 201:
        assert added == {}, added
        assert response.json()["error"] in {
            "invalid_client_metadata",
            "invalid_redirect_uri",
            "invalid_request",
        }
        return
    info = response.json()
    uris = info["redirect_uris"]
    # Exactly one client, its redirect URIs and its registration access token.
    assert added == {
        "application": 1,
        "mcp_client": 1,
        "redirect_uri": len(uris),
        "access_token": 1,
    }, added
    for uri in uris:
        parts = urlsplit(uri)
        assert parts.scheme == "https" or (
            parts.scheme == "http" and is_loopback_host(parts.hostname)
        ), uri
        assert "#" not in uri, uri
        assert "*" not in uri, uri
        assert uri.isascii(), uri
    if isinstance(data, bytes) and b"client_id" in data:
        assert info["client_id"] not in data.decode("utf-8", "replace")  # DCR-20
    # CD-10 / DCR-19: what the client said about itself is shown escaped on the consent page.
    client = MCPClient.objects.get(application__client_id=info["client_id"])
    page = Client().get("/authorize/", valid_authorize(client, uris[0]), HTTP_HOST=PROXY_HOST)
    assert_sane(page, registered=uris)
    if page.status_code == 200:
        for attribute, url in re.findall(r'\b(href|src|action)="([^"]*)"', page.content.decode()):
            parts = urlsplit(url)
            assert parts.scheme.lower() in {"", "http", "https"}, (attribute, url)
            if attribute == "src":
                # CD-15 / BCP-11: the consent page loads nothing from another site.
                assert not parts.netloc or parts.netloc == PROXY_HOST, (attribute, url)


# --- 2. the authorization endpoint (GET) ----------------------------------------------------


@fuzz_settings(100)
@given(data=st.data())
def test_fuzz_authorize(clients: dict[str, Any], data: st.DataObject) -> None:
    """AS-50..54, CD-02, CD-30..34, CD-41: never a redirect to an unregistered URI, never to
    the upstream on a GET, no pending state, nothing written."""
    client = data.draw(st.sampled_from(list(clients.values())), label="client")
    valid = valid_authorize(
        client, data.draw(st.sampled_from(list(client.redirect_uris.values_list("uri", flat=True))))
    )
    pairs = data.draw(param_pairs(valid, AUTHORIZE_EXTRA_KEYS), label="params")
    query = as_query(pairs, raw=data.draw(st.booleans(), label="raw"))
    headers = data.draw(
        st.sampled_from([{}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}]),
        label="headers",
    )
    before = snapshot()
    response = Client().get(
        "/authorize/", QUERY_STRING=query, HTTP_HOST=PROXY_HOST, headers=headers
    )
    assert_sane(response, registered=registered_uris(values(pairs, "client_id")))
    assert response.status_code in {200, 302, 400}, response.status_code
    event(f"authorize: {response.status_code}")
    assert "Access-Control-Allow-Origin" not in response  # CD-17
    if response.status_code in {200, 400}:
        assert response["X-Frame-Options"] == "DENY"  # CD-14
    assert grown(before) == {}, grown(before)


# --- 3. the consent POST ------------------------------------------------------------------


@fuzz_settings(60)
@given(data=st.data())
def test_fuzz_consent_post(clients: dict[str, Any], data: st.DataObject) -> None:
    """CD-13, CD-16, CD-18, CD-20, CD-21, CD-41, CD-42: only an exact Approve of the page
    that was shown (with its CSRF token where CSRF is enforced) creates one pending
    transaction and goes upstream, setting the browser-binding cookie with the redirect;
    anything else writes nothing and sets no cookie."""
    client = data.draw(st.sampled_from(list(clients.values())), label="client")
    valid = valid_authorize(client)
    mutate_query = data.draw(st.booleans(), label="mutate query")
    if mutate_query:
        pairs = data.draw(param_pairs(valid, AUTHORIZE_EXTRA_KEYS), label="params")
        query = as_query(pairs, raw=data.draw(st.booleans(), label="raw"))
    else:
        pairs, query = list(valid.items()), urlencode(valid)
    # CD-13: half the examples enforce CSRF like a browser would (the form then carries the
    # page's token unless the fuzzer dropped or changed it), half skip it to reach deeper.
    enforce_csrf = data.draw(st.booleans(), label="enforce csrf")
    http = Client(enforce_csrf_checks=enforce_csrf)
    page = http.get("/authorize/", QUERY_STRING=query, HTTP_HOST=PROXY_HOST)
    shown = form_fields(page.content.decode()) if page.status_code == 200 else {}
    fingerprint = shown.get("fingerprint", "")
    csrf_token = shown.get("csrfmiddlewaretoken", "")
    form = data.draw(
        param_pairs(
            {
                "decision": data.draw(st.sampled_from(["approve", "deny"]), label="decision"),
                "fingerprint": fingerprint,
                "csrfmiddlewaretoken": csrf_token,
            },
            [
                "csrfmiddlewaretoken",
                "decision",
                "fingerprint",
                "client_id",
                "redirect_uri",
                "state",
            ],
        ),
        label="form",
    )
    encoded = data.draw(st.sampled_from(["form", "multipart", "json", "garbage"]), label="encoding")
    if encoded == "multipart":
        post_data: Any = {}
        for k, v in form:
            post_data.setdefault(k, []).append(v)
        kwargs: dict[str, Any] = {}
    elif encoded == "json":
        post_data, kwargs = json.dumps(dict(form)), {"content_type": "application/json"}
    elif encoded == "garbage":
        post_data, kwargs = (
            b"\xff\x00decision=approve&&&=%%",
            {"content_type": "application/x-www-form-urlencoded"},
        )
    else:
        post_data, kwargs = (
            as_query(form, raw=False),
            {"content_type": "application/x-www-form-urlencoded"},
        )
    before = snapshot()
    response = http.post(f"/authorize/?{query}", post_data, HTTP_HOST=PROXY_HOST, **kwargs)
    assert_sane(response, registered=registered_uris(values(pairs, "client_id")), upstream=True)
    assert response.status_code in {200, 302, 303, 400, 403, 409}, response.status_code
    if response.status_code == 403:
        assert enforce_csrf, "403 without CSRF enforcement"
    if enforce_csrf and response.status_code in {302, 303}:
        sent_tokens = (
            values(form, "csrfmiddlewaretoken") if encoded in {"form", "multipart"} else []
        )
        assert sent_tokens, form  # CD-13
        assert sent_tokens[-1] == csrf_token, form
        assert csrf_token, form
    added = grown(before)
    went_upstream = response.status_code == 303 and response["Location"].startswith(
        app_settings.UPSTREAM.authorize_url
    )
    event(f"consent: csrf={enforce_csrf} {'upstream' if went_upstream else response.status_code}")
    if went_upstream:
        assert added == {"transaction": 1}, added
        sent = values(form, "decision") if encoded in {"form", "multipart"} else []
        assert sent, form
        assert sent[-1] == "approve", form
        assert values(form, "fingerprint")[-1] == fingerprint, form
        assert fingerprint, form
        cookie = response.cookies["__Host-mcp_consent_tx"]  # CD-42: set with the redirect
        # CD-20 / CD-21: __Host- prefix rules (Secure, Path=/, no Domain), HttpOnly, Lax.
        assert cookie["secure"]
        assert cookie["httponly"]
        assert cookie["path"] == "/"
        assert not cookie["domain"]
        assert cookie["samesite"] == "Lax"
    else:
        assert added == {}, added
        assert "__Host-mcp_consent_tx" not in response.cookies  # CD-41


# --- 4. the upstream callback ---------------------------------------------------------------


@pytest.fixture
def upstream_browser() -> Browser:
    browser = Browser()
    browser.login_upstream()
    return browser


@fuzz_settings(60)
@given(data=st.data())
def test_fuzz_upstream_callback(
    clients: dict[str, Any], upstream_browser: Browser, data: st.DataObject
) -> None:
    """CD-43..48, UP-04, UP-06, MU-03: a forged or mangled callback writes no consent, upstream
    token or grant, and redirects only to the registered URI of the approved client."""
    client = data.draw(st.sampled_from(list(clients.values())), label="client")
    browser = upstream_browser
    pending = data.draw(st.sampled_from(["none", "approved", "real-code"]), label="pending")
    valid: dict[str, str] = {
        "state": "forged",
        "code": "forged",
        "iss": app_settings.UPSTREAM.issuer,
    }
    if pending != "none":
        page = browser.authorize(valid_authorize(client))
        to_upstream = browser.post_form(page, "approve")
        valid["state"] = query_of(to_upstream["Location"])["state"][0]
        if pending == "real-code":
            callback = browser.through_upstream(to_upstream["Location"])["Location"]
            valid.update({k: v[0] for k, v in query_of(callback).items()})
    pairs = data.draw(
        param_pairs(
            valid, ["error", "error_description", "error_uri", "redirect_uri", "client_id"]
        ),
        label="params",
    )
    query = as_query(pairs, raw=data.draw(st.booleans(), label="raw"))
    cookies = data.draw(
        st.sampled_from(["browser", "browser", "none", "tampered"]), label="cookies"
    )
    http = browser.client if cookies == "browser" else Client()
    if cookies == "tampered" and "__Host-mcp_consent_tx" in browser.client.cookies:
        http.cookies["__Host-mcp_consent_tx"] = (
            browser.client.cookies["__Host-mcp_consent_tx"].value[:-2] + "xx"
        )
    before = snapshot()
    response = http.get("/upstream/callback/", QUERY_STRING=query, HTTP_HOST=PROXY_HOST)
    assert_sane(response, registered=list(client.redirect_uris.values_list("uri", flat=True)))
    assert response.status_code in {302, 400}, response.status_code
    added = grown(before)
    granted = response.status_code == 302 and "code" in query_of(response["Location"])
    event(f"callback: {'code issued' if granted else response.status_code}")
    if granted:
        # The one success: the real code, the real state, this browser, the right issuer.
        assert pending == "real-code", (pending, cookies)
        assert cookies == "browser", (pending, cookies)
        assert values(pairs, "state")[-1] == valid["state"]
        assert values(pairs, "code")[-1] == valid["code"]
        assert added.pop("grant") == 1, added
        assert set(added) <= {"consent", "upstream_token", "identity"}, added
        assert all(n == 1 for n in added.values()), added
        assert response["Location"].startswith(client.redirect_uris.first().uri.split("?")[0])
    else:
        assert added == {}, added


# --- 5. the token endpoint -----------------------------------------------------------------


@pytest.fixture
def code_source(clients: dict[str, Any], upstream_browser: Browser) -> Any:
    """Fresh real codes on demand (each one costs a whole consent + upstream flow)."""

    def fresh() -> dict[str, str]:
        client = clients["https"]
        verifier, challenge = pkce_pair()
        params = valid_authorize(client)
        params["code_challenge"] = challenge
        final = upstream_browser.run_flow(params)
        return {
            "code": query_of(final["Location"])["code"][0],
            "code_verifier": verifier,
            "client_id": client.application.client_id,
            "redirect_uri": params["redirect_uri"],
        }

    return fresh


token_auth_headers = st.one_of(
    st.just({}),
    st.sampled_from(
        [
            {"HTTP_AUTHORIZATION": "Basic"},
            {"HTTP_AUTHORIZATION": "Basic !!!notbase64"},
            {"HTTP_AUTHORIZATION": "Basic Og=="},
            {"HTTP_AUTHORIZATION": "Basic " + "QUFB" * 3000},
            {"HTTP_AUTHORIZATION": "Bearer x"},
            {"HTTP_AUTHORIZATION": "Basic w6k6w6k="},
        ]
    ),
    fuzz_short.map(
        lambda v: {
            "HTTP_AUTHORIZATION": "Basic " + v.encode("utf-8", "surrogatepass").decode("latin-1")
        }
    ),
)


@fuzz_settings(80)
@given(data=st.data())
def test_fuzz_token(code_source: Any, data: st.DataObject) -> None:
    """AS-23, AS-40..48: garbage at /token/ -> JSON errors, no-store, no token without a real
    code or refresh token, never two tokens for one code."""
    real = data.draw(st.sampled_from(["none", "code"]), label="real") == "code"
    valid = {
        "grant_type": data.draw(
            st.sampled_from(
                ["authorization_code", "refresh_token", "password", "client_credentials"]
            ),
            label="grant",
        ),
        "code": "forged-code",
        "code_verifier": pkce_pair()[0],
        "client_id": "forged-client",
        "redirect_uri": HTTPS_URI,
        "resource": RESOURCE,
        "refresh_token": "forged-refresh",
        "scope": "items:read",
    }
    if real:
        valid.update(code_source())
        valid["grant_type"] = "authorization_code"
    pairs = data.draw(
        param_pairs(
            valid, ["client_secret", "client_assertion", "username", "password", "device_code"]
        ),
        label="params",
    )
    encoding = data.draw(
        st.sampled_from(["form", "raw-form", "json", "multipart"]), label="encoding"
    )
    headers = data.draw(token_auth_headers, label="auth")
    http = Client()
    if encoding == "json":
        body, content_type = json.dumps(dict(pairs)).encode(), "application/json"
    elif encoding == "raw-form":
        body, content_type = (
            as_query(pairs, raw=True).encode("latin-1"),
            "application/x-www-form-urlencoded",
        )
    else:
        body, content_type = urlencode(pairs).encode(), "application/x-www-form-urlencoded"
    before = snapshot()
    if encoding == "multipart":
        multi: dict[str, list[str]] = {}
        for k, v in pairs:
            multi.setdefault(k, []).append(v)
        response = http.post("/token/", multi, HTTP_HOST=PROXY_HOST, **headers)
    else:
        response = http.generic(
            "POST", "/token/", body, content_type=content_type, HTTP_HOST=PROXY_HOST, **headers
        )
    assert_sane(response, registered=[], json_only=True)
    assert response.status_code in {200, 400, 401}, (response.status_code, response.content[:300])
    assert "no-store" in response.get("Cache-Control", ""), response.items()
    added = grown(before)
    event(f"token: {response.status_code}")
    if response.status_code == 200:
        assert real, (real, encoding)
        assert encoding in {"form", "raw-form", "multipart"}, (real, encoding)
        assert values(pairs, "code")[-1] == valid["code"]
        assert added == {"access_token": 1, "refresh_token": 1}, added
        again = Client().post("/token/", dict(pairs), HTTP_HOST=PROXY_HOST, **headers)
        assert again.status_code == 400  # AS-41
        assert again.json()["error"] == "invalid_grant"
    else:
        assert added == {}, added
        body_json = (
            response.json()
            if response.get("Content-Type", "").startswith("application/json")
            else {}
        )
        assert "access_token" not in body_json
        assert "refresh_token" not in body_json


# --- explicit edge cases the strategies reach only rarely -----------------------------------


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("&".join(["client_id=x"] * 5000), id="5000-duplicates"),
        pytest.param("state=" + "%" * 100_000, id="100k-bad-escapes"),
        pytest.param("redirect_uri=" + "a" * 1_000_000, id="1MB-parameter"),
        pytest.param("%ff%fe=%ff&%00=%00", id="invalid-utf8"),
    ],
)
def test_authorize_extreme_queries(clients: dict[str, Any], query: str) -> None:
    """Huge and malformed queries: an error page, never a 500 or a redirect."""
    before = snapshot()
    response = Client().get("/authorize/", QUERY_STRING=query, HTTP_HOST=PROXY_HOST)
    assert_sane(response, registered=[])
    assert response.status_code == 400
    assert grown(before) == {}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param("application/json", b"[" * 100_000 + b"]" * 100_000, id="deeply-nested-json"),
        pytest.param(
            "application/json", b'{"redirect_uris": ["' + b"a" * 5_000_000 + b'"]}', id="5MB-json"
        ),
        pytest.param(
            "application/json",
            json.dumps({"redirect_uris": [HTTPS_URI] * 10_000}).encode(),
            id="10000-redirect-uris",
        ),
        pytest.param(
            "application/x-www-form-urlencoded", b"&".join([b"a=b"] * 5000), id="5000-form-fields"
        ),
    ],
)
def test_registration_extreme_bodies(content_type: str, body: bytes) -> None:
    """Huge and pathological bodies: a JSON 400, no client."""
    before = snapshot()
    response = Client().generic(
        "POST", "/register/", body, content_type=content_type, HTTP_HOST=PROXY_HOST
    )
    assert_sane(response, registered=[])
    assert response.status_code in {400, 413}
    assert grown(before) == {}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("&".join(["grant_type=authorization_code"] * 5000), id="5000-duplicates"),
        pytest.param(
            "grant_type=refresh_token&refresh_token=" + "%" * 100_000, id="100k-bad-escapes"
        ),
        pytest.param("grant_type=authorization_code&code=%ff%fe&client_id=%ff", id="invalid-utf8"),
    ],
)
def test_token_extreme_bodies(clients: dict[str, Any], body: str) -> None:
    """AS-48: pathological token requests get a JSON error, no token."""
    before = snapshot()
    response = Client().generic(
        "POST",
        "/token/",
        body.encode(),
        content_type="application/x-www-form-urlencoded",
        HTTP_HOST=PROXY_HOST,
    )
    assert_sane(response, registered=[])
    assert response.status_code in {400, 401}
    assert grown(before) == {}


@pytest.mark.parametrize("path", ["/token/", "/revoke/"])
@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param("\u00c2\u0080", id="latin-1-bytes"),
        pytest.param("\u00e9t\u00e9:x", id="accented"),
    ],
)
def test_token_non_ascii_basic_credentials(
    clients: dict[str, Any], path: str, credentials: str
) -> None:
    """AS-48 / AS-01: an Authorization: Basic header with non-ASCII bytes (a WSGI server
    passes them as latin-1; DOT's base64 decoding raised ValueError, a 500) is bad client
    authentication: /token/ answers a JSON error; /revoke/ falls back to the client_id in
    the body and answers 200 as for any unknown token (RFC 7009 §2.2)."""
    client = clients["https"]
    response = Client(raise_request_exception=False).post(
        path,
        {
            "grant_type": "authorization_code",
            "code": "x",
            "client_id": client.application.client_id,
            "token": "x",
        },
        HTTP_HOST=PROXY_HOST,
        HTTP_AUTHORIZATION=f"Basic {credentials}",
    )
    if path == "/token/":
        assert response.status_code in {400, 401}, response.status_code
        assert response["Content-Type"].startswith("application/json")
        assert "access_token" not in response.json()
    else:
        assert response.status_code in {200, 400, 401}, response.status_code


def test_token_huge_body_is_a_json_error() -> None:
    """AS-48: every /token/ error is JSON and no-store, an oversized body too (it was
    Django's HTML bad-request page, raised before the view could answer)."""
    body = urlencode({"grant_type": "authorization_code", "code": "x"}) + "&pad=" + "a" * 3_000_000
    before = snapshot()
    response = Client().generic(
        "POST",
        "/token/",
        body.encode(),
        content_type="application/x-www-form-urlencoded",
        HTTP_HOST=PROXY_HOST,
    )
    assert response.status_code == 400
    assert grown(before) == {}
    assert response["Content-Type"].startswith("application/json")
    assert "no-store" in response.get("Cache-Control", "")


def test_consent_post_non_ascii_fingerprint(clients: dict[str, Any]) -> None:
    """CD-13 / AS-54: a forged fingerprint re-shows the page (409), whatever its characters
    (hmac.compare_digest on non-ASCII str raised TypeError: a 500, found by the fuzzer)."""
    query = urlencode(valid_authorize(clients["https"]))
    before = snapshot()
    response = Client(raise_request_exception=False).post(
        f"/authorize/?{query}",
        {"decision": "approve", "fingerprint": "\u00e9"},
        HTTP_HOST=PROXY_HOST,
    )
    assert response.status_code == 409, response.status_code
    assert grown(before) == {}


NUL_REQUESTS = {
    "authorize": lambda http: http.get(
        "/authorize/", {"client_id": "a\x00", "response_type": "code"}, HTTP_HOST=PROXY_HOST
    ),
    "token": lambda http: http.post(
        "/token/",
        {"grant_type": "authorization_code", "code": "x", "client_id": "a\x00"},
        HTTP_HOST=PROXY_HOST,
    ),
    "token-basic-auth": lambda http: http.post(
        "/token/",
        {"grant_type": "authorization_code", "code": "x"},
        HTTP_HOST=PROXY_HOST,
        HTTP_AUTHORIZATION="Basic YQA6Yg==",  # "a\x00:b"
    ),
    "revoke": lambda http: http.post(
        "/revoke/", {"token": "x", "client_id": "a\x00"}, HTTP_HOST=PROXY_HOST
    ),
}


@pytest.mark.parametrize("endpoint", list(NUL_REQUESTS))
def test_nul_in_client_id_is_an_ordinary_error(clients: dict[str, Any], endpoint: str) -> None:
    """AS-50 / AS-48: a client_id with a NUL byte is an unknown client on every database."""
    before = snapshot()
    response = NUL_REQUESTS[endpoint](Client(raise_request_exception=False))
    assert response.status_code in {400, 401}, response.status_code
    assert not response.has_header("Location")
    assert grown(before) == {}
