"""The person behind an upstream sign-in: their upstream identity and their local user."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from .. import audit
from ..adapter import DefaultConsentAdapter, get_adapter
from ..app_settings import app_settings
from ..models import AuditEvent, AuthorizationTransaction, UpstreamIdentity


@dataclass
class UpstreamGrant:
    """What the upstream returned for one transaction.

    SEC-02: the tokens are secrets, kept out of the repr (and so out of logs and reports).
    """

    subject: str
    login: str
    email: str
    name: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    token_type: str
    scopes: str
    expires_at: Any
    refresh_expires_at: Any
    raw_identity: dict[str, Any]


T = TypeVar("T")


class SignInRaced(IntegrityError):
    """A first sign-in's user or identity hit a unique key: a parallel first sign-in of the
    same person (another tab) committed theirs first. Its transaction is lost (PostgreSQL
    aborts it); ``in_one_transaction`` runs the work again."""


def in_one_transaction(work: Callable[[], T]) -> T:
    """``work()`` in one database transaction, run a second time if it lost a first sign-in
    race (SignInRaced): the second run finds the winner's identity and continues as that
    person (CD-01), one user for them, never a 500.

    Issue 11: the race is once per person at most, and rare even then; retrying the whole
    transaction costs nothing in the common case, where a savepoint around the inserts cost
    every new person's callback two statements. A second loss (an IntegrityError that is no
    race) propagates: a DatabaseError, the callback's "not recorded" path.
    """
    try:
        with transaction.atomic():
            return work()
    except SignInRaced:
        with transaction.atomic():
            return work()


def identity_for(
    grant: UpstreamGrant, adapter: DefaultConsentAdapter
) -> tuple[UpstreamIdentity, bool]:
    """(upstream provider, subject) -> the local user, created on first sight (the adapter).

    True when the user is certainly a row inserted by this call, in the caller's
    transaction: nothing of theirs (no consent, no token) can exist yet, since no other
    transaction can see the new row. Only the stock ``create_user`` is known to insert one;
    an override may link an existing user (by e-mail, say), who may have consents: False.

    Runs inside ``in_one_transaction``: a first sign-in that loses a race raises SignInRaced.
    """
    upstream = app_settings.UPSTREAM
    provider = upstream.issuer or upstream.authorize_url
    # The user in the same query; only the identity row is locked (flows/locks.py).
    identities = UpstreamIdentity.objects.select_for_update(of=("self",)).select_related("user")
    identity = identities.filter(provider=provider, subject=grant.subject).first()
    if identity is None:
        try:
            # django-stubs types the user as the default User; any AUTH_USER_MODEL works.
            user: Any = adapter.create_user(grant)
            identity = UpstreamIdentity.objects.create(
                provider=provider,
                subject=grant.subject,
                user=user,
                login=grant.login,
                email=grant.email,
                last_login_at=timezone.now(),
            )
        except IntegrityError as error:
            raise SignInRaced(*error.args) from error
        adapter.update_user(identity.user, grant)
        return identity, type(adapter).create_user is DefaultConsentAdapter.create_user
    _record_sign_in(identity, grant)
    adapter.update_user(identity.user, grant)
    return identity, False


# Which upstream account signed in last (Connected apps shows it) is a question of minutes
# at most; the login and email the upstream returned are written whenever they change.
LAST_LOGIN_RESOLUTION = timedelta(minutes=5)


def _record_sign_in(identity: UpstreamIdentity, grant: UpstreamGrant) -> None:
    """The identity's login, email and last sign-in, unless the row already says so."""
    now = timezone.now()
    if (
        identity.login == grant.login
        and identity.email == grant.email
        and identity.last_login_at is not None
        and now - identity.last_login_at < LAST_LOGIN_RESOLUTION
    ):
        return
    identity.login, identity.email, identity.last_login_at = grant.login, grant.email, now
    identity.save(update_fields=["login", "email", "last_login_at"])


def complete_sign_in(
    tx: AuthorizationTransaction, grant: UpstreamGrant, request: HttpRequest
) -> AbstractBaseUser:
    """Connected apps sign-in: map the identity to the user; no consent, no token is kept."""

    def sign_in() -> AbstractBaseUser:
        user = identity_for(grant, get_adapter(request))[0].user
        AuthorizationTransaction.objects.filter(pk=tx.pk).update(
            user=user, outcome=AuthorizationTransaction.Outcome.COMPLETED
        )
        audit.record(
            AuditEvent.Action.SIGNED_IN,
            actor=audit.ActorInfo(AuditEvent.Actor.USER, user.pk, user.get_username()),
            request=request,
            details={"correlation_id": tx.pk, "upstream_login": grant.login},
        )
        return user

    return in_one_transaction(sign_in)
