"""Faults on the upstream leg and in the database, seen by the person and the client (issue 5.4).

Every test runs a real flow to the point where the demo upstream has redirected the browser
to our callback with a real code, then breaks something: the upstream is down, slower than
the timeout, answers 5xx, malformed JSON or a token response without its fields, the
callback carries another issuer, or the database fails in the middle of the callback.

Each fault must give the client a proper OAuth error at its registered redirect URI
(``server_error`` with its ``state`` and our ``iss``, UP-06) or the person a clear page,
leave nothing half-written (no consent, upstream token, identity, grant or token row), make
the callback single-use all the same (CD-45), and -- where the product has an audit trail --
be audited.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from django.db import OperationalError, connection
from django.test import Client

from mcp_consent.models import AuthorizationTransaction
from project.demo_upstream.models import RequestLog
from tests.browser_client import (
    PROXY_HOST,
    Browser,
    assert_styled,
    authorize_params,
    query_of,
    shown,
)
from tests.db_state import audit_actions, audit_event_model, audit_text, grown, snapshot
from tests.factories import MCPClientFactory
from tests.upstream_fakes import (
    TOKEN_URL,
    USERINFO_URL,
    FaultAdapter,
    issued_by_upstream,
    make_response,
    mounted,
    revocations_at_upstream,
)

REDIRECT_URI = "https://app.example/cb"
CLIENT_STATE = "client-state-123"
ISSUER = "http://127.0.0.1:8000"
# Text the upstream puts in its failure answers: never relayed to the client or the person.
UPSTREAM_DETAIL = "UPSTREAM-INTERNAL-DETAIL-7f3a"


# --- a flow up to the callback ---------------------------------------------------------------


class AtCallback:
    """A browser that approved on our page and was sent back by the upstream with a code."""

    def __init__(self) -> None:
        self.client = MCPClientFactory(client_name="Acme Agent", redirect_uris=[REDIRECT_URI])
        self.browser = Browser()
        self.browser.login_upstream()
        page = self.browser.authorize(authorize_params(self.client, state=CLIENT_STATE))
        to_upstream = self.browser.post_form(page, "approve")
        assert to_upstream.status_code == 303, to_upstream.content[:300]
        self.callback = self.browser.through_upstream(to_upstream["Location"])["Location"]
        assert self.callback.startswith(f"http://{PROXY_HOST}/upstream/callback/?")
        self.upstream_code = query_of(self.callback)["code"][0]
        self.before = snapshot()

    @property
    def client_id(self) -> str:
        return self.client.application.client_id

    def finish(self, url: str | None = None) -> Any:
        """The browser follows the upstream's redirect to our callback."""
        # A crash must come back as the response a person would get, not as a test error.
        self.browser.client.raise_request_exception = False
        return self.browser.get(url or self.callback)


