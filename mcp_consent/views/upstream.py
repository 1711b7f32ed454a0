"""The upstream callback: the one URL the operator registers at the upstream provider.

Top to bottom: claim the transaction of ``state`` for this browser exactly once (CD-43..46),
re-validate the stored authorization request (CD-48), check the upstream's answer
(UP-06, MU-03), exchange the code and fetch the identity (UP-01, UP-10), then in ONE
database transaction record the consent, the encrypted upstream token and the MCP code,
log the person in with a fresh session and redirect to the client with code, state, iss.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from django.views import View
from django.views.decorators.debug import sensitive_variables

# DOT 3.4 defines the errors its views raise only in oauth2_provider.exceptions, and exports
# OAuthLibMixin (the base of its own views) only from views.mixins, not from views.
from oauth2_provider.exceptions import FatalClientError, OAuthToolkitError
from oauth2_provider.views.mixins import OAuthLibMixin

from .. import oauth, ratelimit, upstream, vault
from ..adapter import get_adapter
from ..app_settings import app_settings
from ..debug import hide_callback_secrets
from ..flows import abuse, authorization, identities, upstream_tokens
from ..models import AuthorizationTransaction
from .common import (
    as_authorization_request,
    error_page,
    protect_page,
    read_browser_binding,
    redirect_to_client,
    too_many_requests,
)

log = logging.getLogger(__name__)
Outcome = AuthorizationTransaction.Outcome


@dataclass(frozen=True)
class UpstreamFailure:
    """How an upstream failure is told to the client (never the upstream's own words)."""

    error: str
    description: str


def _grant(tokens: dict[str, Any], identity: dict[str, Any]) -> identities.UpstreamGrant:
    config = app_settings.UPSTREAM

    def field(name: str) -> str:
        value = identity.get(name)
        return str(value)[:255] if value is not None and not isinstance(value, (dict, list)) else ""

    return identities.UpstreamGrant(
        subject=field(config.subject_field),
        login=field(config.username_field),
        email=field(config.email_field),
        name=field(config.name_field),
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        token_type=tokens["token_type"],
        scopes=tokens["scope"],
        expires_at=tokens["expires_at"],
        refresh_expires_at=tokens["refresh_expires_at"],
        raw_identity=identity,
    )


@method_decorator(login_not_required, name="dispatch")
@method_decorator(protect_page, name="dispatch")
class UpstreamCallbackView(OAuthLibMixin, View):
    http_method_names = ["get"]

    # SEC-02: every frame below the callback holds secrets (the upstream code and tokens,
    # the PKCE verifier, the binding nonce, our code): none of their locals in error reports.
    # A thin marked entry point: mutmut leaves decorated functions alone, the logic is below.
    @sensitive_variables()
    def get(self, request: HttpRequest) -> HttpResponse:
        return self.callback(request)

    def callback(self, request: HttpRequest) -> HttpResponse:
        state, code = request.GET.get("state", ""), request.GET.get("code", "")
        hide_callback_secrets(request)
        limited = ratelimit.refused("callback", request)
        if limited is not None:
            # ABUSE-01: an address sending callbacks nobody started (unknown or used states)
            # is refused; callbacks of real sign-ins never count.
            if limited.first_refusal:
                abuse.record_rate_limited("callback", request)
            return too_many_requests(request, limited, html=True)
        tx = self.claim(request, state)
        if isinstance(tx, HttpResponse):
            return tx
        if tx.purpose == AuthorizationTransaction.Purpose.SIGN_IN:
            return self.sign_in(request, tx, code)
        credentials = self.revalidate(request, tx)
        if isinstance(credentials, HttpResponse):
            return credentials
        answer = self.upstream_answer(request, tx, code)
        if isinstance(answer, HttpResponse):
            return answer
        if isinstance(answer, UpstreamFailure):
            # UP-06: the upstream's own text is never relayed to the client.
            return redirect_to_client(
                tx.redirect_uri,
                {
                    "error": answer.error,
                    "error_description": answer.description,
                    "state": credentials.get("state"),
                },
                post=False,
            )
        return self.record_grant(request, tx, answer, credentials)

    def claim(self, request: HttpRequest, state: str) -> AuthorizationTransaction | HttpResponse:
        """The transaction of ``state`` for this browser, claimed once, or the refusal page."""
        binding = read_browser_binding(request)
        try:
            return authorization.consume_transaction(state, binding, request)
        except DatabaseError:
            log.exception("upstream callback: database unavailable")
            return error_page(
                request,
                _("Temporarily unavailable"),
                _(
                    "This service cannot complete sign-ins right now. Nothing was shared with any application. "
                    "Try again in a few minutes from your application."
                ),
                status=503,
            )
        except authorization.CallbackRefused as refused:
            # CD-43..47: no code exchange, no redirect to any client (audited with the reason).
            log.info("upstream callback refused: %s", refused.reason)
            ratelimit.failed("callback", request)
            return error_page(
                request,
                _("This sign-in cannot be completed"),
                _(
                    "The sign-in link is expired, was already used, or was started in another browser. "
                    "Nothing was shared with any application. Start again from your application."
                ),
            )

    def revalidate(
        self, request: HttpRequest, tx: AuthorizationTransaction
    ) -> dict[str, Any] | HttpResponse:
        """CD-48: only the stored, re-validated request decides where the code goes."""
        authz_request = as_authorization_request(request, tx.authorization_query)
        assert tx.client is not None  # an AUTHORIZE transaction always has its client
        known = oauth.known_client.set(tx.client)  # read with tx, a moment ago
        try:
            _scopes, credentials = self.validate_authorization_request(authz_request)
            authorization.check_client_as_approved(tx, tx.client)  # SEC-05, before the exchange
        except (FatalClientError, OAuthToolkitError, authorization.ClientChanged) as error:
            reason = getattr(error, "reason", "authorization request no longer valid")
            return self.refuse_grant(request, tx, None, authorization.ClientChanged(reason))
        finally:
            oauth.known_client.reset(known)
        return credentials

    def record_grant(
        self,
        request: HttpRequest,
        tx: AuthorizationTransaction,
        answer: identities.UpstreamGrant,
        credentials: dict[str, Any],
    ) -> HttpResponse:
        """In ONE database transaction: the consent, the upstream token and our code."""

        def grant_and_code() -> tuple[Any, str]:
            user, consent = authorization.complete_authorization(tx, answer, request)
            resume = as_authorization_request(request, tx.authorization_query, user=user)
            # SEC-12: the client locked by complete_authorization (not read again).
            known = oauth.known_client.set(consent.client)
            try:
                uri, _headers, _body, _status = self.create_authorization_response(
                    resume, " ".join(tx.scopes.split()), credentials, allow=True
                )
            finally:
                oauth.known_client.reset(known)
            issued = parse_qs(urlsplit(uri).query).get("code", [""])[0]
            authorization.record_issued_code(tx, issued)
            return user, uri

        try:
            user, uri = identities.in_one_transaction(grant_and_code)
        except (
            authorization.GrantRefused
        ) as refused:  # SEC-04, SEC-05: rolled back, nothing recorded
            return self.refuse_grant(request, tx, answer, refused)
        except (FatalClientError, OAuthToolkitError):
            # SEC-05: DOT re-validates while minting the code; a client disabled or changed
            # during the upstream exchange fails there (oauthlib's FatalClientError): not a 500.
            return self.refuse_grant(
                request,
                tx,
                answer,
                authorization.ClientChanged("authorization request no longer valid"),
            )
        except DatabaseError:
            log.exception("upstream callback: database error while recording the grant")
            return self.grant_not_recorded(request, tx, answer, credentials.get("state"))
        # The session is rotated on login (session fixation); pending state never lived in it.
        get_adapter(request).login(request, user)
        return redirect_to_client(uri, {}, post=False)

    def fail_if_possible(
        self, request: HttpRequest, tx: AuthorizationTransaction, reason: str
    ) -> None:
        """The transaction failed with ``reason``, audited, if the database still answers."""
        with suppress(DatabaseError):
            authorization.fail_transaction(tx, Outcome.FAILED, reason, request)

    def grant_not_recorded(
        self,
        request: HttpRequest,
        tx: AuthorizationTransaction,
        answer: identities.UpstreamGrant,
        state: str | None,
    ) -> HttpResponse:
        """Rolled back as one: no consent, no upstream token, no code.

        The upstream grant is revoked (UP-09); the client hears back with a retryable error
        instead of the person meeting a bare 500.
        """
        upstream_tokens.revoke_upstream_grant(answer.access_token, answer.refresh_token)
        self.fail_if_possible(request, tx, "database error while recording the grant")
        return redirect_to_client(
            tx.redirect_uri,
            {
                "error": "temporarily_unavailable",
                "error_description": "The authorization server could not record the grant; try again.",
                "state": state,
            },
            post=False,
        )

    def refuse_grant(
        self,
        request: HttpRequest,
        tx: AuthorizationTransaction,
        answer: identities.UpstreamGrant | None,
        refused: authorization.GrantRefused,
    ) -> HttpResponse:
        """A grant nobody approved (SEC-04, SEC-05): no consent, no code, a clear page.

        The upstream grant just obtained for it is revoked at the upstream (UP-09), never
        left live; the transaction fails with the reason, audited.
        """
        log.info("upstream callback: grant refused: %s", refused.reason)
        if answer is not None:
            upstream_tokens.revoke_upstream_grant(answer.access_token, answer.refresh_token)
        authorization.fail_transaction(tx, Outcome.FAILED, refused.reason, request)
        if isinstance(refused, authorization.NotTheRememberedPerson):
            return error_page(
                request,
                _("This sign-in cannot be completed"),
                _(
                    "You signed in at %(upstream)s with another account than the one that "
                    "approved this application before. Nothing was shared with the application. "
                    "Start again from your application to review its request."
                )
                % {"upstream": app_settings.UPSTREAM.name},
                status=403,
            )
        return error_page(
            request,
            _("This sign-in cannot be completed"),
            _(
                "The application's registration changed or was disabled while you were signing in. "
                "Nothing was shared with it."
            ),
            status=409,
        )

    def upstream_answer(
        self, request: HttpRequest, tx: AuthorizationTransaction, code: str
    ) -> identities.UpstreamGrant | UpstreamFailure | HttpResponse:
        """Check the upstream's answer, redeem its code, fetch the identity (UP-01..06, MU-03)."""
        if "error" in request.GET:
            authorization.fail_transaction(
                tx, Outcome.DENIED, "upstream returned an error", request
            )
            return UpstreamFailure(
                "access_denied", gettext_noop("Authorization was declined at the provider.")
            )
        config = app_settings.UPSTREAM
        iss = request.GET.get("iss")
        if (iss is None and config.require_iss) or (
            iss is not None and config.issuer and iss != config.issuer
        ):
            # MU-03 / UP-04 (RFC 9207 §2.4): a response from another authorization server
            # (mix-up), or without the `iss` an upstream that advertises it must send.
            authorization.fail_transaction(
                tx, Outcome.FAILED, "upstream iss missing or mismatched", request
            )
            return error_page(
                request,
                _("This sign-in cannot be completed"),
                _(
                    "The provider's response did not come from the expected provider. Nothing was shared with the application."
                ),
            )
        try:
            if not code:
                raise upstream.UpstreamError("callback without code")
            verifier = vault.decrypt(
                tx.code_verifier_encrypted, vault.verifier_context(tx.state_hash)
            )
            tokens = upstream.exchange_code(code, verifier or None)
            try:
                return _grant(tokens, upstream.fetch_identity(tokens["access_token"]))
            except upstream.UpstreamError:
                upstream_tokens.revoke_upstream_grant(
                    tokens["access_token"], tokens["refresh_token"]
                )
                raise
        except upstream.UpstreamError as exc:
            log.warning("upstream sign-in failed: %s", exc.reason)
            authorization.fail_transaction(tx, Outcome.FAILED, exc.reason, request)
            return UpstreamFailure(
                "server_error",
                gettext_noop("The upstream provider could not complete the sign-in."),
            )

    def sign_in(
        self, request: HttpRequest, tx: AuthorizationTransaction, code: str
    ) -> HttpResponse:
        """Connected apps: the same upstream leg, then the person's own page (no client)."""
        answer = self.upstream_answer(request, tx, code)
        if isinstance(answer, HttpResponse):
            return answer
        if isinstance(answer, UpstreamFailure):
            # The description is the English one sent to clients; the person reads it translated.
            return error_page(
                request,
                _("Sign-in did not complete"),
                _("%(reason)s Nothing was changed.") % {"reason": _(answer.description)},
            )
        try:
            user = identities.complete_sign_in(tx, answer, request)
        except DatabaseError:
            # Rolled back as one (a lost first sign-in race that did not resolve, or the
            # database gone): nobody signed in, a clear page instead of a bare 500.
            log.exception("upstream callback: database error while signing in")
            self.fail_if_possible(request, tx, "database error while signing in")
            return error_page(
                request,
                _("Temporarily unavailable"),
                _(
                    "This service cannot complete sign-ins right now. Nothing was changed. "
                    "Try again in a few minutes."
                ),
                status=503,
            )
        get_adapter(request).login(request, user)
        return HttpResponseRedirect(reverse("mcp_consent:connections"))
