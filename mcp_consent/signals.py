"""Signals for projects, sent with ``transaction.on_commit``.

Internal code calls functions; these exist so a project can react (notify, sync) without
patching mcp_consent.
"""

from django.dispatch import Signal

client_registered = Signal()  # client: MCPClient
consent_granted = Signal()  # consent: Consent
consent_revoked = Signal()  # consent: Consent
