"""The consent page warns in proportion to the risk (issue 9 item 2; CD-01, CD-12, LH-01, LH-02, DCR-19).

A first approval is said so; a second application registered under the name of one the person
trusts does not look identical; the registrable domain of the redirect host is emphasised
(Public Suffix List); a remote unverified address is warned about as a loopback one is.
"""

from __future__ import annotations

import re

import pytest
from django.http import HttpResponse

from mcp_consent.domains import registrable_domain
from mcp_consent.models import RegistrationSource
from mcp_consent.views.risk import split_host
from tests.browser_client import Browser, authorize_params
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db

FIRST_TIME = "You have not approved this application before."


def html(response: HttpResponse) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def emphasised(response: HttpResponse) -> str:
    match = re.search(r'id="redirect-uri">.*?<strong>(.*?)</strong>', html(response), re.S)
    assert match
    return match.group(1)


def signed_in_with(client) -> Browser:
    """A person who approved ``client`` once (a whole flow), so the page knows who they are."""
    browser = Browser()
    browser.login_upstream()
    browser.run_flow(authorize_params(client))
    return browser


@pytest.mark.parametrize(
    ("netloc", "parts"),
    [
        ("claude.ai.evil.example.net", ("claude.ai.evil.", "example.net", "")),
        ("Claude.AI.Evil.Example.NET:8443", ("Claude.AI.Evil.", "Example.NET", ":8443")),
        ("app.example.co.uk", ("app.", "example.co.uk", "")),
        ("example.net", ("", "example.net", "")),
        ("127.0.0.1:33418", ("", "127.0.0.1:33418", "")),
        ("[::1]:8080", ("", "[::1]:8080", "")),
        ("localhost:3000", ("", "localhost:3000", "")),
        ("user@login.example.net", ("user@login.", "example.net", "")),
    ],
)
def test_lh02_registrable_domain_is_the_emphasised_part(netloc: str, parts: tuple) -> None:
    """LH-02: only the registrable domain says who gets the access; the rest is its holder's choice."""
    shown = split_host(netloc)
    assert (shown["host_lead"], shown["host_domain"], shown["host_tail"]) == parts
    assert "".join(parts) == netloc


def test_public_suffix_list_is_used_offline() -> None:
    """A multi-label public suffix (co.uk) and a private one (github.io) come from the list."""
    assert registrable_domain("a.b.example.co.uk") == "example.co.uk"
    assert registrable_domain("someone.github.io") == "someone.github.io"
    assert registrable_domain("github.io") is None
    assert registrable_domain("127.0.0.1") is None
    assert registrable_domain("localhost") is None


def test_cd12_lookalike_host_has_its_real_domain_emphasised() -> None:
    """CD-12, LH-02: claude.ai.evil.example.net is example.net's, and the page says so."""
    client = MCPClientFactory(
        client_name="Claude", redirect_uris=["https://claude.ai.evil.example.net/callback"]
    )
    page = Browser().authorize(authorize_params(client))
    assert emphasised(page) == "example.net"
    assert "claude.ai.evil.<strong>example.net</strong>/callback" in html(page)
    warning = re.search(r'id="destination-warning">(.*?)</div>', html(page), re.S)
    assert warning
    assert "Your access will be sent to a server at example.net." in warning.group(1)


def test_lh01_remote_and_loopback_addresses_are_warned_about_alike() -> None:
    """LH-01 / LH-02: an unverified https client is warned about, like a loopback one.

    An operator-registered (verified) https client needs no destination warning; a loopback
    client always gets its own.
    """
    remote = MCPClientFactory(redirect_uris=["https://attacker.example.net/callback"])
    loopback = MCPClientFactory(redirect_uris=["http://127.0.0.1:33418/cb"])
    verified = MCPClientFactory(
        source=RegistrationSource.ADMIN, redirect_uris=["https://app.example.com/cb"]
    )
    browser = Browser()
    pages = {
        name: html(browser.authorize(authorize_params(client)))
        for name, client in {"remote": remote, "loopback": loopback, "verified": verified}.items()
    }
    assert 'class="warning" id="destination-warning"' in pages["remote"]
    assert 'class="warning" id="loopback-warning"' in pages["loopback"]
    assert 'id="destination-warning"' not in pages["loopback"]
    assert 'id="destination-warning"' not in pages["verified"]
    assert 'id="loopback-warning"' not in pages["verified"] + pages["remote"]


def test_cd01_first_approval_is_said_so() -> None:
    """CD-01: a person signed in here sees that this application is new to them."""
    known = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    new = MCPClientFactory(client_name="Other App", redirect_uris=["https://other.example/cb"])
    browser = signed_in_with(known)
    assert FIRST_TIME in html(browser.authorize(authorize_params(new)))
    assert FIRST_TIME not in html(browser.authorize(authorize_params(known)))
    # An anonymous visitor signs in only after the page: the page cannot know, and says nothing.
    assert FIRST_TIME not in html(Browser().authorize(authorize_params(known)))


