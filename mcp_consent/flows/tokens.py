"""Events of the token endpoint: issued, refreshed, revoked, reused (AS-41, AS-44, UP-09)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from oauthlib.common import Request

from .. import audit
from ..models import AuditEvent, AuthorizationTransaction, Consent, MCPClient
from ..vault import secret_hash
from .revocation import expire_consents, revoke_consents


def consent_until() -> Subquery:
    """SEC-01: the latest ``expires_at`` of the unretired consents of the outer row's user at
    its client (a token's or a grant's ``user_id`` and ``application_id``), for the one query
    that loads the row. ``Consent.objects.live()`` split in two so that no time is compiled
    into those queries: unretired here, ``expires_at > now`` in ``live_until``."""
    return Subquery(
        Consent.objects.unretired()
        .filter(user_id=OuterRef("user_id"), client__application_id=OuterRef("application_id"))
        .order_by("-expires_at")
        .values("expires_at")[:1]
    )


def live_until(until: Any) -> bool:
    return until is not None and until > timezone.now()


def consent_is_live(application: Any, user_id: Any) -> bool:
    """SEC-01: expiry holds at the token endpoint by itself. True when this user has a live
    consent at this client; otherwise the lapsed consents are retired on the spot with their
    cascade (tokens revoked, the upstream grant revoked upstream) and the grant is refused."""
    consents = list(Consent.objects.filter(client__application=application, user_id=user_id))
    if any(c.status == Consent.Status.ACTIVE for c in consents):
        return True
    expire_consents([c for c in consents if c.revoked_at is None and c.expired_at is None])
    return False


# MCPClient.last_used_at tells never-used and long-idle clients apart (cleanup, ABUSE-03),
# which is a question of days: writing it more often than this costs a statement per request.
LAST_USED_RESOLUTION = timedelta(minutes=5)


def mark_client_used(client: MCPClient, now: Any) -> None:
    """Record that ``client`` was used, unless the row already says so recently enough."""
    if client.last_used_at is not None and now - client.last_used_at < LAST_USED_RESOLUTION:
        return
    MCPClient.objects.filter(pk=client.pk).update(last_used_at=now)
    client.last_used_at = now


def record_token_issued(token: dict[str, Any], request: Request) -> None:
    """Called inside DOT's save transaction for every issued token pair."""
    application = request.client
    now = timezone.now()
    # Every token response here carries a new refresh token (oauthlib issues one with each
    # code and, rotation being enforced, each refresh: AS-44, check E006), created by the
    # validator's _create_refresh_token, which keeps it on the request: its family is known
    # without reading it back. A refresh token that was not rotated (rotation off) would
    # leave nothing there; E006 refuses to run that way.
    family = request.issued_refresh_token.token_family
    if request.grant_type == "authorization_code":
        # AS-41: remember which family this code bought, to revoke it if the code comes back.
        AuthorizationTransaction.objects.filter(
            code_hash=request.code, code_redeemed_at__isnull=True
        ).update(code_redeemed_at=now, token_family=family)
    client = application.mcp_client  # loaded (and checked) by the validator for this request
    mark_client_used(client, now)
    user = request.user
    Consent.objects.live().filter(user=user, client=client).update(last_used_at=now)
    audit.record(
        AuditEvent.Action.TOKEN_ISSUED
        if request.grant_type == "authorization_code"
        else AuditEvent.Action.TOKEN_REFRESHED,
        actor=audit.client_actor(client),
        client=client,
        subject_user_id=getattr(user, "pk", None),
        details={
            "grant_type": request.grant_type,
            "scopes_granted": token.get("scope", ""),
            "resource": list(getattr(request, "resource", None) or []),
            "expires_in": token.get("expires_in"),
            "family": str(family) if family else None,
        },
    )


def record_refresh_token_reuse(raw: str, application: Any) -> None:
    """A refresh token DOT refused: audit it when it was a rotated one presented again."""
    reused = (
        get_refresh_token_model()
        .objects.filter(
            token_checksum=secret_hash(raw), application=application, revoked__isnull=False
        )
        .first()
    )
    if reused is None:
        return
    client = MCPClient.objects.filter(application=application).first()
    audit.record(
        AuditEvent.Action.REFRESH_TOKEN_REUSE,
        actor=audit.client_actor(client),
        client=client,
        subject_user_id=reused.user_id,
        details={
            "family": str(reused.token_family) if reused.token_family else None,
            "family_revoked": True,
        },
    )


def token_owner(raw: str, application: Any) -> Any:
    """The user of a token of ``application`` (None for unknown tokens or other clients)."""
    if application is None or not raw:
        return None
    checksum = secret_hash(raw)
    for model in (get_refresh_token_model(), get_access_token_model()):
        row = (
            model.objects.filter(token_checksum=checksum, application=application)
            .select_related("user")
            .first()
        )
        if row is not None:
            return row.user
    return None


def record_token_revoked(user: Any, application: Any) -> None:
    """After an RFC 7009 revocation: audit, and end the consent once no token is left (UP-09)."""
    client = MCPClient.objects.filter(application=application).first()
    live = (
        get_refresh_token_model()
        .objects.filter(user=user, application=application, revoked__isnull=True)
        .exists()
    )
    with transaction.atomic():
        audit.record(
            AuditEvent.Action.TOKEN_REVOKED,
            actor=audit.client_actor(client),
            client=client,
            subject_user_id=getattr(user, "pk", None),
            details={"grant_still_active": live},
        )
    if not live and client is not None and user is not None:
        consents = Consent.objects.unretired().filter(user=user, client=client)
        revoke_consents(
            list(consents),
            actor=audit.client_actor(client),
            reason="the client revoked its tokens (RFC 7009)",
        )


def revoke_tokens_of_reused_code(hashed_code: str, application: Any) -> None:
    """AS-41: a second redemption of a code revokes the tokens issued for the first."""
    tx = (
        AuthorizationTransaction.objects.filter(
            code_hash=hashed_code, client__application=application, code_redeemed_at__isnull=False
        )
        .exclude(token_family=None)
        .first()
    )
    if tx is None:
        return
    with transaction.atomic():
        get_refresh_token_model().revoke_family(tx.token_family)
        audit.record(
            AuditEvent.Action.CODE_REUSE,
            actor=audit.client_actor(tx.client),
            client=tx.client,
            subject_user_id=tx.user_id,
            details={"correlation_id": tx.pk, "tokens_revoked": True},
        )


def retire_rotated_refresh_token(previous: Any) -> bool:
    """AS-44: what DOT's ``RefreshToken.revoke()`` does to a refresh token being rotated, on
    the row the validator locked: mark it revoked (unlinked from its access token) and delete
    its access token, in that order (flows/locks.py: RefreshToken, then AccessToken).

    DOT's revoke() opens a savepoint and re-reads both rows first; the token view's
    transaction already holds the refresh token's lock and the validator loaded the access
    token with it. The UPDATE only takes a still-live row: False (nothing written) if it was
    revoked meanwhile, so a token is never rotated twice.
    """
    now = timezone.now()
    retired = (
        get_refresh_token_model()
        .objects.filter(pk=previous.pk, revoked__isnull=True)
        .update(revoked=now, updated=now, access_token=None)
    )
    if retired != 1:
        return False
    access_token = previous.access_token
    previous.access_token, previous.revoked, previous.updated = None, now, now
    if access_token is not None:
        access_token.revoke()  # DOT's revocation of an access token: deleting it
    return True
