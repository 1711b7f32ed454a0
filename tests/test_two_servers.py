"""Two app servers sharing one PostgreSQL database (issue 5.5, DESIGN "Scale").

Three uvicorn processes serve ``project.asgi`` from this test's PostgreSQL database (the
pytest-django test database; ``transaction=True`` commits what the test writes, so the
servers see it): app server 1 and app server 2 (same issuer, same secret key and vault key,
as behind a load balancer), and the demo upstream Demo Hub on ``localhost``. Each listens on
a socket this test bound to a free 127.0.0.1 port and handed over (``uvicorn --fd``), so no
port can be taken in between; each is stopped by its pid.

A person's browser is played with ``requests`` (redirects followed by hand, one cookie jar
per host name; the ``__Host-``/Secure cookies are sent over http as Chromium does for
127.0.0.1 and localhost). The flow starts on server 1 (consent page, Approve), the upstream
sends the browser back to server 2 (the callback), the code is redeemed at server 1, the
refresh token rotated at server 2, revoked at server 2 -- and is dead at server 1 at once.
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
from dataclasses import dataclass, field
from html import unescape
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import pytest
import requests
from cryptography.fernet import Fernet
from django.db import connection

from tests.browser_client import form_action, form_fields, pkce_pair, query_of
from tests.db_state import require_postgresql

pytestmark = [pytest.mark.postgres, pytest.mark.servers, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 90.0  # a loaded 2-core machine is slow to start two servers
REDIRECT_URI = "https://app.example/cb"
# Settings a developer's shell may carry that would give the servers another configuration.
FOREIGN_ENV = {
    "MCP_RESOURCE",
    "MCP_EXTRA_RESOURCES",
    "MCP_ALLOWED_ORIGINS",
    "MCP_INTROSPECTION_CLIENTS",
    "REDIS_URL",
    "DJANGO_DEBUG",
    "DJANGO_SETTINGS_MODULE",
}


# --- the servers ------------------------------------------------------------------------------


def database_url() -> str:
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or "5432"
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


@dataclass
class Servers:
    one: str  # app server 1, the issuer: http://127.0.0.1:<p1>
    two: str  # app server 2: http://127.0.0.1:<p2>
    hub: str  # Demo Hub: http://localhost:<p3>
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return self.one

    @property
    def resource(self) -> str:
        return f"{self.one}/mcp"

    def log_text(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.logs.glob("*.log"))
        )


@pytest.fixture
def servers(transactional_db: None, settings: Any, tmp_path: Path) -> Iterator[Servers]:
    require_postgresql("two app servers share one database")
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from project.demo_upstream.models import Account
    from project.demo_upstream.seed import seed_demo_data

    seed_demo_data()
    # The servers run with Django's default hashers (not the suite's fast MD5): a PBKDF2 hash
    # they can check, with few iterations so that the sign-in stays quick.
    hasher = PBKDF2PasswordHasher()
    Account.objects.update(password=hasher.encode("demo", hasher.salt(), iterations=1000))

    sockets = [listening_socket() for _ in range(3)]
    ports = [s.getsockname()[1] for s in sockets]
    result = Servers(
        one=f"http://127.0.0.1:{ports[0]}",
        two=f"http://127.0.0.1:{ports[1]}",
        hub=f"http://localhost:{ports[2]}",
        logs=tmp_path,
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in FOREIGN_ENV and not k.startswith("UPSTREAM_")
    }
    env.update(
        DATABASE_URL=database_url(),
        PUBLIC_BASE_URL=result.issuer,  # one issuer whatever server answers
        DEMO_UPSTREAM_BASE_URL=result.hub,
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),  # shared: signed cookies, fingerprints
        MCP_CONSENT_ENCRYPTION_KEY=Fernet.generate_key().decode(),  # shared vault key
        DJANGO_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    try:
        for name, sock in zip(("server-1", "server-2", "demo-hub"), sockets, strict=True):
            with open(tmp_path / f"{name}.log", "wb") as log:
                result.processes.append(
                    subprocess.Popen(  # noqa: S603 -- our own interpreter and arguments
                        [
                            sys.executable,
                            "-m",
                            "uvicorn",
                            "project.asgi:application",
                            "--fd",
                            str(sock.fileno()),
                            "--log-level",
                            "warning",
                        ],
                        cwd=ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        pass_fds=(sock.fileno(),),
                    )
                )
        for sock in sockets:
            sock.close()  # the servers hold their own copies
        deadline = time.monotonic() + STARTUP_SECONDS
        for origin in (result.one, result.two, result.hub):
            while True:
                exited = [p for p in result.processes if p.poll() is not None]
                assert not exited, f"a server exited:\n{result.log_text()}"
                try:
                    # The socket accepts from the start; the answer comes once Django is up.
                    requests.get(f"{origin}/.well-known/oauth-authorization-server", timeout=5)
                    break
                except requests.RequestException:
                    assert time.monotonic() < deadline, (
                        f"servers did not start:\n{result.log_text()}"
                    )
                    time.sleep(0.1)
        yield result
    finally:
        for sock in sockets:
            sock.close()
        for process in result.processes:
            if process.poll() is None:
                process.terminate()
        for process in result.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


# --- a person's browser, by hand --------------------------------------------------------------


class PlainBrowser:
    """requests with redirects followed by hand and one cookie jar per host name.

    http.cookiejar refuses to send Secure cookies over http; browsers send them to
    127.0.0.1 and localhost (potentially trustworthy origins), so cookies are kept here.
    Like a browser's, a jar ignores the port (cookies are per host, RFC 6265 §8.5).
    """

    def __init__(self) -> None:
        self.jars: dict[str, dict[str, str]] = {}
        self.session = requests.Session()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        host = urlsplit(url).hostname or ""
        jar = self.jars.setdefault(host, {})
        headers = dict(kwargs.pop("headers", {}) or {})
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        response = self.session.request(
            method, url, headers=headers, allow_redirects=False, timeout=30, **kwargs
        )
        for raw in response.raw.headers.getlist("Set-Cookie"):
            cookie = SimpleCookie()
            cookie.load(raw)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or (morsel["expires"] and "1970" in morsel["expires"]):
                    jar.pop(name, None)
                else:
                    jar[name] = morsel.value
        return response

    def get(self, url: str) -> requests.Response:
        return self.request("GET", url)

    def submit(self, page: requests.Response, **fields: str) -> requests.Response:
        """Post the page's form back to where the page came from, as a browser would."""
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(page.url))
        action = urljoin(page.url, form_action(page.text)) if 'action="' in page.text else page.url
        data = {**form_fields(page.text), **fields}
        return self.request(
            "POST", action, data=data, headers={"Origin": origin, "Referer": page.url}
        )

    def follow(self, response: requests.Response, *, until: str) -> requests.Response:
        """Follow redirects until the Location starts with ``until`` (not requested)."""
        for _ in range(10):
            assert response.is_redirect, (response.status_code, response.url, response.text[:500])
            location = urljoin(response.url, response.headers["Location"])
            if location.startswith(until):
                return response
            response = self.get(location)
        raise AssertionError("too many redirects")


