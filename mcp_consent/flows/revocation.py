"""Revocation: one cascade for the admin, the Connected apps page and the endpoints.

consent -> DOT grants, access and refresh tokens of that user and client -> the upstream
token (revoked at the upstream's RFC 7009 endpoint when one is configured, then deleted).
Idempotent, audited in the same transaction, ``consent_revoked`` sent on commit (UP-09).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_grant_model,
    get_refresh_token_model,
)

from .. import audit, signals, vault
from ..models import AuditEvent, Consent, UpstreamToken
from .locks import lock_client_of, lock_consents_and_clients
from .upstream_tokens import revoke_upstream_grant

Action = AuditEvent.Action


@dataclass
class _UpstreamSecrets:
    """A retired consent's upstream tokens, to revoke at the upstream (SEC-02: no repr)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    consent: Consent


def revoke_oauth_tokens(user: Any, application: Any) -> int:
    """Revoke every grant, refresh and access token of one user at one client (REV-04)."""
    get_grant_model().objects.filter(user=user, application=application).delete()
    count = 0
    for refresh in get_refresh_token_model().objects.filter(
        user=user, application=application, revoked__isnull=True
    ):
        refresh.revoke()  # also deletes its access token
        count += 1
    deleted, _ = (
        get_access_token_model().objects.filter(user=user, application=application).delete()
    )
    return count + deleted


def _take_upstream_token(consent: Consent) -> _UpstreamSecrets | None:
    token = UpstreamToken.objects.select_for_update().filter(consent=consent).first()
    if token is None:
        return None
    try:
        secrets = _UpstreamSecrets(
            vault.decrypt(
                token.access_token_encrypted,
                vault.upstream_token_context(token.consent_id, "access"),
            ),
            vault.decrypt(
                token.refresh_token_encrypted,
                vault.upstream_token_context(token.consent_id, "refresh"),
            ),
            consent,
        )
    except vault.VaultError:
        secrets = None  # undecryptable: nothing to revoke upstream, still delete it here
    token.delete()
    return secrets


def _retire(
    locked: Consent,
    *,
    actor: audit.ActorInfo,
    reason: str,
    request: HttpRequest | None,
    expired: bool,
) -> tuple[bool, _UpstreamSecrets | None]:
    """Mark one locked consent revoked (or expired) with its cascade; False if it already was.

    The cascade follows the lock order (flows/locks.py): the DOT grants and tokens of this
    user at this client, then the upstream token.
    """
    now = timezone.now()
    if locked.revoked_at is not None or locked.expired_at is not None:
        return False, None
    if expired and locked.expires_at > now:
        return False, None  # renewed since it was found lapsed
    if expired:
        locked.expired_at = now
        locked.save(update_fields=["expired_at"])
    else:
        locked.revoked_at, locked.revoke_reason = now, reason[:255]
        locked.revoked_by_id = actor.user_id if actor.type in {"user", "operator"} else None
        locked.save(update_fields=["revoked_at", "revoke_reason", "revoked_by"])
    tokens = revoke_oauth_tokens(locked.user, locked.client.application)
    secrets = _take_upstream_token(locked)
    audit.record(
        Action.CONSENT_EXPIRED if expired else Action.CONSENT_REVOKED,
        actor=actor,
        request=request,
        consent=locked,
        details={"reason": reason, "oauth_tokens_revoked": tokens, "scopes": locked.scopes},
    )
    transaction.on_commit(lambda: signals.consent_revoked.send(sender=Consent, consent=locked))
    return True, secrets


def _retire_all(
    consents: Iterable[Consent],
    *,
    actor: audit.ActorInfo,
    reason: str,
    request: HttpRequest | None,
    expired: bool,
) -> int:
    """Retire several consents in one transaction, locked in THE order (SEC-12): their
    clients, then the consents; the upstream is told after the local change committed."""
    given = list(consents)
    taken: list[_UpstreamSecrets | None] = []
    count = 0
    with transaction.atomic():
        locked = lock_consents_and_clients(given)
        for row in locked:
            retired, secrets = _retire(
                row, actor=actor, reason=reason, request=request, expired=expired
            )
            count += retired
            taken.append(secrets)
    states = {row.pk: (row.revoked_at, row.expired_at) for row in locked}
    for consent in given:
        consent.revoked_at, consent.expired_at = states.get(
            consent.pk, (consent.revoked_at, consent.expired_at)
        )
    for secrets in taken:
        _revoke_upstream(secrets, actor, request)
    return count


