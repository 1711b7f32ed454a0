"""The demo's MCP endpoint and mcp_consent.integrations.mcp_sdk, in-process, as clients and attackers use them.

The whole ASGI application of project/asgi.py (MCPRouter: Django + the SDK app with its
lifespan) is driven by the official SDK client over httpx2's ASGI transport; Demo Hub is the
in-process upstream of tests/conftest.py, whose adapter records every outbound request. The
tokens come from real flows (tests/mcp_tokens.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, TypeVar

import anyio
import httpx2
import pytest
import requests
from asgiref.sync import async_to_sync
from django.test import Client as DjangoClient
from django.utils import timezone
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.provider import principal_components
from mcp.server.mcpserver import Context, MCPServer
from oauth2_provider.models import get_access_token_model

from mcp_consent import resource
from mcp_consent.integrations import mcp_sdk
from mcp_consent.models import Consent, MCPClient, UpstreamToken
from project.demo_upstream.models import Token as DemoHubToken
from project.mcp_server import build_app
from tests.asgi_helpers import TOOLS_CALL, http_client, mcp_post, serve
from tests.browser_client import PROXY_HOST
from tests.mcp_tokens import (
    OTHER_RESOURCE,
    RESOURCE,
    Issued,
    issue_token,
    post_form,
    upstream_tokens_of,
)
from tests.upstream_fakes import UPSTREAM_ORIGIN, DjangoClientAdapter

pytestmark = pytest.mark.django_db

MCP_URL = RESOURCE
T = TypeVar("T")
AccessToken = get_access_token_model()


class Seen:
    """Every MCP response the client received, bodies included (TP-05)."""

    def __init__(self) -> None:
        self.responses: list[httpx2.Response] = []

    async def hook(self, response: httpx2.Response) -> None:
        await response.aread()
        self.responses.append(response)

    def text(self) -> str:
        return "\n".join(f"{r.status_code} {dict(r.headers)} {r.text}" for r in self.responses)


async def call_tools(
    app: Any, issued: Issued, *calls: tuple[str, dict[str, Any]], seen: Seen | None = None
) -> list[Any]:
    """The SDK client, with a fixed bearer token, calling ``calls`` in order."""
    hooks = {"response": [seen.hook]} if seen else {}
    async with http_client(app, issued.authorization, event_hooks=hooks) as http:
        async with Client(streamable_http_client(MCP_URL, http_client=http)) as client:
            return [await client.call_tool(name, arguments) for name, arguments in calls]


def text_of(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def raw_post(
    app: Any, *, headers: dict[str, str], body: Any = None, path: str = "/mcp"
) -> httpx2.Response:
    async def post(app: Any) -> httpx2.Response:
        async with http_client(app) as http:
            return await http.post(path, json=body if body is not None else {}, headers=headers)

    return async_to_sync(post)(app)


def challenge(response: httpx2.Response) -> dict[str, str]:
    header = response.headers["WWW-Authenticate"]
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


@pytest.fixture
def issued() -> Issued:
    return issue_token()


def outbound_api_requests(adapter: DjangoClientAdapter) -> list[requests.PreparedRequest]:
    return [r for r in adapter.requests if "/demo-upstream/" in (r.url or "")]


def paths(adapter: DjangoClientAdapter) -> list[str]:
    return [
        (r.url or "").removeprefix(UPSTREAM_ORIGIN + "/demo-upstream/") for r in adapter.requests
    ]


# --- The endpoint works ---------------------------------------------------------------------------


def test_tools_reach_demo_hub_with_the_consents_upstream_token(issued, upstream_http) -> None:
    """Items 4 and 5: list, whoami, items from Demo Hub's API through the vault."""

    async def scenario(app: Any) -> tuple[Any, ...]:
        async with http_client(app, issued.authorization) as http:
            async with Client(streamable_http_client(MCP_URL, http_client=http)) as client:
                tools = await client.list_tools()
                me = await client.call_tool("whoami", {})
                items = await client.call_tool("list_items", {"contains": "flux"})
                item = await client.call_tool("get_item", {"item_id": 2})
                missing = await client.call_tool("get_item", {"item_id": 99999})
                return tools, me, items, item, missing

    tools, me, items, item, missing = serve(scenario)
    assert {t.name for t in tools.tools} == {"whoami", "list_items", "get_item"}
    assert not me.is_error
    assert json.loads(text_of(me)) == {
        "login": "octocat",
        "name": "The Octocat",
    }
    assert "Fix the flux capacitor" in text_of(items)
    assert "quarterly" not in text_of(items)
    assert "Write the quarterly report" in text_of(item)
    assert missing.is_error
    assert "no item with id 99999" in text_of(missing)


