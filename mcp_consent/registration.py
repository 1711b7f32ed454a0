"""Client-metadata policy shared by every way a client comes to exist: DCR, CIMD, the admin.

DOT 3.4 validates syntax only (its DCR view accepted ``http://evil.example.com/cb``,
``http://127.0.0.1:*/cb`` and public clients with the implicit or password grant); this
module adds the rules DOT leaves open:
``http`` only on loopback (DCR-11, BCP-14), no dangerous schemes (URL-02, DCR-13), no
wildcards or port patterns (DCR-14, CD-32), absolute URIs without fragments (DCR-12), only
the code and refresh grants (DCR-15), consistent auth methods (DCR-16, CIMD-06),
length-limited self-asserted names (DCR-19). The clean result is what gets registered and
what the registration response echoes (DCR-04, DCR-05).
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from django.db.models import Count, Q
from django.http import HttpRequest
from django.utils import timezone

# DOT 3.4's SSRF-hardened CIMD fetcher: the module is new in 3.4 and has no other home.
from oauth2_provider.cimd import CIMDError, SafeMetadataFetcher, is_cimd_client_id
from oauth2_provider.models import get_application_model
from oauth2_provider.settings import oauth2_settings

from . import ratelimit
from .addresses import client_ip
from .app_settings import app_settings
from .models import CIMDDomainRule, MCPClient, RegistrationSource

log = logging.getLogger(__name__)

# DCR-13 / URL-02: never a redirect target, whatever the application type. Script and
# local-content schemes run or read something in the browser; browser-internal pages and
# extensions are the browser itself or another extension, not the app that registered;
# ``intent:`` launches any Android app. The schemes of other protocols are no redirect
# target at all. Everything else that is not http(s) is a private-use scheme (DCR-11).
DANGEROUS_SCHEMES = frozenset(
    {"javascript", "data", "file", "vbscript", "blob", "about", "filesystem", "jar"}
)
BROWSER_INTERNAL_SCHEMES = frozenset(
    {
        "view-source",
        "chrome",
        "chrome-extension",
        "chrome-untrusted",
        "chrome-search",
        "devtools",
        "edge",
        "brave",
        "opera",
        "vivaldi",
        "moz-extension",
        "resource",
        "ms-browser-extension",
        "safari-extension",
        "safari-web-extension",
        "intent",
    }
)
NOT_REDIRECT_SCHEMES = frozenset(
    {"ws", "wss", "ftp", "mailto", "tel", "sms", "news", "nntp", "ldap", "ssh", "urn", "git"}
)
# RFC 3986 §3.1, lower case only: the URI is compared byte for byte (CD-30), so one spelling.
SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]*")
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
SUPPORTED_GRANT_TYPES = {"authorization_code", "refresh_token"}
SUPPORTED_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
MAX_URI_LENGTH = 2048
NOT_IN_URIS = set('<>"{}|\\^`')


class RegistrationError(Exception):
    """A registration request that RFC 7591 §3.2.2 answers with a 400 error."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description

    def as_dict(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    host = host.lower()
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _printable(value: str) -> bool:
    """No control or format characters (also blocks bidi overrides that spoof names)."""
    return not any(unicodedata.category(c) in {"Cc", "Cf"} for c in value)


def scheme_may_redirect(scheme: str) -> bool:
    """DCR-13: the last gate before a redirect: never a dangerous or browser-internal scheme."""
    refused = DANGEROUS_SCHEMES | BROWSER_INTERNAL_SCHEMES | NOT_REDIRECT_SCHEMES
    return bool(SCHEME_RE.fullmatch(scheme)) and scheme not in refused


def is_private_use_scheme(uri: str) -> bool:
    """A redirect URI of a native app's own scheme (RFC 8252 §7.1), not http(s)."""
    return urlsplit(uri).scheme.lower() not in {"http", "https"}


def validate_redirect_uri(uri: Any) -> str:
    """Return ``uri`` unchanged if it may be registered, else raise invalid_redirect_uri.

    Which application type may use it is decided by ``clean_client_metadata`` (AS-62).
    """

    def refuse(reason: str) -> RegistrationError:
        return RegistrationError("invalid_redirect_uri", f"redirect URI {uri!r} {reason}")

    if not isinstance(uri, str) or not uri:
        raise RegistrationError(
            "invalid_redirect_uri", "each redirect URI must be a non-empty string"
        )
    if len(uri) > MAX_URI_LENGTH:
        raise RegistrationError("invalid_redirect_uri", "redirect URI is too long")
    if not uri.isascii() or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in uri):
        raise refuse("contains whitespace, control or non-ASCII characters")
    if any(c in NOT_IN_URIS for c in uri):
        # DCR-12: not an RFC 3986 URI; oauthlib would refuse it at /authorize forever after.
        raise refuse("contains characters that are not allowed in a URI")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if not scheme:
        raise refuse("is not an absolute URI (DCR-12)")
    if scheme in DANGEROUS_SCHEMES:
        raise refuse(f"uses the forbidden scheme {scheme!r} (URL-02, DCR-13)")
    if scheme in BROWSER_INTERNAL_SCHEMES:
        raise refuse(
            f"uses the browser-internal scheme '{scheme}:'; a native app registers its own "
            "scheme (e.g. com.example.app:/callback) or a loopback http URI (DCR-13)"
        )
    if scheme in NOT_REDIRECT_SCHEMES:
        raise refuse(f"uses the scheme '{scheme}:', which is no redirect target (DCR-13)")
    if "#" in uri:
        raise refuse("must not contain a fragment (DCR-12)")
    if "*" in uri:
        raise refuse("must not contain wildcards (DCR-14)")
    if parts.username is not None or parts.password is not None:
        raise refuse("must not contain user information")
    try:
        parts.port  # noqa: B018 - a non-numeric port (e.g. ':*') raises here
    except ValueError:
        raise refuse("has an invalid port (DCR-14)") from None
    if any(segment in {".", ".."} for segment in parts.path.split("/")):
        raise refuse("must not contain dot path segments")
    if scheme in {"https", "http"}:
        if not parts.hostname:
            raise refuse("must contain a host")
        if scheme == "http" and not is_loopback_host(parts.hostname):
            # BCP-14 / RFC 9700 §2.6: http redirect URIs only for native apps on loopback.
            raise refuse("uses http off loopback; use https (DCR-11)")
        return uri
    _validate_private_use(uri, uri.partition(":")[0], refuse)  # urlsplit lowers the scheme
    return uri


