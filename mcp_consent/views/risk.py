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

from django.http import HttpRequest

from ..domains import is_ip_address, registrable_domain
from ..models import Consent, MCPClient
from ..registration import is_loopback_host

# How many other applications of the same name the page names (the rest are counted).
NAMESAKES_SHOWN = 3


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
    return {
        (urlsplit(uri.uri).hostname or "").lower()
        for uri in client.redirect_uris.all()
        if uri.removed_at is None
    }


def namesakes(client: MCPClient, user: Any) -> dict[str, Any]:
    """Other live applications registered under this name that send access to other hosts."""
    name = (client.application.name or "").strip()
    if not name:
        return {"namesake_destinations": [], "namesakes_more": 0, "namesake_approved": False}
    own = _hosts(client)
    others = [
        other
        for other in MCPClient.objects.filter(
            application__name__iexact=name, disabled_at__isnull=True
        )
        .exclude(pk=client.pk)
        .select_related("application")
        .prefetch_related("redirect_uris")[:50]
        if _hosts(other) - own
    ]
    destinations = sorted({destination(h) for other in others for h in _hosts(other) - own} - {""})
    approved = bool(
        others
        and getattr(user, "is_authenticated", False)
        and Consent.objects.filter(user=user, client__in=others).exists()
    )
    return {
        "namesake_destinations": destinations[:NAMESAKES_SHOWN],
        "namesakes_more": max(0, len(destinations) - NAMESAKES_SHOWN),
        "namesake_approved": approved,
    }


def risk_context(request: HttpRequest, client: MCPClient, redirect_uri: str) -> dict[str, Any]:
    """The consent page's warnings for this person, this client and this redirect URI."""
    user = request.user
    signed_in = user.is_authenticated and user.pk is not None
    redirect = urlsplit(redirect_uri)
    registered = [u.uri for u in client.redirect_uris.all() if u.removed_at is None]
    loopback_only = bool(registered) and all(
        is_loopback_host(urlsplit(u).hostname) for u in registered
    )
    return {
        # CD-01: said only when we know who is asking; an anonymous visitor signs in after.
        "first_time": signed_in
        and not Consent.objects.filter(user_id=int(user.pk or 0), client=client).exists(),
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
        **namesakes(client, user),
    }