def test_tp03_the_upstream_gets_the_upstream_token_never_the_mcp_token(
    issued, upstream_http
) -> None:
    """TP-03: every call to Demo Hub's API carries exactly the stored upstream token."""
    upstream_access, _ = upstream_tokens_of(issued)
    upstream_http.requests.clear()
    serve(lambda app: call_tools(app, issued, ("whoami", {}), ("list_items", {})))
    sent = outbound_api_requests(upstream_http)
    assert [p for p in paths(upstream_http)] == ["user", "api/items"]
    for request in sent:
        assert request.headers["Authorization"] == f"Bearer {upstream_access}"
        everything = f"{request.url} {dict(request.headers)} {request.body!r}"
        assert issued.access_token not in everything
        assert issued.refresh_token not in everything


def test_tp05_the_upstream_tokens_never_reach_the_client(issued, upstream_http, caplog) -> None:
    """TP-05 / UP-07: no MCP response (headers, bodies, errors) and no log line has them."""
    secrets_before = upstream_tokens_of(issued)
    DemoHubToken.objects.update(access_expires_at=timezone.now() - timedelta(seconds=1))
    seen = Seen()
    with caplog.at_level("DEBUG"):
        serve(
            lambda app: call_tools(
                app,
                issued,
                ("whoami", {}),  # 401 at Demo Hub -> refresh -> retry
                ("list_items", {}),
                ("get_item", {"item_id": 424242}),  # a tool error
                seen=seen,
            )
        )
    secrets_after = upstream_tokens_of(issued)
    assert secrets_after != secrets_before  # the refresh happened
    shown = seen.text() + caplog.text
    for secret in (*secrets_before, *secrets_after):
        assert secret
        assert secret not in shown


def test_rs11_each_token_reaches_its_own_users_upstream_grant() -> None:
    """RS-11 / SH-04: the consent is found from the verified token's user and client only."""
    octocat = issue_token(username="octocat")
    hubot = issue_token(username="hubot")

    async def scenario(app: Any) -> list[str]:
        logins = []
        for who in (octocat, hubot, octocat, hubot):
            (me,) = await call_tools(app, who, ("whoami", {}))
            logins.append(json.loads(text_of(me))["login"])
        return logins

    assert serve(scenario) == ["octocat", "hubot", "octocat", "hubot"]


# --- Tokens refused at /mcp (issue 3, "Done means") ------------------------------------------------


def refused_at_mcp(authorization: str, **kwargs: Any) -> httpx2.Response:
    response = serve(lambda app: mcp_post(app, {"Authorization": authorization}, **kwargs))
    return response


def assert_invalid_token(response: httpx2.Response) -> None:
    assert response.status_code == 401, response.text
    params = challenge(response)
    assert params["error"] == "invalid_token"
    assert (
        params["resource_metadata"]
        == "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"
    )
    assert "octocat" not in response.text


def test_mcp_refuses_a_token_minted_for_another_resource(settings) -> None:
    """TP-02 at /mcp."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RESOURCES": [RESOURCE, OTHER_RESOURCE]}
    other = issue_token(resource=OTHER_RESOURCE)
    assert_invalid_token(refused_at_mcp(other.authorization))


def test_mcp_refuses_an_upstream_token(issued) -> None:
    """TP-01 at /mcp: Demo Hub's access token, straight from our vault."""
    upstream_access, _ = upstream_tokens_of(issued)
    assert_invalid_token(refused_at_mcp(f"Bearer {upstream_access}"))


def test_mcp_refuses_a_revoked_token(issued) -> None:
    """RS-08 at /mcp: revoked by the client (RFC 7009), refused on the next request."""
    assert (
        post_form(
            "/revoke/", {"token": issued.access_token, "client_id": issued.client_id}
        ).status_code
        == 200
    )
    assert_invalid_token(refused_at_mcp(issued.authorization))


def test_mcp_refuses_an_expired_token(issued) -> None:
    """RS-04 at /mcp."""
    AccessToken.objects.filter(token_checksum=resource.checksum(issued.access_token)).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    assert_invalid_token(refused_at_mcp(issued.authorization))


