"""A separate MCP server that accepts mcp-consent tokens through RFC 7662 introspection.

It runs as its own service (no Django, no database): it asks the authorization server
about each bearer token at ``/introspect/``, authenticating with the credentials that
``manage.py mcp_consent_resource_server`` printed, and accepts the token only if it is
active, issued by the expected issuer, unexpired, and meant for this server (``aud``).

    MCP_ISSUER=https://proxy.example.com \\
    MCP_RESOURCE=https://billing.example.com/mcp \\
    MCP_INTROSPECTION_CLIENT_ID=... MCP_INTROSPECTION_CLIENT_SECRET=... \\
    python introspecting_server.py

The proxy must list the resource in ``MCP_CONSENT["RESOURCES"]`` and the client in
``MCP_CONSENT["INTROSPECTION_CLIENTS"]``. Nothing is cached, so a revoked token stops
working at once (a cache would have to expire before the token's ``exp``, INT-03).
"""

from __future__ import annotations

import os
import time

import httpx2
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer


class IntrospectionTokenVerifier:
    """The MCP SDK's TokenVerifier, asking mcp-consent's /introspect/ (RFC 7662)."""

    def __init__(
        self,
        *,
        issuer: str,
        resource: str,
        client_id: str,
        client_secret: str,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.issuer = issuer
        self.resource = resource
        self.introspection_url = f"{issuer}/introspect/"
        self.auth = (client_id, client_secret)
        self.http = http_client or httpx2.AsyncClient(timeout=5)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            response = await self.http.post(
                self.introspection_url, data={"token": token}, auth=self.auth
            )
        except httpx2.HTTPError:
            return None  # fail closed
        if response.status_code != 200:
            return None
        data = response.json()
        if data.get("active") is not True or data.get("iss") != self.issuer:
            return None
        if self.resource not in data.get("aud", []):
            return None  # issued for another server: using it here would be token passthrough
        expires_at = data.get("exp")
        if not isinstance(expires_at, int) or expires_at <= time.time():
            return None
        return AccessToken(
            token=token,
            client_id=data["client_id"],
            scopes=str(data.get("scope", "")).split(),
            expires_at=expires_at,
            resource=self.resource,
            subject=data.get("sub"),
            claims={"iss": data["iss"]},
        )


def build_server(verifier: IntrospectionTokenVerifier) -> MCPServer:
    server = MCPServer(
        "Billing (separate MCP server)",
        token_verifier=verifier,
        auth=AuthSettings(
            issuer_url=verifier.issuer,
            resource_server_url=verifier.resource,
            required_scopes=["items:read"],
            validate_token_resource=True,
        ),
    )

    @server.tool()
    async def whoami() -> str:
        """Which user of the proxy the caller's token speaks for."""
        token = get_access_token()
        return (
            f"user {token.subject if token else '?'} via client {token.client_id if token else '?'}"
        )

    return server


if __name__ == "__main__":
    from urllib.parse import urlsplit

    resource = os.environ["MCP_RESOURCE"]
    verifier = IntrospectionTokenVerifier(
        issuer=os.environ["MCP_ISSUER"],
        resource=resource,
        client_id=os.environ["MCP_INTROSPECTION_CLIENT_ID"],
        client_secret=os.environ["MCP_INTROSPECTION_CLIENT_SECRET"],
    )
    parts = urlsplit(resource)
    build_server(verifier).run(
        "streamable-http",
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 80,
        streamable_http_path=parts.path,
        stateless_http=True,
    )
