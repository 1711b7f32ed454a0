"""The official MCP Python SDK client against the running demo, end to end (issue 3, item 7).

Two uvicorn processes on free 127.0.0.1 ports serve ``project.asgi`` — the proxy (Django +
the MCP endpoint at /mcp) and, on ``localhost``, the demo upstream Demo Hub — over a fresh
database (a temporary SQLite file, or a new PostgreSQL database when DATABASE_URL points to
PostgreSQL). The SDK's OAuthClientProvider does discovery (401 → protected resource
metadata → AS metadata), dynamic registration, PKCE and the token exchange; its redirect
handler plays the person: the consent page, Demo Hub's sign-in and consent, with ``requests``,
per-host cookies and CSRF tokens. Then it lists the tools, calls tools that reach Demo Hub's
API, and goes through every refresh path: the client's own token (refresh grant), the
upstream token refreshed server-side on an upstream 401 (RS-11, UP-08), and an upstream
grant revoked at Demo Hub, which makes the client authorize again (RS-11).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit, urlunsplit

import anyio
import httpx2
import pytest
import requests
from cryptography.fernet import Fernet
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from mcp_consent.models import UpstreamToken
from project.demo_upstream.models import Token as DemoHubToken
from tests.browser_client import form_action, form_fields

ROOT = Path(__file__).resolve().parent.parent
CLIENT_REDIRECT = "http://127.0.0.1:53682/callback"  # nothing listens: the handler reads it
DEADLINE = (
    90.0  # seconds for the servers to come up (a loaded 2-core machine is slow to start them)
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- A database of its own -----------------------------------------------------------------------


class RawDatabase:
    """The servers' database, reached directly to play the upstream's clock (not Django's)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith(("postgres://", "postgresql://"))

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                cursor = conn.execute(sql, params)  # type: ignore[arg-type]
                return cursor.fetchall() if cursor.description else []
        import sqlite3

        conn = sqlite3.connect(urlsplit(self.url).path, timeout=20)
        try:
            cursor = conn.execute(sql.replace("%s", "?"), params)
            rows = cursor.fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()


@contextmanager
def e2e_databases(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Fresh databases for the proxy and for Demo Hub (a third party has its own).

    Temporary SQLite files, or new PostgreSQL databases next to DATABASE_URL's, dropped
    afterwards.
    """
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        yield f"sqlite:///{tmp_path / 'proxy.sqlite3'}", f"sqlite:///{tmp_path / 'hub.sqlite3'}"
        return
    import psycopg

    names = [f"mcp_consent_e2e_{secrets.token_hex(4)}_{role}" for role in ("proxy", "hub")]
    with psycopg.connect(url, autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')  # fixed prefix + hex: nothing to quote
    try:
        proxy, hub = (urlunsplit(urlsplit(url)._replace(path=f"/{name}")) for name in names)
        yield proxy, hub
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- The servers -----------------------------------------------------------------------------------


class Demo:
    """The proxy and Demo Hub, each a uvicorn process with its own database; stopped by pid."""

    def __init__(self, tmp_path: Path, proxy_database: str, hub_database: str) -> None:
        self.proxy_port, self.upstream_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.proxy_port}"
        self.mcp_url = f"{self.base}/mcp"
        self.upstream_base = f"http://localhost:{self.upstream_port}"
        self.logs = tmp_path
        self.proxy_db, self.hub_db = RawDatabase(proxy_database), RawDatabase(hub_database)
        common = {
            k: v
            for k, v in os.environ.items()
            if k not in {"MCP_RESOURCE", "MCP_EXTRA_RESOURCES", "MCP_ALLOWED_ORIGINS"}
        }
        common.update(
            PUBLIC_BASE_URL=self.base,
            DEMO_UPSTREAM_BASE_URL=self.upstream_base,
            MCP_CONSENT_ENCRYPTION_KEY=Fernet.generate_key().decode(),
            DJANGO_LOG_LEVEL="WARNING",
        )
        self.envs = {
            self.proxy_port: {**common, "DATABASE_URL": proxy_database},
            self.upstream_port: {**common, "DATABASE_URL": hub_database},
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def migrate(self) -> None:
        migrations = [
            subprocess.Popen(  # noqa: S603
                [sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env
            )
            for env in self.envs.values()
        ]
        for migration in migrations:
            assert migration.wait(timeout=120) == 0

    def start(self) -> None:
        for port, env in self.envs.items():
            log = open(self.logs / f"uvicorn-{port}.log", "wb")  # noqa: SIM115
            self.processes.append(
                subprocess.Popen(  # noqa: S603
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "project.asgi:application",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        deadline = time.monotonic() + DEADLINE
        for port in (self.proxy_port, self.upstream_port):
            while True:
                if any(p.poll() is not None for p in self.processes):
                    raise AssertionError(f"a server exited:\n{self.log_text()}")
                try:
                    requests.get(
                        f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server", timeout=2
                    )
                    break
                except requests.ConnectionError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"servers did not start:\n{self.log_text()}") from None
                    time.sleep(0.1)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in self.logs.glob("uvicorn-*.log")
        )


# --- The person at the browser -----------------------------------------------------------------


class Person:
    """Drives the consent page and Demo Hub with requests: per-host cookies, CSRF tokens.

    Cookies are kept by hand because the demo's are ``__Host-``/Secure cookies, which
    browsers send to http://127.0.0.1 and http://localhost (trustworthy origins) but
    Python's cookie jar does not.
    """

    def __init__(self, username: str = "octocat", password: str = "demo") -> None:
        self.username, self.password = username, password
        self.cookies: dict[str, dict[str, str]] = {}
        self.pages: list[str] = []  # what the person saw, in order

    def request(
        self, method: str, url: str, data: dict[str, str] | None = None
    ) -> requests.Response:
        parts = urlsplit(url)
        headers = {}
        jar = self.cookies.setdefault(parts.netloc, {})
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        if method == "POST":
            headers["Origin"] = f"{parts.scheme}://{parts.netloc}"  # a same-origin form post
        response = requests.request(
            method, url, data=data, headers=headers, allow_redirects=False, timeout=15
        )
        for header in response.raw.headers.getlist("Set-Cookie"):
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0" or not morsel.value:
                    jar.pop(name, None)
                else:
                    jar[name] = morsel.value
        return response

    def authorize(self, url: str) -> str:
        """From the client's authorization URL to the redirect back to the client."""
        method, data = "GET", None
        for _ in range(15):
            response = self.request(method, url, data)
            if response.is_redirect:
                url, method, data = urljoin(url, response.headers["Location"]), "GET", None
                if url.startswith(CLIENT_REDIRECT):
                    return url
                continue
            assert response.status_code == 200, (response.status_code, url, response.text[:500])
            html = response.text
            fields = form_fields(html)
            if 'name="password"' in html:
                self.pages.append("demo-hub-sign-in")
                data = {**fields, "username": self.username, "password": self.password}
            elif 'value="approve"' in html:
                self.pages.append("consent")
                data = {**fields, "decision": "approve"}
            elif 'value="authorize"' in html:
                self.pages.append("demo-hub-consent")
                data = {**fields, "decision": "authorize"}
            else:
                raise AssertionError(f"unexpected page at {url}: {html[:500]}")
            url, method = urljoin(url, form_action(html)), "POST"
        raise AssertionError("too many steps")

    def revoke_at_demo_hub(self, upstream_base: str) -> None:
        """Demo Hub's "Revoke access" (like GitHub's): forget the approval, revoke its tokens."""
        home = self.request("GET", f"{upstream_base}/demo-upstream/")
        assert home.status_code == 200
        forms = re.findall(r'<form method="post" action="([^"]*)">(.*?)</form>', home.text, re.S)
        action, inner = next((a, f) for a, f in forms if "forget" in a)
        response = self.request("POST", urljoin(home.url, action), form_fields(inner))
        assert response.status_code == 302, response.text[:500]


class MemoryStorage:
    """The SDK's TokenStorage, in memory."""

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


def text_of(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


# --- The test -------------------------------------------------------------------------------------


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    with e2e_databases(tmp_path) as (proxy_database, hub_database):
        server = Demo(tmp_path, proxy_database, hub_database)
        try:
            server.migrate()
            server.start()
            yield server
        finally:
            server.stop()


def test_the_official_sdk_client_connects_consents_and_calls_demo_hub(demo: Demo) -> None:
    """Items 5 and 7 of issue 3, as a user sees them: discovery, DCR, PKCE, consent, tools,
    the client's refresh, the upstream refresh on 401, and re-authorization (RS-01..11,
    TP-03, UP-08, SH-01)."""
    person = Person()
    authorization_urls: list[str] = []
    pending: dict[str, str] = {}

    async def redirect_handler(url: str) -> None:
        authorization_urls.append(url)
        pending["final"] = await anyio.to_thread.run_sync(person.authorize, url)

    async def callback_handler() -> AuthorizationCodeResult:
        query = parse_qs(urlsplit(pending.pop("final")).query)
        return AuthorizationCodeResult(
            code=query["code"][0], state=query["state"][0], iss=query.get("iss", [None])[0]
        )

    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=demo.mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-consent e2e client",
            redirect_uris=[CLIENT_REDIRECT],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    # Table names from the models, no input: not an injection vector.
    vault_updated_at = f"SELECT updated_at FROM {UpstreamToken._meta.db_table}"  # noqa: S608
    demo_hub_tokens = f"SELECT COUNT(*) FROM {DemoHubToken._meta.db_table}"  # noqa: S608

    async def scenario() -> None:
        async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
            async with Client(streamable_http_client(demo.mcp_url, http_client=http)) as client:
                # Discovery, registration, consent, Demo Hub, code exchange: all on the first call.
                tools = await client.list_tools()
                assert {t.name for t in tools.tools} == {"whoami", "list_items", "get_item"}
                assert len(authorization_urls) == 1
                assert person.pages == ["consent", "demo-hub-sign-in", "demo-hub-consent"]
                first_access_token = storage.tokens.access_token  # type: ignore[union-attr]

                # A tool that reaches Demo Hub's API with the consent's upstream token.
                items = await client.call_tool("list_items", {})
                assert not items.is_error, text_of(items)
                assert "Fix the flux capacitor" in text_of(items)
                me = await client.call_tool("whoami", {})
                assert not me.is_error
                assert "octocat" in text_of(me)

                # The client's own refresh: its access token has expired.
                provider.context.token_expiry_time = time.time() - 1
                me = await client.call_tool("whoami", {})
                assert not me.is_error
                assert "octocat" in text_of(me)
                assert storage.tokens.access_token != first_access_token  # type: ignore[union-attr]
                old = await anyio.to_thread.run_sync(
                    lambda: requests.post(
                        demo.mcp_url,
                        headers={"Authorization": f"Bearer {first_access_token}"},
                        json={},
                        timeout=10,
                    )
                )
                assert old.status_code == 401  # the rotated-away access token is dead

                # The upstream refresh: Demo Hub no longer accepts the stored access token.
                before = demo.proxy_db.execute(vault_updated_at)
                issued = demo.hub_db.execute(demo_hub_tokens)[0][0]
                demo.hub_db.execute(
                    f"UPDATE {DemoHubToken._meta.db_table} SET access_expires_at = %s",  # noqa: S608
                    ("2000-01-01 00:00:00+00:00",),
                )
                item = await client.call_tool("get_item", {"item_id": 1})
                assert not item.is_error, text_of(item)
                assert "Fix the flux capacitor" in text_of(item)
                assert demo.hub_db.execute(demo_hub_tokens)[0][0] == issued + 1  # one refresh
                assert demo.proxy_db.execute(vault_updated_at) != before
                assert len(authorization_urls) == 1  # no new authorization was needed

                # The person revokes the proxy at Demo Hub: refreshing cannot help any more,
                # so /mcp answers 401 and the client authorizes again, then retries.
                await anyio.to_thread.run_sync(person.revoke_at_demo_hub, demo.upstream_base)
                me = await client.call_tool("whoami", {})
                assert not me.is_error
                assert "octocat" in text_of(me)
                assert len(authorization_urls) == 2
                # Our consent page again (nothing is remembered by default), then Demo Hub's
                # own page again (the revocation made it forget its approval).
                assert person.pages[3:] == ["consent", "demo-hub-consent"]

    try:
        anyio.run(scenario)
    except BaseException:
        print(demo.log_text())
        raise
