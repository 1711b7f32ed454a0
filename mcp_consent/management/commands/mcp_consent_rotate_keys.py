"""Re-encrypt every stored upstream secret under the newest key (key rotation, UP-07)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from mcp_consent import vault
from mcp_consent.models import AuthorizationTransaction, UpstreamToken


class Command(BaseCommand):
    help = (
        "Re-encrypt upstream tokens and pending PKCE verifiers with the first key of "
        "MCP_CONSENT['ENCRYPTION_KEYS'] (AES-GCM bound to their row; earlier Fernet ciphertexts "
        "are converted). Run after prepending a new key or upgrading; then drop the old key."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        rotated = 0
        try:
            with transaction.atomic():
                for token in UpstreamToken.objects.select_for_update().iterator():
                    # SEC-10: Fernet ciphertexts of earlier versions become bound ones here.
                    token.access_token_encrypted = vault.rotate(
                        token.access_token_encrypted,
                        vault.upstream_token_context(token.consent_id, "access"),
                    )
                    token.refresh_token_encrypted = vault.rotate(
                        token.refresh_token_encrypted,
                        vault.upstream_token_context(token.consent_id, "refresh"),
                    )
                    token.save(
                        update_fields=[
                            "access_token_encrypted",
                            "refresh_token_encrypted",
                            "updated_at",
                        ]
                    )
                    rotated += 1
                pending = AuthorizationTransaction.objects.select_for_update().filter(
                    consumed_at__isnull=True
                )
                for tx in pending.exclude(code_verifier_encrypted=""):
                    tx.code_verifier_encrypted = vault.rotate(
                        tx.code_verifier_encrypted, vault.verifier_context(tx.state_hash)
                    )
                    tx.save(update_fields=["code_verifier_encrypted"])
                    rotated += 1
        except vault.VaultError as exc:
            # Nothing is half-rotated: the transaction is rolled back.
            raise CommandError(
                f"{exc}; nothing was changed. Is the old key still in ENCRYPTION_KEYS?"
            ) from exc
        self.stdout.write(f"re-encrypted {rotated} secret(s) under the newest key")
