"""Secrets never leak (issue 5.6): logs at DEBUG, HTML pages, responses, the audit trail, the
database, and the error reports Django mails to ADMINS.

One whole run as an MCP client and a person would do it -- a confidential client registered
by DCR, the consent page, Approve, Demo Hub, the callback, the code exchange, a refresh, a
refresh-token replay, a code replay, a revocation, and a few refused requests -- with every
logger at DEBUG (django.request, oauthlib, oauth2_provider, mcp_consent, urllib3, ...).
Every secret of the run is collected as it appears: the MCP code, access and refresh
tokens, the PKCE verifiers, the client secret, the registration access token, the upstream
state, code, access and refresh tokens (read off the upstream's own answers), the proxy's
upstream client secret, and the cookies. Then each is looked for where it must not be.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
from django.apps import apps
from django.core import serializers
from django.db import connection
from django.test import Client

from tests.browser_client import (
    PROXY_HOST,
    Browser,
    authorize_params,
    form_action,
    form_fields,
    pkce_pair,
    query_of,
)
from tests.db_state import audit_text
from tests.factories import MCPClientFactory
from tests.upstream_fakes import UPSTREAM_ORIGIN, RecordingAdapter, mounted

pytestmark = pytest.mark.django_db

REDIRECT_URI = "https://app.example/cb"
RESOURCE = "http://127.0.0.1:8000/mcp"
LOGGERS = [
    "",
    "django",
    "django.request",
    "django.server",
    "django.security",
    "django.db.backends",
    "oauthlib",
    "oauth2_provider",
    "mcp_consent",
    "project",
    "urllib3",
    "requests",
]


@dataclass
class Run:
    """What one run produced: the secrets, and every response of the proxy with a label."""

    secrets: dict[str, str] = field(default_factory=dict)
    responses: list[tuple[str, Any]] = field(default_factory=list)

    def keep(self, label: str, response: Any) -> Any:
        self.responses.append((label, response))
        return response

    def secret(self, name: str, value: str | None) -> None:
        assert value, (name, value)
        assert len(value) >= 16, (name, value)
        self.secrets[name] = value


# Where a secret may legitimately be seen in a response of the proxy (label of the response).
ALLOWED_IN_RESPONSES = {
    "client_secret": {"register"},
    "registration_access_token": {"register", "register-read"},
    "upstream_state": {"approve"},  # the 303 to the upstream
    "mcp_code": {"callback"},  # the 302 to the client
    "mcp_access_token": {"token"},
    "mcp_refresh_token": {"token"},
    "mcp_access_token_2": {"refresh"},
    "mcp_refresh_token_2": {"refresh"},
}
COOKIES = {"binding_cookie", "session_cookie"}  # set by Set-Cookie; checked everywhere else


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG, SQL statements with their parameters included."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    forced = connection.force_debug_cursor
    connection.force_debug_cursor = True  # django.db.backends logs each query and its params
    yield caplog
    connection.force_debug_cursor = forced


@pytest.fixture
def recorder() -> Iterator[RecordingAdapter]:
    adapter = RecordingAdapter()
    with mounted(UPSTREAM_ORIGIN + "/", adapter):
        yield adapter


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def token_post(
    http: Client, data: dict[str, str], auth: str | None = None, path: str = "/token/"
) -> Any:
    headers = {"HTTP_AUTHORIZATION": auth} if auth else {}
    return http.post(path, data, HTTP_HOST=PROXY_HOST, **headers)


def full_run(recorder: RecordingAdapter) -> Run:
    run = Run()
    http = Client()

    # 1. DCR: a confidential client (client_secret + registration access token).
    registered = run.keep(
        "register",
        http.post(
            "/register/",
            json.dumps(
                {
                    "client_name": "Secret Keeper",
                    "redirect_uris": [REDIRECT_URI],
                    "token_endpoint_auth_method": "client_secret_basic",
                    "application_type": "web",
                }
            ),
            content_type="application/json",
            HTTP_HOST=PROXY_HOST,
        ),
    )
    assert registered.status_code == 201, registered.content
    info = registered.json()
    client_id = info["client_id"]
    run.secret("client_secret", info["client_secret"])
    run.secret("registration_access_token", info["registration_access_token"])
    auth = basic(client_id, info["client_secret"])
    run.keep(
        "register-read",
        http.get(
            f"/register/{client_id}/",
            HTTP_HOST=PROXY_HOST,
            HTTP_AUTHORIZATION=f"Bearer {info['registration_access_token']}",
        ),
    )

    # 2. The person: consent page, Approve, Demo Hub, callback.
    browser = Browser()
    browser.login_upstream()
    verifier, challenge = pkce_pair()
    run.secret("code_verifier", verifier)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "client-state-visible-to-the-client",
        "resource": RESOURCE,
    }
    page = run.keep("consent-page", browser.authorize(params))
    assert page.status_code == 200
    html = page.content.decode()
    approve = run.keep(
        "approve",
        browser.client.post(
            form_action(html), {**form_fields(html), "decision": "approve"}, HTTP_HOST=PROXY_HOST
        ),
    )
    assert approve.status_code == 303
    run.secret("upstream_state", query_of(approve["Location"])["state"][0])
    run.secret("binding_cookie", browser.client.cookies["__Host-mcp_consent_tx"].value)
    callback_url = browser.through_upstream(approve["Location"])["Location"]
    run.secret("upstream_code", query_of(callback_url)["code"][0])
    callback = run.keep("callback", browser.get(callback_url))
    assert callback.status_code == 302, callback.content[:300]
    run.secret("mcp_code", query_of(callback["Location"])["code"][0])
    run.secret("session_cookie", browser.client.cookies["__Host-sessionid"].value)
    run.keep("callback-replay", browser.get(callback_url))  # error page

    # The upstream's secrets, read off its own answers and the proxy's requests to it.
    for request, response in recorder.exchanges:
        if (request.url or "").endswith(
            "/login/oauth/access_token"
        ) and response.status_code == 200:
            body = response.json()
            run.secret("upstream_access_token", body["access_token"])
            if body.get("refresh_token"):
                run.secret("upstream_refresh_token", body["refresh_token"])
            sent = parse_qs(
                request.body if isinstance(request.body, str) else request.body.decode()
            )
            if "code_verifier" in sent:
                run.secret("upstream_code_verifier", sent["code_verifier"][0])
            scheme, _, credentials = request.headers["Authorization"].partition(" ")
            run.secret(
                "upstream_client_secret", base64.b64decode(credentials).decode().split(":", 1)[1]
            )
    assert "upstream_access_token" in run.secrets, "the proxy never exchanged the upstream code"

    # 3. The client: code exchange, replay, refresh, refresh replay, revocation, bad secrets.
    exchange = {
        "grant_type": "authorization_code",
        "code": run.secrets["mcp_code"],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        "resource": RESOURCE,
    }
    wrong_secret = run.keep(
        "token-wrong-secret", token_post(http, exchange, basic(client_id, "x" * 40))
    )
    assert wrong_secret.status_code == 401
    issued = run.keep("token", token_post(http, exchange, auth))
    assert issued.status_code == 200, issued.content
    run.secret("mcp_access_token", issued.json()["access_token"])
    run.secret("mcp_refresh_token", issued.json()["refresh_token"])
    refreshed = run.keep(
        "refresh",
        token_post(
            http,
            {"grant_type": "refresh_token", "refresh_token": run.secrets["mcp_refresh_token"]},
            auth,
        ),
    )
    assert refreshed.status_code == 200, refreshed.content
    run.secret("mcp_access_token_2", refreshed.json()["access_token"])
    run.secret("mcp_refresh_token_2", refreshed.json()["refresh_token"])
    run.keep(
        "refresh-replay",
        token_post(
            http,
            {"grant_type": "refresh_token", "refresh_token": run.secrets["mcp_refresh_token"]},
            auth,
        ),
    )
    run.keep("code-replay", token_post(http, exchange, auth))
    run.keep(
        "revoke",
        token_post(http, {"token": run.secrets["mcp_refresh_token_2"]}, auth, path="/revoke/"),
    )
    run.keep(
        "refresh-after-revoke",
        token_post(
            http,
            {"grant_type": "refresh_token", "refresh_token": run.secrets["mcp_refresh_token_2"]},
            auth,
        ),
    )
    run.keep(
        "register-read-wrong-token",
        http.get(
            f"/register/{client_id}/",
            HTTP_HOST=PROXY_HOST,
            HTTP_AUTHORIZATION=f"Bearer {run.secrets['mcp_access_token']}",
        ),
    )
    return run


def all_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The run happens in a fixture: its records are the setup phase's, not the call's."""
    return caplog.get_records("setup") + caplog.get_records("call")


