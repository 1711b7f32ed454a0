"""Client-metadata cleaning: the RFC 7591 document a client asserts, narrowed to policy.

Only the code and refresh grants (DCR-15), consistent auth methods (DCR-16, CIMD-06),
length-limited self-asserted names (DCR-19), redirect URIs that fit the application type
(AS-62). The clean result is what gets registered and what the registration response
echoes (DCR-04, DCR-05).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from oauth2_provider.settings import oauth2_settings

from ..app_settings import app_settings
from ..models import RegistrationSource
from .errors import RegistrationError
from .redirect_uris import (
    MAX_URI_LENGTH,
    is_loopback_host,
    is_private_use_scheme,
    validate_redirect_uri,
)

SUPPORTED_GRANT_TYPES = {"authorization_code", "refresh_token"}
SUPPORTED_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")


def _printable(value: str) -> bool:
    """No control or format characters (also blocks bidi overrides that spoof names)."""
    return not any(unicodedata.category(c) in {"Cc", "Cf"} for c in value)


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