def test_dcr19_namesake_with_other_hosts_is_warned_about() -> None:
    """DCR-19 / CD-00: a second "Claude" sending access elsewhere does not look like the first."""
    real = MCPClientFactory(client_name="Claude", redirect_uris=["https://claude.ai/api/callback"])
    browser = signed_in_with(real)
    lure = MCPClientFactory(
        client_name="claude ", redirect_uris=["https://claude.ai.evil.example.net/callback"]
    )
    page = html(browser.authorize(authorize_params(lure)))
    warning = re.search(r'id="namesake-warning"[^>]*>(.*?)</div>', page, re.S)
    assert warning, "no namesake warning"
    assert "<code>claude.ai</code>" in warning.group(1)
    assert "You approved that one before; this is a different application." in warning.group(1)
    assert FIRST_TIME in page
    # And the real one now has a namesake too: the person sees both addresses either way.
    real_page = html(browser.authorize(authorize_params(real)))
    assert re.search(r'id="namesake-warning".*<code>example\.net</code>', real_page, re.S)


def test_dcr19_namesake_with_the_same_hosts_is_no_warning() -> None:
    """The same application registered twice (same redirect host) is not a lure."""
    first = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/other"])
    MCPClientFactory(client_name="Unrelated", redirect_uris=["https://elsewhere.example/cb"])
    assert 'id="namesake-warning"' not in html(Browser().authorize(authorize_params(first)))


def test_cd05_operator_registered_client_is_new_to_a_person_who_never_approved_it() -> None:
    """CD-05: a pre-registered (verified) client gets the page, and the first-time notice, too."""
    known = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    vetted = MCPClientFactory(
        client_name="Vetted App",
        source=RegistrationSource.ADMIN,
        redirect_uris=["https://vetted.example.com/cb"],
    )
    browser = signed_in_with(known)
    page = html(browser.authorize(authorize_params(vetted)))
    assert 'name="decision" value="approve"' in page
    assert FIRST_TIME in page
    assert '<span class="badge verified">Verified</span>' in page


def test_dcr19_a_lookalike_name_is_a_namesake() -> None:
    """DCR-19: fullwidth letters (or any compatibility form) do not make a different name."""
    real = MCPClientFactory(client_name="Claude", redirect_uris=["https://claude.ai/api/callback"])
    lure = MCPClientFactory(client_name="Ｃｌａｕｄｅ", redirect_uris=["https://evil.example/cb"])
    assert real.name_key == lure.name_key
    page = html(signed_in_with(real).authorize(authorize_params(lure)))
    assert 'id="namesake-warning"' in page


def test_dcr19_a_renamed_client_is_found_under_its_new_name_only() -> None:
    """DCR-19: the name key follows RFC 7592 updates (flows.clients writes it)."""
    from mcp_consent.flows import clients
    from mcp_consent.registration import clean_client_metadata

    real = MCPClientFactory(client_name="Claude", redirect_uris=["https://claude.ai/api/callback"])
    other = MCPClientFactory(client_name="Notes", redirect_uris=["https://evil.example/cb"])
    assert 'id="namesake-warning"' not in html(Browser().authorize(authorize_params(real)))
    metadata = clean_client_metadata(
        {
            "client_name": "CLAUDE",
            "redirect_uris": ["https://evil.example/cb"],
            "token_endpoint_auth_method": "none",
        },
        RegistrationSource.DCR,
    )
    clients.update_client(other, metadata)
    other.refresh_from_db()
    assert other.name_key == "claude"
    assert 'id="namesake-warning"' in html(Browser().authorize(authorize_params(real)))


def test_dcr19_namesakes_are_an_index_lookup() -> None:
    """Issue 11: the consent page's namesake question reads the name key's index, never every
    client (an unindexed case-insensitive name match took 100 ms at 100,000 clients)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from mcp_consent.views.risk import _clients_of_the_page

    if connection.vendor != "sqlite":
        pytest.skip("the query plan checked is SQLite's")
    client = MCPClientFactory(client_name="Claude")
    with CaptureQueriesContext(connection) as queries:
        _clients_of_the_page(client, None)
    (query,) = queries.captured_queries
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + query["sql"])
        plan = [str(row[-1]) for row in cursor.fetchall()]
    assert any(
        "mcp_consent_mcpclient USING INDEX" in step and "name_key" in step for step in plan
    ), plan
    assert not any(step.startswith("SCAN") for step in plan), plan


def test_the_migration_gives_existing_clients_their_name_key() -> None:
    """Migration 0009 fills the key of every client registered before it."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("mcp_consent.migrations.0009_client_name_key")
    client = MCPClientFactory(client_name="Ｍｙ Agent")
    type(client).objects.update(name_key="")
    migration.fill_name_keys(apps, None)
    client.refresh_from_db()
    assert client.name_key == "my agent"