def _validate_private_use(uri: str, scheme: str, refuse: Any) -> None:
    """DCR-11 / DCR-12: ``scheme:/path`` (RFC 8252 §7.1) or ``scheme://authority/path``.

    The reverse-domain form is preferred (OAuth 2.1 §2.3.1) but not required: shipping
    desktop clients register ``cursor://anysphere.cursor-mcp/oauth/callback``. Refused: an
    upper-case scheme (it would come back in another spelling than registered), no path
    (``cursor:``), an empty authority (``cursor:///cb`` aliases ``cursor:/cb``) and opaque
    forms without a slash (``cursor:cb``), which no RFC 8252 client sends.
    """
    if not SCHEME_RE.fullmatch(scheme):
        raise refuse(f"must spell its scheme in lower case, e.g. '{scheme.lower()}:' (DCR-12)")
    rest = uri[len(scheme) + 1 :]
    if rest.startswith("//"):
        authority, _, path = rest[2:].partition("/")
        if not authority or not path:
            raise refuse(
                "needs a host and a path after '//', or the form "
                f"'{scheme}:/path' (RFC 8252 §7.1, DCR-12)"
            )
    elif not rest.startswith("/") or len(rest) < 2:
        raise refuse(f"must have the form '{scheme}:/path' (RFC 8252 §7.1, DCR-12)")


def _optional_str(data: dict[str, Any], key: str, max_length: int = 255) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RegistrationError("invalid_client_metadata", f"{key} must be a string")
    value = value.strip()
    if len(value) > max_length or not _printable(value):
        raise RegistrationError(
            "invalid_client_metadata", f"{key} is too long or has control characters"
        )
    return value


def _optional_https_uri(data: dict[str, Any], key: str) -> str:
    value = _optional_str(data, key, MAX_URI_LENGTH)
    if value:
        parts = urlsplit(value)
        if parts.scheme.lower() != "https" or not parts.hostname or "#" in value:
            raise RegistrationError("invalid_client_metadata", f"{key} must be an https URL")
    return value


def _str_list(data: dict[str, Any], key: str, default: list[str]) -> list[str]:
    value = data.get(key, default)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RegistrationError("invalid_client_metadata", f"{key} must be an array of strings")
    return value


@dataclass
class ClientMetadata:
    """Client metadata that passed the policy: exactly what gets registered and echoed."""

    redirect_uris: list[str]
    token_endpoint_auth_method: str = "none"
    grant_types: list[str] = field(default_factory=lambda: ["authorization_code", "refresh_token"])
    response_types: list[str] = field(default_factory=lambda: ["code"])
    client_name: str = ""
    client_uri: str = ""
    logo_uri: str = ""
    tos_uri: str = ""
    policy_uri: str = ""
    contacts: list[str] = field(default_factory=list)
    scope: str = ""
    software_id: str = ""
    software_version: str = ""
    application_type: str = "native"

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    def as_registered(self) -> dict[str, Any]:
        """The registered metadata for RFC 7591 §3.2.1 responses (empty values omitted)."""
        data: dict[str, Any] = {
            "redirect_uris": self.redirect_uris,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "grant_types": self.grant_types,
            "response_types": self.response_types,
            "application_type": self.application_type,
        }
        for key in (
            "client_name",
            "client_uri",
            "logo_uri",
            "tos_uri",
            "policy_uri",
            "scope",
            "software_id",
            "software_version",
        ):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.contacts:
            data["contacts"] = self.contacts
        return data

    @property
    def displayed(self) -> tuple[Any, ...]:
        """What the consent page shows of a client; a change here invalidates consents."""
        return (self.client_name, tuple(self.redirect_uris), self.client_uri, self.logo_uri)