def test_sec01_mcp_refuses_a_token_of_an_expired_consent(issued) -> None:
    """SEC-01 at /mcp (the SDK's verifier): the consent expired, no cleanup ran; the token is
    refused and the consent retired with its upstream grant."""
    Consent.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_invalid_token(refused_at_mcp(issued.authorization))
    assert Consent.objects.get().expired_at is not None
    assert not UpstreamToken.objects.exists()
    assert not DemoHubToken.objects.filter(revoked_at__isnull=True).exists()


def test_mcp_refuses_a_client_disabled_with_its_tokens_in_place(issued) -> None:
    """The disabled-client check at /mcp on its own: the flag set, every token still there
    (disabling through the flows would delete them and hide a missing check)."""
    MCPClient.objects.filter(pk=issued.client.pk).update(disabled_at=timezone.now())
    assert AccessToken.objects.filter(token_checksum=resource.checksum(issued.access_token))
    assert_invalid_token(refused_at_mcp(issued.authorization))


def test_mcp_refuses_a_token_in_the_query_string(issued) -> None:
    """RS-09 / TP-04 at /mcp: 400 invalid_request, with or without a header."""
    for headers in ({}, {"Authorization": issued.authorization}):
        response = serve(
            lambda app, headers=headers: mcp_post(
                app, headers, path=f"/mcp?access_token={issued.access_token}"
            )
        )
        assert response.status_code == 400
        assert challenge(response)["error"] == "invalid_request"


def test_sh01_no_token_is_401_even_with_a_session_id(issued) -> None:
    """SH-01 / SH-02 / RS-04: every request is verified; a session id is no credential."""
    response = serve(lambda app: mcp_post(app, {"Mcp-Session-Id": "a" * 32}))
    assert response.status_code == 401
    params = challenge(response)
    assert "error" not in params  # RS-04: no credentials, no error code
    assert params["scope"] == "items:read"


def stateful_app() -> Any:
    """The demo's tools over a STATEFUL SDK transport: real Mcp-Session-Id values exist."""
    from project.mcp_server import TOOL_SCOPES, build_server, resource_uri

    sdk_app = build_server().streamable_http_app(
        stateless_http=False,
        json_response=True,
        transport_security=mcp_sdk.transport_security(),
    )
    return mcp_sdk.ProtectedMCPApp(sdk_app, resource_uri=resource_uri(), tool_scopes=TOOL_SCOPES)


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}


def test_sh02_another_users_real_session_id_is_no_credential() -> None:
    """SH-01 / SH-02: hubot's REAL session id, presented without a token, is 401; presented
    with octocat's token it is as unknown as a made-up one (404), never hubot's session."""
    hubot = issue_token(username="hubot")
    octocat = issue_token(username="octocat")
    accept = {"Accept": "application/json, text/event-stream"}

    async def scenario(app: Any) -> tuple[str, list[httpx2.Response]]:
        async with http_client(app) as http:
            opened = await http.post(
                "/mcp", json=INITIALIZE, headers={**accept, "Authorization": hubot.authorization}
            )
            assert opened.status_code == 200, opened.text
            session = opened.headers["Mcp-Session-Id"]
            call = {**TOOLS_CALL, "params": {"name": "whoami", "arguments": {}}}
            answers = []
            for authorization in (None, octocat.authorization):
                headers = {
                    **accept,
                    "Mcp-Session-Id": session,
                    "MCP-Protocol-Version": "2025-06-18",
                }
                if authorization:
                    headers["Authorization"] = authorization
                answers.append(await http.post("/mcp", json=call, headers=headers))
            return session, answers

    session, (without_token, with_other_token) = serve(scenario, mcp_app=stateful_app())
    assert len(session) >= 16
    assert without_token.status_code == 401
    assert "error" not in challenge(without_token)  # RS-04: no credentials, no error code
    assert with_other_token.status_code == 404, with_other_token.text
    assert "hubot" not in with_other_token.text


def test_two_authorization_headers_are_invalid_request(issued) -> None:
    async def post(app: Any) -> httpx2.Response:
        async with http_client(app) as http:
            request = http.build_request("POST", "/mcp", json={})
            request.headers = httpx2.Headers(
                [
                    *request.headers.multi_items(),
                    ("Authorization", issued.authorization),
                    ("Authorization", "Bearer x"),
                ]
            )
            return await http.send(request)

    assert serve(post).status_code == 400


