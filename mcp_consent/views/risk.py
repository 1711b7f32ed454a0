"""What the consent page warns about, in proportion to the risk (CD-10, CD-12, LH-01, LH-02, DCR-19).

Read-only: the consent page's view adds this to its context. Three questions, each answered
from the database for this person and this client:

* has this person approved this application before? (a first time is said so);
* is another application registered under the same name, sending access elsewhere? Names are
  self-asserted (DCR-19): a second client named like one the person trusts is the
  confused-deputy lure, and must not look identical;
* where does the access go: the registrable domain of the redirect host (Public Suffix
  List) is emphasised, since everything left of it is chosen by that domain's holder.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.db.models import Case, Exists, OuterRef, Q, Value, When
from django.http import HttpRequest

from ..domains import is_ip_address, registrable_domain
from ..models import Consent, MCPClient
from ..registration import is_loopback_host

# How many other applications of the same name the page names (the rest are counted).
NAMESAKES_SHOWN = 3
# How many other applications of the same name are read at most (the work stays bounded).
NAMESAKES_READ = 50


def split_host(netloc: str) -> dict[str, str]:
    """``netloc`` as shown, in three parts: ``host_lead``, emphasised ``host_domain``, ``host_tail``.

    ``claude.ai.evil.example.net:8443`` → ``claude.ai.evil.``, ``example.net``, ``:8443``.
    An address without a registrable domain (an IP address, ``localhost``) is emphasised whole,
    port included: on a loopback address the port tells which local program gets the access.
    """
    userinfo, at, hostport = netloc.rpartition("@")
    lead = f"{userinfo}{at}"
    host = urlsplit(f"//{hostport}").hostname or ""
    domain = registrable_domain(host)
    if domain is None or is_ip_address(host):
        return {"host_lead": lead, "host_domain": hostport, "host_tail": ""}
    # The displayed host keeps its registered spelling; the domain is its last labels.
    start = len(host) - len(domain)
    shown_host = hostport[: len(host)]
    return {
        "host_lead": lead + shown_host[:start],
        "host_domain": shown_host[start:],
        "host_tail": hostport[len(host) :],
    }


def destination(host: str | None) -> str:
    """The name a person reads for where access goes: the registrable domain, else the host."""
    host = (host or "").lower()
    return registrable_domain(host) or host


def _hosts(client: MCPClient) -> set[str]:
    # The live redirect URIs as DOT's Application holds them (flows.clients writes them with
    # the RedirectURI rows, which keep the history): the very string the validator checked
    # this request's redirect_uri against, loaded with the client, so no query of its own.
    return {
        (urlsplit(uri).hostname or "").lower() for uri in client.application.redirect_uris.split()
    }


def _clients_of_the_page(client: MCPClient, user_pk: int | None) -> list[MCPClient]:
    """This client and its live namesakes, each marked ``approved`` when this person has any
    consent for it (revoked or expired ones too): ONE query for every question of the page.

    Issue 11: this once took four or five (the redirect URIs of this client twice, the
    namesakes, their redirect URIs, then two consent lookups); the answers are the same.
    """
    key = MCPClient.name_key_of(client.application.name)
    wanted = Q(pk=client.pk)
    if key:
        # DCR-19: by the indexed name key, so the page costs the same at any number of clients.
        wanted |= Q(name_key=key, disabled_at__isnull=True)
    approved: Any = Value(False)
    if user_pk is not None:
        approved = Exists(Consent.objects.filter(user_id=user_pk, client_id=OuterRef("pk")))
    rows = (
        MCPClient.objects.filter(wanted)
        .select_related("application")
        .annotate(approved=approved, other=Case(When(pk=client.pk, then=0), default=1))
        # This client first, then at most NAMESAKES_READ others in a stable order.
        .order_by("other", "pk")[: NAMESAKES_READ + 1]
    )
    return list(rows)


def namesakes(client: MCPClient, others: list[MCPClient]) -> dict[str, Any]:
    """Other live applications registered under this name that send access to other hosts."""
    own = _hosts(client)
    others = [other for other in others if _hosts(other) - own]
    destinations = sorted({destination(h) for other in others for h in _hosts(other) - own} - {""})
    return {
        "namesake_destinations": destinations[:NAMESAKES_SHOWN],
        "namesakes_more": max(0, len(destinations) - NAMESAKES_SHOWN),
        "namesake_approved": any(getattr(other, "approved", False) for other in others),
    }


def risk_context(request: HttpRequest, client: MCPClient, redirect_uri: str) -> dict[str, Any]:
    """The consent page's warnings for this person, this client and this redirect URI."""
    user = request.user
    signed_in = user.is_authenticated and user.pk is not None
    redirect = urlsplit(redirect_uri)
    registered = client.application.redirect_uris.split()
    loopback_only = bool(registered) and all(
        is_loopback_host(urlsplit(u).hostname) for u in registered
    )
    rows = _clients_of_the_page(client, int(user.pk or 0) if signed_in else None)
    this = next((row for row in rows if row.pk == client.pk), None)
    others = [row for row in rows if row.pk != client.pk]
    return {
        # CD-01: said only when we know who is asking; an anonymous visitor signs in after.
        # (The client just validated is always among the rows; if it were not, the page
        # says "first time", the cautious answer.)
        "first_time": signed_in and not (this is not None and getattr(this, "approved", False)),
        # LH-01: a client with only loopback redirect URIs is whatever runs on this machine.
        "loopback_only": loopback_only,
        # LH-02 / CD-12: the same weight for a remote address of an unverified client as for
        # a loopback one: anyone can register either under any name.
        "remote_unverified": bool(redirect.hostname)
        and redirect.scheme in {"http", "https"}  # a private-use scheme has its own warning
        and not is_loopback_host(redirect.hostname)
        and not client.verified,
        "redirect_destination": destination(redirect.hostname),
        **split_host(redirect.netloc),
        **namesakes(client, others),
    }
