"""The records of mcp_consent.

DOT's Application stays what oauthlib validates; MCPClient and RedirectURI hold what the
consent page and the operators need to know about each client. Consent is the per-user
registry of approvals (CD-01); AuthorizationTransaction is the pending upstream hop
(CD-41..48); UpstreamToken is the encrypted vault entry of one consent (UP-07).
"""

from __future__ import annotations

import unicodedata
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from oauth2_provider.settings import oauth2_settings


class RegistrationSource(models.TextChoices):
    DCR = "dcr", _("Dynamic registration (RFC 7591)")
    CIMD = "cimd", _("Client ID metadata document")
    ADMIN = "admin", _("Registered by an operator")


# ABUSE-03: the sources anyone can add clients through; never-used ones of these are bounded
# (registration/budget.py), an operator's are not.
SELF_REGISTERED_SOURCES = (RegistrationSource.DCR.value, RegistrationSource.CIMD.value)


class MCPClient(models.Model):
    """What mcp_consent knows about one OAuth client beyond DOT's Application."""

    application = models.OneToOneField(
        oauth2_settings.APPLICATION_MODEL, on_delete=models.CASCADE, related_name="mcp_client"
    )
    registration_source = models.CharField(max_length=8, choices=RegistrationSource.choices)
    verified = models.BooleanField(
        default=False,
        help_text=_("Admin-registered, or a CIMD client whose domain served its metadata."),
    )
    client_uri = models.URLField(max_length=2048, blank=True)
    logo_uri = models.URLField(max_length=2048, blank=True)
    software_id = models.CharField(max_length=255, blank=True)
    software_version = models.CharField(max_length=255, blank=True)
    application_type = models.CharField(max_length=16, blank=True)
    metadata = models.JSONField(default=dict, blank=True, help_text=_("Registered metadata."))
    # Bumped whenever anything the consent page shows changes (name, redirect URIs, URIs of
    # the client): a consent given for an older version is not consent for this one (CD-04,
    # CIMD-12, MGMT-06).
    metadata_version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    # ABUSE-03: the address a DCR or CIMD client was registered from, so never-used clients
    # are bounded per address instead of for everyone at once.
    registered_from = models.GenericIPAddressField(null=True, blank=True)
    # DCR-19: the self-asserted name as the consent page compares names (``name_key``), so
    # that "other applications of this name" is an index lookup, not a scan of every client
    # (issue 11: 100 ms per consent page at 100,000 clients). Written by flows.clients only.
    name_key = models.CharField(max_length=255, blank=True, db_index=True, editable=False)

    class Meta:
        verbose_name = _("MCP client")
        indexes = [
            # ABUSE-03's count before every registration (registration/budget.py): the
            # never-used DCR and CIMD clients of the last hour, all addresses and this one,
            # from this index alone: it holds every column the count reads, the two of its
            # condition included (SQLite reads the table to check them otherwise). The count
            # spells the condition with literals, as here: SQLite uses a partial index only
            # for a query whose WHERE contains the index's condition as written.
            models.Index(
                fields=["created_at", "registered_from", "registration_source", "last_used_at"],
                name="mcp_client_unused_idx",
                condition=models.Q(
                    last_used_at__isnull=True,
                    registration_source__in=list(SELF_REGISTERED_SOURCES),
                ),
            )
        ]

    def __str__(self) -> str:
        return self.display_name

    @staticmethod
    def name_key_of(name: str) -> str:
        """Two names a person cannot tell apart compare equal: case-folded after Unicode
        compatibility normalisation (fullwidth, ligature and other lookalike forms)."""
        return unicodedata.normalize("NFKC", name or "").casefold().strip()[:255]

    @property
    def display_name(self) -> str:
        """The client's self-asserted name, else its id (CIMD: the hostname, CD-10)."""
        name = (self.application.name or "").strip()
        if name:
            return name
        if self.registration_source == RegistrationSource.CIMD:
            return urlsplit(self.application.client_id).hostname or self.application.client_id
        return self.application.client_id

    @property
    def is_disabled(self) -> bool:
        return self.disabled_at is not None


class RedirectURI(models.Model):
    """One registered redirect URI, exact string (CD-30), with its history."""

    client = models.ForeignKey(MCPClient, on_delete=models.CASCADE, related_name="redirect_uris")
    uri = models.CharField(max_length=2048)
    added_at = models.DateTimeField(default=timezone.now)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("redirect URI")
        ordering = ["added_at", "pk"]

    def __str__(self) -> str:
        return self.uri