def login_form(page: requests.Response) -> dict[str, str]:
    assert 'name="username"' in page.text, page.text[:500]
    match = re.search(r'name="next" value="([^"]*)"', page.text)
    return {
        "username": "octocat",
        "password": "demo",
        "next": unescape(match.group(1)) if match else "",
    }


def through_demo_hub(browser: PlainBrowser, servers: Servers, to_upstream: str) -> str:
    """From the proxy's redirect to Demo Hub to Demo Hub's redirect back: the callback URL."""
    response = browser.get(to_upstream)
    for _ in range(6):
        if response.is_redirect:
            location = urljoin(response.url, response.headers["Location"])
            if "/upstream/callback/" in location:
                return location
            response = browser.get(location)
        elif 'name="username"' in response.text:
            response = browser.submit(response, **login_form(response))
        else:
            response = browser.submit(response, decision="authorize")
    raise AssertionError(
        f"Demo Hub did not send the browser back: {response.status_code} {response.text[:300]}"
    )


def on(server: str, url: str) -> str:
    """The same URL on another app server (what a load balancer may do to any request)."""
    parts = urlsplit(url)
    return server + parts.path + (f"?{parts.query}" if parts.query else "")


def token_request(server: str, data: dict[str, str], path: str = "/token/") -> requests.Response:
    return requests.post(f"{server}{path}", data=data, timeout=30)


def mcp_status(server: str, resource: str, access_token: str) -> int:
    """The MCP endpoint's answer to a tools/list with this token (401 = token refused)."""
    response = requests.post(
        f"{server}{urlsplit(resource).path}",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
        headers={
            "Authorization": f"Bearer {access_token}",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
        },
        timeout=30,
    )
    return response.status_code


# --- the test -------------------------------------------------------------------------------


