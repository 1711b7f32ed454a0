"""SEC-06 and issue 11: keyed audit chains, several of them, and no TRUNCATE of the trail.

Rows written before this migration keep their unkeyed SHA-256 hashes: they get
``version = 1`` and ``chain = 0`` (the old single chain becomes chain 0, its head row chain
0's head), and verify them as they were written. New rows are HMAC-SHA256 (``version = 2``).
"""

from django.db import migrations, models

CHOICES = [(1, 'SHA-256, unkeyed (before SEC-06)'), (2, 'HMAC-SHA256 with an audit key')]

# SEC-06: the row triggers of 0002 refuse UPDATE and DELETE; TRUNCATE fires no row trigger,
# so a statement-level trigger refuses it too, on the events and on the chain heads. An
# owner role can still drop or disable triggers: docs/audit-and-revocation.md says what
# then still detects a rewrite (the key, the anchor).
PG_NO_TRUNCATE = """
CREATE OR REPLACE FUNCTION mcp_consent_audit_no_truncate() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'mcp_consent audit trail cannot be truncated';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER mcp_consent_auditevent_no_truncate
    BEFORE TRUNCATE ON mcp_consent_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION mcp_consent_audit_no_truncate();
CREATE TRIGGER mcp_consent_auditchainhead_no_truncate
    BEFORE TRUNCATE ON mcp_consent_auditchainhead
    FOR EACH STATEMENT EXECUTE FUNCTION mcp_consent_audit_no_truncate();
"""
PG_NO_TRUNCATE_REVERSE = """
DROP TRIGGER IF EXISTS mcp_consent_auditevent_no_truncate ON mcp_consent_auditevent;
DROP TRIGGER IF EXISTS mcp_consent_auditchainhead_no_truncate ON mcp_consent_auditchainhead;
DROP FUNCTION IF EXISTS mcp_consent_audit_no_truncate();
"""


def seal_legacy_rows(apps, schema_editor):
    # Keyed under the audit key configured now: set MCP_CONSENT["AUDIT_KEYS"] before migrating.
    from mcp_consent import audit

    audit.seal_legacy_rows(apps.get_model('mcp_consent', 'AuditEvent'), apps.get_model('mcp_consent', 'AuditChainHead'))


def no_truncate_on_postgresql(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_NO_TRUNCATE)


def allow_truncate_on_postgresql(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_NO_TRUNCATE_REVERSE)


class Migration(migrations.Migration):

    dependencies = [
        ('mcp_consent', '0003_consent_auditor_group'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditchainhead',
            name='chain',
            field=models.PositiveSmallIntegerField(default=0, unique=True),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='chain',
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='key_id',
            field=models.CharField(blank=True, max_length=16),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='version',
            # Existing rows are the unkeyed ones; new rows default to the keyed version.
            field=models.PositiveSmallIntegerField(choices=CHOICES, default=1),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='version',
            field=models.PositiveSmallIntegerField(choices=CHOICES, default=2),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(fields=['chain', 'id'], name='mcp_consent_audit_chain_idx'),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='action',
            field=models.CharField(choices=[('client_registered', 'Client registered'), ('client_updated', 'Client updated'), ('client_disabled', 'Client disabled'), ('client_deleted', 'Client deleted'), ('registration_refused', 'Registration refused'), ('consent_shown', 'Consent page shown'), ('consent_approved', 'Consent approved'), ('consent_denied', 'Consent denied'), ('consent_granted', 'Consent recorded after sign-in'), ('consent_revoked', 'Consent revoked'), ('consent_expired', 'Consent expired'), ('callback_accepted', 'Upstream callback accepted'), ('callback_refused', 'Upstream callback refused'), ('signed_in', 'Signed in through the upstream'), ('token_issued', 'Token issued'), ('token_refreshed', 'Token refreshed'), ('token_revoked', 'Token revoked'), ('refresh_token_reuse', 'Refresh-token reuse detected'), ('code_reuse', 'Authorization-code reuse detected'), ('upstream_token_revoked', 'Upstream token revoked'), ('rate_limited', 'Rate limit hit'), ('audit_chain_keyed', 'Audit chain keyed (older rows sealed)')], db_index=True, max_length=32),
        ),
        migrations.RunPython(seal_legacy_rows, migrations.RunPython.noop),
        migrations.RunPython(no_truncate_on_postgresql, allow_truncate_on_postgresql),
    ]
