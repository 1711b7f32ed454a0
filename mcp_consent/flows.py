"""Every write of mcp_consent, each one transaction (STYLE.md 3).

Views, the admin and management commands call these functions; nothing else writes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_refresh_token_model,
    set_token_value,
)
from oauth2_provider.settings import oauth2_settings

from . import signals, vault
from .app_settings import app_settings
from .models import (
    AuthorizationTransaction,
    Consent,
    MCPClient,
    RedirectURI,
    RegistrationSource,
    UpstreamIdentity,
    UpstreamToken,
)
from .registration import ClientMetadata, clean_client_metadata, fetched_cimd_metadata


def secret_hash(value: str) -> str:
    """SHA-256 of a high-entropy secret (state, browser nonce, code): what we store."""
    return hashlib.sha256(value.encode()).hexdigest()


def client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is attacker-controlled unless a trusted proxy
    # rewrites it, and then the deployment sets REMOTE_ADDR from it (BCP-19).
    return request.META.get("REMOTE_ADDR") or None


def user_agent(request: HttpRequest) -> str:
    return request.META.get("HTTP_USER_AGENT", "")[:512]


# --- Clients -------------------------------------------------------------------------------


@dataclass
class RegisteredClient:
    """A freshly registered client with the secrets that are shown exactly once."""

    client: MCPClient
    metadata: ClientMetadata
    client_secret: str | None
    registration_access_token: str | None


def _sync_redirect_uris(client: MCPClient, uris: list[str]) -> None:
    now = timezone.now()
    active = {r.uri: r for r in client.redirect_uris.filter(removed_at__isnull=True)}
    for uri, row in active.items():
        if uri not in uris:
            row.removed_at = now
            row.save(update_fields=["removed_at"])
    RedirectURI.objects.bulk_create(
        [RedirectURI(client=client, uri=u, added_at=now) for u in uris if u not in active]
    )


def _apply_metadata(application: Any, metadata: ClientMetadata) -> None:
    application.name = metadata.client_name
    application.redirect_uris = " ".join(metadata.redirect_uris)
    application.authorization_grant_type = application.GRANT_AUTHORIZATION_CODE


def _issue_registration_token(application: Any) -> str:
    """RFC 7592 registration access token: high entropy, bound to one client (MGMT-05)."""
    raw = secrets.token_urlsafe(48)
    token = get_access_token_model()(
        application=application,
        user=None,
        expires=timezone.now() + timedelta(days=365 * 100),
        scope=oauth2_settings.DCR_REGISTRATION_SCOPE,
    )
    set_token_value(token, raw)
    token.save()
    return raw


def record_client(application: Any, metadata: ClientMetadata, source: str) -> MCPClient:
    """THE writer of MCPClient and RedirectURI rows, for DCR, CIMD and admin registrations.

    A change of anything the consent page shows bumps ``metadata_version``, which makes
    every consent given for the old version ineligible (CD-04, CIMD-12, MGMT-06).
    """
    with transaction.atomic():
        client = MCPClient.objects.select_for_update().filter(application=application).first()
        if client is None:
            client = MCPClient.objects.create(
                application=application,
                registration_source=source,
                # Admin-registered: vouched for by an operator. CIMD: the metadata was served
                # by the client_id's own https origin, so the domain is verified (the page
                # shows the domain, not a claim about the software). DCR: self-asserted.
                verified=source in {RegistrationSource.ADMIN, RegistrationSource.CIMD},
                **_client_fields(metadata),
            )
            transaction.on_commit(
                lambda: signals.client_registered.send(sender=MCPClient, client=client)
            )
        else:
            shown_before = (
                client.metadata.get("client_name", ""),
                tuple(client.metadata.get("redirect_uris", [])),
                client.client_uri,
                client.logo_uri,
            )
            for key, value in _client_fields(metadata).items():
                setattr(client, key, value)
            if shown_before != metadata.displayed:
                client.metadata_version += 1
            client.save()
        _sync_redirect_uris(client, metadata.redirect_uris)
    return client


def register_client(
    metadata: ClientMetadata,
    source: str,
    *,
    user: AbstractBaseUser | None = None,
    issue_registration_token: bool = True,
) -> RegisteredClient:
    """Register a new client (DCR or admin): the DOT Application, then its record."""
    Application = get_application_model()
    application = Application(
        user=user,
        client_type=Application.CLIENT_PUBLIC
        if metadata.is_public
        else Application.CLIENT_CONFIDENTIAL,
        registration_source=(
            Application.RegistrationSource.DCR
            if source == RegistrationSource.DCR
            else Application.RegistrationSource.MANUAL
        ),
    )
    _apply_metadata(application, metadata)
    raw_secret = None if metadata.is_public else application.client_secret
    if metadata.is_public:
        application.client_secret = ""
    application.full_clean(exclude=["client_secret"])
    with transaction.atomic():
        application.save()
        client = record_client(application, metadata, source)
        raw_token = _issue_registration_token(application) if issue_registration_token else None
    return RegisteredClient(client, metadata, raw_secret, raw_token)


def _client_fields(metadata: ClientMetadata) -> dict[str, Any]:
    return {
        "client_uri": metadata.client_uri,
        "logo_uri": metadata.logo_uri,
        "software_id": metadata.software_id,
        "software_version": metadata.software_version,
        "application_type": metadata.application_type,
        "metadata": metadata.as_registered(),
    }


def update_client(client: MCPClient, metadata: ClientMetadata) -> MCPClient:
    """Replace a client's metadata (RFC 7592 PUT)."""
    application = client.application
    _apply_metadata(application, metadata)
    application.full_clean(exclude=["client_secret"])
    with transaction.atomic():
        application.save()
        return record_client(application, metadata, client.registration_source)


