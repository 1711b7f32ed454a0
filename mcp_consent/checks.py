"""System checks: unsafe settings are errors, production posture under --deploy.

Each check has a fixed ID, message and hint; tests compare whole CheckMessage objects.
"""

from __future__ import annotations

import difflib
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.hashers import get_hasher
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string
from oauth2_provider.settings import oauth2_settings

from .app_settings import PROVIDER_PRESETS, app_settings, canonical_resource
from .hashers import ClientSecretHasher


def E001() -> Error:
    return Error(
        "MCP_CONSENT['RESOURCES'] is empty or holds a value that is not an absolute http(s) URI without query or fragment.",
        hint="List the canonical URI of each MCP endpoint, e.g. ['https://proxy.example.com/mcp'].",
        id="mcp_consent.E001",
    )


E002 = Error(
    "MCP_CONSENT['ENCRYPTION_KEYS'] is empty outside DEBUG: upstream tokens would be encrypted with a key derived from SECRET_KEY.",
    hint="SEC-10: generate a key with `python manage.py mcp_consent_generate_key` and set "
    "MCP_CONSENT['ENCRYPTION_KEYS'] = [key] from the environment, apart from SECRET_KEY.",
    id="mcp_consent.E002",
)
E003 = Error(
    "The issuer (OAUTH2_PROVIDER['OIDC_ISS_ENDPOINT']) is not an https origin.",
    hint="Set OIDC_ISS_ENDPOINT to the public https origin without a trailing slash (AS-02, AS-13, URL-01).",
    id="mcp_consent.E003",
)
E004 = Error(
    "PKCE is not required or 'plain' is allowed (OAUTH2_PROVIDER PKCE_REQUIRED / COMPLIANT_BCP_RFC9700_PKCE_METHOD).",
    hint="Set PKCE_REQUIRED=True and COMPLIANT_BCP_RFC9700_PKCE_METHOD=True (AS-20, AS-21).",
    id="mcp_consent.E004",
)
E005 = Error(
    "OAUTH2_PROVIDER['OAUTH2_SERVER_CLASS'] or ['OAUTH2_VALIDATOR_CLASS'] is not mcp_consent's (or a subclass).",
    hint="Use mcp_consent.oauth.MCPAuthorizationServer and mcp_consent.oauth.MCPOAuth2Validator: they enforce "
    "the resource allowlist, S256-only PKCE and the client registry.",
    id="mcp_consent.E005",
)
E006 = Error(
    "Refresh tokens are not rotated with reuse detection.",
    hint="Set ROTATE_REFRESH_TOKEN=True, REFRESH_TOKEN_REUSE_PROTECTION=True, REFRESH_TOKEN_GRACE_PERIOD_SECONDS=0 (AS-44).",
    id="mcp_consent.E006",
)
E007 = Error(
    "MCP_CONSENT['UPSTREAM'] lacks one of AUTHORIZE_URL, TOKEN_URL, USERINFO_URL, CLIENT_ID.",
    hint="Configure the upstream provider the proxy signs in with (see the settings reference).",
    id="mcp_consent.E007",
)
E008 = Error(
    "An MCP_CONSENT['UPSTREAM'] URL is not https.",
    hint="Upstream calls carry the client secret and tokens: use https (UP-10).",
    id="mcp_consent.E008",
)
E009 = Error(
    "MCP_CONSENT['TRANSACTION_COOKIE_NAME'] does not start with '__Host-'.",
    hint="The browser-binding cookie must be a __Host- cookie (CD-20).",
    id="mcp_consent.E009",
)
E010 = Error(
    "Session or CSRF cookies are not Secure, or allow cross-site sending.",
    hint="Set SESSION_COOKIE_SECURE, CSRF_COOKIE_SECURE = True and SameSite 'Lax' or 'Strict' (CD-13, CD-21).",
    id="mcp_consent.E010",
)
E011 = Error(
    "The implicit or password grant is not switched off (COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT / _PASSWORD_GRANT).",
    hint="Set both gates to True (BCP-06, BCP-07).",
    id="mcp_consent.E011",
)
E031 = Error(
    "MCP_CONSENT['UPSTREAM']['PROVIDER'] is not a known preset, or 'entra' has no TENANT.",
    hint="Use 'github', 'google' or 'entra' (with TENANT), or leave PROVIDER out and set the URLs; "
    "any OpenID Connect provider: `manage.py mcp_consent_discover <issuer>` (docs/providers.md).",
    id="mcp_consent.E031",
)
E012 = Error(
    "MCP_CONSENT['AUDIT_KEYS'] is empty outside DEBUG: the audit chain would be keyed from SECRET_KEY.",
    hint="SEC-06: generate a key with `python manage.py mcp_consent_generate_key`, set "
    "MCP_CONSENT['AUDIT_KEYS'] = [key] from the environment (never the database), and keep old keys "
    "in the list after the new one while their events exist.",
    id="mcp_consent.E012",
)
W001 = Warning(
    "MCP_CONSENT['REMEMBER_CONSENT'] is on: remembered approvals skip the consent page for same-site navigations.",
    hint="A user-started navigation redirected by another site keeps Sec-Fetch-Site: none (GHSA-6x8h-498w-gv8c). "
    "Keep it off unless you accept that residual risk.",
    id="mcp_consent.W001",
)
W002 = Warning(
    "MCP_CONSENT['UPSTREAM'] has PKCE off.",
    hint="Use PKCE S256 towards the upstream when it supports it (UP-01).",
    id="mcp_consent.W002",
)
W004 = Warning(
    "Dynamic client registration is on without a rate limit for it (MCP_CONSENT['RATE_LIMITS']['register']).",
    hint="Open registration invites floods (DCR-02): keep a per-address limit, e.g. DEFAULT_RATE_LIMITS['register'].",
    id="mcp_consent.W004",
)
W005 = Warning(
    "Rate limits count in a per-process cache (LocMemCache): each app server counts on its own.",
    hint="Use a shared cache in production, e.g. Django's RedisCache (REDIS_URL in the demo project).",
    id="mcp_consent.W005",
)
W006 = Warning(
    "OAUTH2_PROVIDER['CLIENT_SECRET_HASHER'] is a key-stretching password hasher: each "
    "confidential registration spends a full password-hash run (~0.4 s with PBKDF2).",
    hint="Add 'mcp_consent.hashers.ClientSecretHasher' at the end of PASSWORD_HASHERS and set "
    "CLIENT_SECRET_HASHER to 'mcp_consent_sha256' (DCR-02); old hashes keep verifying.",
    id="mcp_consent.W006",
)
E013 = Error(
    "OAUTH2_PROVIDER['CLIENT_SECRET_HASHER'] names a hasher that is not in PASSWORD_HASHERS.",
    hint="Confidential registrations would fail: list the hasher in PASSWORD_HASHERS, e.g. "
    "'mcp_consent.hashers.ClientSecretHasher' for 'mcp_consent_sha256'.",
    id="mcp_consent.E013",
)
W003 = Warning(
    "Access tokens or codes are stored in clear (COMPLIANT_BCP_RFC9700_TOKEN_STORAGE is off).",
    hint="Set COMPLIANT_BCP_RFC9700_TOKEN_STORAGE=True (AS-47).",
    id="mcp_consent.W003",
)