def live_consent(prefix: str = "") -> models.Q:
    """THE definition of a live consent, as a Q (``prefix`` for a relation: ``"consents__"``).

    Not revoked, not retired by the cleanup command, and not past ``expires_at``: expiry holds
    by itself, whether or not the cleanup command has run (SEC-01).
    """
    return models.Q(
        **{
            f"{prefix}revoked_at__isnull": True,
            f"{prefix}expired_at__isnull": True,
            f"{prefix}expires_at__gt": timezone.now(),
        }
    )


class ConsentQuerySet(models.QuerySet):
    """The states of consents, each defined once (as allauth's EmailAddressManager does)."""

    def live(self) -> ConsentQuerySet:
        """Consents that grant access now (SEC-01): see ``live_consent``."""
        return self.filter(live_consent())

    def unretired(self) -> ConsentQuerySet:
        """Not yet revoked or retired: live ones and lapsed ones whose cascade has not run.

        What a revocation cascade works on, so the tokens of a lapsed consent go with it.
        """
        return self.filter(revoked_at__isnull=True, expired_at__isnull=True)

    def revoked(self) -> ConsentQuerySet:
        """Revoked by the user, an operator or a cascade (the admin's "revoked" status)."""
        return self.filter(revoked_at__isnull=False)

    def expired(self) -> ConsentQuerySet:
        """Not revoked and not live: retired by the cleanup command or past ``expires_at``
        (the admin's "expired" status, SEC-01)."""
        return self.filter(revoked_at__isnull=True).exclude(live_consent())

    def lapsed(self) -> ConsentQuerySet:
        """Past ``expires_at`` but not retired yet: their tokens and upstream grant still
        exist and must go (SEC-01: when next touched, or swept by the cleanup command)."""
        return self.unretired().filter(expires_at__lte=timezone.now())