def log_text(caplog: pytest.LogCaptureFixture, *, sql: bool = True, oauthlib: bool = True) -> str:
    formatter = logging.Formatter()
    parts = []
    for record in all_records(caplog):
        if not sql and record.name == "django.db.backends":
            continue
        if not oauthlib and record.name.startswith("oauthlib"):
            continue
        parts.append(f"{record.name} {record.levelname} {record.getMessage()}")
        if record.exc_info:
            parts.append(formatter.formatException(record.exc_info))
        if record.stack_info:
            parts.append(record.stack_info)
    return "\n".join(parts)


def response_text(response: Any, *, with_set_cookie: bool) -> str:
    headers = "\n".join(
        f"{k}: {v}" for k, v in response.items() if with_set_cookie or k.lower() != "set-cookie"
    )
    cookies = response.cookies.output() if with_set_cookie else ""
    return (
        f"{response.status_code}\n{headers}\n{cookies}\n{response.content.decode(errors='replace')}"
    )


def leaks(text: str, secrets: dict[str, str], names: set[str] | None = None) -> list[str]:
    return sorted(n for n, v in secrets.items() if (names is None or n in names) and v in text)


@pytest.fixture
def run(debug_logs: pytest.LogCaptureFixture, recorder: RecordingAdapter) -> Run:
    result = full_run(recorder)
    assert len(result.secrets) >= 16, sorted(result.secrets)
    assert debug_logs.records, "nothing was logged: the DEBUG capture is not working"
    return result


