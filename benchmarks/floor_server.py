"""The unauthenticated floor: the demo's MCP SDK server with the same tools and no auth at all.

Run: uvicorn benchmarks.floor_server:app (the project's venv: the same ``mcp`` as the demo).
What an MCP call costs before any authorization server is involved; the bench compares the
authenticated ``tools/list`` of both proxies with it.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

ITEMS = [{"id": i, "title": f"Item {i}"} for i in range(1, 6)]

server = MCPServer(
    name="Demo Hub (no auth)",
    instructions="Read the signed-in user's Demo Hub profile and items.",
)


@server.tool()
async def whoami() -> dict[str, Any]:
    """Who you are at Demo Hub: login and name."""
    return {"login": "octocat", "name": "The Octocat"}


@server.tool()
async def list_items(contains: str | None = None) -> list[dict[str, Any]]:
    """Your Demo Hub items; with `contains`, only those whose title contains it."""
    return ITEMS


@server.tool()
async def get_item(item_id: int) -> dict[str, Any]:
    """One of your Demo Hub items, by id."""
    return ITEMS[0]


app = server.streamable_http_app(stateless_http=True, json_response=True)
