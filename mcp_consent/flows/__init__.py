"""Every write of mcp_consent, each one transaction.

Views, the admin and management commands call these functions; nothing else writes.
Security-relevant writes append their AuditEvent in the same transaction. Writes that lock
several rows take them in the one order named in flows/locks.py (SEC-12).
"""

from ..vault import secret_hash
from .abuse import record_rate_limited, record_registration_refused
from .authorization import (
    CallbackRefused,
    ClientChanged,
    GrantRefused,
    NotTheRememberedPerson,
    PendingUpstream,
    begin_sign_in,
    begin_upstream_authorization,
    check_client_as_approved,
    complete_authorization,
    consume_transaction,
    fail_transaction,
    record_consent_shown,
    record_denial,
    record_issued_code,
)
from .clients import (
    RegisteredClient,
    client_record_for,
    delete_client,
    disable_client,
    record_client,
    register_client,
    save_cimd_domain_rule,
    update_client,
)
from .common import client_ip, user_agent
from .identities import UpstreamGrant, complete_sign_in
from .resource_servers import create_resource_server
from .revocation import (
    expire_consent,
    revoke_consent,
    revoke_consents,
    revoke_oauth_tokens,
    revoke_tokens,
)
from .tokens import (
    consent_is_live,
    consent_until,
    live_until,
    record_refresh_token_reuse,
    record_token_issued,
    record_token_revoked,
    revoke_tokens_of_reused_code,
    token_owner,
)
from .upstream_tokens import REFRESH_MARGIN, refresh_upstream_token

__all__ = [
    "record_rate_limited",
    "record_registration_refused",
    "REFRESH_MARGIN",
    "CallbackRefused",
    "ClientChanged",
    "GrantRefused",
    "NotTheRememberedPerson",
    "PendingUpstream",
    "RegisteredClient",
    "UpstreamGrant",
    "begin_sign_in",
    "begin_upstream_authorization",
    "check_client_as_approved",
    "client_ip",
    "client_record_for",
    "save_cimd_domain_rule",
    "complete_authorization",
    "complete_sign_in",
    "consume_transaction",
    "create_resource_server",
    "delete_client",
    "disable_client",
    "expire_consent",
    "fail_transaction",
    "consent_is_live",
    "consent_until",
    "live_until",
    "record_client",
    "record_refresh_token_reuse",
    "record_token_issued",
    "record_token_revoked",
    "token_owner",
    "record_consent_shown",
    "record_denial",
    "record_issued_code",
    "refresh_upstream_token",
    "register_client",
    "revoke_consent",
    "revoke_consents",
    "revoke_oauth_tokens",
    "revoke_tokens",
    "revoke_tokens_of_reused_code",
    "secret_hash",
    "update_client",
    "user_agent",
]
