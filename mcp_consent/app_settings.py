"""Typed, live-read access to the one ``MCP_CONSENT`` settings dict.

Every key has a property with its default and a one-line docstring. Values are read on each
access, so ``override_settings`` works in tests. Nothing here writes to ``django.conf.settings``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.module_loading import import_string
from oauth2_provider.settings import oauth2_settings


def canonical_resource(uri: str) -> str | None:
    """Canonical form of an RFC 8707 resource indicator, or None when it is not acceptable.

    AS-31: absolute http(s) URI with a host and no fragment (RFC 8707 §2 MUST) and no query
    (SHOULD NOT). AS-32: scheme and host are case-insensitive, the default port and a
    trailing slash are dropped, so ``HTTPS://PROXY.EXAMPLE.COM:443/mcp/`` and
    ``https://proxy.example.com/mcp`` name the same resource.
    """
    if not isinstance(uri, str) or not uri or len(uri) > 2048:
        return None
    return _canonical_resource(uri)


# Issue 11: every token verification canonicalises the resource asked for and the token's
# audiences, the same few strings each time; parsing them was ~30% of a verification. A pure
# function of its argument, so remembered; bounded (at most 1024 strings of <= 2048
# characters), so a client sending junk resources can only evict entries, never grow it.
@lru_cache(maxsize=1024)
def _canonical_resource(uri: str) -> str | None:
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in uri):
        return None
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in {"https", "http"} or not parts.hostname:
        return None
    if parts.fragment or "#" in uri or parts.query or parts.username or parts.password:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default_port = {"https": 443, "http": 80}[scheme]
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return f"{scheme}://{netloc}{path}"


# --- Upstream provider presets (docs/providers.md) --------------------------------------------
# Values a provider publishes, so that ``"PROVIDER": "github"`` plus the client id and secret
# is a whole UPSTREAM. Explicit keys win over the preset. Any other OpenID Connect provider:
# ``manage.py mcp_consent_discover <issuer>`` prints its UPSTREAM from its discovery document.
PROVIDER_PRESETS: dict[str, dict[str, Any]] = {
    # No RFC 9207 `iss`; the token endpoint answers form-encoded unless asked for JSON and
    # refuses with HTTP 200 + `error`; OAuth app tokens never expire (no refresh token).
    "github": {
        "NAME": "GitHub",
        "AUTHORIZE_URL": "https://github.com/login/oauth/authorize",
        "TOKEN_URL": "https://github.com/login/oauth/access_token",
        "USERINFO_URL": "https://api.github.com/user",
        "API_BASE_URL": "https://api.github.com/",
        "SCOPES": ["read:user"],
    },
    "google": {
        "NAME": "Google",
        "AUTHORIZE_URL": "https://accounts.google.com/o/oauth2/v2/auth",
        "TOKEN_URL": "https://oauth2.googleapis.com/token",
        "USERINFO_URL": "https://openidconnect.googleapis.com/v1/userinfo",
        "REVOCATION_URL": "https://oauth2.googleapis.com/revoke",
        "ISSUER": "https://accounts.google.com",
        "API_BASE_URL": "https://www.googleapis.com/",
        "SCOPES": ["openid", "email", "profile"],
        "SUBJECT_FIELD": "sub",
        "USERNAME_FIELD": "email",
    },
    # Microsoft identity platform v2.0 endpoints of one tenant (TENANT: the directory ID, or
    # "organizations" / "common"); offline_access gives the refresh token.
    "entra": {
        "NAME": "Microsoft",
        "AUTHORIZE_URL": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
        "TOKEN_URL": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "USERINFO_URL": "https://graph.microsoft.com/oidc/userinfo",
        "API_BASE_URL": "https://graph.microsoft.com/",
        "SCOPES": ["openid", "profile", "email", "offline_access", "User.Read"],
        "SUBJECT_FIELD": "sub",
        "USERNAME_FIELD": "preferred_username",
    },
}


@dataclass(frozen=True)
class UpstreamConfig:
    """The third-party OAuth provider that knows the proxy by one static client ID."""

    provider: str = ""  # a key of PROVIDER_PRESETS, or "" for explicit settings only
    tenant: str = ""  # Entra ID: the directory (tenant) ID, "organizations" or "common"
    name: str = "the upstream provider"
    authorize_url: str = ""
    token_url: str = ""
    userinfo_url: str = ""
    revocation_url: str = ""
    issuer: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)  # SEC-02
    scopes: list[str] = field(default_factory=list)
    scope_map: dict[str, list[str]] = field(default_factory=dict)
    pkce: bool = True
    require_iss: bool = False
    subject_field: str = "id"
    username_field: str = "login"
    email_field: str = "email"
    name_field: str = "name"
    timeout: float = 10.0
    api_base_url: str = ""

    @property
    def api_base(self) -> str:
        """UP-10: the one prefix upstream API calls may reach; default: the user-info origin.

        Always ends with a slash, so ``https://api.example/v1`` cannot be extended to
        ``https://api.example/v10``.
        """
        base = self.api_base_url
        if not base:
            parts = urlsplit(self.userinfo_url)
            base = f"{parts.scheme}://{parts.netloc}/" if parts.scheme and parts.netloc else ""
        return base if not base or base.endswith("/") else base + "/"

    def upstream_scopes_for(self, mcp_scopes: list[str]) -> list[str]:
        """SM-07 / UP-05: exactly the base scopes plus the mapping of the approved MCP scopes."""
        wanted: list[str] = list(self.scopes)
        for scope in mcp_scopes:
            for upstream_scope in self.scope_map.get(scope, []):
                if upstream_scope not in wanted:
                    wanted.append(upstream_scope)
        return wanted


@dataclass(frozen=True)
class Rate:
    """A token bucket: ``burst`` requests at once, refilled at ``per_minute``."""

    burst: int
    per_minute: float

    @classmethod
    def parse(cls, value: Any) -> Rate:
        if isinstance(value, Rate):
            return value
        if isinstance(value, dict):
            return cls(int(value["burst"]), float(value["per_minute"]))
        burst, seconds = value  # (N, seconds): N at once, refilled over that many seconds
        return cls(int(burst), 60.0 * int(burst) / float(seconds))


# ABUSE-01/02 (docs/abuse-limits.md): an office behind one NAT address or a conformance
# suite from one machine stays under these; a tight flood does not. "register" and
# "authorize" and "connections" count every request (each may write); the others count
# only failures, as django-axes counts failed logins, so busy legitimate use never hits them.
DEFAULT_RATE_LIMITS: dict[str, dict[str, float]] = {
    "register": {"burst": 150, "per_minute": 120},
    "authorize": {"burst": 200, "per_minute": 240},
    "connections": {"burst": 60, "per_minute": 60},
    "revoke": {"burst": 100, "per_minute": 120},
    "token": {"burst": 60, "per_minute": 60},
    "introspect": {"burst": 60, "per_minute": 60},
    "callback": {"burst": 60, "per_minute": 60},
}


class AppSettings:
    """The ``MCP_CONSENT`` settings, one typed property per key."""

    @classmethod
    def known_keys(cls) -> list[str]:
        """Every key of ``MCP_CONSENT``: the upper-case properties of this class."""
        return sorted(
            name
            for name, value in vars(cls).items()
            if name.isupper() and isinstance(value, property)
        )

    def unknown_keys(self) -> list[tuple[str, str, list[str]]]:
        """(where, key, known keys there) for every key of a settings dict that nothing reads.

        Each dict with fixed keys: ``MCP_CONSENT``, its ``UPSTREAM``, its ``RATE_LIMITS``.
        A mistyped key is otherwise dropped silently (``CLIENT_SECRE`` → no secret sent).
        """
        found: list[tuple[str, str, list[str]]] = []
        nested = {
            "UPSTREAM": sorted(name.upper() for name in UpstreamConfig.__dataclass_fields__),
            "RATE_LIMITS": sorted(DEFAULT_RATE_LIMITS),
        }
        dicts: list[tuple[str, Any, list[str]]] = [("MCP_CONSENT", self._raw, self.known_keys())]
        dicts += [(f"MCP_CONSENT[{k!r}]", self._raw.get(k), known) for k, known in nested.items()]
        for where, raw, known in dicts:
            if isinstance(raw, dict):
                found += [(where, str(key), known) for key in raw if key not in known]
        return found

    @property
    def _raw(self) -> dict[str, Any]:
        return getattr(settings, "MCP_CONSENT", {}) or {}

    def _get(self, key: str, default: Any) -> Any:
        return self._raw.get(key, default)

    @property
    def RESOURCES(self) -> list[str]:
        """Canonical URIs of the MCP servers (RFC 8707 resources) tokens may be minted for."""
        return [canonical_resource(r) or r for r in self._get("RESOURCES", [])]

    @property
    def ISSUER(self) -> str:
        """The issuer identifier: DOT's OIDC_ISS_ENDPOINT, exact, without a trailing slash."""
        return str(self._get("ISSUER", oauth2_settings.OIDC_ISS_ENDPOINT or "")).rstrip("/")

    @property
    def UPSTREAM(self) -> UpstreamConfig:
        """The upstream provider: URLs, static client credentials, scopes and scope map."""
        raw = dict(self._get("UPSTREAM", {}))
        preset = PROVIDER_PRESETS.get(str(raw.get("PROVIDER", "")), {})
        tenant = str(raw.get("TENANT", ""))
        defaults = {
            k: v.format(tenant=tenant) if isinstance(v, str) else v for k, v in preset.items()
        }
        kwargs = {key.lower(): value for key, value in {**defaults, **raw}.items()}
        known = set(UpstreamConfig.__dataclass_fields__)
        return UpstreamConfig(**{k: v for k, v in kwargs.items() if k in known})

    @property
    def ENCRYPTION_KEYS(self) -> list[str]:
        """Keys of the upstream-token vault (SEC-10), newest first: the first encrypts, all decrypt."""
        return list(self._get("ENCRYPTION_KEYS", []))

    @property
    def AUDIT_KEYS(self) -> list[str]:
        """SEC-06: secrets keying the audit chain's HMAC, newest first; kept outside the database."""
        return list(self._get("AUDIT_KEYS", []))

    @property
    def AUDIT_CHAINS(self) -> int:
        """How many independent audit chains writers spread over (one head row lock each)."""
        return max(1, int(self._get("AUDIT_CHAINS", 16)))

    @property
    def REMEMBER_CONSENT(self) -> bool:
        """Opt-in: skip the consent page for a remembered, identical, same-site approval."""
        return bool(self._get("REMEMBER_CONSENT", False))

    @property
    def CONSENT_MAX_AGE(self) -> int:
        """Seconds a recorded consent stays valid (for remembering and for its upstream token)."""
        return int(self._get("CONSENT_MAX_AGE", 60 * 60 * 24 * 90))

    @property
    def TRANSACTION_TTL(self) -> int:
        """Seconds between the approval and the upstream callback (CD-46: 10 minutes)."""
        return int(self._get("TRANSACTION_TTL", 600))

    @property
    def CLIENT_NAME_MAX_LENGTH(self) -> int:
        """Longest client_name accepted at registration and shown on the consent page (DCR-19)."""
        return int(self._get("CLIENT_NAME_MAX_LENGTH", 80))

    @property
    def MAX_REDIRECT_URIS(self) -> int:
        """How many redirect URIs one client may register."""
        return int(self._get("MAX_REDIRECT_URIS", 10))

    @property
    def TRANSACTION_COOKIE_NAME(self) -> str:
        """Browser-binding cookie of the upstream leg (CD-20: must start with __Host-)."""
        return str(self._get("TRANSACTION_COOKIE_NAME", "__Host-mcp_consent_tx"))

    @property
    def RATE_LIMITS(self) -> dict[str, Rate]:
        """Token buckets per client address and endpoint (docs/abuse-limits.md); replaces
        DEFAULT_RATE_LIMITS as a whole, ``{}`` turns them off. A value is
        ``{"burst": N, "per_minute": M}`` or ``(N, seconds)``: N at once, refilled over seconds."""
        raw = self._get("RATE_LIMITS", DEFAULT_RATE_LIMITS)
        return {str(k): Rate.parse(v) for k, v in raw.items() if v}

    @property
    def RATE_LIMIT_AUDIT_WINDOW(self) -> int:
        """ABUSE-01: seconds per aggregate audit event of refused anonymous requests per address."""
        return int(self._get("RATE_LIMIT_AUDIT_WINDOW", 300))

    @property
    def TRUSTED_PROXY_COUNT(self) -> int:
        """How many reverse proxies in front of the app append to CLIENT_IP_HEADER; 0 (the
        default): the client address is REMOTE_ADDR and forwarding headers are ignored."""
        return int(self._get("TRUSTED_PROXY_COUNT", 0))

    @property
    def CLIENT_IP_HEADER(self) -> str:
        """The request.META key the trusted proxies append the client address to."""
        return str(self._get("CLIENT_IP_HEADER", "HTTP_X_FORWARDED_FOR"))

    @property
    def MAX_UNUSED_DCR_CLIENTS(self) -> int:
        """Last resort, all addresses together: refuse new registrations (logged and
        audited) while this many DCR and CIMD clients were never used (ABUSE-03)."""
        return int(self._get("MAX_UNUSED_DCR_CLIENTS", 5000))

    @property
    def MAX_UNUSED_CLIENTS_PER_ADDRESS(self) -> int:
        """ABUSE-03: never-used clients one address may have registered at a time."""
        return int(self._get("MAX_UNUSED_CLIENTS_PER_ADDRESS", 200))

    @property
    def UNUSED_CLIENT_TTL(self) -> int:
        """ABUSE-03: seconds a DCR or CIMD client may stay without a completed authorization
        before expiry and `mcp_consent_cleanup` remove it (an MCP client registers right
        before it authorizes)."""
        return int(self._get("UNUSED_CLIENT_TTL", 3600))

    @property
    def TRANSACTION_RETENTION(self) -> int:
        """ABUSE-03: seconds a finished or abandoned transaction is kept after it expired."""
        return int(self._get("TRANSACTION_RETENTION", 60 * 60 * 24))

    @property
    def UNUSED_CLIENT_DAYS(self) -> int:
        """`mcp_consent_cleanup` deletes DCR clients unused for this many days."""
        return int(self._get("UNUSED_CLIENT_DAYS", 30))

    @property
    def ADAPTER(self) -> Any:
        """The project's customisation point: an instance of the configured adapter class."""
        return import_string(self._get("ADAPTER", "mcp_consent.adapter.DefaultConsentAdapter"))()

    # --- The resource-server side (mcp_consent.resource, integrations.mcp_sdk) ---------------

    @property
    def PRM_SCOPES(self) -> list[str]:
        """SM-01/SM-06: ``scopes_supported`` of the protected resource metadata, and the scope
        a 401 challenge asks for when the operation needs none in particular: the minimal set
        for basic use (default: DOT's DEFAULT_SCOPES), never ``offline_access``."""
        scopes = self._get("PRM_SCOPES", None)
        if scopes is None:
            scopes = oauth2_settings.DEFAULT_SCOPES
        return [s for s in dict.fromkeys(scopes) if s != "offline_access"]

    @property
    def SCOPE_IMPLIES(self) -> dict[str, list[str]]:
        """SM-05: scope hierarchy, e.g. ``{"items:write": ["items:read"]}`` (transitive)."""
        return {str(k): list(v) for k, v in dict(self._get("SCOPE_IMPLIES", {})).items()}

    @property
    def RESOURCE_NAME(self) -> str:
        """Human-readable ``resource_name`` of the protected resource metadata (RFC 9728 §2)."""
        return str(self._get("RESOURCE_NAME", ""))

    @property
    def MCP_ALLOWED_HOSTS(self) -> list[str]:
        """RS-10: Host values the MCP endpoint accepts (DNS rebinding); default: each resource's
        host[:port]. ``host:*`` allows any port (the SDK's TransportSecuritySettings syntax)."""
        hosts = self._get("MCP_ALLOWED_HOSTS", None)
        if hosts is None:
            hosts = [urlsplit(r).netloc for r in self.RESOURCES]
        return list(dict.fromkeys(hosts))

    @property
    def MCP_ALLOWED_ORIGINS(self) -> list[str]:
        """RS-10: Origin values the MCP endpoint accepts; a present, unlisted Origin gets 403.
        Default: each resource's own origin. Add a browser-based client's origin here."""
        origins = self._get("MCP_ALLOWED_ORIGINS", None)
        if origins is None:
            origins = ["{0.scheme}://{0.netloc}".format(urlsplit(r)) for r in self.RESOURCES]
        return list(dict.fromkeys(origins))

    @property
    def MCP_MAX_BODY_SIZE(self) -> int:
        """SEC-11: the largest request body (bytes) the MCP endpoint reads; larger is 413."""
        return int(self._get("MCP_MAX_BODY_SIZE", 4 * 1024 * 1024))

    @property
    def MCP_MAX_JSON_DEPTH(self) -> int:
        """SEC-11: the deepest nesting of arrays and objects a JSON-RPC body may have (400)."""
        return int(self._get("MCP_MAX_JSON_DEPTH", 64))

    @property
    def INTROSPECTION_CLIENTS(self) -> dict[str, list[str]]:
        """INT-01: client_id of each separate MCP server allowed to call /introspect/ → the
        canonical resources it serves; it learns only about tokens for those (INT-02)."""
        raw = dict(self._get("INTROSPECTION_CLIENTS", {}))
        return {
            str(client_id): [canonical_resource(r) or r for r in resources]
            for client_id, resources in raw.items()
        }

    def resource_allowed(self, uri: str) -> str | None:
        """The canonical form of ``uri`` if it names a configured MCP resource (AS-31), else None."""
        canonical = canonical_resource(uri)
        if canonical is None:
            return None
        return canonical if canonical in self.RESOURCES else None


app_settings = AppSettings()
