"""The hasher of machine-generated client secrets (DOT's CLIENT_SECRET_HASHER).

DOT hashes every ``Application.client_secret`` with a password hasher; Django's default,
PBKDF2 with a million iterations, spends ~0.4 s of CPU per registration, which makes open
registration (DCR-02) expensive and a refused flood costly (ABUSE-01). Key stretching
protects *guessable* secrets; a client secret is 128 random characters from DOT's
generator, so one keyed SHA-256 is as hard to reverse as the secret is to guess.

Register it after the project's own password hashers (people's passwords keep theirs):

    PASSWORD_HASHERS = [*django_defaults, "mcp_consent.hashers.ClientSecretHasher"]
    OAUTH2_PROVIDER = {..., "CLIENT_SECRET_HASHER": "mcp_consent_sha256"}

Hashes keep their algorithm prefix, so secrets stored by earlier versions (PBKDF2) keep
verifying through their own hasher as long as it stays in PASSWORD_HASHERS.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from django.contrib.auth.hashers import BasePasswordHasher, mask_hash
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext_noop as _


class ClientSecretHasher(BasePasswordHasher):
    """HMAC-SHA256 of a high-entropy secret under a per-secret random salt; never for passwords."""

    algorithm = "mcp_consent_sha256"

    def encode(self, password: str, salt: str) -> str:
        self._check_encode_args(password, salt)  # type: ignore[attr-defined]
        digest = hmac.new(salt.encode(), password.encode(), hashlib.sha256).hexdigest()
        return f"{self.algorithm}${salt}${digest}"

    def decode(self, encoded: str) -> dict[str, Any]:
        algorithm, salt, digest = encoded.split("$", 2)
        assert algorithm == self.algorithm
        return {"algorithm": algorithm, "hash": digest, "salt": salt}

    def verify(self, password: str, encoded: str) -> bool:
        decoded = self.decode(encoded)
        return constant_time_compare(encoded, self.encode(password, decoded["salt"]))

    def safe_summary(self, encoded: str) -> dict[Any, Any]:
        decoded = self.decode(encoded)
        return {
            _("algorithm"): decoded["algorithm"],
            _("salt"): mask_hash(decoded["salt"], show=2),
            _("hash"): mask_hash(decoded["hash"]),
        }

    def must_update(self, encoded: str) -> bool:
        return False

    def harden_runtime(self, password: str, encoded: str) -> None:
        pass  # nothing to equalise: every secret costs the same single HMAC