# --- Scopes: step-up and hierarchy ------------------------------------------------------------------


def notes_app() -> Any:
    """An integrator's server: one tool that needs items:write, declared once."""
    tool_scopes = {"write_note": ["items:write"]}
    server = MCPServer(
        "notes", token_verifier=mcp_sdk.ConsentTokenVerifier(), auth=mcp_sdk.auth_settings()
    )

    @server.tool()
    async def write_note(ctx: Context, text: str) -> str:
        token = mcp_sdk.verified_token(ctx, scopes=tool_scopes["write_note"])
        return f"noted for {token.subject}: {text}"

    @server.tool()
    async def read_notes(ctx: Context) -> str:
        return f"notes of {mcp_sdk.verified_token(ctx).subject}"

    sdk_app = server.streamable_http_app(
        stateless_http=True, json_response=True, transport_security=mcp_sdk.transport_security()
    )
    return mcp_sdk.ProtectedMCPApp(sdk_app, tool_scopes=tool_scopes)


def test_rs06_a_tool_that_needs_more_scope_is_a_403_step_up(issued) -> None:
    """RS-06 / SM-02: tools/call of a tool needing items:write with an items:read token."""
    body = {**TOOLS_CALL, "params": {"name": "write_note", "arguments": {"text": "hi"}}}
    response = serve(
        lambda app: mcp_post(app, {"Authorization": issued.authorization}, body=body), notes_app()
    )
    assert response.status_code == 403
    params = challenge(response)
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "items:write"
    assert "noted" not in response.text


def test_rs06_the_401_challenge_names_the_tools_scope_too() -> None:
    """RS-05 / SM-02: no token for a write_note call -> scope="items:write" in one challenge."""
    body = {**TOOLS_CALL, "params": {"name": "write_note", "arguments": {"text": "hi"}}}
    response = serve(lambda app: mcp_post(app, {}, body=body), notes_app())
    assert response.status_code == 401
    assert challenge(response) == {
        "resource_metadata": "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp",
        "scope": "items:write",
    }


def test_rs06_scopes_of_every_tool_in_a_batch_count(issued) -> None:
    body = [
        {**TOOLS_CALL, "id": 1, "params": {"name": "read_notes", "arguments": {}}},
        {**TOOLS_CALL, "id": 2, "params": {"name": "write_note", "arguments": {"text": "x"}}},
    ]
    response = serve(
        lambda app: mcp_post(app, {"Authorization": issued.authorization}, body=body), notes_app()
    )
    assert response.status_code == 403


def test_sm05_the_sdk_sees_implied_scopes_and_tools_accept_the_broader_grant() -> None:
    """SM-05: an items:write token calls list_items (read) and write_note."""
    writer = issue_token(scope="items:write")

    async def scenario(app: Any) -> list[Any]:
        return await call_tools(app, writer, ("write_note", {"text": "x"}), ("read_notes", {}))

    write, read = serve(scenario, notes_app())
    assert not write.is_error
    assert "noted for" in text_of(write)
    assert not read.is_error
    (items,) = serve(lambda app: call_tools(app, writer, ("list_items", {})))
    assert not items.is_error
    assert "flux" in text_of(items)


def test_verified_token_checks_scopes_inside_the_tool_too(issued) -> None:
    """Defence in depth: without ProtectedMCPApp the tool itself refuses (ToolError)."""
    server_app = notes_app().app  # the bare SDK app, no middleware in front

    (result,) = serve(
        lambda app: call_tools(app, issued, ("write_note", {"text": "x"})), server_app
    )
    assert result.is_error
    assert "items:write" in text_of(result)


# --- RS-11: the upstream grant in use ----------------------------------------------------------------


def test_rs11_an_upstream_401_is_refreshed_once_and_retried(issued, upstream_http) -> None:
    """RS-11 / UP-08: Demo Hub stops accepting the stored token; one refresh, one retry."""
    old_access, old_refresh = upstream_tokens_of(issued)
    DemoHubToken.objects.update(access_expires_at=timezone.now() - timedelta(seconds=1))
    upstream_http.requests.clear()
    (items,) = serve(lambda app: call_tools(app, issued, ("list_items", {})))
    assert not items.is_error
    assert "flux" in text_of(items)
    assert paths(upstream_http) == ["api/items", "login/oauth/access_token", "api/items"]
    new_access, new_refresh = upstream_tokens_of(issued)
    assert (new_access, new_refresh) != (old_access, old_refresh)  # rotated, stored
    first, _, retry = upstream_http.requests
    assert first.headers["Authorization"] == f"Bearer {old_access}"
    assert retry.headers["Authorization"] == f"Bearer {new_access}"


