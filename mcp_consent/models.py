"""The records of mcp_consent (DESIGN.md "Models").

DOT's Application stays what oauthlib validates; MCPClient and RedirectURI hold what the
consent page and the operators need to know about each client. Consent is the per-user
registry of approvals (CD-01); AuthorizationTransaction is the pending upstream hop
(CD-41..48); UpstreamToken is the encrypted vault entry of one consent (UP-07).
"""

from __future__ import annotations

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

    class Meta:
        verbose_name = _("MCP client")

    def __str__(self) -> str:
        return self.display_name

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
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)

    class Meta:
        ordering = ["-granted_at"]
        indexes = [models.Index(fields=["user", "client"])]

    def __str__(self) -> str:
        return f"{self.user} → {self.client} ({self.scopes})"

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()

    @property
    def status(self) -> str:
        if self.revoked_at:
            return self.Status.REVOKED
        if self.expires_at <= timezone.now():
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

    state_hash = models.CharField(max_length=64, unique=True)
    binding_hash = models.CharField(max_length=64)
    client = models.ForeignKey(MCPClient, on_delete=models.CASCADE, related_name="transactions")
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
