"""The upstream vault in use: the upstream token stored at the callback, the consent behind
a verified MCP token, its upstream API session, the server-side refresh, and the one
revocation of an upstream grant.

The vault (``mcp_consent.vault``) only encrypts and decrypts; what reads consents and writes
upstream tokens lives here, a layer above it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Protocol

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from .. import upstream, vault
from ..models import Consent, UpstreamIdentity, UpstreamToken
from .identities import UpstreamGrant

log = logging.getLogger(__name__)

REFRESH_MARGIN = timedelta(seconds=60)


class TokenClaims(Protocol):
    """What the vault in use reads of a verified MCP token (``resource.VerifiedToken``)."""

    @property
    def user_id(self) -> Any: ...

    @property
    def application_id(self) -> int: ...

    @property
    def resource(self) -> str: ...

    @property
    def scopes(self) -> frozenset[str]: ...


def consent_for(token: TokenClaims) -> Consent | None:
    """The consent behind a verified MCP token, with its upstream token (RS-11, TP-03).

    Found from what the verified token says (its user, its client, the resource it was
    verified for), never from anything the MCP client sends, so a client can only ever
    reach the upstream grant that its own user approved for it. Of several live consents
    the one last used for an authorization wins; it must cover the token's scopes (RS-11)
    and list the token's resource among its resources (SEC-13: a token minted for two MCP
    servers has a consent whose ``resource`` is "A B", and is verified for A or for B).
    """
    candidates = (
        Consent.objects.live()
        .select_related("upstream_token")
        .filter(
            user_id=token.user_id,
            client__application_id=token.application_id,
            resource__contains=token.resource,  # narrows; the exact test is below
            upstream_token__isnull=False,
        )
        .order_by(F("last_used_at").desc(nulls_last=True), "-granted_at", "-pk")
    )
    # Every candidate is looked at, not the first N: a cap would hide a covering consent
    # behind narrower ones used since, and a reconnect only adds another one (RS-11). The
    # candidates are this person's live consents at this client: a handful.
    for consent in candidates:
        if token.resource in consent.resource.split() and token.scopes <= set(consent.scope_list):
            return consent
    return None


@sensitive_variables("refresh_token", "tokens")  # SEC-02
def refresh_upstream_token(token: UpstreamToken, *, force: bool = False) -> UpstreamToken:
    """Refresh one consent's upstream token server-side, once across concurrent workers (UP-08).

    The row is locked (SELECT ... FOR UPDATE) and re-read: a worker that waited for the lock
    finds the token another worker just refreshed and uses it. A rotated refresh token
    replaces the old one in the same UPDATE (OAuth 2.1 §4.3.2); one the upstream did not
    rotate is kept. Raises upstream.UpstreamError when the upstream refuses.
    """
    with transaction.atomic():
        locked = UpstreamToken.objects.select_for_update().get(pk=token.pk)
        fresh_enough = (
            locked.expires_at is None or locked.expires_at - REFRESH_MARGIN > timezone.now()
        )
        if locked.updated_at > token.updated_at or (fresh_enough and not force):
            return locked
        # SEC-10: each secret decrypts only as this consent's access / refresh token.
        access_ad = vault.upstream_token_context(locked.consent_id, "access")
        refresh_ad = vault.upstream_token_context(locked.consent_id, "refresh")
        refresh_token = vault.decrypt(locked.refresh_token_encrypted, refresh_ad)
        if not refresh_token:
            raise upstream.UpstreamError("no upstream refresh token")
        tokens = upstream.refresh(refresh_token)
        locked.access_token_encrypted = vault.encrypt(tokens["access_token"], access_ad)
        if tokens["refresh_token"]:
            locked.refresh_token_encrypted = vault.encrypt(tokens["refresh_token"], refresh_ad)
            locked.refresh_expires_at = tokens["refresh_expires_at"]
        locked.expires_at = tokens["expires_at"]
        if tokens["scope"]:
            locked.scopes = tokens["scope"]
        locked.save()
    return locked


def _refreshed(row: UpstreamToken, *, force: bool) -> UpstreamToken:
    """UP-08 (row lock, once across workers, atomic rotation).

    A grant the upstream refuses to refresh, or one without a refresh token, can only be
    replaced by a new authorization (UpstreamAuthorizationRequired); an outage stays an
    UpstreamError (try again later).
    """
    if not vault.upstream_refresh_token(row):
        raise upstream.UpstreamAuthorizationRequired("the upstream grant has no refresh token")
    try:
        return refresh_upstream_token(row, force=force)
    except upstream.UpstreamRefused as exc:
        raise upstream.UpstreamAuthorizationRequired(exc.reason) from None


def upstream_session(token: TokenClaims) -> upstream.UpstreamAPISession:
    """A requests.Session for the upstream API, carrying the token's consent's upstream token.

    Use it with paths relative to ``UPSTREAM["API_BASE_URL"]``::

        from mcp_consent.flows.upstream_tokens import upstream_session

        with upstream_session(verified) as api:
            items = api.get("api/items").json()

    The upstream token is refreshed server-side before it expires (UP-08) and once more on
    an upstream 401 (RS-11). Raises upstream.UpstreamAuthorizationRequired when only a new
    authorization can help (no live consent, refresh refused, still 401), and
    upstream.UpstreamError for outages. The MCP client's token is never sent (TP-03) and the
    upstream token never leaves this process except towards the upstream (TP-05, UP-07).
    """
    consent = consent_for(token)
    if consent is None:
        raise upstream.UpstreamAuthorizationRequired("no live consent with an upstream grant")
    current = consent.upstream_token
    if current.expires_at is not None and current.expires_at - REFRESH_MARGIN <= timezone.now():
        if current.expires_at <= timezone.now() or vault.upstream_refresh_token(current):
            current = _refreshed(current, force=False)

    def access_token() -> str:
        return vault.upstream_access_token(current)

    def refreshed_access_token() -> str:
        nonlocal current
        current = _refreshed(current, force=True)
        return vault.upstream_access_token(current)

    return upstream.UpstreamAPISession(
        access_token=access_token, refreshed_access_token=refreshed_access_token
    )


@sensitive_variables("access_token", "refresh_token", "token")  # SEC-02
def revoke_upstream_grant(access_token: str, refresh_token: str) -> str:
    """UP-09: revoke an upstream grant at the upstream's RFC 7009 endpoint (best effort).

    The one revocation of an upstream grant, for a consent's stored token and for one we
    obtained but could not record. The refresh token goes first (revoking it ends the grant
    at most providers), then the access token. Returns what happened, for the audit trail;
    never raises: the local copy is gone (or never existed) whatever the upstream answers.
    """
    outcome = "no revocation endpoint configured"
    for token, hint in ((refresh_token, "refresh_token"), (access_token, "access_token")):
        if not token:
            continue
        try:
            if upstream.revoke_token(token, hint):
                outcome = "revoked at the upstream"
        except Exception as exc:  # best effort on a failure path: never mask the real answer
            reason = getattr(exc, "reason", type(exc).__name__)
            log.warning("upstream revocation failed: %s", reason)
            return f"upstream revocation failed: {reason}"
    return outcome


def store_upstream_token(
    consent: Consent, identity: UpstreamIdentity, grant: UpstreamGrant, *, new: bool
) -> None:
    """The upstream grant, encrypted, as the one upstream token of this consent.

    No savepointed update_or_create: a new consent has no upstream token yet, and a renewed
    one is locked by this transaction (authorization._upsert_consent), so no parallel callback can insert
    its token between the UPDATE and the INSERT.
    """
    fields = {
        "identity": identity,
        # SEC-10: bound to this consent's row and to the field each one is stored in.
        "access_token_encrypted": vault.encrypt(
            grant.access_token, vault.upstream_token_context(consent.pk, "access")
        ),
        "refresh_token_encrypted": vault.encrypt(
            grant.refresh_token, vault.upstream_token_context(consent.pk, "refresh")
        ),
        "token_type": grant.token_type,
        "scopes": grant.scopes,
        "expires_at": grant.expires_at,
        "refresh_expires_at": grant.refresh_expires_at,
    }
    # A queryset UPDATE skips auto_now: updated_at is set by hand, as every write of the row
    # moves it on (refresh_upstream_token tells by it that another writer replaced the grant).
    renewed = {**fields, "updated_at": timezone.now()}
    if new or not UpstreamToken.objects.filter(consent=consent).update(**renewed):
        UpstreamToken.objects.create(consent=consent, **fields)
