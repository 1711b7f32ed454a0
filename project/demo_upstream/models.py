"""Persistence of the demo upstream. Secrets (codes, tokens, passwords) are stored hashed only."""

from __future__ import annotations

import hashlib
import uuid

from django.contrib.auth.hashers import check_password, make_password
from django.db import models
from django.utils import timezone


def hash_secret(value: str) -> str:
    """SHA-256 hex digest of a high-entropy secret (authorization code, access/refresh token)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class Account(models.Model):
    """A Demo Hub user (seeded: octocat and hubot, password "demo")."""

    login = models.CharField(max_length=39, unique=True)
    name = models.CharField(max_length=100, blank=True)
    email = models.EmailField(blank=True)
    password = models.CharField(max_length=128)

    class Meta:
        ordering = ["login"]

    def __str__(self) -> str:
        return self.login

    def set_password(self, raw_password: str) -> None:
        self.password = make_password(raw_password)

    def check_password(self, raw_password: str) -> bool:
        return check_password(raw_password, self.password)


class Item(models.Model):
    """A demo resource owned by an account, served by ``api/items`` (needs scope repo:read)."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="items")
    title = models.CharField(max_length=200)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.title


class AuthorizationCode(models.Model):
    """A one-time authorization code (10 minutes), bound to client, redirect URI, scopes, user
    and PKCE challenge. Only the SHA-256 hash of the code is stored."""

    code_hash = models.CharField(max_length=64, unique=True)
    client_id = models.CharField(max_length=200)
    redirect_uri = models.TextField()
    scope = models.TextField(blank=True)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="codes")
    code_challenge = models.CharField(max_length=128, blank=True)
    code_challenge_method = models.CharField(max_length=10, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"code for {self.account_id} ({self.client_id})"


class Token(models.Model):
    """An access token and its refresh token (hashes only).

    Refreshing rotates: the old row gets ``refresh_used_at`` and ``revoked_at`` and a new row of
    the same ``family`` is created. Presenting a rotated refresh token again revokes the family.
    """

    access_token_hash = models.CharField(max_length=64, unique=True)
    refresh_token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    client_id = models.CharField(max_length=200)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="tokens")
    scope = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    access_expires_at = models.DateTimeField()
    refresh_expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    refresh_used_at = models.DateTimeField(null=True, blank=True)
    family = models.UUIDField(default=uuid.uuid4, db_index=True)
    parent = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children"
    )
    authorization_code = models.ForeignKey(
        AuthorizationCode, on_delete=models.SET_NULL, null=True, blank=True, related_name="tokens"
    )

    def __str__(self) -> str:
        return f"token for {self.account_id} ({self.client_id})"

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()


class RequestLog(models.Model):
    """One row per request to any demo upstream endpoint. Parameter NAMES only, never values."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    method = models.CharField(max_length=10)
    path = models.TextField()
    endpoint = models.CharField(max_length=50, blank=True, db_index=True)
    query_params = models.TextField(blank=True, help_text="Query parameter names, no values.")
    body_params = models.TextField(blank=True, help_text="Form parameter names, no values.")
    auth_scheme = models.CharField(max_length=20, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"
