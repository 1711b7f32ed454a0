"""The official MCP Python SDK client against the demo: OAuth, consent, then Demo Hub's data.

After ``make demo`` (in another terminal)::

    .venv/bin/python docs/examples/sdk_client.py

The SDK discovers the authorization server from the 401 at /mcp, registers itself (DCR),
and sends your browser to the consent page: approve, sign in at Demo Hub as octocat /
demo, authorize, and the browser lands on this script's one-shot callback on
127.0.0.1:33418. Then it lists the tools and calls them. Set MCP_URL for another server.
"""

from __future__ import annotations

import asyncio
import os
import threading
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

MCP_URL = os.environ.get("MCP_URL", "http://127.0.0.1:8000/mcp")
CALLBACK_PORT = int(os.environ.get("CALLBACK_PORT", "33418"))
REDIRECT_URI = f"http://127.0.0.1:{CALLBACK_PORT}/callback"


class MemoryStorage:
    """Where the SDK keeps its registration and tokens (a real client persists them)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class OneShotCallback:
    """Receives the browser's redirect back to this client, once."""

    def __init__(self) -> None:
        self.query: dict[str, list[str]] = {}
        self.done = threading.Event()
        callback = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                parts = urlsplit(self.path)
                if parts.path != "/callback":
                    self.send_error(404)
                    return
                callback.query = parse_qs(parts.query)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.end_headers()
                self.wfile.write(b"Authorized. You can close this tab.")
                callback.done.set()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", CALLBACK_PORT), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    async def redirect(self, authorization_url: str) -> None:
        print(f"Open this URL if no browser window appears:\n  {authorization_url}\n")
        webbrowser.open(authorization_url)

    async def result(self) -> AuthorizationCodeResult:
        await anyio.to_thread.run_sync(self.done.wait)
        self.done.clear()
        if "code" not in self.query:
            raise SystemExit(f"authorization failed: {self.query.get('error', ['?'])[0]}")
        return AuthorizationCodeResult(
            code=self.query["code"][0],
            state=self.query.get("state", [None])[0],
            iss=self.query.get("iss", [None])[0],
        )


async def main() -> None:
    callback = OneShotCallback()
    provider = OAuthClientProvider(
        server_url=MCP_URL,
        client_metadata=OAuthClientMetadata(
            client_name="SDK example client",
            redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",  # noqa: S106 (a metadata name, not a password)
        ),
        storage=MemoryStorage(),
        redirect_handler=callback.redirect,
        callback_handler=callback.result,
    )
    try:
        async with httpx2.AsyncClient(auth=provider, timeout=60) as http:
            async with Client(streamable_http_client(MCP_URL, http_client=http)) as client:
                tools = await client.list_tools()
                print("tools:", ", ".join(tool.name for tool in tools.tools))
                for name, arguments in (("whoami", {}), ("list_items", {})):
                    result = await client.call_tool(name, arguments)
                    text = " ".join(getattr(block, "text", "") for block in result.content)
                    print(f"{name}: {text}")
    finally:
        callback.server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
