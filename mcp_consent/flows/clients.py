"""Clients: registration (DCR, CIMD, admin), updates, disabling, deletion."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    set_token_value,
)
from oauth2_provider.settings import oauth2_settings

from .. import audit, signals
from ..addresses import client_ip
from ..models import (
    AuditEvent,
    CIMDDomainRule,
    Consent,
    MCPClient,
    RedirectURI,
    RegistrationSource,
)
from ..registration import (
    ClientMetadata,
    authorizing_request,
    clean_client_metadata,
    fetched_cimd_metadata,
)
from .locks import lock_client, lock_client_of
from .revocation import revoke_consents, revoke_everything_of

# --- Clients -------------------------------------------------------------------------------


@dataclass
class RegisteredClient:
    """A freshly registered client with the secrets that are shown exactly once."""

    client: MCPClient
    metadata: ClientMetadata
    # SEC-02: shown once in the registration response, never in a repr.
    client_secret: str | None = field(repr=False)
    registration_access_token: str | None = field(repr=False)


def _sync_redirect_uris(client: MCPClient, uris: list[str], *, new: bool = False) -> None:
    now = timezone.now()
    active = {} if new else {r.uri: r for r in client.redirect_uris.filter(removed_at__isnull=True)}
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
    # DCR-11: DOT's Application.clean checks every redirect URI's scheme against one static
    # list (ALLOWED_REDIRECT_URI_SCHEMES); a native app's private-use scheme is per client.
    # mcp_consent.registration is the policy and approved these URIs: let DOT's model accept
    # their schemes, on this instance only (Application.get_allowed_schemes is DOT's hook).
    schemes = {urlsplit(uri).scheme for uri in metadata.redirect_uris}
    allowed = sorted(schemes | set(oauth2_settings.ALLOWED_REDIRECT_URI_SCHEMES))
    application.get_allowed_schemes = lambda: allowed


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


def record_client(
    application: Any,
    metadata: ClientMetadata,
    source: str,
    *,
    actor: audit.ActorInfo | None = None,
    request: HttpRequest | None = None,
    new: bool = False,
) -> MCPClient:
    """THE writer of MCPClient and RedirectURI rows, for DCR, CIMD and admin registrations.

    A change of anything the consent page shows bumps ``metadata_version`` (no remembered
    consent of the old version applies, CD-04) and revokes the consents bound to what
    changed: all of them for a new name or client URI, those of removed redirect URIs
    otherwise (MGMT-06, CIMD-12).

    ``new``: ``application`` was created in the caller's open transaction, so it has no
    MCPClient yet and no other transaction can see it: nothing to look up or lock.
    """
    actor = actor or audit.client_actor(None)
    with transaction.atomic(savepoint=not new):
        # SEC-12: the client first (flows/locks.py); a new application has none to lock.
        client = None if new else lock_client_of(application)
        if client is None:
            return _create_client(application, metadata, source, actor, request)
        _update_client_record(client, metadata, actor, request)
    return client


def _create_client(
    application: Any,
    metadata: ClientMetadata,
    source: str,
    actor: audit.ActorInfo,
    request: HttpRequest | None,
) -> MCPClient:
    """The MCPClient of a new application, its redirect URIs, audited and signalled."""
    client = MCPClient.objects.create(
        application=application,
        registration_source=source,
        # Admin-registered: vouched for by an operator. CIMD: the metadata was served
        # by the client_id's own https origin, so the domain is verified (the page
        # shows the domain, not a claim about the software). DCR: self-asserted.
        verified=source in {RegistrationSource.ADMIN, RegistrationSource.CIMD},
        # ABUSE-03: self-registered clients count against their address's budget.
        registered_from=client_ip(request)
        if request is not None and source != RegistrationSource.ADMIN
        else None,
        **_client_fields(metadata),
    )
    _sync_redirect_uris(client, metadata.redirect_uris, new=True)
    audit.record(
        AuditEvent.Action.CLIENT_REGISTERED,
        actor=actor,
        request=request,
        client=client,
        details={
            "source": source,
            "redirect_uris": metadata.redirect_uris,
            "client_name": metadata.client_name,
        },
    )
    transaction.on_commit(lambda: signals.client_registered.send(sender=MCPClient, client=client))
    return client


def _update_client_record(
    client: MCPClient,
    metadata: ClientMetadata,
    actor: audit.ActorInfo,
    request: HttpRequest | None,
) -> None:
    """New metadata on a locked client; consents bound to what the page showed end (MGMT-06)."""
    before = client.metadata
    shown_before = (
        before.get("client_name", ""),
        tuple(before.get("redirect_uris", [])),
        client.client_uri,
        client.logo_uri,
    )
    for key, value in _client_fields(metadata).items():
        setattr(client, key, value)
    changed = shown_before != metadata.displayed
    stale: list[Consent] = []
    if changed:
        # CD-04: no remembered consent of the old version applies.
        client.metadata_version += 1
        stale = _consents_shown_otherwise(client, shown_before, metadata)
    client.save()
    _sync_redirect_uris(client, metadata.redirect_uris)
    if changed or before != client.metadata:
        audit.record(
            AuditEvent.Action.CLIENT_UPDATED,
            actor=actor,
            request=request,
            client=client,
            details={
                "displayed_metadata_changed": changed,
                "redirect_uris": metadata.redirect_uris,
                "client_name": metadata.client_name,
                "consents_invalidated": len(stale),
            },
        )
    if stale:
        revoke_consents(stale, actor=actor, reason="client metadata changed", request=request)


def _consents_shown_otherwise(
    client: MCPClient, shown_before: tuple[Any, ...], metadata: ClientMetadata
) -> list[Consent]:
    """The consents given to what the page no longer shows (MGMT-06, CIMD-12).

    All of them for a new name or client URI (or logo), those of removed redirect URIs
    otherwise.
    """
    active = Consent.objects.unretired().filter(client=client)
    if shown_before[0] != metadata.client_name or shown_before[2:] != metadata.displayed[2:]:
        return list(active)
    return list(active.exclude(redirect_uri__in=metadata.redirect_uris))


def register_client(
    metadata: ClientMetadata,
    source: str,
    *,
    user: AbstractBaseUser | None = None,
    issue_registration_token: bool = True,
    actor: audit.ActorInfo | None = None,
    request: HttpRequest | None = None,
) -> RegisteredClient:
    """Register a new client (DCR or admin): the DOT Application, then its record."""
    Application = get_application_model()
    # A public client has no secret (DCR-04, DCR-16): store none, so DOT's field neither
    # generates one (128 random characters) nor hashes an empty string.
    no_secret = {"client_secret": "", "hash_client_secret": False} if metadata.is_public else {}
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
        **no_secret,
    )
    _apply_metadata(application, metadata)
    raw_secret = None if metadata.is_public else application.client_secret
    # client_id: DOT's generator (40 random characters) and a unique column; the database
    # refuses a duplicate, so full_clean need not look it up first.
    application.full_clean(exclude=["client_secret", "client_id"])
    with transaction.atomic():
        application.save()
        client = record_client(
            application, metadata, source, actor=actor, request=request, new=True
        )
        raw_token = _issue_registration_token(application) if issue_registration_token else None
    return RegisteredClient(client, metadata, raw_secret, raw_token)


def _client_fields(metadata: ClientMetadata) -> dict[str, Any]:
    return {
        "name_key": MCPClient.name_key_of(metadata.client_name),
        "client_uri": metadata.client_uri,
        "logo_uri": metadata.logo_uri,
        "software_id": metadata.software_id,
        "software_version": metadata.software_version,
        "application_type": metadata.application_type,
        "metadata": metadata.as_registered(),
    }


def update_client(
    client: MCPClient,
    metadata: ClientMetadata,
    *,
    actor: audit.ActorInfo | None = None,
    request: HttpRequest | None = None,
) -> MCPClient:
    """Replace a client's metadata (RFC 7592 PUT)."""
    application = client.application
    _apply_metadata(application, metadata)
    application.full_clean(exclude=["client_secret"])
    with transaction.atomic():
        application.save()
        return record_client(
            application,
            metadata,
            client.registration_source,
            actor=actor or audit.client_actor(client),
            request=request,
        )


