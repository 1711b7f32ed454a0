"""A person's browser, played by Django's test client with CSRF enforced.

One cookie jar for both sites (the proxy and the demo upstream); their cookie names differ.
Every step returns the response so tests can assert on what a person or attacker sees.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from django.conf import settings
from django.http import HttpResponse
from django.test import Client


def pkce_pair() -> tuple[str, str]:
    """A PKCE (code_verifier, S256 code_challenge) pair, as a client makes one."""
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    )
    return verifier, challenge


def query_of(location: str) -> dict[str, list[str]]:
    """The query parameters of a redirect ``Location``, blank values kept."""
    return parse_qs(urlsplit(location).query, keep_blank_values=True)


PROXY_HOST = "127.0.0.1:8000"
UPSTREAM_HOST = "localhost:8001"


def form_fields(html: str) -> dict[str, str]:
    return {
        unescape(n): unescape(v)
        for n, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html)
    }


def form_action(html: str) -> str:
    match = re.search(r'<form method="post" action="([^"]*)"', html)
    assert match, "no form on the page"
    return unescape(match.group(1))


class Browser:
    def __init__(self) -> None:
        self.client = Client(enforce_csrf_checks=True)

    # -- generic navigation -----------------------------------------------------------------

    def get(self, url: str, **headers: str) -> HttpResponse:
        parts = urlsplit(url)
        host = parts.netloc or PROXY_HOST
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return self.client.get(path, HTTP_HOST=host, headers=headers or None)

    def post_form(
        self, page: HttpResponse, decision: str, host: str = PROXY_HOST, **extra: str
    ) -> HttpResponse:
        html = page.content.decode()
        data = {**form_fields(html), "decision": decision, **extra}
        return self.client.post(form_action(html), data, HTTP_HOST=host)

    # -- the proxy --------------------------------------------------------------------------

    def authorize(self, params: dict[str, Any], **headers: str) -> HttpResponse:
        # doseq: a list value (several ``resource``s) is sent as repeated parameters.
        return self.get(f"/authorize/?{urlencode(params, doseq=True)}", **headers)

    # -- the demo upstream ------------------------------------------------------------------

    def login_upstream(self, username: str = "octocat", password: str = "demo") -> HttpResponse:
        page = self.client.get("/demo-upstream/login/", HTTP_HOST=UPSTREAM_HOST)
        token = form_fields(page.content.decode()).get("csrfmiddlewaretoken", "")
        return self.client.post(
            "/demo-upstream/login/",
            {
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": token,
                "next": "/demo-upstream/",
            },
            HTTP_HOST=UPSTREAM_HOST,
        )

    def through_upstream(
        self, upstream_authorize_url: str, decision: str = "authorize"
    ) -> HttpResponse:
        """Visit the upstream authorize URL; approve its consent page if it shows one."""
        response = self.get(upstream_authorize_url)
        if response.status_code == 200:
            response = self.post_form(response, decision, host=UPSTREAM_HOST)
        assert response.status_code == 302, response.content[:500]
        return response

    def connected_apps_sign_in(self, decision: str = "authorize") -> str:
        """Press "Sign in with ..." on Connected apps, pass the upstream: the callback URL."""
        page = self.get("/connections/")
        token = form_fields(page.content.decode())["csrfmiddlewaretoken"]
        to_upstream = self.client.post(
            "/connections/",
            {"action": "sign-in", "csrfmiddlewaretoken": token},
            HTTP_HOST=PROXY_HOST,
        )
        assert to_upstream.status_code == 303, to_upstream.content[:500]
        self.login_upstream()
        return self.through_upstream(to_upstream["Location"], decision)["Location"]

    # -- a whole authorization --------------------------------------------------------------

    def run_flow(
        self, params: dict[str, Any], *, upstream_decision: str = "authorize"
    ) -> HttpResponse:
        """authorize -> consent page -> Approve -> upstream -> callback; returns the last redirect."""
        page = self.authorize(params)
        assert page.status_code == 200, (page.status_code, page.get("Location"))
        to_upstream = self.post_form(page, "approve")
        assert to_upstream.status_code == 303, to_upstream.content[:500]
        to_callback = self.through_upstream(to_upstream["Location"], upstream_decision)
        return self.get(to_callback["Location"])


def authorize_params(
    client, *, challenge: str | None = None, state: str = "client-state-123", **extra: str
) -> dict[str, str]:
    """A valid authorization request for ``client`` (its first redirect URI)."""
    if challenge is None:
        challenge = pkce_pair()[1]
    params = {
        "response_type": "code",
        "client_id": client.application.client_id,
        "redirect_uri": client.redirect_uris.first().uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
        "resource": settings.MCP_CONSENT["RESOURCES"][0],
    }
    params.update(extra)
    return params


def shown(response: Any) -> dict[str, str]:
    """The error page as the person reads it: title, heading and message, tags stripped."""
    html = response.content.decode()

    def text(pattern: str) -> str:
        match = re.search(pattern, html, re.S)
        assert match, (pattern, html[:500])
        return " ".join(unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split())

    return {
        "title": text(r"<title>(.*?)</title>"),
        "heading": text(r"<h1>(.*?)</h1>"),
        "message": text(r"</h1>\s*<p>(.*?)</p>"),
    }


def assert_styled(response: HttpResponse) -> None:
    """The page's stylesheet carries the nonce its Content-Security-Policy allows (else a
    browser shows it unstyled): the page was rendered for this request."""
    nonce = re.search(r"style-src 'nonce-([^']+)'", response["Content-Security-Policy"])
    assert nonce, response["Content-Security-Policy"]
    assert f'<style nonce="{nonce.group(1)}">' in response.content.decode()


def code_from(response: HttpResponse) -> str:
    return query_of(response["Location"])["code"][0]
