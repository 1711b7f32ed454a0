"""CIMD document handling: fetching a client_id URL's document and when that may happen.

DOT 3.4 fetches the document (SSRF-hardened); this module applies the metadata policy to
it (CIMD-02..04) and gates every fetch (ABUSE-04, SSRF-06, CIMD-13, ABUSE-03).
"""

from __future__ import annotations

import contextvars
from typing import Any
from urllib.parse import unquote, urlsplit

from django.http import HttpRequest

# DOT 3.4's SSRF-hardened CIMD fetcher: the module is new in 3.4 and has no other home.
from oauth2_provider.cimd import CIMDError, SafeMetadataFetcher, is_cimd_client_id
from oauth2_provider.models import get_application_model

from .. import ratelimit
from ..models import CIMDDomainRule, RegistrationSource
from .budget import registration_budget_refusal
from .errors import RegistrationError
from .metadata import ClientMetadata, clean_client_metadata

# The CIMD document cleaned by the fetcher, handed to the flow that records the client once
# DOT has upserted its Application (same request, same thread).
fetched_cimd_metadata: contextvars.ContextVar[dict[str, ClientMetadata] | None] = (
    contextvars.ContextVar("fetched_cimd_metadata", default=None)
)


class CIMDMetadataFetcher(SafeMetadataFetcher):
    """DOT's SSRF-hardened fetcher (CIMD-07..10, SSRF-01..04) plus our metadata policy.

    A document that violates the policy is a fetch failure for DOT (CIMDError), so the
    client stays unknown and the authorization request fails before any page is shown.
    """

    def fetch(self, client_id: str) -> tuple[dict[str, Any], int]:
        path = urlsplit(client_id).path
        if any(unquote(segment) in {".", ".."} for segment in path.split("/")):
            # CIMD-02: percent-encoded dot segments too, before any DNS lookup or fetch.
            raise CIMDError("client_id URL must not contain dot path segments")
        document, max_age = super().fetch(client_id)
        if document.get("client_id") != client_id:
            # CIMD-03, checked here too so a refused document is never recorded.
            raise CIMDError("document client_id does not match the client_id URL")
        if (
            not isinstance(document.get("client_name"), str)
            or not document.get("client_name", "").strip()
        ):
            raise CIMDError("CIMD-04: client_name is required")
        try:
            metadata = clean_client_metadata(document, RegistrationSource.CIMD)
        except RegistrationError as exc:
            raise CIMDError(f"client metadata refused: {exc.description}") from exc
        store = dict(fetched_cimd_metadata.get() or {})
        store[client_id] = metadata
        fetched_cimd_metadata.set(store)
        # DOT builds the Application from the document: give it the cleaned values.
        cleaned = dict(document)
        cleaned["redirect_uris"] = metadata.redirect_uris
        cleaned["client_name"] = metadata.client_name
        cleaned["grant_types"] = ["authorization_code", "refresh_token"]
        return cleaned, max_age


# --- ABUSE-04 / SSRF-06 / CIMD-13: when a client_id URL may be fetched ---------------------------

# The /authorize request being validated: the only place a CIMD document may be fetched.
authorizing_request: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar(
    "authorizing_request", default=None
)


def cimd_domain_blocked(client_id: str) -> bool:
    """CIMD-13: the operators' rules (CIMDDomainRule) refuse this client_id URL's host."""
    if not is_cimd_client_id(client_id):
        return False
    host = (urlsplit(client_id).hostname or "").lower()
    rules = list(CIMDDomainRule.objects.all())
    if any(r.policy == CIMDDomainRule.Policy.BLOCK and r.matches(host) for r in rules):
        return True
    allowed = [r for r in rules if r.policy == CIMDDomainRule.Policy.ALLOW]
    return bool(allowed) and not any(r.matches(host) for r in allowed)


class CIMDFetchPolicy:
    """DOT's CIMD_REGISTRATION_PERMISSION_CLASSES gate, checked before any fetch.

    ABUSE-04 / SSRF-06: DOT resolves a URL client_id wherever its validator loads a client
    (/authorize, /token, /revoke, /introspect); only an authorization request a person's
    browser sent may make us fetch one, so anonymous requests to the other endpoints cannot
    send our fetcher to hosts they choose or create client rows. CIMD-13: blocked or
    unlisted domains are never fetched. ABUSE-03: a first sight counts against the
    registering address's rate limit and unused-client budget, like a DCR registration.
    A refusal here leaves a known client with its last good document (DOT keeps it).
    """

    def has_permission(self, request: Any, client_id: str) -> bool:
        authorizing = authorizing_request.get()
        if authorizing is None or cimd_domain_blocked(client_id):
            return False
        if get_application_model().objects.filter(client_id=client_id).exists():
            return True  # a refetch of a known client: no new row
        if ratelimit.hit("register", authorizing) is not None:
            return False
        return registration_budget_refusal(authorizing) is None