def test_up08_an_upstream_token_about_to_expire_is_refreshed_before_the_call(
    issued, upstream_http
) -> None:
    """UP-08: refreshed server-side before expiry: Demo Hub never sees a stale token."""
    UpstreamToken.objects.update(expires_at=timezone.now() + timedelta(seconds=5))
    upstream_http.requests.clear()
    serve(lambda app: call_tools(app, issued, ("whoami", {})))
    assert paths(upstream_http) == ["login/oauth/access_token", "user"]


def test_rs11_a_grant_revoked_upstream_makes_the_client_authorize_again(
    issued, upstream_http
) -> None:
    """RS-11: refresh refused -> the HTTP answer is 401 invalid_token (clients re-authorize)."""
    DemoHubToken.objects.update(revoked_at=timezone.now())  # "Revoke access" at Demo Hub
    responses: list[httpx2.Response] = []

    class Record(httpx2.Auth):
        requires_response_body = True

        def auth_flow(self, request: httpx2.Request) -> Iterator[httpx2.Request]:
            request.headers["Authorization"] = issued.authorization
            responses.append((yield request))

    async def scenario(app: Any) -> None:
        async with http_client(app, auth=Record()) as http:
            async with Client(streamable_http_client(MCP_URL, http_client=http)) as client:
                with pytest.raises(Exception):  # noqa: B017 - the SDK's error for a 401
                    await client.call_tool("list_items", {})

    serve(scenario)
    last = responses[-1]
    assert last.status_code == 401
    params = challenge(last)
    assert params["error"] == "invalid_token"
    assert "Demo Hub" in params["error_description"]
    assert "flux" not in last.text
    assert "login/oauth/access_token" in paths(upstream_http)  # it did try to refresh


def test_an_upstream_outage_is_a_tool_error_not_a_reauthorization(issued, upstream_http) -> None:
    """An outage is not the user's problem: a tool error to retry, no 401, no upstream text."""

    class Down(requests.adapters.BaseAdapter):
        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            raise requests.ConnectionError("connection refused by 10.0.0.5 with token")

        def close(self) -> None:
            pass

    from mcp_consent import upstream

    session = upstream.http_session()
    session.mount(f"{UPSTREAM_ORIGIN}/demo-upstream/api/", Down())
    try:
        seen = Seen()
        (items,) = serve(lambda app: call_tools(app, issued, ("list_items", {}), seen=seen))
    finally:
        session.adapters.pop(f"{UPSTREAM_ORIGIN}/demo-upstream/api/", None)
    assert items.is_error
    assert "not available right now" in text_of(items)
    assert "10.0.0.5" not in seen.text()
    assert all(r.status_code == 200 for r in seen.responses)


# --- RS-10: Host and Origin ---------------------------------------------------------------------------


def test_rs10_a_foreign_origin_is_403_before_anything_else(issued) -> None:
    """RS-10: present and not allowed -> 403, even with a valid token; nothing runs."""
    response = serve(
        lambda app: mcp_post(
            app, {"Authorization": issued.authorization, "Origin": "https://evil.example"}
        )
    )
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers  # not even the challenge
    response = serve(lambda app: mcp_post(app, {"Origin": "null"}))
    assert response.status_code == 403


def test_rs10_the_allowed_origins_come_from_settings(issued, settings) -> None:
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "MCP_ALLOWED_ORIGINS": ["http://localhost:6274"],
    }
    allowed = serve(lambda app: mcp_post(app, {"Origin": "http://localhost:6274"}))
    assert allowed.status_code == 401  # past the origin check, on to authentication
    own = serve(lambda app: mcp_post(app, {"Origin": "http://127.0.0.1:8000"}))
    assert own.status_code == 403  # replaced, not added to


def test_rs10_dns_rebinding_host_is_421(issued) -> None:
    async def post(app: Any) -> httpx2.Response:
        async with http_client(app) as http:
            return await http.post("/mcp", json={}, headers={"Host": "rebound.evil.example:8000"})

    assert serve(post).status_code == 421


# --- One ASGI app, one owner per URL -----------------------------------------------------------------