def test_no_secret_in_the_debug_logs(run: Run, debug_logs: pytest.LogCaptureFixture) -> None:
    """BCP-18, UP-07, AS-47: no token, code, verifier, client secret, state or cookie in any
    log record at DEBUG (message, arguments, exception text) of Django, DOT, mcp_consent,
    requests/urllib3 -- oauthlib has its own test below."""
    loggers = sorted({r.name for r in all_records(debug_logs)})
    assert {"django.db.backends", "django.request", "oauth2_provider"} <= set(loggers), loggers
    assert leaks(log_text(debug_logs, sql=False, oauthlib=False), run.secrets) == [], loggers
    # SQL logging shows query parameters; the session key is one by Django's design (the
    # session table is keyed by it). No other secret may reach a query.
    assert set(leaks(log_text(debug_logs, oauthlib=False), run.secrets)) <= {"session_cookie"}


def test_oauthlib_debug_logs_show_no_code_or_token(
    run: Run, debug_logs: pytest.LogCaptureFixture
) -> None:
    """BCP-18: a deployment that turns on DEBUG logging must not write codes and tokens.

    oauthlib logs them at DEBUG ('Saving grant %r' holds the MCP code, 'Validating refresh
    token %s' the refresh token, 'Issuing new token to client id %r (%r), %r.' the new
    access and refresh token); with every oauthlib logger enabled for DEBUG here, none of
    that may reach a handler (mcp_consent.apps drops oauthlib's DEBUG records).
    """
    for module in ("grant_types.authorization_code", "grant_types.refresh_token"):
        name = f"oauthlib.oauth2.rfc6749.{module}"
        assert logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    oauthlib_text = "\n".join(
        r.getMessage() for r in all_records(debug_logs) if r.name.startswith("oauthlib")
    )
    assert leaks(oauthlib_text, run.secrets) == []


