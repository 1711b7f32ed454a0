"""Redirect-URI policy: which URIs a client may register and be sent back to.

DOT 3.4 validates syntax only (its DCR view accepted ``http://evil.example.com/cb`` and
``http://127.0.0.1:*/cb``); here: ``http`` only on loopback (DCR-11, BCP-14), no dangerous
schemes (URL-02, DCR-13), no wildcards or port patterns (DCR-14, CD-32), absolute URIs
without fragments (DCR-12).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from .errors import RegistrationError

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
MAX_URI_LENGTH = 2048
NOT_IN_URIS = set('<>"{}|\\^`')


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
