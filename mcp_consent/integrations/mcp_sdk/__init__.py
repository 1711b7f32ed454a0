"""mcp_consent for the official MCP Python SDK (``mcp`` 2.x): protect an MCPServer.

The pieces, all verifying through ``mcp_consent.resource`` (one code path)::

    from mcp.server.mcpserver import Context, MCPServer
    from mcp_consent.integrations import mcp_sdk

    server = MCPServer(
        "My MCP server",
        token_verifier=mcp_sdk.ConsentTokenVerifier(),
        auth=mcp_sdk.auth_settings(),          # validate_token_resource=True
    )

    @server.tool()
    async def whoami(ctx: Context) -> dict:
        token = mcp_sdk.verified_token(ctx)
        return await mcp_sdk.call_upstream(token, lambda api: api.get("user").json())

    mcp_app = mcp_sdk.ProtectedMCPApp(
        server.streamable_http_app(
            stateless_http=True, json_response=True, transport_security=mcp_sdk.transport_security()
        ),
        tool_scopes={"list_items": ["items:read"]},
    )
    application = mcp_sdk.MCPRouter(django_asgi_app, mcp_app)   # /mcp + lifespan → SDK

* ``ConsentTokenVerifier`` is the SDK's ``TokenVerifier``: enough on its own for the SDK's
  ``AuthSettings(validate_token_resource=True)``; it returns the SDK's AccessToken with the
  resource, the subject (the local user) and ``iss``, so the SDK binds sessions and request
  state to the user (SH-04), and with the scopes widened by the hierarchy (SM-05).
* ``ProtectedMCPApp`` goes in front of the SDK app and answers what the SDK answers
  imprecisely: RFC 6750 / RFC 9728 challenges with ``scope`` and without ``error`` when no
  token was sent (RS-04, RS-05), 403 ``insufficient_scope`` for per-tool scopes (RS-06),
  tokens outside the header (RS-09), Host/Origin before anything else (RS-10), and the 401
  that makes a client re-authorize when the upstream grant is gone (RS-11). The SDK's own
  checks still run behind it.
* ``MCPRouter`` serves Django and the SDK app as one ASGI application; Django keeps the
  well-known metadata URLs (one owner: the SDK would serve the protected resource metadata
  itself, at the same path as Django's).

The modules: ``verifier`` (the TokenVerifier and the SDK settings), ``request`` (reading a
request: Origin, body bounds, replay), ``threads`` (the per-request threads), ``app``
(``ProtectedMCPApp``, ``MCPRouter``), ``tools`` (``verified_token``, ``call_upstream``).
"""

from __future__ import annotations

from ..threads import RequestThread, RequestThreads
from .app import MCPRouter, ProtectedMCPApp
from .request import json_depth_exceeds
from .tools import call_upstream, verified_token
from .verifier import (
    ConsentAccessToken,
    ConsentTokenVerifier,
    auth_settings,
    sdk_access_token,
    transport_security,
)

__all__ = [
    "ConsentAccessToken",
    "ConsentTokenVerifier",
    "MCPRouter",
    "ProtectedMCPApp",
    "RequestThread",
    "RequestThreads",
    "auth_settings",
    "call_upstream",
    "json_depth_exceeds",
    "sdk_access_token",
    "transport_security",
    "verified_token",
]
