"""The upstream-token vault: encryption at rest, key rotation, server-side refresh (UP-07, UP-08)."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError

from mcp_consent import flows, upstream, vault
from mcp_consent.models import UpstreamToken
from project.demo_upstream.models import RequestLog
from tests.browser_client import Browser, authorize_params
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db


def with_keys(settings, *keys: str) -> None:
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "ENCRYPTION_KEYS": list(keys)}


def test_encrypt_round_trip_and_no_plaintext(settings) -> None:
    """UP-07: ciphertext never contains the secret; the same secret encrypts differently each time."""
    with_keys(settings, Fernet.generate_key().decode())
    first, second = vault.encrypt("gho_secret_token"), vault.encrypt("gho_secret_token")
    assert "gho_secret_token" not in first and first != second
    assert vault.decrypt(first) == "gho_secret_token"
    assert vault.encrypt("") == "" and vault.decrypt("") == ""


def test_wrong_key_is_a_clear_error(settings) -> None:
    with_keys(settings, Fernet.generate_key().decode())
    ciphertext = vault.encrypt("secret")
    with_keys(settings, Fernet.generate_key().decode())
    with pytest.raises(vault.VaultError):
        vault.decrypt(ciphertext)


@pytest.fixture
def stored_token() -> UpstreamToken:
    browser = Browser()
    browser.login_upstream()
    browser.run_flow(authorize_params(MCPClientFactory()))
    return UpstreamToken.objects.get()


def test_key_rotation_command_reencrypts_under_the_new_key(settings) -> None:
    """Prepend a key, rotate, drop the old key: every secret still decrypts."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with_keys(settings, old)
    browser = Browser()
    browser.login_upstream()
    browser.run_flow(authorize_params(MCPClientFactory()))
    token = UpstreamToken.objects.get()
    plaintext = vault.decrypt(token.access_token_encrypted)

    with_keys(settings, new, old)
    out = StringIO()
    call_command("mcp_consent_rotate_keys", stdout=out)
    assert "re-encrypted 1 secret" in out.getvalue()

    with_keys(settings, new)
    assert vault.decrypt(UpstreamToken.objects.get().access_token_encrypted) == plaintext


def test_key_rotation_without_the_old_key_changes_nothing(settings, stored_token) -> None:
    before = stored_token.access_token_encrypted
    with_keys(settings, Fernet.generate_key().decode())
    with pytest.raises(CommandError, match="nothing was changed"):
        call_command("mcp_consent_rotate_keys", stdout=StringIO())
    assert UpstreamToken.objects.get().access_token_encrypted == before


def token_calls() -> int:
    return RequestLog.objects.filter(path__endswith="/login/oauth/access_token").count()


def test_refresh_replaces_a_rotated_refresh_token(stored_token) -> None:
    """UP-08: refreshed server-side; the upstream rotated the refresh token and we keep the new one."""
    old_access = vault.decrypt(stored_token.access_token_encrypted)
    old_refresh = vault.decrypt(stored_token.refresh_token_encrypted)
    refreshed = flows.refresh_upstream_token(stored_token, force=True)
    assert vault.decrypt(refreshed.access_token_encrypted) != old_access
    new_refresh = vault.decrypt(refreshed.refresh_token_encrypted)
    assert new_refresh and new_refresh != old_refresh
    # The old refresh token is dead at the upstream; the stored one works.
    with pytest.raises(upstream.UpstreamError):
        upstream.refresh(old_refresh)


def test_a_worker_holding_a_stale_row_does_not_refresh_again(stored_token) -> None:
    """UP-08: after one worker refreshed, another that read the row earlier uses the new token."""
    stale = UpstreamToken.objects.get(pk=stored_token.pk)
    flows.refresh_upstream_token(stored_token, force=True)
    calls = token_calls()
    result = flows.refresh_upstream_token(stale, force=True)
    assert token_calls() == calls
    assert result.access_token_encrypted == UpstreamToken.objects.get().access_token_encrypted


def test_a_fresh_token_is_not_refreshed(stored_token) -> None:
    calls = token_calls()
    assert flows.refresh_upstream_token(stored_token) == stored_token
    assert token_calls() == calls