def _revoke_upstream(
    secrets: _UpstreamSecrets | None,
    actor: audit.ActorInfo,
    request: HttpRequest | None = None,
) -> None:
    """UP-09: tell the upstream (best effort; the local copy is gone whatever it answers).

    ``request`` puts the address of whoever revoked (an operator, the person) on the event."""
    if secrets is None:
        return
    outcome = revoke_upstream_grant(secrets.access_token, secrets.refresh_token)
    audit.record(
        Action.UPSTREAM_TOKEN_REVOKED,
        actor=actor,
        request=request,
        consent=secrets.consent,
        details={"outcome": outcome},
    )


def revoke_consent(
    consent: Consent, *, actor: audit.ActorInfo, reason: str, request: HttpRequest | None = None
) -> bool:
    """Revoke one consent and everything it bought. False if it was already revoked."""
    return revoke_consents([consent], actor=actor, reason=reason, request=request) == 1


def revoke_consents(
    consents: Iterable[Consent],
    *,
    actor: audit.ActorInfo,
    reason: str,
    request: HttpRequest | None = None,
) -> int:
    """Revoke several consents (how many were not revoked or retired before)."""
    return _retire_all(consents, actor=actor, reason=reason, request=request, expired=False)


def revoke_everything_of(
    client: Any, *, actor: audit.ActorInfo, reason: str, request: HttpRequest | None = None
) -> None:
    """Disable/delete: every consent with its cascade, then any token left at the client."""
    consents = Consent.objects.unretired().filter(client=client)
    revoke_consents(list(consents), actor=actor, reason=reason, request=request)
    application = client.application
    get_grant_model().objects.filter(application=application).delete()
    for refresh in get_refresh_token_model().objects.filter(
        application=application, revoked__isnull=True
    ):
        refresh.revoke()
    # User tokens only: the RFC 7592 registration token (no user) goes with the Application.
    get_access_token_model().objects.filter(application=application, user__isnull=False).delete()


def expire_consent(consent: Consent) -> bool:
    """Retire a consent past its expires_at, with the same cascade (hygiene command)."""
    return expire_consents([consent]) == 1


def expire_consents(consents: Iterable[Consent]) -> int:
    """SEC-01: retire lapsed consents with the cascade, so their tokens and upstream grant go.

    Called when a lapsed consent is next touched (a token verified or refreshed, see
    ``expire_lapsed_consents``) and by the cleanup command's sweep. Only consents past
    ``expires_at`` are retired; one renewed meanwhile is left alone.
    """
    return _retire_all(consents, actor=audit.SYSTEM, reason="expired", request=None, expired=True)


def expire_lapsed_consents(user_id: Any, application_id: Any) -> int:
    """SEC-01: a token of this user at this client was refused for want of a live consent:
    retire the lapsed consents behind it (tokens, upstream grant) now, not at the next sweep."""
    return expire_consents(
        Consent.objects.lapsed().filter(user_id=user_id, client__application_id=application_id)
    )


def revoke_tokens(
    tokens: Iterable[Any],
    *,
    actor: audit.ActorInfo,
    reason: str,
    request: HttpRequest | None = None,
) -> int:
    """An operator's revocation of selected DOT tokens or codes (SEC-09, REV-04).

    A token is revoked with what its user approved at its client: the consent cascade when a
    live consent exists (so the upstream token goes too), else that pair's grants and
    tokens, audited as TOKEN_REVOKED. RFC 7592 registration access tokens (no user) are left
    alone: they end with their client (disable or delete it). Returns the pairs revoked.
    """
    pairs = sorted({(t.user_id, t.application_id) for t in tokens if t.user_id is not None})
    consents: list[Consent] = []
    bare: list[tuple[int, int]] = []
    for user_id, application_id in pairs:
        live = list(
            Consent.objects.unretired().filter(
                user_id=user_id, client__application_id=application_id
            )
        )
        if live:
            consents.extend(live)
        else:
            bare.append((user_id, application_id))
    revoke_consents(consents, actor=actor, reason=reason, request=request)
    application_model = get_application_model()
    with transaction.atomic():
        for user_id, application_id in bare:
            application = application_model.objects.get(pk=application_id)
            lock_client_of(application)  # SEC-12: the client before its tokens (flows/locks.py)
            user = get_user_model().objects.get(pk=user_id)
            count = revoke_oauth_tokens(user, application)
            audit.record(
                Action.TOKEN_REVOKED,
                actor=actor,
                request=request,
                client_id=application.client_id,
                subject_user_id=user_id,
                details={"reason": reason, "oauth_tokens_revoked": count, "no_live_consent": True},
            )
    return len(pairs)
