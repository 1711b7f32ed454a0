"""The SDK's TokenVerifier and settings: mcp_consent tokens in the SDK's own auth (RS-08).

``ConsentTokenVerifier`` is enough on its own for ``AuthSettings(validate_token_resource=True)``;
the AccessToken it returns carries the subject and ``iss`` (SH-04) and the scopes widened by
the hierarchy (SM-05).
"""

from __future__ import annotations

import contextvars
import hmac

from asgiref.sync import sync_to_async
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import PrivateAttr

from ... import resource
from ...app_settings import app_settings, canonical_resource


class ConsentAccessToken(AccessToken):
    """The SDK's AccessToken, carrying the VerifiedToken it was made from."""

    _verified: resource.VerifiedToken | None = PrivateAttr(default=None)

    @property
    def verified(self) -> resource.VerifiedToken | None:
        return self._verified


def sdk_access_token(raw: str, verified: resource.VerifiedToken) -> ConsentAccessToken:
    token = ConsentAccessToken(
        token=raw,
        client_id=verified.client_id,
        # SM-05: the SDK compares scopes flatly (AuthSettings.required_scopes); hand it the
        # scopes the hierarchy implies too.
        scopes=sorted(verified.effective_scopes),
        expires_at=int(verified.expires_at.timestamp()),
        resource=verified.resource,
        # SH-04: the SDK binds sessions and request state to (client_id, iss, sub).
        subject=verified.subject,
        claims={"iss": verified.issuer, "aud": list(verified.audiences)},
    )
    token._verified = verified
    return token


# The token ProtectedMCPApp verified for the request being served, so that the SDK's call to
# the verifier for the same request costs no second query.
verified_here: contextvars.ContextVar[tuple[str, ConsentAccessToken] | None] = (
    contextvars.ContextVar("mcp_consent_verified_here", default=None)
)


class ConsentTokenVerifier:
    """``mcp.server.auth.provider.TokenVerifier`` backed by mcp_consent (RS-08, TP-01, TP-02).

    ``resource`` defaults to the only configured MCP resource. Returns None for every token
    ``resource.verify_token`` refuses; the ORM work runs in a worker thread (async-safe) and
    its connections are released afterwards.
    """

    def __init__(self, resource: str | None = None) -> None:
        self.resource = canonical_resource(resource) if resource else None

    async def verify_token(self, token: str) -> AccessToken | None:
        here = verified_here.get()
        if here is not None and hmac.compare_digest(here[0], resource.checksum(token)):
            return here[1]

        def verify() -> resource.VerifiedToken | None:
            try:
                return resource.verify_token(token, resource=self.resource)
            except resource.BearerError:
                return None
            finally:
                resource.release_connections()

        verified = await sync_to_async(verify, thread_sensitive=True)()
        return sdk_access_token(token, verified) if verified is not None else None


def auth_settings(
    resource_uri: str | None = None, *, required_scopes: list[str] | None = None
) -> AuthSettings:
    """The SDK's AuthSettings for a resource protected by mcp_consent tokens.

    ``validate_token_resource=True``: the SDK checks the audience too (defence in depth).
    """
    return AuthSettings(
        issuer_url=app_settings.ISSUER,  # type: ignore[arg-type]
        resource_server_url=resource_uri or resource.default_resource(),  # type: ignore[arg-type]
        required_scopes=required_scopes,
        validate_token_resource=True,
    )


def transport_security() -> TransportSecuritySettings:
    """RS-10: the SDK's DNS-rebinding protection with MCP_ALLOWED_HOSTS / MCP_ALLOWED_ORIGINS."""
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=app_settings.MCP_ALLOWED_HOSTS,
        allowed_origins=app_settings.MCP_ALLOWED_ORIGINS,
    )