def test_no_secret_in_any_html_page(run: Run) -> None:
    """AS-54, BCP-11: consent, error and callback pages carry no secret (the CSRF token aside)."""
    pages = [
        (label, r)
        for label, r in run.responses
        if r.get("Content-Type", "").startswith("text/html")
    ]
    assert {"consent-page", "callback-replay"} <= {label for label, _ in pages}
    for label, response in pages:
        assert leaks(response.content.decode(), run.secrets) == [], label


def test_secrets_only_in_the_responses_that_hand_them_out(run: Run) -> None:
    """TP-05, DCR-04, AS-42: each secret appears in exactly the response that issues it.

    The upstream's code, tokens and client secret and both PKCE verifiers appear in no
    response of the proxy at all; cookies only in their own Set-Cookie header.
    """
    for label, response in run.responses:
        text = response_text(response, with_set_cookie=False)
        for name in leaks(text, run.secrets):
            assert label in ALLOWED_IN_RESPONSES.get(name, set()), f"{name} leaked in {label}"


def test_error_responses_do_not_echo_what_was_sent(run: Run) -> None:
    """AS-48: refused token, refresh and management requests do not echo the token sent."""
    errors = [
        (label, r)
        for label, r in run.responses
        if label
        in {
            "token-wrong-secret",
            "refresh-replay",
            "code-replay",
            "refresh-after-revoke",
            "register-read-wrong-token",
        }
    ]
    assert len(errors) == 5
    for label, response in errors:
        assert response.status_code in {400, 401, 403}, (label, response.status_code)
        assert leaks(response_text(response, with_set_cookie=True), run.secrets) == [], label


def test_no_secret_stored_in_clear_or_in_the_audit_trail(run: Run) -> None:
    """AS-47, UP-07, BCP-18: no raw secret in any row of the proxy's tables (demo upstream
    excluded: it is the third party), audit trail included."""
    dumped = []
    for model in apps.get_models():
        if model._meta.app_label == "demo_upstream":
            continue
        dumped.append(serializers.serialize("json", model.objects.all()))
    text = "\n".join(dumped)
    # The session row holds the session key itself by design; everything else is a leak.
    expected = {"session_cookie"}
    assert set(leaks(text, run.secrets)) <= expected, leaks(text, run.secrets)
    assert leaks(audit_text(), run.secrets) == []


# --- error reports: what Django mails to ADMINS (and shows with DEBUG) on a 500 --------------


class Crash:
    """execute_wrapper: the statement matching ``trigger`` raises (a bug, not a DB error)."""

    def __init__(self, trigger: str) -> None:
        self.trigger = trigger

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if self.trigger in sql:
            raise RuntimeError("simulated crash")
        return execute(sql, params, many, context)


def test_token_endpoint_crash_report_hides_the_secrets(
    settings: Any, mailoutbox: list[Any]
) -> None:
    """BCP-18: a 500 in /token/ must not mail the code, verifier or refresh token to ADMINS."""
    settings.ADMINS = [("Ops", "ops@example.com")]
    client = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    browser = Browser()
    browser.login_upstream()
    verifier, challenge = pkce_pair()
    code = query_of(browser.run_flow(authorize_params(client, challenge=challenge))["Location"])[
        "code"
    ][0]
    http = Client(raise_request_exception=False)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client.application.client_id,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    with connection.execute_wrapper(Crash('INSERT INTO "oauth2_provider_refreshtoken"')):
        crashed = http.post("/token/", data, HTTP_HOST=PROXY_HOST)
    assert crashed.status_code == 500
    assert mailoutbox, "no error report was mailed: the test does not exercise the leak"
    report = "\n".join(
        [m.body for m in mailoutbox]
        + [alt[0] for m in mailoutbox for alt in getattr(m, "alternatives", [])]
    )
    assert code not in report
    assert verifier not in report


