"""The refusals of an MCP endpoint and their RFC 6750 / RFC 9728 challenges.

``BearerError`` subclasses know their answer: 401 with ``resource_metadata`` and ``scope``
(no ``error``) when no token was sent (RS-04), 401 ``invalid_token`` for a bad one, 403
``insufficient_scope`` naming every scope the operation needs (RS-06, SM-02), 400
``invalid_request`` for a malformed request (RS-07). Also the resource an endpoint protects
when it does not say (``default_resource``) and its RFC 9728 metadata URL.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from oauth2_provider.www_authenticate import build_bearer_challenge

from ..app_settings import app_settings


class BearerError(Exception):
    """A refused request, with the RFC 6750 / RFC 9728 answer it gets."""

    status = 401
    error: str | None = None

    def __init__(
        self, description: str = "", *, resource: str | None = None, scopes: Iterable[str] = ()
    ) -> None:
        super().__init__(description)
        self.description = description
        self.resource = resource or default_resource()
        self.scopes = list(dict.fromkeys(scopes))

    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` value: one challenge with everything a client needs.

        Rendered by DOT's ``build_bearer_challenge`` (RFC 7230 quoted-strings, CR/LF and
        quotes escaped); the parameters are ours: no ``error`` without a token (RS-04).
        """
        params: dict[str, str] = {}
        if self.error:
            params["error"] = self.error
            if self.description:
                params["error_description"] = self.description
        # RS-05 / SM-02: all scopes this operation needs, in this one challenge; when it needs
        # none in particular, the minimal set for basic use (SM-01), never offline_access.
        scopes = self.scopes or app_settings.PRM_SCOPES
        scopes = [s for s in scopes if s != "offline_access"]  # SM-06
        if scopes:
            params["scope"] = " ".join(scopes)
        # RS-02: the RFC 9728 metadata URL of *this* resource (path inserted), not DOT's
        # default root document.
        return str(
            build_bearer_challenge(
                None, oauth2_error=params, resource_metadata_url=metadata_url(self.resource)
            )
        )

    def body(self) -> dict[str, str]:
        if not self.error:
            return {}
        return {"error": self.error, "error_description": self.description}

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.www_authenticate(), "Cache-Control": "no-store"}


class MissingToken(BearerError):
    """RS-04 / RFC 6750 §3.1: no credentials, so the challenge carries no error code."""


class InvalidRequest(BearerError):
    """RS-07 / RFC 6750 §3.1: a malformed request, e.g. a token outside the header."""

    status = 400
    error = "invalid_request"


class InvalidToken(BearerError):
    """RS-04 / TP-01 / TP-02: unknown, expired, revoked, or not meant for this resource."""

    error = "invalid_token"


class InsufficientScope(BearerError):
    """RS-06: a good token that lacks scopes this operation needs (the client steps up)."""

    status = 403
    error = "insufficient_scope"


def metadata_url(resource: str) -> str:
    """RFC 9728 §3.1: the well-known URL with the resource's path inserted after the host."""
    parts = urlsplit(resource)
    path = parts.path if parts.path not in ("", "/") else ""
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{path}"


def default_resource() -> str:
    """The resource an endpoint protects when it does not say: the only configured one."""
    resources = app_settings.RESOURCES
    if len(resources) != 1:
        raise ValueError(
            "several MCP_CONSENT['RESOURCES'] are configured: pass resource= to say which "
            "one this endpoint is"
        )
    return resources[0]
