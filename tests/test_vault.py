"""The upstream-token vault: encryption at rest, key rotation, server-side refresh (UP-07, UP-08)."""

from __future__ import annotations

import secrets
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError

from mcp_consent import upstream, vault
from mcp_consent.flows import upstream_tokens
from mcp_consent.models import UpstreamToken
from project.demo_upstream.models import RequestLog
from tests.browser_client import Browser, authorize_params
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db


def with_keys(settings, *keys: str) -> None:
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "ENCRYPTION_KEYS": list(keys)}


AD = "upstream_token:1:access"


def test_encrypt_round_trip_and_no_plaintext(settings) -> None:
    """UP-07: ciphertext never contains the secret; the same secret encrypts differently each time."""
    with_keys(settings, Fernet.generate_key().decode())
    first, second = vault.encrypt("gho_secret_token", AD), vault.encrypt("gho_secret_token", AD)
    assert "gho_secret_token" not in first
    assert first != second
    assert vault.decrypt(first, AD) == "gho_secret_token"
    assert vault.encrypt("", AD) == ""
    assert vault.decrypt("", AD) == ""


def test_wrong_key_is_a_clear_error(settings) -> None:
    with_keys(settings, Fernet.generate_key().decode())
    ciphertext = vault.encrypt("secret", AD)
    with_keys(settings, Fernet.generate_key().decode())
    with pytest.raises(vault.VaultError, match="not configured"):
        vault.decrypt(ciphertext, AD)


def test_sec10_aes_gcm_names_its_key_and_refuses_other_associated_data(settings) -> None:
    """SEC-10: v2:<key id>:..., AES-GCM; another row or purpose, or one flipped byte, fails."""
    with_keys(settings, Fernet.generate_key().decode())
    ciphertext = vault.encrypt("gho_secret_token", AD)
    fmt, key_id, _ = ciphertext.split(":", 2)
    assert fmt == "v2"
    assert len(key_id) == 8
    for other in ("upstream_token:2:access", "upstream_token:1:refresh", ""):
        with pytest.raises(vault.VaultError, match="for this row"):
            vault.decrypt(ciphertext, other)
    flipped = ciphertext[:-3] + ("A" if ciphertext[-3] != "A" else "B") + ciphertext[-2:]
    with pytest.raises(vault.VaultError):
        vault.decrypt(flipped, AD)


def test_sec10_rotation_by_key_list_first_encrypts_all_decrypt(settings) -> None:
    """SEC-10: a new key first: new ciphertexts use it, old ones still decrypt by their id."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with_keys(settings, old)
    before = vault.encrypt("secret", AD)
    with_keys(settings, new, old)
    after = vault.encrypt("secret", AD)
    assert before.split(":")[1] != after.split(":")[1]
    assert vault.decrypt(before, AD) == vault.decrypt(after, AD) == "secret"
    assert vault.rotate(before, AD).split(":")[1] == after.split(":")[1]


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
    plaintext = vault.upstream_access_token(token)

    with_keys(settings, new, old)
    out = StringIO()
    call_command("mcp_consent_rotate_keys", stdout=out)
    assert "re-encrypted 1 secret" in out.getvalue()

    with_keys(settings, new)
    assert vault.upstream_access_token(UpstreamToken.objects.get()) == plaintext


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
    old_access = vault.upstream_access_token(stored_token)
    old_refresh = vault.upstream_refresh_token(stored_token)
    refreshed = upstream_tokens.refresh_upstream_token(stored_token, force=True)
    assert vault.upstream_access_token(refreshed) != old_access
    new_refresh = vault.upstream_refresh_token(refreshed)
    assert new_refresh
    assert new_refresh != old_refresh
    # The old refresh token is dead at the upstream; the stored one works.
    with pytest.raises(upstream.UpstreamError):
        upstream.refresh(old_refresh)


def test_a_worker_holding_a_stale_row_does_not_refresh_again(stored_token) -> None:
    """UP-08: after one worker refreshed, another that read the row earlier uses the new token."""
    stale = UpstreamToken.objects.get(pk=stored_token.pk)
    upstream_tokens.refresh_upstream_token(stored_token, force=True)
    calls = token_calls()
    result = upstream_tokens.refresh_upstream_token(stale, force=True)
    assert token_calls() == calls
    assert result.access_token_encrypted == UpstreamToken.objects.get().access_token_encrypted


def test_a_fresh_token_is_not_refreshed(stored_token) -> None:
    calls = token_calls()
    assert upstream_tokens.refresh_upstream_token(stored_token) == stored_token
    assert token_calls() == calls


# --- SEC-10: ciphertexts bound to their row --------------------------------------------------


def two_stored_tokens() -> tuple[UpstreamToken, UpstreamToken]:
    first = Browser()
    first.login_upstream()
    first.run_flow(authorize_params(MCPClientFactory()))
    second = Browser()
    second.login_upstream("hubot")
    second.run_flow(authorize_params(MCPClientFactory()))
    a, b = UpstreamToken.objects.order_by("pk")
    assert a.consent.user != b.consent.user
    return a, b


def test_sec10_a_token_moved_into_another_persons_row_does_not_decrypt() -> None:
    """SEC-10: a database writer copies one person's upstream token into another person's
    consent row: it no longer decrypts there (nor as the other field of its own row), so
    the other person's MCP client can never use it."""
    victim, attacker = two_stored_tokens()
    assert vault.upstream_access_token(victim)
    UpstreamToken.objects.filter(pk=attacker.pk).update(
        access_token_encrypted=victim.access_token_encrypted,
        refresh_token_encrypted=victim.refresh_token_encrypted,
    )
    moved = UpstreamToken.objects.get(pk=attacker.pk)
    with pytest.raises(vault.VaultError, match="for this row"):
        vault.upstream_access_token(moved)
    with pytest.raises(vault.VaultError, match="for this row"):
        vault.upstream_refresh_token(moved)
    UpstreamToken.objects.filter(pk=victim.pk).update(
        refresh_token_encrypted=victim.access_token_encrypted
    )
    with pytest.raises(vault.VaultError):
        vault.upstream_refresh_token(UpstreamToken.objects.get(pk=victim.pk))


