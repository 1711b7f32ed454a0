"""Print a new key for MCP_CONSENT["ENCRYPTION_KEYS"] (or AUDIT_KEYS): 32 random bytes, base64."""

from typing import Any

from django.core.management.base import BaseCommand

from mcp_consent import vault


class Command(BaseCommand):
    help = "Print a new encryption key for MCP_CONSENT['ENCRYPTION_KEYS'] (put it first to rotate)."
    # It runs before the project is configured (no key, no upstream yet): the system checks
    # would refuse exactly the settings it exists to complete.
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(vault.generate_key())