def test_flow_across_two_app_servers_and_revocation_everywhere_at_once(servers: Servers) -> None:
    """DESIGN "Scale", CD-41..48, AS-13, AS-44, REV-01, REV-04: all state is in the shared
    database, so any server continues any flow, and a revocation is effective everywhere."""
    one, two = servers.one, servers.two
    # One issuer, whichever server answers (AS-13, MU-01).
    for server in (one, two):
        metadata = requests.get(
            f"{server}/.well-known/oauth-authorization-server", timeout=10
        ).json()
        assert metadata["issuer"] == servers.issuer
        assert metadata["token_endpoint"].startswith(servers.issuer)

    # The MCP client registers at server 2.
    registered = requests.post(
        f"{two}/register/",
        json={
            "client_name": "Two-Server Agent",
            "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "none",
            "application_type": "web",
        },
        timeout=30,
    )
    assert registered.status_code == 201, registered.text
    client_id = registered.json()["client_id"]

    # Server 1: the consent page and Approve.
    browser = PlainBrowser()
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "two-servers",
        "resource": servers.resource,
    }
    page = browser.get(f"{one}/authorize/?{urlencode(params)}")
    assert page.status_code == 200, page.text[:500]
    assert "Two-Server Agent" in page.text, page.text[:500]
    approved = browser.submit(page, decision="approve")
    assert approved.status_code == 303, (approved.status_code, approved.text[:500])
    to_upstream = approved.headers["Location"]
    assert to_upstream.startswith(f"{servers.hub}/demo-upstream/login/oauth/authorize?")
    assert "__Host-mcp_consent_tx" in browser.jars["127.0.0.1"]

    # Demo Hub sends the browser back to the issuer's callback; it lands on server 2.
    callback = through_demo_hub(browser, servers, to_upstream)
    assert callback.startswith(f"{servers.issuer}/upstream/callback/?")
    finished = browser.get(on(two, callback))
    assert finished.status_code == 302, (
        finished.status_code,
        finished.text[:500],
        servers.log_text(),
    )
    location = finished.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    answer = query_of(location)
    assert answer["state"] == ["two-servers"]
    assert answer["iss"] == [servers.issuer]
    # The same callback again, now at server 1: single use across servers (CD-45).
    replay = browser.get(callback)
    assert replay.status_code == 400
    assert "Location" not in replay.headers

    # Server 1 redeems the code server 2 issued.
    issued = token_request(
        one,
        {
            "grant_type": "authorization_code",
            "code": answer["code"][0],
            "client_id": client_id,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
            "resource": servers.resource,
        },
    )
    assert issued.status_code == 200, issued.text
    tokens = issued.json()
    # The MCP endpoint of server 1 accepts the token (RS-08): anything but a 401.
    assert mcp_status(one, servers.resource, tokens["access_token"]) not in {401, 404}

    # Server 2 rotates the refresh token (AS-44) ...
    rotated = token_request(
        two,
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
        },
    )
    assert rotated.status_code == 200, rotated.text
    fresh = rotated.json()
    # ... and the old one is dead at server 1 at once.
    stale = token_request(
        one,
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
        },
    )
    assert stale.status_code == 400
    assert stale.json()["error"] == "invalid_grant"

    # A new grant for the revocation (the reuse above revoked the family).
    verifier2, challenge2 = pkce_pair()
    page = browser.get(f"{two}/authorize/?{urlencode({**params, 'code_challenge': challenge2})}")
    assert page.status_code == 200
    approved = browser.submit(page, decision="approve")  # consent page from server 2 ...
    assert approved.status_code == 303
    callback = through_demo_hub(
        browser, servers, approved.headers["Location"]
    )  # Demo Hub remembers
    finished = browser.get(callback)  # ... callback at server 1
    assert finished.status_code == 302, finished.text[:500]
    code2 = query_of(finished.headers["Location"])["code"][0]
    second = token_request(
        two,
        {
            "grant_type": "authorization_code",
            "code": code2,
            "client_id": client_id,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier2,
            "resource": servers.resource,
        },
    ).json()
    assert second["access_token"], second
    assert mcp_status(one, servers.resource, second["access_token"]) not in {401, 404}

    # Revoked at server 2 (RFC 7009) ...
    revoked = token_request(
        two, {"token": second["refresh_token"], "client_id": client_id}, path="/revoke/"
    )
    assert revoked.status_code == 200, revoked.text
    # ... dead at server 1 the very next request: no refresh (REV-01), no MCP access (REV-04).
    dead = token_request(
        one,
        {
            "grant_type": "refresh_token",
            "refresh_token": second["refresh_token"],
            "client_id": client_id,
        },
    )
    assert dead.status_code == 400, dead.text
    assert dead.json()["error"] == "invalid_grant", dead.text
    assert mcp_status(one, servers.resource, second["access_token"]) == 401
    # The family server 2 rotated and server 1 saw replayed is refused at /mcp too.
    assert mcp_status(one, servers.resource, fresh["access_token"]) == 401
    from oauth2_provider.models import get_access_token_model

    live = [
        t
        for t in get_access_token_model().objects.filter(
            user__isnull=False, application__client_id=client_id
        )
        if t.is_valid()
    ]
    assert live == []
