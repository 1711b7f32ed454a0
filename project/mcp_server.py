"""The demo's MCP server: Demo Hub tools behind mcp-consent, served at /mcp (project/asgi.py).

An MCP SDK server (streamable HTTP, stateless: any app server can answer any request, as the
protocol's 2026-07-28 revision expects) whose tools call Demo Hub's API with the upstream
token of the consent behind the caller's MCP token. The caller's token never reaches Demo
Hub (TP-03) and Demo Hub's tokens never reach the caller (TP-05): tools return data only.
"""

from __future__ import annotations

from typing import Any

import requests
from django.conf import settings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from starlette.types import ASGIApp

from mcp_consent import upstream
from mcp_consent.app_settings import app_settings, canonical_resource
from mcp_consent.integrations import mcp_sdk

# What each tool needs, checked at the HTTP layer (403 insufficient_scope, RS-06) and again
# inside the tool. whoami needs a valid token only: every grant includes the profile.
# Every tool only reads Demo Hub: declared, so that clients (the MCP Inspector, Claude) do not
# present them as destructive, which is what a tool without annotations is assumed to be.
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True)

TOOL_SCOPES: dict[str, tuple[str, ...]] = {
    "list_items": ("items:read",),
    "get_item": ("items:read",),
}


def _json(response: requests.Response) -> Any:
    """Demo Hub's JSON; its error bodies are never passed on (RS-11)."""
    if response.status_code == 403:
        raise ToolError(
            f"{app_settings.UPSTREAM.name} refused: the connection lacks the permission to read items."
        )
    if response.status_code != 200:
        raise upstream.UpstreamError(f"upstream API answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise upstream.UpstreamError("upstream API answer is not JSON") from None


def _items(api: requests.Session) -> list[dict[str, Any]]:
    data = _json(api.get("api/items"))
    if not isinstance(data, list):
        raise upstream.UpstreamError("upstream API answer is not a list")
    return [
        {"id": item.get("id"), "title": item.get("title")}
        for item in data
        if isinstance(item, dict)
    ]


def resource_uri() -> str:
    """The demo's own MCP resource (MCP_RESOURCE; other RESOURCES are separate servers)."""
    return canonical_resource(settings.MCP_RESOURCE) or settings.MCP_RESOURCE


def build_server() -> MCPServer:
    """The MCPServer with its tools, protected by mcp-consent tokens."""
    server = MCPServer(
        name="Demo Hub (via mcp-consent)",
        instructions="Read the signed-in user's Demo Hub profile and items.",
        token_verifier=mcp_sdk.ConsentTokenVerifier(resource_uri()),
        auth=mcp_sdk.auth_settings(resource_uri()),
    )

    @server.tool(title="Who am I at Demo Hub", annotations=READ_ONLY)
    async def whoami(ctx: Context) -> dict[str, Any]:
        """Who you are at Demo Hub: login and name."""
        token = mcp_sdk.verified_token(ctx)
        profile = await mcp_sdk.call_upstream(token, lambda api: _json(api.get("user")))
        if not isinstance(profile, dict):
            raise ToolError("Unexpected answer from Demo Hub.")
        return {"login": profile.get("login"), "name": profile.get("name")}

    @server.tool(title="List my Demo Hub items", annotations=READ_ONLY)
    async def list_items(ctx: Context, contains: str | None = None) -> list[dict[str, Any]]:
        """Your Demo Hub items; with `contains`, only those whose title contains it."""
        token = mcp_sdk.verified_token(ctx, scopes=TOOL_SCOPES["list_items"])
        items = await mcp_sdk.call_upstream(token, _items)
        if contains:
            needle = contains.casefold()
            items = [i for i in items if needle in str(i["title"]).casefold()]
        return items

    @server.tool(title="Get one Demo Hub item", annotations=READ_ONLY)
    async def get_item(ctx: Context, item_id: int) -> dict[str, Any]:
        """One of your Demo Hub items, by id."""
        token = mcp_sdk.verified_token(ctx, scopes=TOOL_SCOPES["get_item"])
        items = await mcp_sdk.call_upstream(token, _items)
        for item in items:
            if item["id"] == item_id:
                return item
        raise ToolError(f"You have no item with id {item_id}.")

    return server


def build_app() -> ASGIApp:
    """The /mcp ASGI app: the SDK's streamable HTTP app behind mcp-consent's checks."""
    server = build_server()
    sdk_app = server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        transport_security=mcp_sdk.transport_security(),
    )
    return mcp_sdk.ProtectedMCPApp(sdk_app, resource_uri=resource_uri(), tool_scopes=TOOL_SCOPES)
