"""django-oauth-toolkit, closed where it leaves MCP-relevant gaps.

``MCPAuthorizationServer`` is DOT's ``OAUTH2_SERVER_CLASS``: the oauthlib server with only
the code and refresh grants, PKCE S256 only (checked before any page is shown, AS-21), the
RFC 8707 ``resource`` allowlist at /authorize and /token (AS-30..35). ``MCPOAuth2Validator``
is DOT's ``OAUTH2_VALIDATOR_CLASS``: clients must be registered through mcp_consent and not
disabled, codes are stored hashed (AS-47), and a second redemption of a code revokes the
tokens the first one produced (AS-41).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from oauth2_provider.models import (
    get_application_model,
    get_grant_model,
    get_refresh_token_model,
    refresh_token_expire_timedelta,
)
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request
from oauthlib.oauth2 import Server
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.grant_types.authorization_code import code_challenge_method_s256

from .app_settings import app_settings
from .flows import clients, locks, tokens
from .models import MCPClient, RegistrationSource
from .registration import cimd_domain_blocked
from .vault import secret_hash

log = logging.getLogger(__name__)

CODE_CHALLENGE_RE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
# RFC 8252 §7.3 loopback redirect URIs: only the port may differ from the registered one.
LOOPBACK_URI_RE = re.compile(
    r"http://(127\.0\.0\.1|\[::1\]|localhost)(?::\d{1,5})?(?P<rest>[/?].*)?", re.DOTALL
)


def redirect_uri_registered(uri: str, registered: list[str]) -> bool:
    """CD-30 / BCP-01: simple string comparison (RFC 3986 §6.2.1), no normalisation at all.

    The only exception (CD-33) is the port of an http loopback URI, as RFC 8252 requires
    for native apps that listen on an ephemeral port.
    """
    if uri in registered:
        return True
    requested = LOOPBACK_URI_RE.fullmatch(uri)
    if requested is None:
        return False
    for candidate in registered:
        match = LOOPBACK_URI_RE.fullmatch(candidate)
        if (
            match
            and match.group(1) == requested.group(1)
            and match.group("rest") == requested.group("rest")
        ):
            return True
    return False


def live_refresh_token(row: Any) -> bool:
    """DOT 3.4.1's checks of an unrevoked refresh token (AS-44, AS-46), on a row loaded with
    its access token: not revoked, not orphaned (its access token deleted out of band), and
    not past REFRESH_TOKEN_EXPIRE_SECONDS after its access token's expiry (the deadline
    itself counts as expired, as in DOT)."""
    if row.revoked is not None or row.access_token is None:
        return False
    expire_delta = refresh_token_expire_timedelta()
    return not (expire_delta and row.access_token.expires + expire_delta <= timezone.now())


def _invalid_target(description: str, request: Request) -> errors.CustomOAuth2Error:
    return errors.CustomOAuth2Error(
        error="invalid_target", description=description, request=request
    )


def _allowed_resources(values: list[str], request: Request) -> list[str]:
    canonical: list[str] = []
    for value in values:
        allowed = app_settings.resource_allowed(value)
        if allowed is None:
            # AS-31: only configured MCP servers are valid audiences.
            raise _invalid_target(
                "The requested resource is not an MCP server of this authorization server.", request
            )
        if allowed not in canonical:
            canonical.append(allowed)
    return canonical


def validate_authorization_extras(request: Request) -> dict[str, Any]:
    """pre_auth validator: runs after client and redirect URI passed, so errors redirect."""
    if request.response_mode not in (None, "query"):
        # AS-51/AS-52: responses go in the query only (metadata: response_modes_supported).
        raise errors.InvalidRequestError(
            description="Only response_mode=query is supported.", request=request
        )
    if request.code_challenge is not None and not CODE_CHALLENGE_RE.fullmatch(
        request.code_challenge
    ):
        # AS-22: RFC 7636 §4.2 code_challenge = 43*128unreserved.
        raise errors.InvalidRequestError(
            description="code_challenge must be 43-128 unreserved characters.", request=request
        )
    # oauthlib keeps only the last of repeated parameters; RFC 8707 allows several.
    values = [
        v
        for k, v in parse_qsl(urlsplit(request.uri).query, keep_blank_values=True)
        if k == "resource"
    ]
    if values:
        return {"resource": _allowed_resources(values, request)}
    configured = app_settings.RESOURCES
    if len(configured) == 1:
        # AS-35: a request without `resource` means the one MCP server we protect.
        return {"resource": list(configured)}
    raise _invalid_target(
        "The resource parameter is required: name the MCP server to access.", request
    )


def validate_token_resource(request: Request) -> None:
    """pre_token validator of the code and refresh grants (AS-31, AS-34)."""
    values = [v for k, v in (request.decoded_body or []) if k == "resource"]
    if values:
        # DOT then checks that these are within the grant's (or refresh token's) resources.
        request.resource = _allowed_resources(values, request)
    if request.grant_type == "authorization_code" and request.code:
        # AS-47: Grant rows hold the SHA-256 of the code; every DOT lookup below uses it.
        request.code = secret_hash(request.code)


class MCPAuthorizationServer(Server):
    """oauthlib's Server with only what an MCP authorization server may offer."""

    def __init__(self, request_validator: OAuth2Validator, **kwargs: Any) -> None:
        super().__init__(request_validator, **kwargs)
        # AS-21: S256 only, so `plain` and an omitted method fail at validation, before
        # the consent page and the upstream login (DOT only refuses them at code creation).
        self.auth_grant._code_challenge_methods = {"S256": code_challenge_method_s256}
        self.auth_grant.custom_validators.pre_auth.append(validate_authorization_extras)
        self.auth_grant.custom_validators.pre_token.append(validate_token_resource)
        self.refresh_grant.custom_validators.pre_token.append(validate_token_resource)
        # AS-48 / BCP-06 / BCP-07: response_type=token is unsupported_response_type and the
        # password, client-credentials and device grants are unsupported_grant_type.
        self._response_types = {"code": self.auth_grant}
        self._grant_types = {
            "authorization_code": self.auth_grant,
            "refresh_token": self.refresh_grant,
        }


