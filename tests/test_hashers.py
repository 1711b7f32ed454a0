"""Client secrets without a password hasher's key stretching (DCR-02, ABUSE-01, issue 11).

Registration must be cheap enough that open registration and a refused flood cost nothing:
public clients get no secret at all, confidential clients' machine-generated secrets one
keyed SHA-256 (mcp_consent.hashers), and secrets stored by earlier versions keep verifying.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_application_model
from oauth2_provider.settings import oauth2_settings

from mcp_consent.hashers import ClientSecretHasher

pytestmark = pytest.mark.django_db

Application = get_application_model()
PRODUCTION_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "mcp_consent.hashers.ClientSecretHasher",
]


def register(client: Client, **metadata: Any) -> dict[str, Any]:
    body = {"redirect_uris": ["https://app.example.com/cb"], "client_name": "Acme", **metadata}
    response = client.post("/register/", json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.content
    return dict(response.json())


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def revoke_with(client: Client, client_id: str, secret: str) -> int:
    """RFC 7009 with client authentication: 200 when the client authenticated, else 401."""
    response = client.post(
        "/revoke/",
        "token=not-a-token",
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=basic(client_id, secret),
    )
    return int(response.status_code)


@pytest.fixture
def pbkdf2_calls(settings, monkeypatch) -> list[str]:
    """PBKDF2 first, as in Django's default PASSWORD_HASHERS; every encode() is recorded."""
    settings.PASSWORD_HASHERS = PRODUCTION_HASHERS
    calls: list[str] = []
    original = PBKDF2PasswordHasher.encode

    def counting(self: Any, password: str, salt: str, iterations: int | None = None) -> str:
        calls.append(salt)
        return original(self, password, salt, iterations)

    monkeypatch.setattr(PBKDF2PasswordHasher, "encode", counting)
    return calls


def test_public_registration_stores_no_secret_and_runs_no_password_hasher(client, pbkdf2_calls):
    """DCR-04 / DCR-16: a public client has no secret; registering it hashes nothing."""
    info = register(client, token_endpoint_auth_method="none")
    assert pbkdf2_calls == []
    assert "client_secret" not in info
    assert Application.objects.get(client_id=info["client_id"]).client_secret == ""


def test_confidential_secret_is_one_keyed_sha256_and_authenticates(client, pbkdf2_calls):
    """DCR-21: the secret is stored as a salted HMAC-SHA256, verified in constant time."""
    info = register(client, token_endpoint_auth_method="client_secret_basic")
    assert pbkdf2_calls == []
    stored = Application.objects.get(client_id=info["client_id"]).client_secret
    assert stored.startswith("mcp_consent_sha256$")
    assert info["client_secret"] not in stored
    assert revoke_with(client, info["client_id"], info["client_secret"]) == 200
    assert revoke_with(client, info["client_id"], info["client_secret"] + "x") == 401
    assert pbkdf2_calls == []


def test_secret_stored_by_an_earlier_version_with_pbkdf2_keeps_verifying(client, settings):
    """Issue 11: hashes keep their algorithm prefix; an old PBKDF2 secret still authenticates."""
    settings.PASSWORD_HASHERS = PRODUCTION_HASHERS
    info = register(client, token_endpoint_auth_method="client_secret_basic")
    old = make_password(info["client_secret"], hasher="pbkdf2_sha256")
    Application.objects.filter(client_id=info["client_id"]).update(client_secret=old)
    assert revoke_with(client, info["client_id"], info["client_secret"]) == 200
    assert revoke_with(client, info["client_id"], "wrong") == 401


def test_registration_access_token_is_stored_as_its_sha256_only(client):
    """MGMT-05: the RFC 7592 token is a SHA-256 checksum lookup, no password hasher."""
    info = register(client, token_endpoint_auth_method="none")
    token = get_access_token_model().objects.get(
        application__client_id=info["client_id"], scope=oauth2_settings.DCR_REGISTRATION_SCOPE
    )
    raw = info["registration_access_token"]
    assert token.token_checksum == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in token.token


def test_hasher_salts_each_secret_and_refuses_a_wrong_one():
    hasher = ClientSecretHasher()
    one = make_password("s" * 64, hasher=hasher)
    two = make_password("s" * 64, hasher=hasher)
    assert one != two
    assert hasher.verify("s" * 64, one)
    assert not hasher.verify("s" * 63, one)
    assert not hasher.must_update(one)
