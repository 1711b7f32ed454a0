"""The operators' audit tool: everything recorded is read-only, no secret is
shown, and every action calls the same flow functions as the endpoints and the user's page.

Actions: MCP clients — disable, delete (the revocation cascade); consents — revoke with a
reason; DOT's tokens and codes — revoke with the consent behind them (SEC-09); audit
events — CSV export (SEC-07). The "consent auditor" group (data migration 0003) has view
permissions only, so it sees all of it and can change none of it. Every list costs the
same at a million rows as at a hundred (base.py, issue 11).
"""

from . import audit_trail, cimd_rules, clients, consents, oauth_tokens

__all__ = ["audit_trail", "cimd_rules", "clients", "consents", "oauth_tokens"]