def E030(where: str, key: str, known: list[str]) -> Error:
    """A key nothing reads: a typo would otherwise be dropped without a word."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"Did you mean {close[0]!r}?" if close else f"The known keys: {', '.join(known)}."
    return Error(f"{where} has an unknown key {key!r}.", hint=hint, id="mcp_consent.E030")


def _is_subclass(value: Any, dotted: str) -> bool:
    try:
        return isinstance(value, type) and issubclass(value, import_string(dotted))
    except ImportError:
        return False


@register(Tags.security)
def check_configuration(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Every configuration check, in a fixed order: settings, DOT, upstream, cookies, keys."""
    messages: list[Any] = [E030(*unknown) for unknown in app_settings.unknown_keys()]
    raw = getattr(settings, "MCP_CONSENT", {}).get("RESOURCES", [])
    if not raw or any(canonical_resource(r) is None for r in raw):
        messages.append(E001())
    upstream = app_settings.UPSTREAM
    messages += _dot_messages()
    messages += _upstream_messages(upstream)
    messages += _cookie_messages()
    messages += _key_messages()
    messages += _advice(upstream)
    messages += _hasher_messages()
    return messages


def _dot_messages() -> list[Any]:
    """DOT configured as this server needs it: PKCE, our classes, rotation, no legacy grants."""
    messages: list[Any] = []
    if not (
        oauth2_settings.PKCE_REQUIRED is True and oauth2_settings.COMPLIANT_BCP_RFC9700_PKCE_METHOD
    ):
        messages.append(E004)
    if not (
        _is_subclass(
            oauth2_settings.OAUTH2_SERVER_CLASS, "mcp_consent.oauth.MCPAuthorizationServer"
        )
        and _is_subclass(
            oauth2_settings.OAUTH2_VALIDATOR_CLASS, "mcp_consent.oauth.MCPOAuth2Validator"
        )
    ):
        messages.append(E005)
    if not (
        oauth2_settings.ROTATE_REFRESH_TOKEN
        and oauth2_settings.REFRESH_TOKEN_REUSE_PROTECTION
        and not oauth2_settings.REFRESH_TOKEN_GRACE_PERIOD_SECONDS
    ):
        messages.append(E006)
    if not (
        oauth2_settings.COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT
        and oauth2_settings.COMPLIANT_BCP_RFC9700_PASSWORD_GRANT
    ):
        messages.append(E011)
    return messages


def _upstream_messages(upstream: Any) -> list[Any]:
    """A known provider preset (with its tenant) and every upstream endpoint set."""
    messages: list[Any] = []
    if (upstream.provider and upstream.provider not in PROVIDER_PRESETS) or (
        upstream.provider == "entra" and not upstream.tenant
    ):
        messages.append(E031)
    if not all(
        [upstream.authorize_url, upstream.token_url, upstream.userinfo_url, upstream.client_id]
    ):
        messages.append(E007)
    return messages


