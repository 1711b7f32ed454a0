"""Encryption at rest of upstream tokens and upstream PKCE verifiers (UP-07, AS-47).

MultiFernet over ``MCP_CONSENT["ENCRYPTION_KEYS"]``: the first key encrypts, every key
decrypts, so a key is rotated by prepending a new one and running
``manage.py mcp_consent_rotate_keys`` before the old one is dropped. Without configured keys a
key is derived from SECRET_KEY so the demo runs; ``check --deploy`` refuses that
(mcp_consent.E002).
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from .app_settings import app_settings

if TYPE_CHECKING:
    from .models import Consent, UpstreamToken
    from .resource import VerifiedToken
    from .upstream import UpstreamAPISession


def secret_hash(value: str) -> str:
    """SHA-256 (hex) of a high-entropy secret: the one form in which we keep codes, states,
    browser nonces, and (as DOT's token_checksum) access and refresh tokens (AS-47)."""
    return hashlib.sha256(value.encode()).hexdigest()


class VaultError(Exception):
    """A stored secret could not be decrypted with any configured key."""


def _derived_key() -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"mcp_consent.vault", info=b"fernet-key")
    return base64.urlsafe_b64encode(hkdf.derive(settings.SECRET_KEY.encode()))


def _fernet() -> MultiFernet:
    keys = app_settings.ENCRYPTION_KEYS or [_derived_key().decode()]
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(plaintext: str) -> str:
    """Encrypt with the newest key; '' stays '' so optional secrets need no special case."""
    if not plaintext:
        return ""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    if not ciphertext:
        return ""
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise VaultError("stored secret cannot be decrypted with the configured keys") from exc


def rotate(ciphertext: str) -> str:
    """Re-encrypt ``ciphertext`` under the newest key."""
    if not ciphertext:
        return ""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise VaultError("stored secret cannot be decrypted with the configured keys") from exc


def generate_key() -> str:
    return Fernet.generate_key().decode()


# --- The vault in use: the upstream API with a verified token's consent (RS-11, TP-03) ---------


def consent_for(token: VerifiedToken) -> Consent | None:
    """The consent behind a verified MCP token, with its upstream token (RS-11, TP-03).

    Found from what the verified token says (its user, its client, the resource it was
    verified for), never from anything the MCP client sends, so a client can only ever
    reach the upstream grant that its own user approved for it. Of several live consents
    the one last used for an authorization wins; it must cover the token's scopes.
    """
    from django.db.models import F
    from django.utils import timezone

    from .models import Consent

    candidates = (
        Consent.objects.select_related("upstream_token")
        .filter(
            user_id=token.user_id,
            client__application_id=token.application_id,
            resource=token.resource,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
            upstream_token__isnull=False,
        )
        .order_by(F("last_used_at").desc(nulls_last=True), "-granted_at", "-pk")
    )
    for consent in candidates[:20]:
        if token.scopes <= set(consent.scope_list):
            return consent
    return None


def _refreshed(row: UpstreamToken, *, force: bool) -> UpstreamToken:
    """UP-08 through flows (row lock, once across workers, atomic rotation).

    A grant the upstream refuses to refresh, or one without a refresh token, can only be
    replaced by a new authorization (UpstreamAuthorizationRequired); an outage stays an
    UpstreamError (try again later).
    """
    from . import flows, upstream

    if not decrypt(row.refresh_token_encrypted):
        raise upstream.UpstreamAuthorizationRequired("the upstream grant has no refresh token")
    try:
        return flows.refresh_upstream_token(row, force=force)
    except upstream.UpstreamRefused as exc:
        raise upstream.UpstreamAuthorizationRequired(exc.reason) from None


def upstream_session(token: VerifiedToken) -> UpstreamAPISession:
    """A requests.Session for the upstream API, carrying the token's consent's upstream token.

    Use it with paths relative to ``UPSTREAM["API_BASE_URL"]``::

        with vault.upstream_session(verified) as api:
            items = api.get("api/items").json()

    The upstream token is refreshed server-side before it expires (UP-08) and once more on
    an upstream 401 (RS-11). Raises upstream.UpstreamAuthorizationRequired when only a new
    authorization can help (no live consent, refresh refused, still 401), and
    upstream.UpstreamError for outages. The MCP client's token is never sent (TP-03) and the
    upstream token never leaves this process except towards the upstream (TP-05, UP-07).
    """
    from django.utils import timezone

    from . import flows, upstream

    consent = consent_for(token)
    if consent is None:
        raise upstream.UpstreamAuthorizationRequired("no live consent with an upstream grant")
    current = consent.upstream_token
    if (
        current.expires_at is not None
        and current.expires_at - flows.REFRESH_MARGIN <= timezone.now()
    ):
        if current.expires_at <= timezone.now() or decrypt(current.refresh_token_encrypted):
            current = _refreshed(current, force=False)

    def access_token() -> str:
        return decrypt(current.access_token_encrypted)

    def refreshed_access_token() -> str:
        nonlocal current
        current = _refreshed(current, force=True)
        return decrypt(current.access_token_encrypted)

    return upstream.UpstreamAPISession(
        access_token=access_token, refreshed_access_token=refreshed_access_token
    )