def delete_client(client: MCPClient) -> None:
    """Delete a client with its grants, tokens and consents (RFC 7592 DELETE, MGMT-04)."""
    with transaction.atomic():
        application = client.application
        for token in get_refresh_token_model().objects.filter(
            application=application, revoked__isnull=True
        ):
            token.revoke()
        get_access_token_model().objects.filter(application=application).delete()
        application.delete()


def client_record_for(application: Any) -> MCPClient | None:
    """The MCPClient of an Application; records a CIMD client DOT has just (re)fetched."""
    try:
        client: MCPClient | None = application.mcp_client
    except MCPClient.DoesNotExist:
        client = None
    if application.registration_source != application.RegistrationSource.CIMD:
        return client
    store = dict(fetched_cimd_metadata.get() or {})
    fetched = store.pop(application.client_id, None)
    fetched_cimd_metadata.set(store)
    if fetched is None:
        if client is not None:
            return client
        # Fetched by another process and not recorded yet: rebuild from the row DOT wrote
        # from the cleaned document.
        fetched = clean_client_metadata(
            {
                "redirect_uris": application.redirect_uris.split(),
                "client_name": application.name,
                "token_endpoint_auth_method": "none",
            },
            RegistrationSource.CIMD,
        )
    client = record_client(application, fetched, RegistrationSource.CIMD)
    application.mcp_client = client  # callers read this instance: keep it the current one
    return client


# --- Consent and the upstream leg ----------------------------------------------------------


@dataclass
class PendingUpstream:
    """What the approving view needs to send the browser upstream (never stored raw)."""

    transaction: AuthorizationTransaction
    state: str
    code_verifier: str | None


def begin_upstream_authorization(
    *,
    client: MCPClient,
    authorization_query: str,
    redirect_uri: str,
    scopes: list[str],
    resource: str,
    binding: str,
    request: HttpRequest,
) -> PendingUpstream:
    """Record an approved authorization request as a pending upstream hop (CD-41, CD-48).

    Called only after the user pressed Approve (or, opt-in, a remembered consent matched).
    The upstream ``state`` has 256 random bits (CD-40) and only its hash is stored.
    """
    upstream = app_settings.UPSTREAM
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(48) if upstream.pkce else None
    user = request.user if request.user.is_authenticated else None
    now = timezone.now()
    tx = AuthorizationTransaction.objects.create(
        state_hash=secret_hash(state),
        binding_hash=secret_hash(binding),
        client=client,
        authorization_query=authorization_query,
        redirect_uri=redirect_uri,
        scopes=" ".join(scopes),
        upstream_scopes=" ".join(upstream.upstream_scopes_for(scopes)),
        resource=resource,
        code_verifier_encrypted=vault.encrypt(verifier or ""),
        user=user,
        ip_address=client_ip(request),
        user_agent=user_agent(request),
        created_at=now,
        expires_at=now + timedelta(seconds=app_settings.TRANSACTION_TTL),
    )
    return PendingUpstream(tx, state, verifier)