def _cookie_messages() -> list[Any]:
    """The transaction cookie host-only, session and CSRF cookies secure and same-site."""
    messages: list[Any] = []
    if not app_settings.TRANSACTION_COOKIE_NAME.startswith("__Host-"):
        messages.append(E009)
    if not (settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE) or not (
        settings.SESSION_COOKIE_SAMESITE in {"Lax", "Strict"}
        and settings.CSRF_COOKIE_SAMESITE in {"Lax", "Strict"}
    ):
        messages.append(E010)
    return messages


def _key_messages() -> list[Any]:
    """Keys of their own for the vault and the audit chain outside DEBUG."""
    messages: list[Any] = []
    if not settings.DEBUG and not app_settings.ENCRYPTION_KEYS:
        # SEC-10: whoever reads SECRET_KEY (often in the same environment, logs, or a
        # leaked settings file) must not be able to decrypt every upstream token: a key of
        # its own is required outside DEBUG, not only advised under --deploy.
        messages.append(E002)
    if not settings.DEBUG and not app_settings.AUDIT_KEYS:
        # SEC-06: a key next to the database (SECRET_KEY often is) lets whoever holds both
        # recompute the chain; outside DEBUG a separate key is required, not only advised.
        messages.append(E012)
    return messages


def _advice(upstream: Any) -> list[Any]:
    """Warnings: remembered consent, registration without a rate limit, upstream without PKCE."""
    messages: list[Any] = []
    if app_settings.REMEMBER_CONSENT:
        messages.append(W001)
    if oauth2_settings.DCR_ENABLED and not app_settings.RATE_LIMITS.get("register"):
        messages.append(W004)
    if not upstream.pkce:
        messages.append(W002)
    return messages


def _hasher_messages() -> list[Any]:
    """A client secret hasher that exists, and ours when anyone may register."""
    try:
        hasher = get_hasher(oauth2_settings.CLIENT_SECRET_HASHER)
    except ValueError:
        return [E013]
    if oauth2_settings.DCR_ENABLED and not isinstance(hasher, ClientSecretHasher):
        return [W006]
    return []


@register(Tags.security, deploy=True)
def check_deployment(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    messages: list[Any] = []
    if urlsplit(oauth2_settings.OIDC_ISS_ENDPOINT or "").scheme != "https":
        messages.append(E003)
    upstream = app_settings.UPSTREAM
    urls = [
        upstream.authorize_url,
        upstream.token_url,
        upstream.userinfo_url,
        upstream.revocation_url,
        upstream.api_base,  # the MCP tools send upstream tokens there (UP-10)
    ]
    if any(url and urlsplit(url).scheme != "https" for url in urls):
        messages.append(E008)
    if not oauth2_settings.COMPLIANT_BCP_RFC9700_TOKEN_STORAGE:
        messages.append(W003)
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if app_settings.RATE_LIMITS and backend.endswith("LocMemCache"):
        messages.append(W005)
    return messages


# --- The resource-server side (mcp_consent.resource, integrations.mcp_sdk, /introspect/) ---------
# IDs from 020 on, apart from the authorization-server checks above.

E020 = Error(
    "MCP_CONSENT['PRM_SCOPES'] names offline_access or a scope that is not in OAUTH2_PROVIDER['SCOPES'].",
    hint="List the minimal scopes for basic use, e.g. ['items:read'] (SM-01); never offline_access (SM-06).",
    id="mcp_consent.E020",
)
E021 = Error(
    "MCP_CONSENT['SCOPE_IMPLIES'] names a scope that is not in OAUTH2_PROVIDER['SCOPES'].",
    hint="Map known scopes to the scopes they include, e.g. {'items:write': ['items:read']} (SM-05).",
    id="mcp_consent.E021",
)
E022 = Error(
    "MCP_CONSENT['INTROSPECTION_CLIENTS'] lists a resource that is not in RESOURCES, or a client_id that is a URL.",
    hint="Map the client_id printed by `manage.py mcp_consent_resource_server` to the resources that "
    "server serves, each also in MCP_CONSENT['RESOURCES'] (INT-01, INT-02).",
    id="mcp_consent.E022",
)


@register(Tags.security)
def check_resource_server(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    messages: list[Any] = []
    known = set(oauth2_settings.SCOPES)
    raw = getattr(settings, "MCP_CONSENT", {})
    prm_scopes = raw.get("PRM_SCOPES")
    if prm_scopes is not None and any(s == "offline_access" or s not in known for s in prm_scopes):
        messages.append(E020)
    implied = app_settings.SCOPE_IMPLIES
    if any(k not in known or any(v not in known for v in vs) for k, vs in implied.items()):
        messages.append(E021)
    resources = set(app_settings.RESOURCES)
    for client_id, served in app_settings.INTROSPECTION_CLIENTS.items():
        if "://" in client_id or not served or not set(served) <= resources:
            messages.append(E022)
            break
    return messages