def disable_client(
    client: MCPClient, *, actor: audit.ActorInfo, reason: str, request: HttpRequest | None = None
) -> bool:
    """Disable a client: unusable at once, every consent revoked with its cascade. Idempotent."""
    with transaction.atomic():
        locked = lock_client(client.pk)  # SEC-12: the client first (flows/locks.py)
        if locked.disabled_at is not None:
            return False
        locked.disabled_at = timezone.now()
        locked.save(update_fields=["disabled_at"])
        client.disabled_at = locked.disabled_at
        audit.record(
            AuditEvent.Action.CLIENT_DISABLED,
            actor=actor,
            request=request,
            client=locked,
            details={"reason": reason},
        )
        revoke_everything_of(
            locked, actor=actor, reason=f"client disabled: {reason}", request=request
        )
    return True


def delete_client(
    client: MCPClient,
    *,
    actor: audit.ActorInfo,
    reason: str = "",
    request: HttpRequest | None = None,
) -> None:
    """Delete a client with the same cascade (RFC 7592 DELETE, MGMT-04, UP-09)."""
    with transaction.atomic():
        locked = lock_client(client.pk)  # SEC-12: the client first (flows/locks.py)
        application = locked.application
        revoke_everything_of(
            locked, actor=actor, reason=reason or "client deleted", request=request
        )
        audit.record(
            AuditEvent.Action.CLIENT_DELETED,
            actor=actor,
            request=request,
            client_id=application.client_id,
            details={
                "reason": reason,
                "client_name": application.name,
                "source": locked.registration_source,
            },
        )
        # The registration access token and every remaining row go with the Application.
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
    client = record_client(
        application,
        fetched,
        RegistrationSource.CIMD,
        actor=audit.client_actor(None),
        request=authorizing_request.get(),
    )
    application.mcp_client = client  # callers read this instance: keep it the current one
    return client


def save_cimd_domain_rule(
    rule: CIMDDomainRule,
    *,
    actor: audit.ActorInfo,
    delete: bool = False,
    request: HttpRequest | None = None,
) -> None:
    """CIMD-13: an operator's trust rule saved or removed, audited in the same transaction."""
    with transaction.atomic():
        details = {"domain": rule.domain, "policy": rule.policy, "note": rule.note}
        if delete:
            rule.delete()
        else:
            rule.save()
        audit.record(
            AuditEvent.Action.CIMD_RULE_CHANGED,
            actor=actor,
            request=request,
            details={**details, "domain": rule.domain, "deleted": delete},
        )