def test_sec10_fernet_ciphertexts_of_earlier_versions_decrypt_and_rotate_binds_them(
    settings, stored_token
) -> None:
    """SEC-10: dual read -- a Fernet ciphertext (earlier versions) still decrypts with the
    same key; `mcp_consent_rotate_keys` re-encrypts it to the AES-GCM format bound to its row."""
    key = Fernet.generate_key().decode()
    with_keys(settings, key)
    legacy = Fernet(key).encrypt(b"gho_legacy_access").decode()
    UpstreamToken.objects.filter(pk=stored_token.pk).update(
        access_token_encrypted=legacy, refresh_token_encrypted=""
    )
    row = UpstreamToken.objects.get(pk=stored_token.pk)
    assert vault.upstream_access_token(row) == "gho_legacy_access"
    call_command("mcp_consent_rotate_keys", stdout=StringIO())
    row = UpstreamToken.objects.get(pk=stored_token.pk)
    assert row.access_token_encrypted.startswith("v2:")
    assert vault.upstream_access_token(row) == "gho_legacy_access"
    with pytest.raises(vault.VaultError):
        vault.decrypt(
            row.access_token_encrypted, vault.upstream_token_context(row.pk + 999, "access")
        )


def test_generate_key_command_prints_a_usable_key(settings) -> None:
    """The documented way to make ENCRYPTION_KEYS (and AUDIT_KEYS) entries still works."""
    out = StringIO()
    call_command("mcp_consent_generate_key", stdout=out)
    with_keys(settings, out.getvalue().strip())
    assert vault.decrypt(vault.encrypt("x", AD), AD) == "x"


# --- Mutation testing (issue 8): what the vault must keep doing across versions --------------

# Written by this version's encrypt() (random nonce) and kept as data: a stored upstream token
# must decrypt after an upgrade with the same configured key. Any change to how a key is
# derived from its configured value (HKDF salt, info, length) or to the key id would make
# every stored upstream grant unreadable at once.
KNOWN_KEY = "bWNwLWNvbnNlbnQga25vd24tYW5zd2VyIGtleSAzMmI="
KNOWN_CIPHERTEXT = "v2:66df312c:yTTZCJoSedtNuQdHJi_PaeE43YT_YxwVFqNi7GaH7B9z0FAMc07AWpOH-5I="
KNOWN_SECRET_KEY = "mcp-consent known-answer secret key"
KNOWN_DERIVED_CIPHERTEXT = (
    "v2:afb1914d:ExSWzowWyg7FX9hwSJm5VnU59mdRT4Bg6G6bh-Nqqt6bk90GOV5aOHt8NVg="
)


def test_sec10_a_ciphertext_stored_by_this_version_keeps_decrypting(settings) -> None:
    """SEC-10 (existing ciphertexts keep decrypting): a stored v2 ciphertext under a known
    key decrypts, and names that key by the id this version gives it."""
    with_keys(settings, KNOWN_KEY)
    assert vault.decrypt(KNOWN_CIPHERTEXT, AD) == "gho_known_answer"
    assert vault.encrypt("x", AD).split(":")[1] == "66df312c"


