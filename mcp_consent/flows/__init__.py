"""Every write of mcp_consent, each one transaction, one module per flow.

Views, the admin and management commands call these functions; nothing else writes.
Security-relevant writes append their AuditEvent in the same transaction. Writes that lock
several rows take them in the one order named in flows/locks.py (SEC-12).

Callers import the flow's module and name it, as allauth's ``internal/flows`` is used
(issue 12): ``from mcp_consent.flows import revocation`` then ``revocation.revoke_consent(...)``,
or ``from mcp_consent.flows.revocation import revoke_consent``. Nothing is re-exported here, so
each function has one import path and a test patches it where its callers look it up.

- ``abuse``: refused and rate-limited requests, audited.
- ``authorization``: the authorization transaction, from the consent page to our code.
- ``clients``: registering, updating, disabling and deleting clients; CIMD domain rules.
- ``common``: the request's client address and user agent, as the flows record them.
- ``identities``: the upstream person behind a local user, and signing in as them.
- ``locks``: the one order in which flows lock rows (SEC-12).
- ``resource_servers``: the introspection credentials of a resource server.
- ``revocation``: consents and tokens revoked, with their cascade.
- ``tokens``: our tokens issued, refreshed, reused and revoked.
- ``upstream_tokens``: the upstream token, stored, refreshed and used.
"""