def test_the_protected_resource_metadata_has_exactly_one_owner() -> None:
    """RS-03: through the combined app, Django answers the well-known URL (not the SDK)."""

    async def get(app: Any) -> httpx2.Response:
        async with http_client(app) as http:
            return await http.get("/.well-known/oauth-protected-resource/mcp")

    combined = serve(get)
    django_answer = DjangoClient().get(
        "/.well-known/oauth-protected-resource/mcp", HTTP_HOST=PROXY_HOST
    )
    assert combined.status_code == 200
    assert combined.json() == django_answer.json()
    assert combined.json()["resource"] == RESOURCE
    assert combined.headers["X-Frame-Options"] == "DENY"  # Django's middleware answered

    # The SDK app would have answered the same path differently; the router never asks it.
    async def sdk_get(app: Any) -> httpx2.Response:
        async with http_client(app) as http:
            return await http.get("/.well-known/oauth-protected-resource/mcp")

    sdk_only = serve(sdk_get, build_app())
    assert sdk_only.status_code == 200  # via the router: still Django's
    assert sdk_only.json() == django_answer.json()


def test_only_the_mcp_path_and_the_lifespan_go_to_the_sdk() -> None:
    sent: list[str] = []

    async def sdk(scope: Any, receive: Any, send: Any) -> None:
        sent.append(f"sdk {scope['type']} {scope.get('path', '')}")

    async def django(scope: Any, receive: Any, send: Any) -> None:
        sent.append(f"django {scope['type']} {scope.get('path', '')}")

    router = mcp_sdk.MCPRouter(django, sdk, paths=["/mcp"])

    async def run() -> None:
        for scope in (
            {"type": "lifespan"},
            {"type": "http", "path": "/mcp"},
            {"type": "http", "path": "/mcp/"},
            {"type": "http", "path": "/.well-known/oauth-protected-resource/mcp"},
            {"type": "websocket", "path": "/mcp"},
        ):
            await router(scope, None, None)

    anyio.run(run)
    assert sent == [
        "sdk lifespan ",
        "sdk http /mcp",
        "django http /mcp/",
        "django http /.well-known/oauth-protected-resource/mcp",
        "django websocket /mcp",
    ]


# --- The TokenVerifier on its own (integrators that use only the SDK) ---------------------------------


def test_the_verifier_returns_the_sdks_access_token_with_resource_and_subject(issued) -> None:
    """Item 3: resource, subject, iss; the SDK's principal is (client, issuer, user)."""
    verifier = mcp_sdk.ConsentTokenVerifier()
    token = async_to_sync(verifier.verify_token)(issued.access_token)
    assert token is not None
    assert token.resource == RESOURCE
    assert token.client_id == issued.client_id
    assert token.subject
    assert token.subject.isdigit()
    assert token.claims
    assert token.claims["iss"] == "http://127.0.0.1:8000"
    assert principal_components(token) == (issued.client_id, "http://127.0.0.1:8000", token.subject)
    upstream_access, _ = upstream_tokens_of(issued)
    assert async_to_sync(verifier.verify_token)(upstream_access) is None


