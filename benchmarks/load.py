"""The load generator: the same client code drives mcp-consent, FastMCP's OAuthProxy and the floor.

Each target is a small class with the same five operations (register, flow, mcp_call,
refresh); ``measure`` runs one operation a bounded number of times (and never longer than a
time limit), sequentially or from threads, and returns the latencies. It only speaks HTTP to
127.0.0.1: no target is ever anything else.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import requests

CLIENT_REDIRECT = "http://127.0.0.1:5555/cb"
TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-06-18",
}


class BrowserSession(requests.Session):
    """A browser-ish session: sends Secure / __Host- cookies back although the bench runs on http.

    requests (http.cookiejar) withholds Secure cookies from http:// URLs, but browsers treat
    http://127.0.0.1 as a secure context and send them; both proxies set such cookies.
    """

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = super().send(request, **kwargs)
        for cookie in self.cookies:
            cookie.secure = False
        return response


def session() -> requests.Session:
    s = BrowserSession()
    s.trust_env = False
    return s


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode()
    return verifier, challenge.rstrip("=")


def _hidden_fields(html: str) -> dict[str, str]:
    fields = {}
    for tag in re.findall(r"<input[^>]*>", html):
        if 'type="hidden"' not in tag:
            continue
        name = re.search(r'name="([^"]*)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name:
            fields[unescape(name.group(1))] = unescape(value.group(1)) if value else ""
    return fields


def _form_action(html: str, page_url: str) -> str:
    match = re.search(r'<form[^>]*method="(?:post|POST)"[^>]*action="([^"]*)"', html)
    return urljoin(page_url, unescape(match.group(1)) if match else "")


def _code(location: str) -> str:
    query = parse_qs(urlsplit(location).query)
    if "code" not in query:
        raise RuntimeError(f"no code in the redirect: {location[:200]}")
    return query["code"][0]


@dataclass
class Tokens:
    client_id: str
    access: str
    refresh: str


class Target:
    """What both proxies offer; subclasses know their URLs and pages."""

    name = "target"
    register_path = "/register"
    token_path = "/token"

    def __init__(self, base: str, resource: str) -> None:
        self.base = base.rstrip("/")
        self.resource = resource
        self.local = threading.local()

    @property
    def http(self) -> requests.Session:
        s = getattr(self.local, "session", None)
        if s is None:
            s = self.local.session = session()
        return s

    def register(self) -> str:
        response = self.http.post(
            self.base + self.register_path,
            json={
                "client_name": "bench client",
                "redirect_uris": [CLIENT_REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            },
        )
        if response.status_code != 201:
            raise RuntimeError(
                f"{self.name} register: HTTP {response.status_code} {response.text[:300]}"
            )
        return str(response.json()["client_id"])

    def authorize_params(self, client_id: str, challenge: str) -> dict[str, str]:
        return {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": CLIENT_REDIRECT,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": secrets.token_urlsafe(8),
            "resource": self.resource,
            "scope": self.scope,
        }

    scope = ""

    def approve(self, client_id: str, challenge: str) -> str:
        """From /authorize to the client's redirect URI with a code; returns the code."""
        raise NotImplementedError

    def token(self, data: dict[str, str]) -> Tokens:
        response = self.http.post(self.base + self.token_path, data=data)
        if response.status_code != 200:
            raise RuntimeError(
                f"{self.name} token: HTTP {response.status_code} {response.text[:300]}"
            )
        body = response.json()
        return Tokens(data["client_id"], body["access_token"], body.get("refresh_token", ""))

    def flow(self) -> Tokens:
        self.http.cookies.clear()  # a fresh browser for every authorization
        client_id = self.register()
        verifier, challenge = pkce()
        code = self.approve(client_id, challenge)
        return self.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "client_id": client_id,
                "redirect_uri": CLIENT_REDIRECT,
                "code_verifier": verifier,
                "resource": self.resource,
            }
        )

    def refresh(self, tokens: Tokens) -> Tokens:
        new = self.token(
            {
                "grant_type": "refresh_token",
                "refresh_token": tokens.refresh,
                "client_id": tokens.client_id,
                "resource": self.resource,
            }
        )
        tokens.access, tokens.refresh = new.access, new.refresh or tokens.refresh
        return tokens

    def mcp_call(self, access: str | None) -> None:
        headers = dict(MCP_HEADERS)
        if access:
            headers["Authorization"] = f"Bearer {access}"
        response = self.http.post(self.resource, json=TOOLS_LIST, headers=headers)
        if response.status_code != 200 or '"tools"' not in response.text:
            raise RuntimeError(
                f"{self.name} tools/list: HTTP {response.status_code} {response.text[:300]}"
            )

    def _follow(self, url: str, until: str) -> requests.Response:
        """GET redirects (at most 6) until the Location starts with ``until``."""
        response = self.http.get(url, allow_redirects=False)
        for _ in range(6):
            location = response.headers.get("Location", "")
            if response.status_code not in (301, 302, 303, 307) or location.startswith(until):
                return response
            response = self.http.get(urljoin(response.url, location), allow_redirects=False)
        return response