def clean_client_metadata(data: Any, source: str) -> ClientMetadata:
    """Validate RFC 7591 metadata for ``source`` (DCR, CIMD, admin) or raise RegistrationError.

    The steps run in this order, so a document with several faults is refused for the first.
    """
    if not isinstance(data, dict):
        raise RegistrationError("invalid_client_metadata", "client metadata must be a JSON object")
    uris = _clean_redirect_uris(data)
    application_type = _clean_application_type(data, uris)
    method = _clean_auth_method(data, source)
    _check_grant_and_response_types(data)
    name = _optional_str(data, "client_name", app_settings.CLIENT_NAME_MAX_LENGTH)
    scope = _clean_scope(data)
    contacts = _clean_contacts(data)
    return ClientMetadata(
        redirect_uris=uris,
        token_endpoint_auth_method=method,
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        client_name=name,
        client_uri=_optional_https_uri(data, "client_uri"),
        logo_uri=_optional_https_uri(data, "logo_uri"),
        tos_uri=_optional_https_uri(data, "tos_uri"),
        policy_uri=_optional_https_uri(data, "policy_uri"),
        contacts=contacts,
        scope=scope,
        software_id=_optional_str(data, "software_id"),
        software_version=_optional_str(data, "software_version"),
        application_type=application_type,
    )


def _clean_redirect_uris(data: dict[str, Any]) -> list[str]:
    """The registered redirect URIs, each validated, duplicates dropped (DCR-10)."""
    redirect_uris = data.get("redirect_uris")
    if redirect_uris is None or redirect_uris == []:
        # DCR-10: every client here uses the code grant, which needs registered redirect URIs.
        raise RegistrationError(
            "invalid_redirect_uri", "redirect_uris is required for the authorization_code grant"
        )
    if not isinstance(redirect_uris, list):
        raise RegistrationError("invalid_redirect_uri", "redirect_uris must be an array")
    if len(redirect_uris) > app_settings.MAX_REDIRECT_URIS:
        raise RegistrationError(
            "invalid_redirect_uri", f"at most {app_settings.MAX_REDIRECT_URIS} redirect URIs"
        )
    return list(dict.fromkeys(validate_redirect_uri(uri) for uri in redirect_uris))


def _clean_application_type(data: dict[str, Any], uris: list[str]) -> str:
    """ "native" or "web", defaulted from the redirect URIs and consistent with them (AS-62)."""
    application_type = data.get("application_type")
    loopback = [u for u in uris if is_loopback_host(urlsplit(u).hostname)]
    private_use = [u for u in uris if is_private_use_scheme(u)]
    if application_type is None:
        # AS-62: never default to "web" and then refuse the loopback or private-use URIs it
        # was sent with; those are what native apps register (RFC 8252, DCR-11).
        application_type = "native" if loopback or private_use else "web"
    if application_type not in {"native", "web"}:
        raise RegistrationError(
            "invalid_client_metadata",
            f"application_type must be 'native' or 'web', not {application_type!r}",
        )
    if application_type == "web" and loopback:
        # AS-62: say why instead of silently defaulting and failing later.
        raise RegistrationError(
            "invalid_redirect_uri",
            "application_type 'web' requires https redirect URIs off loopback; "
            "register loopback redirect URIs with application_type 'native'",
        )
    if application_type == "web" and private_use:
        # DCR-13: a private-use scheme is claimed by an app on the person's device, never
        # by a web application.
        scheme = urlsplit(private_use[0]).scheme
        raise RegistrationError(
            "invalid_redirect_uri",
            f"application_type 'web' requires https redirect URIs; '{scheme}:' is the "
            "private-use scheme of a native app: register it with application_type 'native'",
        )
    return str(application_type)