def test_sdk_alone_refuses_a_token_for_another_resource(settings) -> None:
    """AuthSettings(validate_token_resource=True) + the verifier, without ProtectedMCPApp."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "RESOURCES": [RESOURCE, OTHER_RESOURCE]}
    other = issue_token(resource=OTHER_RESOURCE)
    good = issue_token()

    def bare() -> Any:
        server = MCPServer(
            "bare",
            token_verifier=mcp_sdk.ConsentTokenVerifier(RESOURCE),
            auth=mcp_sdk.auth_settings(RESOURCE),
        )

        @server.tool()
        async def ping() -> str:
            return "pong"

        return server.streamable_http_app(stateless_http=True, json_response=True)

    refused = serve(lambda app: mcp_post(app, {"Authorization": other.authorization}), bare())
    assert refused.status_code == 401
    (pong,) = serve(lambda app: call_tools(app, good, ("ping", {})), bare())
    assert text_of(pong) == "pong"


def test_the_verifier_costs_one_query_and_the_middleware_no_second(
    issued, django_assert_num_queries
) -> None:
    verifier = mcp_sdk.ConsentTokenVerifier()
    with django_assert_num_queries(1):
        async_to_sync(verifier.verify_token)(issued.access_token)

    seen = Seen()

    async def counted(app: Any) -> Any:
        return await call_tools(app, issued, ("whoami", {}), seen=seen)

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        serve(counted)
    verifications = [
        q for q in queries.captured_queries if "oauth2_provider_accesstoken" in q["sql"]
    ]
    # RS-08: every HTTP request is verified, once: ProtectedMCPApp's result is reused by the
    # SDK's verifier, not queried again.
    assert len(verifications) == len(seen.responses) >= 2


def test_rs10_a_browser_client_at_an_allowed_origin_gets_cors(issued, settings) -> None:
    """RS-10: the MCP Inspector connecting directly, once its origin is allowed."""
    inspector = "http://localhost:6274"
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "MCP_ALLOWED_ORIGINS": ["http://127.0.0.1:8000", inspector],
    }

    async def scenario(app: Any) -> tuple[httpx2.Response, httpx2.Response, httpx2.Response]:
        async with http_client(app) as http:
            allowed = await http.options(
                "/mcp",
                headers={
                    "Origin": inspector,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type, mcp-protocol-version",
                },
            )
            foreign = await http.options(
                "/mcp",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            )
            challenged = await http.post("/mcp", json={}, headers={"Origin": inspector})
            return allowed, foreign, challenged

    allowed, foreign, challenged = serve(scenario)
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == inspector  # never "*"
    assert "authorization" in allowed.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    assert foreign.status_code == 403
    assert "Access-Control-Allow-Origin" not in foreign.headers
    assert challenged.status_code == 401
    assert challenged.headers["Access-Control-Allow-Origin"] == inspector
    assert "WWW-Authenticate" in challenged.headers["Access-Control-Expose-Headers"]


# --- SEC-11 / RS-07: bounded bodies, never a 5xx ------------------------------------------------


DEEP_ARRAY = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"a":' * 5000 + b"1" + b"}" * 5000
DEEP_IN_ARGUMENTS = (
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":'
    + b'{"a":' * 3000
    + b"1"
    + b"}" * 3000
    + b"}}"
)


def post_bytes(body: bytes, authorization: str | None = None) -> httpx2.Response:
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        **({"Authorization": authorization} if authorization else {}),
    }

    async def post(app: Any) -> httpx2.Response:
        async with http_client(app) as http:
            return await http.post("/mcp", content=body, headers=headers)

    return serve(post)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(DEEP_ARRAY, id="array"),
        pytest.param(DEEP_OBJECT, id="object"),
        pytest.param(DEEP_IN_ARGUMENTS, id="tool-arguments"),
    ],
)
def test_sec11_deeply_nested_json_is_400_with_a_token(issued, body: bytes) -> None:
    """SEC-11 / RS-07: a body nested thousands of levels deep is a malformed request (400,
    JSON), not a RecursionError and a 500, before and after the token check."""
    response = post_bytes(body, issued.authorization)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT, DEEP_IN_ARGUMENTS])
def test_sec11_deeply_nested_json_without_a_token_is_the_401_challenge(body: bytes) -> None:
    """SEC-11 / RS-04: without a token the answer is the challenge, whatever the body."""
    response = post_bytes(body)
    assert response.status_code == 401, response.text[:300]
    assert "error" not in challenge(response)


def test_sec11_an_oversized_body_is_refused_and_without_a_token_challenged(
    issued, settings
) -> None:
    """SEC-11: the size bound comes from settings; over it: 413 with a token, 401 without."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "MCP_MAX_BODY_SIZE": 1000}
    body = json.dumps({**TOOLS_CALL, "params": {"name": "whoami", "arguments": {"x": "y" * 2000}}})
    assert post_bytes(body.encode(), issued.authorization).status_code == 413
    assert post_bytes(body.encode()).status_code == 401


def test_sec11_nesting_within_the_bound_still_reaches_the_tool(issued, settings) -> None:
    """The depth bound is a setting; a message nested less deeply is served as before."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "MCP_MAX_JSON_DEPTH": 12}
    nested: Any = 1
    for _ in range(6):
        nested = {"a": nested}
    ok = post_bytes(
        json.dumps({**TOOLS_CALL, "params": {"name": "whoami", "arguments": nested}}).encode(),
        issued.authorization,
    )
    assert ok.status_code == 200, ok.text[:300]
    for _ in range(10):
        nested = {"a": nested}
    too_deep = post_bytes(
        json.dumps({**TOOLS_CALL, "params": {"name": "whoami", "arguments": nested}}).encode(),
        issued.authorization,
    )
    assert too_deep.status_code == 400
