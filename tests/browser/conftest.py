"""Real-browser fixtures: Debian's Chromium driven by Playwright against pytest-django's live server.

Three sites, so cookies and fetch metadata (``Sec-Fetch-Site``) behave as in production:

* the proxy (mcp_consent) at ``http://127.0.0.1:<live port>``;
* the demo upstream at ``http://localhost:<live port>/demo-upstream/`` -- the same live server,
  but another host name and so another site;
* listeners: tiny ``http.server`` instances on other 127.0.0.1 ports that record what they
  receive. One plays the MCP client's redirect URI, another the attacker's. Attacker web pages
  are served from ``http://attacker.example:<port>`` (Chromium maps that name to 127.0.0.1), a
  third site: a page on another 127.0.0.1 port would be *same-site* with the proxy (sites
  ignore ports), which is not the cross-site attack the tests are about.

Cookies: the project keeps the production posture on plain http (``__Host-`` names, Secure).
Chromium treats http://127.0.0.1 and http://localhost as potentially trustworthy and stores
and sends Secure and ``__Host-`` cookies there (checked in test_consent_flow.py), so no
``--unsafely-treat-insecure-origin-as-secure`` flag is needed.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

ATTACKER_HOST = "attacker.example"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # A third site for the attacker's pages, without touching /etc/hosts.
    f"--host-resolver-rules=MAP {ATTACKER_HOST} 127.0.0.1",
]
TIMEOUT_MS = 15_000


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "Debian's chromium is not installed: apt-get install chromium"
        if _ci():
            pytest.fail(f"{message} (the browser tests must run in CI)", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    """Chromium for one test module.

    While Playwright's sync API is started, this thread has a running asyncio loop, and the
    Django ORM refuses to run ("SynchronousOnlyOperation") unless DJANGO_ALLOW_ASYNC_UNSAFE is
    set. It is safe here: the loop only runs while a Playwright call waits, never during a
    query of the test. Module scope and the restore below keep both the loop and the variable
    away from the rest of the suite.
    """
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (cookie jar) per test."""
    ctx = browser.new_context(viewport={"width": 900, "height": 900})
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


# --- listeners -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


class Listener:
    """An http.server on a free 127.0.0.1 port: records every request, serves ``pages``.

    Any path not in ``pages`` is answered 200 "ok" (a client's redirect URI that received
    its authorization response).
    """

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.pages: dict[str, str] = {}
        self._lock = threading.Lock()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                with listener._lock:
                    listener.hits.append(
                        Hit(
                            self.command,
                            parts.path,
                            parse_qs(parts.query, keep_blank_values=True),
                            dict(self.headers.items()),
                        )
                    )
                body = listener.pages.get(parts.path, "ok").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def attacker_origin(self) -> str:
        """The same server reached as another site (see the module docstring)."""
        return f"http://{ATTACKER_HOST}:{self.port}"

    def at(self, path: str) -> list[Hit]:
        with self._lock:
            return [hit for hit in self.hits if hit.path == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def client_listener() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.stop()


@pytest.fixture
def attacker_listener() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.stop()


# --- the proxy and the demo upstream on the live server ----------------------------------------


@dataclass(frozen=True)
class Sites:
    proxy: str  # the issuer, http://127.0.0.1:<port>
    upstream: str  # http://localhost:<port>/demo-upstream

    @property
    def resource(self) -> str:
        return f"{self.proxy}/mcp"


@pytest.fixture
def sites(live_server, settings) -> Sites:
    """Point the proxy's issuer, resource and upstream, and the demo upstream, at the live server.

    live_server.url names "localhost"; the proxy is addressed by 127.0.0.1 instead so that the
    upstream (localhost) is another site, like a real third-party provider.
    """
    from project.demo_upstream.seed import seed_demo_data

    port = live_server.thread.port
    proxy = f"http://127.0.0.1:{port}"
    up = f"http://localhost:{port}/demo-upstream"
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1", "localhost"]
    settings.CSRF_TRUSTED_ORIGINS = [proxy]
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": proxy}
    upstream = {
        **settings.MCP_CONSENT["UPSTREAM"],
        "AUTHORIZE_URL": f"{up}/login/oauth/authorize",
        "TOKEN_URL": f"{up}/login/oauth/access_token",
        "USERINFO_URL": f"{up}/user",
        "REVOCATION_URL": f"{up}/revoke",
        "ISSUER": up,
    }
    settings.MCP_CONSENT = {
        **settings.MCP_CONSENT,
        "RESOURCES": [f"{proxy}/mcp"],
        "UPSTREAM": upstream,
        "REMEMBER_CONSENT": False,
    }
    settings.DEMO_UPSTREAM = {
        **settings.DEMO_UPSTREAM,
        "CLIENT_ID": upstream["CLIENT_ID"],
        "CLIENT_SECRET": upstream["CLIENT_SECRET"],
        "REDIRECT_URIS": [f"{proxy}/upstream/callback/"],
        "ISSUER": up,
    }
    # transactional_db flushes the tables after each test, the seeded accounts with them.
    seed_demo_data()
    return Sites(proxy=proxy, upstream=up)