# The client a view has just read for this request (the callback: with its transaction, and
# under its lock inside the grant's transaction, SEC-12), so that DOT's re-validation does
# not read the same rows again. Only for the request's own client_id; never a CIMD client.
known_client: contextvars.ContextVar[MCPClient | None] = contextvars.ContextVar(
    "known_client", default=None
)


def _known_application(client_id: str) -> Any:
    client = known_client.get()
    if client is None or client.application.client_id != client_id:
        return None
    application = client.application
    if application.registration_source == application.RegistrationSource.CIMD:
        return None  # CIMD-08: DOT's own load refreshes a stale document
    application.mcp_client = client
    return application


class MCPOAuth2Validator(OAuth2Validator):
    """DOT's validator with mcp_consent's client registry and code handling."""

    def _load_application(self, client_id: str, request: Request) -> Any:
        if not client_id or "\x00" in client_id:
            # PostgreSQL refuses NUL in text: an unknown client, not a 500 (fuzzing finding).
            request.client = None
            return None
        if not request.client:
            request.client = _known_application(client_id)
        if not request.client:
            # The Application and its MCPClient in one query (DOT would load the Application,
            # then client_record_for the MCPClient). DOT reuses a request.client it finds; a
            # CIMD client is left to DOT's own load, which re-fetches a stale document.
            if transaction.get_connection().in_atomic_block:
                # SEC-12: a token request's first lock is its client's row (flows/locks.py),
                # taken by the query that loads it, before the Grant or refresh token.
                locked = locks.lock_client_by_client_id(client_id)
                application = locked.application if locked is not None else None
                if application is not None:
                    application.mcp_client = locked
            else:
                application = (
                    get_application_model()
                    .objects.select_related("mcp_client")
                    .filter(client_id=client_id)
                    .first()
                )
            if (
                application is not None
                and application.registration_source != application.RegistrationSource.CIMD
            ):
                request.client = application
        client = super()._load_application(client_id, request)
        if client is None:
            return None
        mcp_client = clients.client_record_for(client)
        if (
            mcp_client is not None
            and mcp_client.registration_source == RegistrationSource.CIMD
            and cimd_domain_blocked(client_id)
        ):
            # CIMD-13: the operators blocked this domain after its client was fetched.
            mcp_client = None
        if mcp_client is None or mcp_client.is_disabled:
            # Fail closed: a client that did not pass our registration policy, or that an
            # operator disabled, is unknown to the OAuth flow (error page, no redirect).
            request.client = None
            return None
        return client

    def _authenticate_basic_auth(self, request: Request) -> bool:
        try:
            return bool(super()._authenticate_basic_auth(request))
        except ValueError:
            # Non-ASCII bytes in a Basic header: bad credentials, not a 500 (fuzzing finding).
            return False

    def validate_redirect_uri(
        self, client_id: str, redirect_uri: str, request: Request, *args: Any, **kwargs: Any
    ) -> bool:
        # DOT compares parsed, case-folded parts; the BCP wants the exact string.
        return redirect_uri_registered(redirect_uri, request.client.redirect_uris.split())

    def _create_authorization_code(
        self, request: Request, code: dict[str, Any], expires: Any = None
    ) -> Any:
        return super()._create_authorization_code(
            request, {**code, "code": secret_hash(code["code"])}, expires
        )

    def validate_code(
        self, client_id: str, code: str, client: Any, request: Request, *args: Any, **kwargs: Any
    ) -> bool:
        """DOT's validate_code on one read of the Grant, locked, with its user.

        AS-41 under races: the Grant is locked (the token view runs in one transaction), so a
        parallel redemption waits, then finds it consumed and takes the reuse path below.
        The row is kept on the request: DOT would read it again for the redirect URI, the
        PKCE challenge and its method, and the resource (five reads, stock DOT's 15
        statements); those methods below use this one.
        """
        grants = (
            get_grant_model()
            .objects.select_related("user")
            .filter(code=code, application=client)
            .annotate(consent_until=tokens.consent_until())  # SEC-01, same query
        )
        if transaction.get_connection().in_atomic_block:
            grants = grants.select_for_update(of=("self",))
        grant = grants.first()
        if grant is not None and not grant.is_expired():
            if not tokens.live_until(grant.consent_until) and not tokens.consent_is_live(
                client, grant.user_id
            ):
                # SEC-01 / REV-04: no live consent (revoked, expired) means no token.
                return False
            # What DOT's validate_code sets, from the same row.
            request.scopes = grant.scope.split(" ")
            request.user = grant.user
            if grant.nonce:
                request.nonce = grant.nonce
            if grant.claims:
                request.claims = json.loads(grant.claims)
            request.mcp_grant = grant
            return True
        # AS-41 / BCP-10: a redeemed code presented again means it leaked; revoke what it bought.
        tokens.revoke_tokens_of_reused_code(code, client)
        return False

    def _validated_grant(self, code: str, request: Request) -> Any:
        """The Grant validate_code read for this request (None if it was another code)."""
        grant = getattr(request, "mcp_grant", None)
        client = getattr(request, "client", None)
        if (
            grant is None
            or client is None
            or grant.code != code
            or grant.application_id != client.pk
        ):
            return None
        return grant

    def confirm_redirect_uri(
        self, client_id: str, code: str, redirect_uri: str, client: Any, *args: Any, **kwargs: Any
    ) -> bool:
        request = args[0] if args else kwargs.get("request")
        grant = self._validated_grant(code, request) if request is not None else None
        if grant is None:
            return bool(
                super().confirm_redirect_uri(client_id, code, redirect_uri, client, *args, **kwargs)
            )
        return bool(grant.redirect_uri_allowed(redirect_uri))

    def get_code_challenge(self, code: str, request: Request) -> str | None:
        grant = self._validated_grant(code, request)
        if grant is None:
            return super().get_code_challenge(code, request)  # type: ignore[no-any-return]
        return grant.code_challenge or None

    def get_code_challenge_method(self, code: str, request: Request) -> str | None:
        grant = self._validated_grant(code, request)
        if grant is None:
            return super().get_code_challenge_method(code, request)  # type: ignore[no-any-return]
        return grant.code_challenge_method or None

    def _check_and_set_request_resource(self, request: Request) -> None:
        """DOT's RFC 8707 rules; for a code, on the Grant already read (DOT reads it again)."""
        grant = self._validated_grant(request.code, request) if request.code else None
        if request.grant_type != "authorization_code" or grant is None:
            super()._check_and_set_request_resource(request)
            return
        # validate_token_resource (pre_token) already turned every body `resource` into the
        # allowlisted list; none given means the grant's own audience.
        resource = getattr(request, "resource", None)
        request.resource = list(resource) if isinstance(resource, list) else []
        self._validate_resource_uris(request, request.resource)
        granted = grant.resource or []
        if request.resource and granted:
            for value in request.resource:
                if value not in granted:
                    # AS-34: a token request narrows the grant's audience, never widens it.
                    raise _invalid_target(
                        "The requested resource is not within the authorization grant.", request
                    )
        elif granted:
            self._validate_resource_uris(request, granted)
            request.resource = granted

    def save_bearer_token(
        self, token: dict[str, Any], request: Request, *args: Any, **kwargs: Any
    ) -> Any:
        """DOT's, without a savepoint inside the token view's transaction (2 statements less).

        ``atomic(savepoint=False)``: an error while saving still rolls back everything the
        request wrote, since the view's transaction then rolls back as a whole.
        """
        with transaction.atomic(savepoint=False):
            return self._save_bearer_token(token, request, *args, **kwargs)

    def _create_refresh_token(
        self, request: Request, refresh_token_code: str, access_token: Any, previous: Any
    ) -> Any:
        refresh = super()._create_refresh_token(request, refresh_token_code, access_token, previous)
        request.issued_refresh_token = refresh  # its family, for the audit event (no re-read)
        return refresh

    def _save_bearer_token(
        self, token: dict[str, Any], request: Request, *args: Any, **kwargs: Any
    ) -> Any:
        """Inside DOT's transaction: link the code to its token family (AS-41) and audit."""
        locked = getattr(request, "mcp_locked_refresh_token", None)
        if (
            locked is not None
            and locked is getattr(request, "refresh_token_instance", None)
            and request.grant_type == "refresh_token"
            and token.get("refresh_token")
            and "scope" in token
            and self.rotate_refresh_token(request)
        ):
            self._rotate(token, request, locked)
            result = None  # what DOT's _save_bearer_token returns
        else:
            result = super()._save_bearer_token(token, request, *args, **kwargs)
        tokens.record_token_issued(token, request)
        return result

    def _rotate(self, token: dict[str, Any], request: Request, previous: Any) -> None:
        """DOT's rotation branch of ``_save_bearer_token``, on the row validate_refresh_token
        locked (5 statements instead of DOT's 11).

        AS-44: DOT re-locks the refresh token (SELECT ... FOR UPDATE by pk), then revoke()
        opens a savepoint and locks and reads it a third time and reads its access token
        again. Not needed here: the row has been locked by this transaction since
        validate_refresh_token read it (the lock is held until COMMIT, so no other request
        can rotate, revoke or replay it in between, SEC-12) and the access token came with
        it. The revocation itself is a compare-and-set on ``revoked IS NULL``: if the row
        is no longer live (SQLite, where FOR UPDATE is a no-op, and a writer that got in
        first), nothing is written and the grant is refused.

        DOT's lookup of an access token already minted from this refresh token (its grace
        branch) is skipped: it can only find one for a revoked refresh token, since a
        rotation creates that access token and revokes the refresh token in one
        transaction, and this one is live and locked.
        """
        self._check_and_set_request_resource(request)
        expires = timezone.now() + timedelta(
            seconds=token.get("expires_in", oauth2_settings.ACCESS_TOKEN_EXPIRE_SECONDS)
        )
        if not tokens.retire_rotated_refresh_token(previous):
            raise errors.InvalidGrantError(request=request)
        request.refresh_token_instance = None  # as DOT after revoke()
        access_token = self._create_access_token(
            expires, request, token, source_refresh_token=previous
        )
        self._create_refresh_token(request, token["refresh_token"], access_token, previous)

    def validate_refresh_token(
        self, refresh_token: str, client: Any, request: Request, *args: Any, **kwargs: Any
    ) -> bool:
        """DOT's validate_refresh_token on one read of the refresh token, locked, with its
        user, its access token and the consent's expiry (SEC-01) in the same query.

        AS-44 under races: parallel uses of one refresh token queue on its row; the first
        rotates it, the others then see it used and DOT revokes the whole family.
        SEC-12: the client was locked when it was loaded (_load_application), before this
        refresh token's row (flows/locks.py). Only a live token takes the short way, with
        DOT's own checks (``live_refresh_token``); an unknown, revoked (a replay), orphaned
        or expired one goes through DOT's method, which revokes a replayed token's family.
        DOT would read the token, then its user and its application (3 statements), and
        ``_save_bearer_token`` would lock and read it twice more.
        """
        rows = (
            get_refresh_token_model()
            .objects.select_related("user", "access_token")
            .filter(token_checksum=secret_hash(refresh_token), application=client)
            .annotate(until=tokens.consent_until())
            # As DOT: the live row first if several share the checksum, else the latest.
            .order_by(F("revoked").desc(nulls_first=True))
        )
        locked = transaction.get_connection().in_atomic_block
        if locked:
            # Only the refresh token's row (of=self): locking the joined user or access
            # token here would take them out of flows/locks.py's order. The access token is
            # then deleted after this row, its DELETE taking its own lock (RefreshToken,
            # then AccessToken); DOT's extra FOR UPDATE on it guarded its grace branch.
            rows = rows.select_for_update(of=("self",))
        found = rows.first()
        if (
            found is not None
            and not tokens.live_until(found.until)
            and not tokens.consent_is_live(client, found.user_id)
        ):
            # SEC-01: a consent past its expires_at refreshes nothing: invalid_grant, no
            # rotation (a rotation would hand out a fresh refresh token, so it never ends).
            return False
        if found is not None and live_refresh_token(found):
            # What DOT's validate_refresh_token sets for a live token of this client (the
            # query filtered on it: DOT's ``rt.application == client``), from the same row.
            request.user = found.user
            request.refresh_token = refresh_token
            request.refresh_token_instance = found
            if locked:
                request.mcp_locked_refresh_token = found  # for _rotate: held until COMMIT
            return True
        if super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            return True
        # AS-44: DOT revoked the family if this was a rotated token presented again; audit it.
        tokens.record_refresh_token_reuse(refresh_token, client)
        return False

    def revoke_token(
        self, token: str, token_type_hint: str | None, request: Request, *args: Any, **kwargs: Any
    ) -> None:
        """RFC 7009 with the cascade: the client's last token revoked ends its consent (UP-09)."""
        owner = tokens.token_owner(token, request.client)
        super().revoke_token(token, token_type_hint, request, *args, **kwargs)
        if owner is not None:
            tokens.record_token_revoked(owner, request.client)
