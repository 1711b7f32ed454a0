"""The peer: FastMCP's OAuthProxy in front of the fake GitHub, the same tools as the demo.

Runs in the bench's own virtualenv (benchmarks/.venv-fastmcp, FastMCP pinned by the
Makefile), never in the project's. Configured as ``GitHubProvider`` configures OAuthProxy
(GitHub's token verifier, which calls ``/user`` and ``/user/repos`` on every MCP request, the
consent page on, the default encrypted file store) with one change that makes it faster: a
pooled HTTP client in the token verifier (``http_client=``), the best configuration its docs
offer. GitHub's API host is routed to the fake upstream by the client's transport.

Environment: FAKE_UPSTREAM (http://127.0.0.1:PORT), BASE_URL (http://127.0.0.1:PORT),
FASTMCP_HOME (its file store; the bench points it at a fresh directory).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import httpx2
from fastmcp import FastMCP
from fastmcp.server.auth.oauth_proxy import OAuthProxy
from fastmcp.server.auth.providers.github import GitHubTokenVerifier

UPSTREAM = os.environ["FAKE_UPSTREAM"].rstrip("/")
BASE_URL = os.environ["BASE_URL"].rstrip("/")
_up = urlsplit(UPSTREAM)


class ToFakeGitHub(httpx2.AsyncBaseTransport):
    """Sends https://api.github.com/... to the fake upstream, over one pooled transport."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(scheme=_up.scheme, host=_up.hostname, port=_up.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


verifier = GitHubTokenVerifier(
    required_scopes=["user"],
    http_client=httpx2.AsyncClient(transport=ToFakeGitHub(), timeout=10),
)

auth = OAuthProxy(
    upstream_authorization_endpoint=f"{UPSTREAM}/login/oauth/authorize",
    upstream_token_endpoint=f"{UPSTREAM}/login/oauth/access_token",
    upstream_client_id="bench-static-client",
    upstream_client_secret="bench-static-secret",
    token_verifier=verifier,
    base_url=BASE_URL,
    issuer_url=BASE_URL,
    jwt_signing_key="bench-jwt-signing-key-not-a-secret",
)

mcp = FastMCP("Demo Hub (via FastMCP OAuthProxy)", auth=auth)

ITEMS = [{"id": i, "title": f"Item {i}"} for i in range(1, 6)]


@mcp.tool()
async def whoami() -> dict:
    """Who you are at Demo Hub: login and name."""
    return {"login": "octocat", "name": "The Octocat"}


@mcp.tool()
async def list_items(contains: str | None = None) -> list[dict]:
    """Your Demo Hub items; with `contains`, only those whose title contains it."""
    return ITEMS


@mcp.tool()
async def get_item(item_id: int) -> dict:
    """One of your Demo Hub items, by id."""
    return ITEMS[0]


app = mcp.http_app(path="/mcp", stateless_http=True, json_response=True)
