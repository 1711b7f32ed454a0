"""Encryption at rest of upstream tokens and upstream PKCE verifiers (UP-07, AS-47).

MultiFernet over ``MCP_CONSENT["ENCRYPTION_KEYS"]``: the first key encrypts, every key
decrypts, so a key is rotated by prepending a new one and running
``manage.py mcp_consent_rotate_keys`` before the old one is dropped. Without configured keys a
key is derived from SECRET_KEY so the demo runs; ``check --deploy`` refuses that
(mcp_consent.E002).

Only the cryptography lives here (and ``secret_hash``, the one hash we keep of a secret):
the vault in use (the consent behind a token, its refresh, the upstream API session) is
``mcp_consent.flows.upstream_tokens``, a layer above.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from .app_settings import app_settings


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
