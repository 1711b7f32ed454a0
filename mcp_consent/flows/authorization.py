"""Consent and the upstream leg: the pending transaction, the callback, codes."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from .. import audit, ratelimit, signals, vault
from ..adapter import DefaultConsentAdapter, get_adapter
from ..app_settings import app_settings
from ..models import (
    AuditEvent,
    AuthorizationTransaction,
    Consent,
    MCPClient,
)
from ..vault import secret_hash
from . import identities, tokens, upstream_tokens
from .common import client_ip, user_agent
from .identities import UpstreamGrant
from .locks import lock_client

# --- Consent and the upstream leg ----------------------------------------------------------


@dataclass
class PendingUpstream:
    """What the approving view needs to send the browser upstream (never stored raw).

    SEC-02: the state and the PKCE verifier are secrets, kept out of the repr.
    """

    transaction: AuthorizationTransaction
    state: str = field(repr=False)
    code_verifier: str | None = field(repr=False)


def _new_transaction(
    *, purpose: str, client: MCPClient | None, binding: str, request: HttpRequest, **fields: Any
) -> PendingUpstream:
    """A pending upstream hop: 256-bit state (CD-40) and PKCE verifier, stored hashed/encrypted."""
    upstream = app_settings.UPSTREAM
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(48) if upstream.pkce else None
    now = timezone.now()
    state_hash = secret_hash(state)
    tx = AuthorizationTransaction.objects.create(
        state_hash=state_hash,
        binding_hash=secret_hash(binding),
        purpose=purpose,
        client=client,
        # SEC-10: bound to this transaction (its unique state hash, known before the insert).
        code_verifier_encrypted=vault.encrypt(verifier or "", vault.verifier_context(state_hash)),
        ip_address=client_ip(request),
        user_agent=user_agent(request),
        created_at=now,
        expires_at=now + timedelta(seconds=app_settings.TRANSACTION_TTL),
        **fields,
    )
    return PendingUpstream(tx, state, verifier)


def begin_upstream_authorization(
    *,
    client: MCPClient,
    authorization_query: str,
    redirect_uri: str,
    scopes: list[str],
    resource: str,
    binding: str,
    request: HttpRequest,
    remembered: bool,
) -> PendingUpstream:
    """Record an approved authorization request as a pending upstream hop (CD-41, CD-48).

    Called only after the user pressed Approve (or, opt-in, a remembered consent matched).
    """
    user = request.user if request.user.is_authenticated else None
    with transaction.atomic():
        pending = _new_transaction(
            purpose=AuthorizationTransaction.Purpose.AUTHORIZE,
            client=client,
            binding=binding,
            request=request,
            authorization_query=authorization_query,
            redirect_uri=redirect_uri,
            scopes=" ".join(scopes),
            upstream_scopes=" ".join(app_settings.UPSTREAM.upstream_scopes_for(scopes)),
            resource=resource,
            user=user,
            remembered=remembered,
            client_metadata_version=client.metadata_version,
        )
        _record_decision(
            AuditEvent.Action.CONSENT_APPROVED,
            client,
            request,
            scopes_requested=scopes,
            redirect_uri=redirect_uri,
            # SM-04: what this approval asked for beyond earlier grants is told by the
            # consent_granted event of the same correlation id, when the upstream has said
            # who the person is (the proxy session here may be nobody's, or someone else's).
            resource=resource,
            remembered=remembered,
            correlation_id=pending.transaction.pk,
        )
    return pending


def begin_sign_in(*, binding: str, request: HttpRequest) -> PendingUpstream:
    """A sign-in for Connected apps: the same upstream leg, no client, only the base scopes."""
    return _new_transaction(
        purpose=AuthorizationTransaction.Purpose.SIGN_IN,
        client=None,
        binding=binding,
        request=request,
        authorization_query="",
        redirect_uri="",
        scopes="",
        upstream_scopes=" ".join(app_settings.UPSTREAM.scopes),
        resource="",
    )


def _record_decision(action: str, client: MCPClient, request: HttpRequest, **details: Any) -> None:
    audit.record(
        action, actor=audit.actor_from(request), request=request, client=client, details=details
    )


def record_consent_shown(
    client: MCPClient, scopes: list[str], redirect_uri: str, request: HttpRequest
) -> None:
    _record_decision(
        AuditEvent.Action.CONSENT_SHOWN, client, request, scopes=scopes, redirect_uri=redirect_uri
    )


def record_denial(
    client: MCPClient, scopes: list[str], redirect_uri: str, request: HttpRequest
) -> None:
    """CD-18: nothing stored but the decision itself, in the audit trail."""
    _record_decision(
        AuditEvent.Action.CONSENT_DENIED, client, request, scopes=scopes, redirect_uri=redirect_uri
    )


class Refused(Exception):
    """A refusal whose ``reason`` (its one argument) is safe to log and audit."""

    @property
    def reason(self) -> str:
        return str(self.args[0])


class CallbackRefused(Refused):
    """The upstream callback does not belong to a live transaction of this browser."""


def _refusal(
    reason: str, tx: AuthorizationTransaction | None, request: HttpRequest
) -> CallbackRefused:
    """The refusal of a callback, audited with its reason (CD-43..47)."""
    if tx is None and not ratelimit.first_in_window("callback-junk", request):
        # ABUSE-01: a state that names no transaction is anonymous junk: one audit
        # event per address and window, not one row each behind the chain-head lock.
        return CallbackRefused(reason)
    audit.record(
        AuditEvent.Action.CALLBACK_REFUSED,
        actor=audit.actor_from(request),
        request=request,
        client=tx.client if tx is not None else None,
        details={
            "reason": reason,
            "correlation_id": tx.pk if tx is not None else None,
            **({"aggregated_seconds": app_settings.RATE_LIMIT_AUDIT_WINDOW} if tx is None else {}),
        },
    )
    return CallbackRefused(reason)


def consume_transaction(
    state: str, binding: str | None, request: HttpRequest
) -> AuthorizationTransaction:
    """Claim the transaction of ``state`` for this browser, exactly once (CD-43..46).

    Every refusal is audited with its reason.
    """
    if not state or len(state) > 512:
        raise _refusal("missing state", None, request)
    tx = (
        AuthorizationTransaction.objects.select_related("client__application")
        .filter(state_hash=secret_hash(state))
        .first()
    )
    if tx is None:
        raise _refusal("unknown state", None, request)
    if binding is None or not hmac.compare_digest(tx.binding_hash, secret_hash(binding)):
        # CD-43: a state from another browser (login CSRF, stolen callback URL).
        raise _refusal("state not bound to this browser", tx, request)
    reason = _claim(tx)
    if reason is not None:
        raise _refusal(reason, tx, request)
    return tx


def _claim(tx: AuthorizationTransaction) -> str | None:
    """Mark ``tx`` consumed, or say why it cannot be (CD-44 expired, CD-45 used).

    The claim is a conditional UPDATE (consumed_at IS NULL): of concurrent callbacks with
    one state, exactly one gets a row count of 1.
    """
    now = timezone.now()
    if tx.consumed_at is not None:
        return "state already used"
    unclaimed = AuthorizationTransaction.objects.filter(pk=tx.pk, consumed_at__isnull=True)
    if tx.expires_at <= now:
        unclaimed.update(
            consumed_at=now,
            outcome=AuthorizationTransaction.Outcome.FAILED,
            failure_reason="expired",
        )
        return "state expired"
    if unclaimed.update(consumed_at=now) != 1:
        return "state already used"
    tx.consumed_at = now
    return None


def fail_transaction(
    tx: AuthorizationTransaction, outcome: str, reason: str, request: HttpRequest
) -> None:
    """A claimed transaction that ends without a grant (declined upstream, upstream error)."""
    with transaction.atomic():
        AuthorizationTransaction.objects.filter(pk=tx.pk).update(
            outcome=outcome, failure_reason=reason[:255]
        )
        audit.record(
            AuditEvent.Action.CALLBACK_REFUSED,
            actor=audit.actor_from(request),
            request=request,
            client=tx.client,
            details={"reason": reason, "outcome": outcome, "correlation_id": tx.pk},
        )


class GrantRefused(Refused):
    """The callback must not record this grant."""


class ClientChanged(GrantRefused):
    """SEC-05: the client was disabled or changed while the person was at the upstream."""


class NotTheRememberedPerson(GrantRefused):
    """SEC-04 / CD-01: a remembered consent of one person, an upstream sign-in of another."""


def check_client_as_approved(tx: AuthorizationTransaction, client: MCPClient) -> None:
    """SEC-05: the client is still enabled and shows what the person approved, or ClientChanged."""
    if client.is_disabled:
        raise ClientChanged("client disabled during the upstream sign-in")
    if (
        tx.client_metadata_version is not None
        and client.metadata_version != tx.client_metadata_version
    ):
        raise ClientChanged("client metadata changed during the upstream sign-in")


def complete_authorization(
    tx: AuthorizationTransaction, grant: UpstreamGrant, request: HttpRequest
) -> tuple[AbstractBaseUser, Consent]:
    """Map the upstream identity to a user, record the consent and store the upstream token.

    Runs inside the caller's transaction, together with the creation of the MCP
    authorization code, so a failure leaves nothing half-written. Raises GrantRefused
    (and so rolls back) when the grant is not the one the person approved (SEC-04, SEC-05).
    """
    adapter = get_adapter(request)
    now = timezone.now()
    assert tx.client is not None  # an AUTHORIZE transaction always has its client
    # SEC-05 / SEC-12: the client row is locked first (flows/locks.py: the client before its
    # consents): a disable or an update either committed before this check, or waits and then
    # revokes what this transaction records.
    client = lock_client(tx.client.pk)
    check_client_as_approved(tx, client)
    identity, new_user = identities.identity_for(grant, adapter)
    user = identity.user
    if tx.remembered and user.pk != tx.user_id:
        # SEC-04 / CD-01: the page was skipped for the proxy session's user (tx.user), but
        # the upstream signed in someone else: nobody approved a grant for that person.
        raise NotTheRememberedPerson("remembered consent of another person")
    consent, granted = _upsert_consent(tx, client, user, adapter, request, now, new_user=new_user)
    upstream_tokens.store_upstream_token(consent, identity, grant, new=granted is not None)
    _record_completed(tx, client, user, consent, grant, request, now, granted)
    return user, consent


def _upsert_consent(
    tx: AuthorizationTransaction,
    client: MCPClient,
    user: Any,
    adapter: DefaultConsentAdapter,
    request: HttpRequest,
    now: datetime,
    *,
    new_user: bool,
) -> tuple[Consent, AuditEvent | None]:
    """The live consent for exactly what was approved, renewed, or a new one.

    With a new consent, its CONSENT_GRANTED event, for _record_completed to write.
    """
    # CD-04: a consent is renewed only for exactly what this page showed and approved.
    approved = {
        "redirect_uri": tx.redirect_uri,
        "scopes": tx.scopes,
        "resource": tx.resource,
        "client_metadata_version": client.metadata_version,
    }
    expires_at = now + timedelta(seconds=adapter.consent_lifetime(client, user))
    # The person's live consents at this client, locked (SEC-12: their client is locked
    # already), in one statement: the one to renew, and SM-04's "previously granted".
    # Issue 11: a user inserted by this transaction has none (no other transaction can see
    # the row, let alone refer to it): nothing to look up or lock.
    live = (
        []
        if new_user
        else list(
            Consent.objects.live()
            .select_for_update(of=("self",))
            .filter(user=user, client=client)
            .order_by("pk")
        )
    )
    consent = next(
        (c for c in live if all(getattr(c, field) == value for field, value in approved.items())),
        None,
    )
    if consent is not None:
        consent.last_used_at, consent.expires_at = now, expires_at
        consent.save(update_fields=["last_used_at", "expires_at"])
        consent.client = client  # loaded and locked already: no lazy read for the audit
        return consent, None
    consent = Consent.objects.create(
        user=user,
        client=client,
        **approved,
        upstream_scopes=tx.upstream_scopes,
        granted_at=now,
        expires_at=expires_at,
        ip_address=client_ip(request),
        user_agent=user_agent(request),
        last_used_at=now,
    )
    previously = {scope for other in live for scope in other.scopes.split()}
    granted = audit.event(
        AuditEvent.Action.CONSENT_GRANTED,
        actor=audit.ActorInfo(AuditEvent.Actor.USER, user.pk, user.get_username()),
        request=request,
        consent=consent,
        details={
            "scopes": tx.scopes,
            "upstream_scopes": tx.upstream_scopes,
            # SM-04: an elevation is visible as granted scopes beyond those this person had
            # already granted this client (the union of their live consents there).
            "scopes_previously_granted": sorted(previously),
            "elevation": sorted(set(tx.scopes.split()) - previously),
            "correlation_id": tx.pk,
        },
    )
    transaction.on_commit(lambda: signals.consent_granted.send(sender=Consent, consent=consent))
    return consent, granted


def _record_completed(
    tx: AuthorizationTransaction,
    client: MCPClient,
    user: Any,
    consent: Consent,
    grant: UpstreamGrant,
    request: HttpRequest,
    now: datetime,
    granted: AuditEvent | None,
) -> None:
    """The client used, the consent granted (a new one) and the callback accepted, audited;
    the transaction's row is written with the code it issued (record_issued_code), in the
    same database transaction."""
    tokens.mark_client_used(client, now)
    tx.user, tx.consent, tx.outcome = user, consent, AuthorizationTransaction.Outcome.COMPLETED
    accepted = audit.event(
        AuditEvent.Action.CALLBACK_ACCEPTED,
        actor=audit.ActorInfo(AuditEvent.Actor.USER, user.pk, user.get_username()),
        request=request,
        client=client,
        consent=consent,
        details={"correlation_id": tx.pk, "upstream_login": grant.login},
    )
    # Issue 11: both events in one append (one head lock, one INSERT), in the order they
    # happened, in the grant's transaction like every write of the callback.
    audit.record_all([accepted] if granted is None else [granted, accepted])


def record_issued_code(tx: AuthorizationTransaction, code: str) -> None:
    """The transaction completed: its user, consent and outcome (set by complete_authorization)
    and the hash of the code issued for them (AS-41), in one UPDATE."""
    AuthorizationTransaction.objects.filter(pk=tx.pk).update(
        code_hash=secret_hash(code), user=tx.user_id, consent=tx.consent_id, outcome=tx.outcome
    )
