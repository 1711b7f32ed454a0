"""Encryption at rest of upstream tokens and upstream PKCE verifiers (UP-07, AS-47, SEC-10).

SEC-10: AES-256-GCM (``cryptography``) with associated data naming the row and the purpose
of each secret (``upstream_token:<consent id>:access``), so a ciphertext moved into another
row, or into another field of its row, fails to decrypt instead of handing one person's
upstream grant to another. Ciphertexts read ``v2:<key id>:<base64(nonce | ciphertext | tag)>``.

Keys: ``MCP_CONSENT["ENCRYPTION_KEYS"]``, newest first; the first encrypts, every key
decrypts (found by the key id in the ciphertext), so a key is rotated by prepending a new
one and running ``manage.py mcp_consent_rotate_keys`` before the old one is dropped. Fernet
ciphertexts of earlier versions still decrypt with the same keys (no row binding: rotate
re-encrypts them to the bound format). Without configured keys a key is derived from
SECRET_KEY so the demo runs; outside DEBUG the system check mcp_consent.E002 refuses that.

Only the cryptography lives here (and ``secret_hash``, the one hash we keep of a secret):
the vault in use (the consent behind a token, its refresh, the upstream API session) is
``mcp_consent.flows.upstream_tokens``, a layer above.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from .app_settings import app_settings

if TYPE_CHECKING:
    from .models import UpstreamToken

FORMAT = "v2"


def secret_hash(value: str) -> str:
    """SHA-256 (hex) of a high-entropy secret: the one form in which we keep codes, states,
    browser nonces, and (as DOT's token_checksum) access and refresh tokens (AS-47)."""
    return hashlib.sha256(value.encode()).hexdigest()


class VaultError(Exception):
    """A stored secret could not be decrypted with any configured key (or not for this row)."""


# --- Associated data: which row and purpose a ciphertext belongs to (SEC-10) ---------------------


def upstream_token_context(consent_id: int, which: Literal["access", "refresh"]) -> str:
    """The associated data of an UpstreamToken's access or refresh token (one per consent)."""
    return f"upstream_token:{consent_id}:{which}"


def verifier_context(state_hash: str) -> str:
    """The associated data of an AuthorizationTransaction's upstream PKCE verifier; its
    ``state_hash`` is unique and known before the row is inserted."""
    return f"authorization_transaction:{state_hash}:code_verifier"


def upstream_access_token(row: UpstreamToken) -> str:
    """The plaintext upstream access token of an UpstreamToken row."""
    return decrypt(row.access_token_encrypted, upstream_token_context(row.consent_id, "access"))


def upstream_refresh_token(row: UpstreamToken) -> str:
    """The plaintext upstream refresh token of an UpstreamToken row ('' when none)."""
    return decrypt(row.refresh_token_encrypted, upstream_token_context(row.consent_id, "refresh"))


# --- Keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    id: str
    aead: AESGCM = field(repr=False)


def _derived_key() -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"mcp_consent.vault", info=b"fernet-key")
    return base64.urlsafe_b64encode(hkdf.derive(settings.SECRET_KEY.encode()))


def _configured() -> list[str]:
    return app_settings.ENCRYPTION_KEYS or [_derived_key().decode()]


def _key(material: str) -> _Key:
    # A key of its own for AES-GCM, derived with its own purpose from the configured key
    # (a Fernet key, as mcp_consent_generate_key prints): one list serves both formats.
    secret = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"mcp_consent.vault", info=b"aes-256-gcm"
    ).derive(material.encode())
    key_id = hashlib.sha256(b"mcp_consent vault key id" + secret).hexdigest()[:8]
    return _Key(key_id, AESGCM(secret))


def _keys() -> list[_Key]:
    return [_key(material) for material in _configured()]


def _fernet() -> MultiFernet:
    """Earlier versions' format, read only (dual read); keys that are not Fernet keys skip."""
    fernets = []
    for material in _configured():
        try:
            fernets.append(Fernet(material))
        except (ValueError, binascii.Error):
            continue
    if not fernets:
        raise VaultError("no configured key can read the earlier (Fernet) format")
    return MultiFernet(fernets)


# --- Encrypt, decrypt, rotate --------------------------------------------------------------------


# SEC-02: the upstream token or verifier in clear, and the key material being derived:
# Django's error report hides every variable of this frame and of every frame below it.
@sensitive_variables()
def encrypt(plaintext: str, context: str) -> str:
    """Encrypt with the newest key, bound to ``context`` (the row and purpose); '' stays ''
    so optional secrets need no special case."""
    # The logic lives undecorated in _seal, where mutation testing reaches it
    # (docs/mutation.md).
    return _seal(plaintext, context)


def _seal(plaintext: str, context: str) -> str:
    if not plaintext:
        return ""
    key = _keys()[0]
    nonce = os.urandom(12)  # 96-bit random nonce, the AES-GCM standard size
    sealed = key.aead.encrypt(nonce, plaintext.encode(), context.encode())
    return f"{FORMAT}:{key.id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"


def decrypt(ciphertext: str, context: str) -> str:
    """The plaintext, if ``ciphertext`` was made for ``context`` under a configured key."""
    if not ciphertext:
        return ""
    if not ciphertext.startswith(FORMAT + ":"):
        try:
            return _fernet().decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise VaultError("stored secret cannot be decrypted with the configured keys") from exc
    try:
        _, key_id, encoded = ciphertext.split(":", 2)
        blob = base64.urlsafe_b64decode(encoded.encode())
    except (ValueError, binascii.Error) as exc:
        raise VaultError("stored secret is not a vault ciphertext") from exc
    key = next((k for k in _keys() if k.id == key_id), None)
    if key is None:
        raise VaultError(f"stored secret was encrypted with key {key_id}, which is not configured")
    try:
        return key.aead.decrypt(blob[:12], blob[12:], context.encode()).decode()
    except InvalidTag as exc:
        raise VaultError(
            "stored secret does not decrypt for this row (moved from another, or altered)"
        ) from exc


def rotate(ciphertext: str, context: str) -> str:
    """Re-encrypt ``ciphertext`` under the newest key, in the bound format."""
    return encrypt(decrypt(ciphertext, context), context)


def generate_key() -> str:
    """A new key for ENCRYPTION_KEYS (or AUDIT_KEYS): 32 random bytes, urlsafe base64."""
    return Fernet.generate_key().decode()
