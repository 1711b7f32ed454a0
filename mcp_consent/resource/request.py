"""Reading the bearer token from a request, framework-neutral (RS-09, TP-04, RFC 6750 §2).

The token is taken from the Authorization header only: a token in the query string (or a
form body) is refused, even next to a valid header. ``authenticate`` / ``aauthenticate``
then verify it through ``verify_token``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import parse_qsl

from asgiref.sync import sync_to_async
from django.http import QueryDict
from oauthlib.common import Request as OAuthlibRequest
from oauthlib.oauth2.rfc6749.tokens import get_token_from_header

from ..app_settings import canonical_resource
from .challenges import InvalidRequest, InvalidToken, MissingToken, default_resource
from .verification import VerifiedToken, release_connections, verify_token


def bearer_token(authorization: str | None, *, resource: str, scopes: list[str]) -> str:
    """The token of an ``Authorization: Bearer`` header (RFC 6750 §2.1), read by oauthlib.

    The oauthlib request holds the header only: ``get_token_from_header`` falls back to an
    ``access_token`` query or body parameter, which this resource never accepts (RS-09).
    """
    header = (authorization or "").strip()
    token = get_token_from_header(OAuthlibRequest("", headers={"Authorization": header}))
    if token:
        return str(token)
    if header.partition(" ")[0].lower() != "bearer":
        # RFC 6750 §3.1: no Bearer credentials at all, so the challenge names no error.
        raise MissingToken(resource=resource, scopes=scopes)
    raise InvalidToken("The access token is missing.", resource=resource, scopes=scopes)


def _refuse_token_outside_header(
    query_string: str, form_body: bytes | None, *, resource: str, scopes: list[str]
) -> None:
    """RS-09 / TP-04: tokens travel in the Authorization header only.

    A URI query leaks through logs, history and Referer (RFC 9700 §4.3.2); RFC 6750 §3.1 says
    a request that uses another method (or more than one) is invalid_request. Refused even
    when a valid header is present, so no client gets away with the habit.
    """
    names = {k for k, _ in parse_qsl(query_string, keep_blank_values=True)}
    if form_body:
        names |= set(QueryDict(form_body).keys())
    if "access_token" in names:
        raise InvalidRequest(
            "Send the access token in the Authorization header only.",
            resource=resource,
            scopes=scopes,
        )


def authenticate(
    *,
    authorization: str | None,
    query_string: str = "",
    form_body: bytes | None = None,
    resource: str | None = None,
    scopes: Iterable[str] = (),
) -> VerifiedToken:
    """Framework-neutral: verify the request's bearer token or raise BearerError.

    ``authorization`` is the Authorization header, ``query_string`` the raw URI query and
    ``form_body`` an application/x-www-form-urlencoded body if there is one. On BearerError
    answer ``error.status`` with ``error.headers()`` and the JSON ``error.body()``.
    """
    return authenticate_token(
        authorization=authorization,
        query_string=query_string,
        form_body=form_body,
        resource=resource,
        scopes=scopes,
    )[1]


def authenticate_token(
    *,
    authorization: str | None,
    query_string: str = "",
    form_body: bytes | None = None,
    resource: str | None = None,
    scopes: Iterable[str] = (),
) -> tuple[str, VerifiedToken]:
    """``authenticate``, with the raw token it read and verified (for code that hands the
    token on, as the MCP SDK's AccessToken carries it): the header is read once."""
    resource = canonical_resource(resource) if resource else default_resource()
    if resource is None:
        raise ValueError("resource must be an absolute http(s) URI")
    required = list(dict.fromkeys(scopes))
    _refuse_token_outside_header(query_string, form_body, resource=resource, scopes=required)
    raw = bearer_token(authorization, resource=resource, scopes=required)
    return raw, verify_token(raw, resource=resource, scopes=required)


async def aauthenticate(**kwargs: Any) -> VerifiedToken:
    """``authenticate`` for async code: the ORM work runs in a worker thread."""

    def work() -> VerifiedToken:
        try:
            return authenticate(**kwargs)
        finally:
            release_connections()

    return cast(VerifiedToken, await sync_to_async(work, thread_sensitive=True)())