def assert_server_error_at_client(response: Any) -> None:
    """UP-06: a proper OAuth error at the registered redirect URI, with state and iss."""
    assert response.status_code == 302, (response.status_code, response.content[:300])
    location = response["Location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    query = query_of(location)
    assert query["error"] == ["server_error"], query
    # UP-06: our words, never the upstream's.
    assert query["error_description"] == ["The upstream provider could not complete the sign-in."]
    assert query["state"] == [CLIENT_STATE]
    assert query["iss"] == [ISSUER]
    assert "code" not in query
    assert UPSTREAM_DETAIL not in location


def assert_clear_error_page(response: Any, status: int = 400) -> None:
    """A page for the person: our error template, no redirect, not framable, no upstream text."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert not response.has_header("Location")
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "This sign-in cannot be completed" in html or "temporarily" in html.lower(), html[:500]
    assert response["X-Frame-Options"] == "DENY"
    assert UPSTREAM_DETAIL not in html


def assert_nothing_half_written(flow: AtCallback) -> None:
    """No consent, upstream token, identity, grant or token: the whole grant or nothing."""
    assert grown(flow.before) == {}, grown(flow.before)
    tx = AuthorizationTransaction.objects.get(client=flow.client)
    assert tx.consumed_at is not None  # claimed: the callback cannot be replayed
    assert tx.consent_id is None
    assert not tx.code_hash


def assert_failure_audited(flow: AtCallback) -> None:
    """Issue 4 audit trail: the refusal, never a grant."""
    actions = audit_actions(flow.client_id)
    model = audit_event_model()
    assert model.Action.CALLBACK_REFUSED in actions, actions
    refused = model.objects.filter(
        action=model.Action.CALLBACK_REFUSED, client_id=flow.client_id
    ).get()
    assert refused.ip_address == "127.0.0.1"  # the browser's request, not a system event
    assert model.Action.CONSENT_GRANTED not in actions
    assert model.Action.CALLBACK_ACCEPTED not in actions
    assert flow.upstream_code not in audit_text()


def assert_replay_refused(flow: AtCallback) -> None:
    """CD-45 holds after a failure too: the same callback URL does not get a second try."""
    exchanges = RequestLog.objects.filter(path__endswith="/login/oauth/access_token").count()
    again = flow.finish()
    assert again.status_code == 400
    assert not again.has_header("Location")
    assert (
        RequestLog.objects.filter(path__endswith="/login/oauth/access_token").count() == exchanges
    )


@pytest.fixture
def flow(db: None) -> AtCallback:
    return AtCallback()


# --- the upstream fails: one fake per failure ----------------------------------------------


def raising(exc: type[Exception]) -> Callable[[requests.PreparedRequest], requests.Response]:
    def behaviour(request: requests.PreparedRequest) -> requests.Response:
        raise exc(f"{UPSTREAM_DETAIL}: simulated")

    return behaviour


def answering(
    status: int, body: Any, content_type: str = "application/json"
) -> Callable[[requests.PreparedRequest], requests.Response]:
    def behaviour(request: requests.PreparedRequest) -> requests.Response:
        return make_response(request, status, body, content_type)

    return behaviour


TOKEN = "token"
USER = "user"
UPSTREAM_FAULTS = [
    # The token endpoint (code exchange).
    pytest.param(TOKEN, raising(requests.ConnectionError), id="token-down"),
    pytest.param(TOKEN, raising(requests.ReadTimeout), id="token-slower-than-timeout"),
    pytest.param(TOKEN, raising(requests.ConnectTimeout), id="token-connect-timeout"),
    pytest.param(TOKEN, raising(requests.exceptions.SSLError), id="token-tls-failure"),
    pytest.param(
        TOKEN,
        answering(503, f"<html>{UPSTREAM_DETAIL} maintenance</html>", "text/html"),
        id="token-503-html",
    ),
    pytest.param(
        TOKEN,
        answering(500, {"error": "server_error", "error_description": UPSTREAM_DETAIL}),
        id="token-500-json",
    ),
    pytest.param(TOKEN, answering(502, b"", "text/plain"), id="token-502-empty"),
    pytest.param(TOKEN, answering(200, "{not json " + UPSTREAM_DETAIL), id="token-malformed-json"),
    pytest.param(TOKEN, answering(200, '{"access_token": "abc'), id="token-truncated-json"),
    pytest.param(TOKEN, answering(200, b"\xff\xfe\x00garbage"), id="token-binary-body"),
    pytest.param(TOKEN, answering(200, ["access_token"]), id="token-json-array"),
    pytest.param(TOKEN, answering(200, "null"), id="token-json-null"),
    pytest.param(TOKEN, answering(200, {"token_type": "bearer"}), id="token-missing-access-token"),
    pytest.param(
        TOKEN, answering(200, {"access_token": 12345}), id="token-access-token-not-string"
    ),
    pytest.param(TOKEN, answering(200, {"access_token": ""}), id="token-empty-access-token"),
    pytest.param(
        TOKEN,
        # GitHub answers a bad code with HTTP 200 and an error member.
        answering(200, {"error": "bad_verification_code", "error_description": UPSTREAM_DETAIL}),
        id="token-200-with-error",
    ),
    # The user info endpoint (identity), after a successful exchange.
    pytest.param(USER, raising(requests.ConnectionError), id="user-down"),
    pytest.param(USER, raising(requests.ReadTimeout), id="user-slower-than-timeout"),
    pytest.param(USER, answering(500, f"<h1>{UPSTREAM_DETAIL}</h1>", "text/html"), id="user-500"),
    pytest.param(USER, answering(401, {"message": "Bad credentials"}), id="user-401"),
    pytest.param(USER, answering(200, "{{{" + UPSTREAM_DETAIL), id="user-malformed-json"),
    pytest.param(USER, answering(200, {"login": "octocat"}), id="user-missing-id"),
    pytest.param(USER, answering(200, {"id": {"nested": 1}}), id="user-id-not-scalar"),
    pytest.param(USER, answering(200, {"id": ""}), id="user-id-empty"),
    pytest.param(USER, answering(200, [1, 2]), id="user-json-array"),
]


@pytest.mark.parametrize(("endpoint", "behaviour"), UPSTREAM_FAULTS)
def test_upstream_fault_gives_server_error_and_writes_nothing(
    flow: AtCallback,
    endpoint: str,
    behaviour: Callable[..., requests.Response],
    upstream_http: Any,
) -> None:
    """UP-06 (faults): a broken upstream answer -> server_error at the client, no grant rows."""
    fake = FaultAdapter(behaviour)
    with mounted(TOKEN_URL if endpoint == TOKEN else USERINFO_URL, fake):
        response = flow.finish()
    assert fake.calls >= 1  # the fault was really on the path
    assert_server_error_at_client(response)
    assert_nothing_half_written(flow)
    tx = AuthorizationTransaction.objects.get(client=flow.client)
    assert tx.outcome == AuthorizationTransaction.Outcome.FAILED
    assert UPSTREAM_DETAIL not in tx.failure_reason
    assert_failure_audited(flow)
    assert_replay_refused(flow)
    if endpoint == USER:
        # UP-09: the code was exchanged, then the identity failed: both tokens the upstream
        # issued are revoked there, none left live for a grant we do not hold.
        assert revocations_at_upstream(upstream_http) == issued_by_upstream("octocat")


def test_a_callback_without_a_code_is_refused_before_any_exchange(
    flow: AtCallback, caplog: Any
) -> None:
    """UP-06: an upstream answer with neither a code nor an error is a server_error at the
    client; nothing is sent to the token endpoint; the reason is stored and logged."""
    exchanges = RequestLog.objects.filter(path__endswith="/login/oauth/access_token").count()
    without_code = flow.callback.replace(f"code={flow.upstream_code}", "x=1")
    with caplog.at_level("WARNING", logger="mcp_consent"):
        response = flow.finish(without_code)
    assert_server_error_at_client(response)
    assert (
        RequestLog.objects.filter(path__endswith="/login/oauth/access_token").count() == exchanges
    )
    tx = AuthorizationTransaction.objects.get(client=flow.client)
    assert (tx.outcome, tx.failure_reason) == ("failed", "callback without code")
    assert "upstream sign-in failed: callback without code" in caplog.messages
    assert_failure_audited(flow)


# --- real sockets: a closed port and a server slower than the timeout ------------------------


def upstream_at(settings: Any, **urls: str) -> None:
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "UPSTREAM": {**settings.MCP_CONSENT["UPSTREAM"], **urls},
    }


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, never listened, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def slow_server(delay: float) -> Iterator[str]:
    """An http server on a free 127.0.0.1 port that answers after ``delay`` seconds."""

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            time.sleep(delay)
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"access_token": "too-late", "token_type": "bearer"}')
            except OSError:
                pass  # the proxy gave up and closed the connection, as it should

        do_GET = do_POST

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_upstream_down_for_real(flow: AtCallback, settings: Any) -> None:
    """Upstream down: a refused TCP connection (real socket) -> server_error, nothing written."""
    upstream_at(settings, TOKEN_URL=f"http://127.0.0.1:{closed_port()}/token")
    response = flow.finish()
    assert_server_error_at_client(response)
    assert_nothing_half_written(flow)
    assert_failure_audited(flow)


@pytest.mark.parametrize("endpoint", ["TOKEN_URL", "USERINFO_URL"])
def test_upstream_slower_than_the_timeout_for_real(
    flow: AtCallback, settings: Any, endpoint: str
) -> None:
    """A real server that answers after 3 s with TIMEOUT 0.5 s: the person is not kept waiting."""
    with slow_server(delay=3.0) as origin:
        upstream_at(settings, **{endpoint: f"{origin}/slow", "TIMEOUT": 0.5})
        started = time.monotonic()
        response = flow.finish()
        elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"the callback waited {elapsed:.1f}s for a 0.5s timeout"
    assert_server_error_at_client(response)
    assert_nothing_half_written(flow)
    assert_failure_audited(flow)


# --- the callback carries another issuer, or none --------------------------------------------


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(
            lambda url: url.replace("iss=", "iss=https%3A%2F%2Fevil.example&x="), id="wrong-iss"
        ),
        pytest.param(lambda url: url.replace("iss=", "iss=&x="), id="empty-iss"),
        pytest.param(lambda url: url.replace("iss=", "x="), id="missing-iss"),
        pytest.param(lambda url: url + "&iss=https%3A%2F%2Fevil.example", id="second-iss"),
    ],
)
def test_wrong_iss_is_a_clear_page_and_no_exchange(
    flow: AtCallback, rewrite: Callable[[str], str]
) -> None:
    """MU-03 / UP-04: a response from another issuer is refused before the code is exchanged."""
    exchanges = RequestLog.objects.filter(path__endswith="/login/oauth/access_token").count()
    response = flow.finish(rewrite(flow.callback))
    assert_clear_error_page(response)
    assert shown(response) == {
        "title": "This sign-in cannot be completed",
        "heading": "This sign-in cannot be completed",
        "message": "The provider's response did not come from the expected provider. "
        "Nothing was shared with the application.",
    }
    assert_styled(response)
    tx = AuthorizationTransaction.objects.get(client=flow.client)
    assert tx.failure_reason == "upstream iss missing or mismatched"
    assert (
        RequestLog.objects.filter(path__endswith="/login/oauth/access_token").count() == exchanges
    )
    assert_nothing_half_written(flow)
    assert_failure_audited(flow)
    assert_replay_refused(flow)


# --- the database fails during the callback -------------------------------------------------


class DatabaseFault:
    """``connection.execute_wrapper``: statements matching ``trigger`` fail with
    OperationalError; with ``stays_down`` every later statement fails as well (the database
    went away), otherwise only that one (a transient failure)."""

    def __init__(self, trigger: str, *, stays_down: bool = False) -> None:
        self.trigger = trigger
        self.stays_down = stays_down
        self.down = False
        self.failed: list[str] = []

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        if self.down or self.trigger in sql:
            self.down = self.stays_down
            self.failed.append(sql[:80])
            raise OperationalError("server closed the connection unexpectedly (simulated)")
        return execute(sql, params, many, context)


DB_FAULTS = [
    # Inside the one transaction of the callback: after the consent and the upstream token
    # were written, before / while the MCP code (DOT Grant) is stored.
    pytest.param('INSERT INTO "mcp_consent_upstreamtoken"', False, id="upstream-token-insert"),
    pytest.param('INSERT INTO "oauth2_provider_grant"', False, id="grant-insert"),
    pytest.param('INSERT INTO "mcp_consent_consent"', True, id="down-from-consent-insert"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("trigger", "stays_down"), DB_FAULTS)
def test_database_failure_in_the_callback_rolls_everything_back(
    trigger: str, stays_down: bool
) -> None:
    """Faults: the database fails mid-callback -> no consent, upstream token, grant or code.

    transaction=True: the callback's transaction is a real one, so what is asserted is what
    was committed.
    """
    from project.demo_upstream.seed import seed_demo_data

    seed_demo_data()
    flow = AtCallback()
    fault = DatabaseFault(trigger, stays_down=stays_down)
    with connection.execute_wrapper(fault):
        flow.finish()
    assert fault.failed, "the fault never fired: the callback no longer writes that table"
    assert_nothing_half_written(flow)
    actions = audit_actions(flow.client_id)
    model = audit_event_model()
    assert model.Action.CONSENT_GRANTED not in actions
    assert model.Action.CALLBACK_ACCEPTED not in actions
    assert_replay_refused(flow)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("trigger", "stays_down"), DB_FAULTS)
def test_database_failure_in_the_callback_gives_a_proper_answer(
    trigger: str, stays_down: bool
) -> None:
    """Faults: the person gets a clear page or the client a proper OAuth error, not a raw 500."""
    from project.demo_upstream.seed import seed_demo_data

    seed_demo_data()
    flow = AtCallback()
    with connection.execute_wrapper(DatabaseFault(trigger, stays_down=stays_down)):
        response = flow.finish()
    if response.status_code == 302:
        location = response["Location"]
        assert location.startswith(REDIRECT_URI + "?"), location
        query = query_of(location)
        assert query["error"][0] in {"server_error", "temporarily_unavailable"}
        assert query["state"] == [CLIENT_STATE]
        assert query["iss"] == [ISSUER]
    else:
        assert response.status_code in {500, 503}
        assert response["Content-Type"].startswith("text/html")
        html = response.content.decode()
        # Our error template (mcp_consent/error.html), not Django's one-line 500 page.
        assert "This sign-in cannot be completed" in html or "temporarily" in html.lower(), html
    if not stays_down:
        # The database is back for the next statement: the failure is recorded and audited.
        tx = AuthorizationTransaction.objects.get(client=flow.client)
        assert tx.outcome == AuthorizationTransaction.Outcome.FAILED
        assert_failure_audited(flow)


@pytest.mark.django_db(transaction=True)
def test_database_down_at_the_callback_tells_the_person_to_retry_later(caplog: Any) -> None:
    """Faults: with the database down when the callback arrives, the person reads a styled
    503 page saying the service cannot complete sign-ins now, nothing was shared, and to try
    again in a few minutes; no redirect to the client (nothing could be checked)."""
    from html import unescape

    from project.demo_upstream.seed import seed_demo_data

    seed_demo_data()
    flow = AtCallback()
    with (
        caplog.at_level("ERROR", logger="mcp_consent"),
        connection.execute_wrapper(DatabaseFault("", stays_down=True)),
    ):
        response = flow.finish()
    # The one trace of it (the audit trail cannot be written): the operator's log.
    assert "upstream callback: database unavailable" in caplog.messages
    assert response.status_code == 503
    assert not response.has_header("Location")
    html = unescape(response.content.decode())
    assert "<title>Temporarily unavailable</title>" in html
    assert (
        "<h1>Temporarily unavailable</h1>\n<p>This service cannot complete sign-ins right now. "
        "Nothing was shared with any application. Try again in a few minutes from your "
        "application.</p>"
    ) in html
    assert_styled(response)


@pytest.mark.django_db(transaction=True)
def test_grant_not_recorded_is_a_retryable_error_at_the_client_and_the_upstream_grant_revoked(
    upstream_http: Any, caplog: Any
) -> None:
    """UP-06, UP-09, faults: the database fails once while the grant is recorded (all of it
    rolled back). The client gets exactly RFC 6749's retryable ``temporarily_unavailable``
    with our own description, its state and our iss, never a code; the upstream is asked to
    revoke both tokens it issued (none left live for a grant we do not hold); the
    transaction fails with its reason, audited as this browser's request (its address and
    user agent), not as a system event."""
    from urllib.parse import parse_qs

    from project.demo_upstream.models import Token, hash_secret
    from project.demo_upstream.seed import seed_demo_data

    seed_demo_data()
    flow = AtCallback()
    fault = DatabaseFault('INSERT INTO "mcp_consent_upstreamtoken"')
    with caplog.at_level("ERROR", logger="mcp_consent"), connection.execute_wrapper(fault):
        response = flow.browser.get(flow.callback, **{"User-Agent": "Browser/1.0"})
    assert fault.failed
    assert "upstream callback: database error while recording the grant" in caplog.messages

    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    assert query_of(location) == {
        "error": ["temporarily_unavailable"],
        "error_description": ["The authorization server could not record the grant; try again."],
        "state": [CLIENT_STATE],
        "iss": [ISSUER],
    }
    issued = Token.objects.get(account__login="octocat")
    revoked = set()
    for request in upstream_http.requests:
        if request.url.endswith("/demo-upstream/revoke"):
            body = request.body if isinstance(request.body, str) else request.body.decode()
            form = parse_qs(body)
            revoked.add((form["token_type_hint"][0], hash_secret(form["token"][0])))
    assert revoked == {
        ("refresh_token", issued.refresh_token_hash),
        ("access_token", issued.access_token_hash),
    }
    tx = AuthorizationTransaction.objects.get(client=flow.client)
    assert (tx.outcome, tx.failure_reason) == ("failed", "database error while recording the grant")
    model = audit_event_model()
    event = model.objects.get(action=model.Action.CALLBACK_REFUSED, client_id=flow.client_id)
    assert event.details["reason"] == "database error while recording the grant"
    assert (event.actor_type, event.ip_address, event.user_agent) == (
        "anonymous",
        "127.0.0.1",
        "Browser/1.0",
    )


# --- the token endpoint when the database fails ----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_database_failure_while_issuing_tokens_leaves_the_code_usable_once() -> None:
    """Faults at /token/: a failed token write issues nothing and keeps single use (AS-41)."""
    from oauth2_provider.models import get_access_token_model

    from project.demo_upstream.seed import seed_demo_data
    from tests.browser_client import pkce_pair

    seed_demo_data()
    client = MCPClientFactory(redirect_uris=[REDIRECT_URI])
    browser = Browser()
    browser.login_upstream()
    verifier, challenge = pkce_pair()
    final = browser.run_flow(authorize_params(client, challenge=challenge))
    code = query_of(final["Location"])["code"][0]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client.application.client_id,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    before = snapshot()
    http = Client(raise_request_exception=False)
    with connection.execute_wrapper(DatabaseFault('INSERT INTO "oauth2_provider_refreshtoken"')):
        failed = http.post("/token/", data, HTTP_HOST=PROXY_HOST)
    assert failed.status_code >= 400
    assert "access_token" not in failed.content.decode()
    assert grown(before) == {}, grown(before)  # the access token written first was rolled back
    retried = http.post("/token/", data, HTTP_HOST=PROXY_HOST)
    assert retried.status_code == 200, retried.content
    assert (
        get_access_token_model()
        .objects.filter(application=client.application, user__isnull=False)
        .count()
        == 1
    )
    assert http.post("/token/", data, HTTP_HOST=PROXY_HOST).json()["error"] == "invalid_grant"