def _clean_auth_method(data: dict[str, Any], source: str) -> str:
    """The token endpoint's client authentication: supported, public for CIMD (CIMD-06)."""
    default_method = "none" if source == RegistrationSource.CIMD else "client_secret_basic"
    method = data.get("token_endpoint_auth_method", default_method)
    if method not in SUPPORTED_AUTH_METHODS:
        raise RegistrationError(
            "invalid_client_metadata",
            f"unsupported token_endpoint_auth_method; supported: {', '.join(SUPPORTED_AUTH_METHODS)}",
        )
    if source == RegistrationSource.CIMD and (
        method != "none" or "client_secret" in data or "client_secret_expires_at" in data
    ):
        # CIMD-06: a document anyone can read cannot carry a shared secret.
        raise RegistrationError(
            "invalid_client_metadata",
            "CIMD clients must be public (token_endpoint_auth_method 'none')",
        )
    if "jwks" in data and "jwks_uri" in data:
        raise RegistrationError(
            "invalid_client_metadata", "jwks and jwks_uri must not both be present (DCR-17)"
        )
    return str(method)


def _check_grant_and_response_types(data: dict[str, Any]) -> None:
    """The code grant (with refresh) and the code response type only (DCR-15)."""
    grant_types = _str_list(data, "grant_types", ["authorization_code"])
    unsupported = [g for g in grant_types if g not in SUPPORTED_GRANT_TYPES]
    if unsupported or "authorization_code" not in grant_types:
        # DCR-15: OAuth 2.1 has no implicit grant; RFC 9700 §2.4 forbids the password grant.
        raise RegistrationError(
            "invalid_client_metadata",
            "grant_types must be authorization_code (with optional refresh_token); "
            f"unsupported: {', '.join(unsupported) or 'none'}",
        )
    response_types = _str_list(data, "response_types", ["code"])
    if response_types != ["code"]:
        raise RegistrationError("invalid_client_metadata", "response_types must be ['code']")


def _clean_scope(data: dict[str, Any]) -> str:
    """The requested scopes narrowed to those this server has (DCR-18)."""
    scope_value = data.get("scope", "")
    if not isinstance(scope_value, str):
        raise RegistrationError("invalid_client_metadata", "scope must be a space-separated string")
    known = set(oauth2_settings.SCOPES)
    # DCR-18: narrow to the scopes this server has; the response shows the narrowed value.
    return " ".join(s for s in dict.fromkeys(scope_value.split()) if s in known)


def _clean_contacts(data: dict[str, Any]) -> list[str]:
    """At most 10 short, printable contacts."""
    contacts = _str_list(data, "contacts", [])
    if len(contacts) > 10 or any(len(c) > 255 or not _printable(c) for c in contacts):
        raise RegistrationError(
            "invalid_client_metadata", "contacts must be at most 10 short strings"
        )
    return contacts


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


# --- ABUSE-03: never-used clients bounded per address ------------------------------------------


@dataclass(frozen=True)
class BudgetRefusal:
    """Why this address may not add another client now, and when to retry."""

    description: str
    retry_after: int
    last_resort: bool = False


def registration_budget_refusal(request: HttpRequest) -> BudgetRefusal | None:
    """ABUSE-03: refuse a new DCR or CIMD client while this address has too many unused ones.

    Only clients that never completed an authorization and are younger than
    UNUSED_CLIENT_TTL count: older ones are expired (the cleanup command deletes them), so
    one address filling its budget never stops another, and its own budget frees itself.
    MAX_UNUSED_DCR_CLIENTS (all addresses together) stays as a last resort, logged.
    """
    now = timezone.now()
    ttl = app_settings.UNUSED_CLIENT_TTL
    unused = MCPClient.objects.filter(
        registration_source__in=[RegistrationSource.DCR, RegistrationSource.CIMD],
        last_used_at__isnull=True,
        created_at__gt=now - timedelta(seconds=ttl),
    )
    address = client_ip(request)
    # Both counts in one statement: this runs before every registration.
    counts = unused.aggregate(
        everyone=Count("pk"), mine=Count("pk", filter=Q(registered_from=address))
    )
    if address is not None:
        mine = unused.filter(registered_from=address)
        limit = app_settings.MAX_UNUSED_CLIENTS_PER_ADDRESS
        if counts["mine"] >= limit:
            oldest = mine.order_by("created_at").values_list("created_at", flat=True).first()
            retry = int((oldest + timedelta(seconds=ttl) - now).total_seconds()) if oldest else ttl
            return BudgetRefusal(
                f"This address has registered {limit} clients that were never used; "
                "they expire after an hour without an authorization. Reuse a registered "
                "client or retry later.",
                max(1, retry),
            )
    if counts["everyone"] >= app_settings.MAX_UNUSED_DCR_CLIENTS:
        log.error(
            "registration paused: %s never-used clients from all addresses "
            "(MCP_CONSENT['MAX_UNUSED_DCR_CLIENTS']); raise it or run mcp_consent_cleanup",
            app_settings.MAX_UNUSED_DCR_CLIENTS,
        )
        return BudgetRefusal("Registration is paused; retry later.", ttl, last_resort=True)
    return None


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