def test_sec10_without_encryption_keys_the_key_is_derived_from_secret_key(settings) -> None:
    """SEC-10: the DEBUG-only fallback (E002 refuses it elsewhere) derives its key from
    SECRET_KEY, stably across versions; another SECRET_KEY cannot read what it wrote."""
    with_keys(settings)
    settings.SECRET_KEY = KNOWN_SECRET_KEY
    assert vault.decrypt(KNOWN_DERIVED_CIPHERTEXT, AD) == "gho_known_answer"
    settings.SECRET_KEY = KNOWN_SECRET_KEY + " changed"
    with pytest.raises(vault.VaultError, match="not configured"):
        vault.decrypt(KNOWN_DERIVED_CIPHERTEXT, AD)


def test_sec10_a_key_that_is_not_a_fernet_key_does_not_hide_the_ones_after_it(settings) -> None:
    """SEC-10 dual read: ENCRYPTION_KEYS may hold a new key that is no Fernet key before
    the Fernet key of earlier versions; the earlier format still reads with the later key."""
    old = Fernet.generate_key().decode()
    legacy = Fernet(old).encrypt(b"gho_legacy_access").decode()
    with_keys(settings, "a new key that is not in Fernet form", old)
    assert vault.decrypt(legacy, AD) == "gho_legacy_access"
    assert vault.rotate(legacy, AD).startswith("v2:")


def test_sec10_each_refusal_names_its_cause(settings) -> None:
    """SEC-10: a secret that does not decrypt is refused with the reason an operator acts
    on (a key missing, a moved or altered row, a corrupt value, an unreadable old format)."""
    with_keys(settings, KNOWN_KEY)
    fernet_key = Fernet.generate_key().decode()
    legacy = Fernet(fernet_key).encrypt(b"gho_legacy_access").decode()
    cases = [
        (legacy, "stored secret cannot be decrypted with the configured keys"),
        ("v2:66df312c:not*base64", "stored secret is not a vault ciphertext"),
        ("v2:66df312c", "stored secret is not a vault ciphertext"),
        (
            KNOWN_CIPHERTEXT.replace("yTTZ", "yTTA"),
            "stored secret does not decrypt for this row (moved from another, or altered)",
        ),
        (
            "v2:0badbeef:" + KNOWN_CIPHERTEXT.split(":")[2],
            "stored secret was encrypted with key 0badbeef, which is not configured",
        ),
    ]
    for ciphertext, message in cases:
        with pytest.raises(vault.VaultError) as refused:
            vault.decrypt(ciphertext, AD)
        assert str(refused.value) == message, ciphertext
    with_keys(settings, "a new key that is not in Fernet form")
    with pytest.raises(vault.VaultError) as refused:
        vault.decrypt(legacy, AD)
    assert str(refused.value) == "no configured key can read the earlier (Fernet) format"


def test_sec10_a_segment_put_before_the_key_id_is_refused(settings) -> None:
    """SEC-10: the key id is the field right after the format; a value with another field
    in front of the id is not this vault's and does not decrypt."""
    with_keys(settings, KNOWN_KEY)
    shifted = KNOWN_CIPHERTEXT.replace("v2:", "v2:0badbeef:", 1)
    with pytest.raises(vault.VaultError, match="key 0badbeef, which is not configured"):
        vault.decrypt(shifted, AD)


def test_sec02_a_crash_while_encrypting_keeps_the_plaintext_out_of_the_error_report(
    settings,
) -> None:
    """SEC-02: encrypt() holds the upstream token in clear (the refresh path calls it under
    a frame that hides other names). When it fails -- here a configured key that is not a
    string, a settings mistake -- Django's error report must not show that token."""
    import sys

    from django.views.debug import ExceptionReporter

    secret = "gho_" + secrets.token_hex(20)
    with_keys(settings, None)  # type: ignore[arg-type]
    try:
        vault.encrypt(secret, AD)
    except AttributeError:
        exc_type, exc_value, tb = sys.exc_info()
    else:
        pytest.fail("a key that is not a string must not encrypt")
    # From vault.encrypt down (this test's own frame holds the secret, as a caller's would).
    reporter = ExceptionReporter(None, exc_type, exc_value, tb.tb_next)
    text, html = reporter.get_traceback_text(), reporter.get_traceback_html()
    for report in (text, html):
        assert "encrypt" in report  # the failing frames are in the report ...
        assert secret not in report  # ... without the plaintext they held