class CallbackRefused(Exception):
    """The upstream callback does not belong to a live transaction of this browser."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def consume_transaction(state: str, binding: str | None) -> AuthorizationTransaction:
    """Claim the transaction of ``state`` for this browser, exactly once (CD-43..46).

    The claim is a conditional UPDATE (consumed_at IS NULL): of concurrent callbacks with
    one state, exactly one gets a row count of 1.
    """
    if not state or len(state) > 512:
        raise CallbackRefused("missing state")
    tx = (
        AuthorizationTransaction.objects.select_related("client__application")
        .filter(state_hash=secret_hash(state))
        .first()
    )
    if tx is None:
        raise CallbackRefused("unknown state")
    if binding is None or not hmac.compare_digest(tx.binding_hash, secret_hash(binding)):
        # CD-43: a state from another browser (login CSRF, stolen callback URL).
        raise CallbackRefused("state not bound to this browser")
    now = timezone.now()
    if tx.consumed_at is not None:
        raise CallbackRefused("state already used")
    if tx.expires_at <= now:
        AuthorizationTransaction.objects.filter(pk=tx.pk, consumed_at__isnull=True).update(
            consumed_at=now,
            outcome=AuthorizationTransaction.Outcome.FAILED,
            failure_reason="expired",
        )
        raise CallbackRefused("state expired")
    claimed = AuthorizationTransaction.objects.filter(pk=tx.pk, consumed_at__isnull=True).update(
        consumed_at=now
    )
    if claimed != 1:
        raise CallbackRefused("state already used")
    tx.consumed_at = now
    return tx


def fail_transaction(tx: AuthorizationTransaction, outcome: str, reason: str) -> None:
    AuthorizationTransaction.objects.filter(pk=tx.pk).update(
        outcome=outcome, failure_reason=reason[:255]
    )


@dataclass
class UpstreamGrant:
    """What the upstream returned for one transaction (tokens are secrets: never logged)."""

    subject: str
    login: str
    email: str
    name: str
    access_token: str
    refresh_token: str
    token_type: str
    scopes: str
    expires_at: Any
    refresh_expires_at: Any
    raw_identity: dict[str, Any]


def complete_authorization(
    tx: AuthorizationTransaction, grant: UpstreamGrant, request: HttpRequest
) -> tuple[AbstractBaseUser, Consent]:
    """Map the upstream identity to a user, record the consent and store the upstream token.

    Runs inside the caller's transaction, together with the creation of the MCP
    authorization code, so a failure leaves nothing half-written.
    """
    adapter = app_settings.ADAPTER
    upstream = app_settings.UPSTREAM
    provider = upstream.issuer or upstream.authorize_url
    now = timezone.now()
    identity = (
        UpstreamIdentity.objects.select_for_update()
        .filter(provider=provider, subject=grant.subject)
        .first()
    )
    if identity is None:
        user = adapter.create_user(grant)
        identity = UpstreamIdentity.objects.create(
            provider=provider, subject=grant.subject, user=user
        )
    identity.login, identity.email, identity.last_login_at = grant.login, grant.email, now
    identity.save(update_fields=["login", "email", "last_login_at"])
    user = identity.user
    adapter.update_user(user, grant)

    client = tx.client
    consent = (
        Consent.objects.select_for_update()
        .filter(
            user=user,
            client=client,
            redirect_uri=tx.redirect_uri,
            scopes=tx.scopes,
            resource=tx.resource,
            client_metadata_version=client.metadata_version,
            revoked_at__isnull=True,
            expires_at__gt=now,
        )
        .first()
    )
    expires_at = now + timedelta(seconds=adapter.consent_lifetime(client, user))
    if consent is None:
        consent = Consent.objects.create(
            user=user,
            client=client,
            redirect_uri=tx.redirect_uri,
            scopes=tx.scopes,
            upstream_scopes=tx.upstream_scopes,
            resource=tx.resource,
            client_metadata_version=client.metadata_version,
            granted_at=now,
            expires_at=expires_at,
            ip_address=client_ip(request),
            user_agent=user_agent(request),
            last_used_at=now,
        )
        transaction.on_commit(lambda: signals.consent_granted.send(sender=Consent, consent=consent))
    else:
        consent.last_used_at, consent.expires_at = now, expires_at
        consent.save(update_fields=["last_used_at", "expires_at"])
    UpstreamToken.objects.update_or_create(
        consent=consent,
        defaults={
            "identity": identity,
            "access_token_encrypted": vault.encrypt(grant.access_token),
            "refresh_token_encrypted": vault.encrypt(grant.refresh_token),
            "token_type": grant.token_type,
            "scopes": grant.scopes,
            "expires_at": grant.expires_at,
            "refresh_expires_at": grant.refresh_expires_at,
        },
    )
    MCPClient.objects.filter(pk=client.pk).update(last_used_at=now)
    AuthorizationTransaction.objects.filter(pk=tx.pk).update(
        user=user, consent=consent, outcome=AuthorizationTransaction.Outcome.COMPLETED
    )
    return user, consent


def record_issued_code(tx: AuthorizationTransaction, code: str) -> None:
    AuthorizationTransaction.objects.filter(pk=tx.pk).update(code_hash=secret_hash(code))


def record_code_redemption(hashed_code: str, token_family: Any, when: Any) -> None:
    AuthorizationTransaction.objects.filter(
        code_hash=hashed_code, code_redeemed_at__isnull=True
    ).update(code_redeemed_at=when, token_family=token_family)


def revoke_tokens_of_reused_code(hashed_code: str, application: Any) -> bool:
    """AS-41: a second redemption of a code revokes the tokens issued for the first."""
    tx = (
        AuthorizationTransaction.objects.filter(
            code_hash=hashed_code, client__application=application, code_redeemed_at__isnull=False
        )
        .exclude(token_family=None)
        .first()
    )
    if tx is None:
        return False
    get_refresh_token_model().revoke_family(tx.token_family)
    return True


# --- The upstream vault ---------------------------------------------------------------------


REFRESH_MARGIN = timedelta(seconds=60)


def refresh_upstream_token(token: UpstreamToken, *, force: bool = False) -> UpstreamToken:
    """Refresh one consent's upstream token server-side, once across concurrent workers (UP-08).

    The row is locked (SELECT ... FOR UPDATE) and re-read: a worker that waited for the lock
    finds the token another worker just refreshed and uses it. A rotated refresh token
    replaces the old one in the same UPDATE (OAuth 2.1 §4.3.2); one the upstream did not
    rotate is kept. Raises upstream.UpstreamError when the upstream refuses.
    """
    from . import upstream

    with transaction.atomic():
        locked = UpstreamToken.objects.select_for_update().get(pk=token.pk)
        fresh_enough = (
            locked.expires_at is None or locked.expires_at - REFRESH_MARGIN > timezone.now()
        )
        if locked.updated_at > token.updated_at or (fresh_enough and not force):
            return locked
        refresh_token = vault.decrypt(locked.refresh_token_encrypted)
        if not refresh_token:
            raise upstream.UpstreamError("no upstream refresh token")
        tokens = upstream.refresh(refresh_token)
        locked.access_token_encrypted = vault.encrypt(tokens["access_token"])
        if tokens["refresh_token"]:
            locked.refresh_token_encrypted = vault.encrypt(tokens["refresh_token"])
            locked.refresh_expires_at = tokens["refresh_expires_at"]
        locked.expires_at = tokens["expires_at"]
        if tokens["scope"]:
            locked.scopes = tokens["scope"]
        locked.save()
    return locked
