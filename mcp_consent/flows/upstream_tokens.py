"""The upstream vault in use: server-side refresh."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from .. import vault
from ..models import (
    UpstreamToken,
)

# --- The upstream vault ---------------------------------------------------------------------


REFRESH_MARGIN = timedelta(seconds=60)


def refresh_upstream_token(token: UpstreamToken, *, force: bool = False) -> UpstreamToken:
    """Refresh one consent's upstream token server-side, once across concurrent workers (UP-08).

    The row is locked (SELECT ... FOR UPDATE) and re-read: a worker that waited for the lock
    finds the token another worker just refreshed and uses it. A rotated refresh token
    replaces the old one in the same UPDATE (OAuth 2.1 §4.3.2); one the upstream did not
    rotate is kept. Raises upstream.UpstreamError when the upstream refuses.
    """
    from .. import upstream

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