# --- SEC-02: Django's technical 500 report of a callback that fails after the exchange -------


def _fail_after_our_code(tx: Any, code: str) -> None:
    """A bug right after our MCP code was minted (its frame holds the code)."""
    raise RuntimeError("simulated crash after the code was minted")


FAULTS = {
    # The upstream tokens exist (plaintext in memory), nothing is recorded yet.
    "storing-the-upstream-token": Crash('INSERT INTO "mcp_consent_upstreamtoken"'),
    # The upstream tokens are stored and our code exists.
    "after-our-code": None,
}


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_sec02_callback_crash_report_hides_every_secret(
    settings: Any, recorder: RecordingAdapter, monkeypatch: Any, fault: str, debug: bool
) -> None:
    """SEC-02: the HTML and text technical 500 reports of a callback that fails after the
    upstream exchange carry no upstream access or refresh token, no PKCE verifier, no
    upstream code, no state, no binding nonce and none of our codes -- DEBUG page included."""
    from django.core.signals import got_request_exception
    from django.views.debug import ExceptionReporter

    from mcp_consent.flows import authorization

    settings.DEBUG = debug
    assert settings.DEFAULT_EXCEPTION_REPORTER_FILTER == "mcp_consent.debug.ExceptionReporterFilter"
    client = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    browser = Browser()
    browser.login_upstream()
    _verifier, challenge = pkce_pair()
    page = browser.authorize(authorize_params(client, challenge=challenge))
    to_upstream = browser.post_form(page, "approve")
    secrets = {
        "upstream_state": query_of(to_upstream["Location"])["state"][0],
        "binding_cookie": browser.client.cookies["__Host-mcp_consent_tx"].value,
    }
    callback_url = browser.through_upstream(to_upstream["Location"])["Location"]
    secrets["upstream_code"] = query_of(callback_url)["code"][0]

    ours: list[str] = []
    if FAULTS[fault] is None:

        def fail(tx: Any, code: str) -> None:
            ours.append(code)
            _fail_after_our_code(tx, code)

        monkeypatch.setattr(authorization, "record_issued_code", fail)
    caught: list[tuple[Any, Any]] = []

    def keep(sender: Any, request: Any, **kwargs: Any) -> None:
        import sys

        caught.append((request, sys.exc_info()))

    got_request_exception.connect(keep)
    browser.client.raise_request_exception = False
    try:
        if FAULTS[fault] is None:
            crashed = browser.get(callback_url)
        else:
            with connection.execute_wrapper(FAULTS[fault]):
                crashed = browser.get(callback_url)
    finally:
        got_request_exception.disconnect(keep)
    assert crashed.status_code == 500
    assert caught, "no exception reached Django's handler: the test exercises nothing"

    for request, response in recorder.exchanges:
        if (request.url or "").endswith("/login/oauth/access_token"):
            body = response.json()
            secrets["upstream_access_token"] = body["access_token"]
            secrets["upstream_refresh_token"] = body["refresh_token"]
            sent = parse_qs(
                request.body if isinstance(request.body, str) else request.body.decode()
            )
            secrets["upstream_code_verifier"] = sent["code_verifier"][0]
    assert {"upstream_access_token", "upstream_refresh_token"} <= set(secrets)
    if ours:
        secrets["mcp_code"] = ours[0]
    assert all(len(v) >= 16 for v in secrets.values()), secrets

    request, (exc_type, exc_value, tb) = caught[0]
    reporter = ExceptionReporter(request, exc_type, exc_value, tb)
    html_report = reporter.get_traceback_html()
    text_report = reporter.get_traceback_text()
    for report in (html_report, text_report):
        assert "simulated crash" in report  # the real report of the real failure
        assert "/upstream/callback/" in report
        assert "********************" in report
        assert leaks(report, secrets) == [], fault
    # The frames are there, only their secret values are not (not a vacuous report).
    assert "complete_authorization" in text_report or "_fail_after_our_code" in text_report