class McpConsent(Target):
    name = "mcp-consent"
    register_path = "/register/"
    token_path = "/token/"
    scope = "items:read"

    def approve(self, client_id: str, challenge: str) -> str:
        params = self.authorize_params(client_id, challenge)
        url = f"{self.base}/authorize/?{urlencode(params)}"
        page = self.http.get(url, allow_redirects=False)
        if page.status_code != 200:
            raise RuntimeError(f"authorize: HTTP {page.status_code} {page.text[:300]}")
        form = {**_hidden_fields(page.text), "decision": "approve"}
        upstream = self.http.post(_form_action(page.text, url), data=form, allow_redirects=False)
        if upstream.status_code not in (302, 303):
            raise RuntimeError(f"approve: HTTP {upstream.status_code} {upstream.text[:300]}")
        final = self._follow(upstream.headers["Location"], CLIENT_REDIRECT)
        return _code(final.headers.get("Location", ""))


class FastMCPProxy(Target):
    name = "FastMCP"
    scope = "user"

    def approve(self, client_id: str, challenge: str) -> str:
        params = self.authorize_params(client_id, challenge)
        response = self.http.get(
            f"{self.base}/authorize?{urlencode(params)}", allow_redirects=False
        )
        for _ in range(3):  # to the consent page
            if response.status_code not in (302, 303, 307):
                break
            response = self.http.get(
                urljoin(response.url, response.headers["Location"]), allow_redirects=False
            )
        if response.status_code != 200:
            raise RuntimeError(
                f"FastMCP consent: HTTP {response.status_code} {response.text[:300]}"
            )
        form = {**_hidden_fields(response.text), "action": "approve"}
        upstream = self.http.post(
            _form_action(response.text, response.url), data=form, allow_redirects=False
        )
        if upstream.status_code not in (302, 303):
            raise RuntimeError(
                f"FastMCP approve: HTTP {upstream.status_code} {upstream.text[:300]}"
            )
        final = self._follow(upstream.headers["Location"], CLIENT_REDIRECT)
        return _code(final.headers.get("Location", ""))


class Floor(Target):
    name = "floor (no auth)"


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    errors: int = 0
    first_error: str = ""

    def add(self, other: Sample) -> None:
        self.latencies += other.latencies
        self.wall += other.wall
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error

    @property
    def ops(self) -> int:
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        return self.ops / self.wall if self.wall else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1]


def measure(op: Callable[[], Any], *, count: int, seconds: float, threads: int = 1) -> Sample:
    """Run ``op`` ``count`` times (fewer if ``seconds`` run out), on ``threads`` threads."""
    sample = Sample()
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    remaining = [count]

    def worker() -> None:
        while True:
            with lock:
                if remaining[0] <= 0 or time.perf_counter() > deadline:
                    return
                remaining[0] -= 1
            start = time.perf_counter()
            try:
                op()
            except Exception as exc:  # counted and reported, never raised: figures only
                with lock:
                    sample.errors += 1
                    sample.first_error = sample.first_error or str(exc)[:300]
                if sample.errors > 20:
                    return
                continue
            elapsed = time.perf_counter() - start
            with lock:
                sample.latencies.append(elapsed)

    start = time.perf_counter()
    if threads == 1:
        worker()
    else:
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(worker) for _ in range(threads)]:
                future.result()
    sample.wall = time.perf_counter() - start
    return sample
