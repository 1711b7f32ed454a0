"""What the browser tests do in pages: build an authorization URL, register a client, pass
the upstream, complete a flow, serve an attacker's page, take a screenshot (shared by every
tests/browser/test_*.py; no test module imports another)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

from playwright.sync_api import BrowserContext, Page

from tests.factories import MCPClientFactory

from .conftest import Listener, Sites

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def authorize_url(
    sites: Sites, client_id: str, redirect_uri: str, *, challenge: str, state: str
) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
        "resource": sites.resource,
    }
    return f"{sites.proxy}/authorize/?{urlencode(params)}"


def register_client(name: str, redirect_uri: str) -> tuple[str, str]:
    client = MCPClientFactory(client_name=name, redirect_uris=[redirect_uri])
    return client.application.client_id, redirect_uri


def through_upstream(page: Page, sites: Sites) -> None:
    """After Approve: sign in at Demo Hub if asked, and authorize there if asked."""
    page.wait_for_url(lambda url: not url.startswith(f"{sites.proxy}/authorize/"))
    if page.url.startswith(f"{sites.upstream}/login/?"):
        page.fill("#id_username", "octocat")
        page.fill("#id_password", "demo")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: not url.startswith(f"{sites.upstream}/login/?"))
    if page.url.startswith(f"{sites.upstream}/login/oauth/authorize"):
        page.get_by_role("button", name=re.compile(r"^Authorize")).click()


def complete_flow(page: Page, sites: Sites, listener: Listener, url: str) -> dict[str, list[str]]:
    """Open ``url``, Approve, pass the upstream; the authorization response the client got."""
    page.goto(url)
    page.get_by_role("button", name="Approve").click()
    through_upstream(page, sites)
    page.wait_for_url(f"{listener.origin}/cb?**")
    return listener.at("/cb")[-1].query


def attacker_page(listener: Listener, path: str, body: str) -> str:
    listener.pages[path] = (
        f"<!doctype html><html><head><title>Free prizes</title></head><body>{body}</body></html>"
    )
    return f"{listener.attacker_origin}{path}"


def is_consent_page(page: Page, sites: Sites) -> bool:
    return (
        page.url.startswith(f"{sites.proxy}/authorize/")
        and page.get_by_role("button", name="Approve").count() == 1
    )


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def cookie(context: BrowserContext, name: str) -> dict:
    found = [c for c in context.cookies() if c["name"] == name]
    assert len(found) == 1, (name, [c["name"] for c in context.cookies()])
    return found[0]