class Consent(models.Model):
    """One user's approval of one client, bound to exactly what the consent page showed."""

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        EXPIRED = "expired", _("Expired")
        REVOKED = "revoked", _("Revoked")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mcp_consents"
    )
    client = models.ForeignKey(MCPClient, on_delete=models.CASCADE, related_name="consents")
    redirect_uri = models.CharField(max_length=2048)
    scopes = models.CharField(max_length=1024, help_text=_("Approved MCP scopes, space separated."))
    upstream_scopes = models.CharField(max_length=1024, blank=True)
    resource = models.CharField(max_length=2048, help_text=_("Canonical MCP resource URI."))
    client_metadata_version = models.PositiveIntegerField()
    granted_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoke_reason = models.CharField(max_length=255, blank=True)
    expired_at = models.DateTimeField(
        null=True, blank=True, help_text=_("When the hygiene command retired it after expires_at.")
    )
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)

    objects = ConsentQuerySet.as_manager()

    class Meta:
        ordering = ["-granted_at"]
        indexes = [
            models.Index(fields=["user", "client"]),
            # The admin's default order (with the pk it adds): a backward index scan, not a
            # sort of every consent (issue 11).
            models.Index(fields=["granted_at", "id"], name="mcp_consent_granted_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user} → {self.client} ({self.scopes})"

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()

    @property
    def status(self) -> str:
        """The state ``live_consent`` defines, for one loaded row."""
        if self.revoked_at:
            return self.Status.REVOKED
        if self.expired_at is not None or self.expires_at <= timezone.now():
            return self.Status.EXPIRED
        return self.Status.ACTIVE


class AuthorizationTransaction(models.Model):
    """The pending upstream hop of one approved authorization request (CD-41..48).

    Created only after the user approved (CD-41), found by the hash of the upstream
    ``state``, bound to the browser by the hash of the nonce in the __Host- cookie, and
    consumed exactly once by a conditional UPDATE (CD-45).
    """

    class Outcome(models.TextChoices):
        PENDING = "pending", _("Pending")
        COMPLETED = "completed", _("Completed")
        DENIED = "denied", _("Denied upstream")
        FAILED = "failed", _("Failed")

    class Purpose(models.TextChoices):
        AUTHORIZE = "authorize", _("Authorize an MCP client")
        SIGN_IN = "sign_in", _("Sign in to Connected apps")

    state_hash = models.CharField(max_length=64, unique=True)
    binding_hash = models.CharField(max_length=64)
    purpose = models.CharField(max_length=10, choices=Purpose.choices, default=Purpose.AUTHORIZE)
    # Null only for SIGN_IN: the person signs in to manage their apps, no client involved.
    client = models.ForeignKey(
        MCPClient, null=True, blank=True, on_delete=models.CASCADE, related_name="transactions"
    )
    # The validated authorization request, re-validated by DOT on resume (CD-48).
    authorization_query = models.TextField()
    redirect_uri = models.CharField(max_length=2048)
    scopes = models.CharField(max_length=1024)
    upstream_scopes = models.CharField(max_length=1024)
    resource = models.CharField(max_length=2048)
    code_verifier_encrypted = models.TextField(blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # SEC-04 / CD-01: the hop was approved by ``user``'s remembered consent, not on the page:
    # it may complete only for that same person.
    remembered = models.BooleanField(default=False)
    # SEC-05: the client metadata version the person approved; a client changed while the
    # person was at the upstream gets no code (null: a hop started before this was recorded).
    client_metadata_version = models.PositiveIntegerField(null=True, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    consumed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.PENDING)
    failure_reason = models.CharField(max_length=255, blank=True)
    consent = models.ForeignKey(
        Consent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # AS-41: the MCP authorization code this transaction produced (hash only) and the
    # refresh-token family it was redeemed into, so a second redemption revokes them.
    code_hash = models.CharField(max_length=64, blank=True, db_index=True)
    token_family = models.UUIDField(null=True, blank=True)
    code_redeemed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["expires_at"])]

    def __str__(self) -> str:
        return f"Authorization transaction #{self.pk} ({self.outcome})"


class UpstreamIdentity(models.Model):
    """(upstream provider, subject) → local Django user."""

    provider = models.CharField(
        max_length=255, help_text=_("The upstream issuer or authorize URL.")
    )
    subject = models.CharField(max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="upstream_identities"
    )
    login = models.CharField(max_length=255, blank=True)
    email = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = _("upstream identities")
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "subject"], name="mcp_consent_identity_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.login or self.subject} @ {self.provider}"


class UpstreamToken(models.Model):
    """The upstream grant of one consent, encrypted at rest (UP-07, AS-47)."""

    consent = models.OneToOneField(Consent, on_delete=models.CASCADE, related_name="upstream_token")
    identity = models.ForeignKey(UpstreamIdentity, on_delete=models.CASCADE, related_name="tokens")
    access_token_encrypted = models.TextField()
    refresh_token_encrypted = models.TextField(blank=True)
    token_type = models.CharField(max_length=32, default="bearer")
    scopes = models.CharField(max_length=1024, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    refresh_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Upstream token of consent #{self.consent_id}"


class AuditEventQuerySet(models.QuerySet):
    """Append-only: bulk updates and deletes are refused like single ones."""

    def update(self, **kwargs):  # type: ignore[no-untyped-def]
        raise AuditImmutableError("audit events cannot be changed")

    def delete(self):  # type: ignore[no-untyped-def]
        raise AuditImmutableError("audit events cannot be deleted")


class AuditImmutableError(Exception):
    """An attempt to change or delete an AuditEvent."""


class AuditEvent(models.Model):
    """One security-relevant event, chained by a keyed hash to the one before it in its chain.

    Written by ``mcp_consent.audit.record`` in the same transaction as the change it
    describes. No foreign keys: deleting a user or a client must not touch the trail, so the
    subjects are kept as plain identifiers. Never holds a secret. SEC-06: ``version`` says how
    ``hash`` was computed (1: unkeyed SHA-256 of rows written before the keyed chain, 2:
    HMAC-SHA256 under the audit key ``key_id``); ``chain`` is the chain the row belongs to.
    """

    class Version(models.IntegerChoices):
        SHA256 = 1, _("SHA-256, unkeyed (before SEC-06)")
        HMAC_SHA256 = 2, _("HMAC-SHA256 with an audit key")

    class Action(models.TextChoices):
        CLIENT_REGISTERED = "client_registered", _("Client registered")
        CLIENT_UPDATED = "client_updated", _("Client updated")
        CLIENT_DISABLED = "client_disabled", _("Client disabled")
        CLIENT_DELETED = "client_deleted", _("Client deleted")
        REGISTRATION_REFUSED = "registration_refused", _("Registration refused")
        CONSENT_SHOWN = "consent_shown", _("Consent page shown")
        CONSENT_APPROVED = "consent_approved", _("Consent approved")
        CONSENT_DENIED = "consent_denied", _("Consent denied")
        CONSENT_GRANTED = "consent_granted", _("Consent recorded after sign-in")
        CONSENT_REVOKED = "consent_revoked", _("Consent revoked")
        CONSENT_EXPIRED = "consent_expired", _("Consent expired")
        CALLBACK_ACCEPTED = "callback_accepted", _("Upstream callback accepted")
        CALLBACK_REFUSED = "callback_refused", _("Upstream callback refused")
        SIGNED_IN = "signed_in", _("Signed in through the upstream")
        TOKEN_ISSUED = "token_issued", _("Token issued")
        TOKEN_REFRESHED = "token_refreshed", _("Token refreshed")
        TOKEN_REVOKED = "token_revoked", _("Token revoked")
        REFRESH_TOKEN_REUSE = "refresh_token_reuse", _("Refresh-token reuse detected")
        CODE_REUSE = "code_reuse", _("Authorization-code reuse detected")
        UPSTREAM_TOKEN_REVOKED = "upstream_token_revoked", _("Upstream token revoked")
        RATE_LIMITED = "rate_limited", _("Rate limit hit")
        AUDIT_CHAIN_KEYED = "audit_chain_keyed", _("Audit chain keyed (older rows sealed)")
        CIMD_RULE_CHANGED = "cimd_rule_changed", _("CIMD domain rule changed")

    class Actor(models.TextChoices):
        USER = "user", _("User")
        OPERATOR = "operator", _("Operator")
        CLIENT = "client", _("Client")
        ANONYMOUS = "anonymous", _("Anonymous")
        SYSTEM = "system", _("System")

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=32, choices=Action.choices, db_index=True)
    actor_type = models.CharField(max_length=10, choices=Actor.choices)
    actor_user_id = models.BigIntegerField(null=True, blank=True)  # indexed with id (Meta)
    actor_label = models.CharField(max_length=255, blank=True)
    subject_user_id = models.BigIntegerField(null=True, blank=True)  # indexed with id (Meta)
    client_id = models.CharField(max_length=255, blank=True, db_index=True)
    consent_id = models.BigIntegerField(null=True, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    details = models.JSONField(default=dict, blank=True)
    previous_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    chain = models.PositiveSmallIntegerField(default=0)
    version = models.PositiveSmallIntegerField(choices=Version.choices, default=Version.HMAC_SHA256)
    key_id = models.CharField(max_length=16, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-pk"]
        indexes = [
            models.Index(fields=["client_id", "created_at"]),
            models.Index(fields=["chain", "id"], name="mcp_consent_audit_chain_idx"),
            # A person's latest decisions on Connected apps, newest first, without walking
            # the whole trail backwards (issue 11).
            models.Index(fields=["subject_user_id", "id"], name="mcp_consent_subject_idx"),
            models.Index(fields=["actor_user_id", "id"], name="mcp_consent_actor_idx"),
            # Who revoked each of a person's consents (Connected apps).
            models.Index(fields=["consent_id"], name="mcp_consent_consent_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} ({self.actor_type})"

    def save(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.pk is not None:
            raise AuditImmutableError("audit events cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AuditImmutableError("audit events cannot be deleted")


class AuditChainHead(models.Model):
    """The end of one audit chain, locked by each write to that chain (no forks, any process).

    Issue 11: there are ``AUDIT_CHAINS`` chains, so writers of unrelated flows lock
    different rows and do not wait for each other.
    """

    chain = models.PositiveSmallIntegerField(unique=True, default=0)
    last_hash = models.CharField(max_length=64, default="0" * 64)
    last_event_id = models.BigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"audit chain {self.chain} head (event #{self.last_event_id})"


class CIMDDomainRule(models.Model):
    """CIMD-13 / ABUSE-04: the operators' trust policy for client_id URLs (CIMD §1.10).

    A ``block`` rule refuses every client_id URL on its domain at /authorize, fetched
    before or not. Once any ``allow`` rule exists, only the allowed domains are fetched.
    ``example.com`` matches that host only; ``.example.com`` matches it and its subdomains.
    """

    class Policy(models.TextChoices):
        ALLOW = "allow", _("Allow")
        BLOCK = "block", _("Block")

    domain = models.CharField(
        max_length=253,
        unique=True,
        help_text=_("A host name; a leading dot also matches its subdomains (.example.com)."),
    )
    policy = models.CharField(max_length=5, choices=Policy.choices)
    note = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("CIMD domain rule")

    def __str__(self) -> str:
        return f"{self.get_policy_display()} {self.domain}"

    def save(self, *args: object, **kwargs: object) -> None:
        self.domain = self.domain.strip().lower()
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def matches(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if self.domain.startswith("."):
            return host == self.domain[1:] or host.endswith(self.domain)
        return host == self.domain
