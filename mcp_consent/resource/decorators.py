"""Django views protected by mcp_consent access tokens: ``require_bearer_token``.

A refused request gets the RFC 6750 answer of its ``BearerError`` (``error_response``:
RS-04, RS-06, RS-07); a verified token is ``request.mcp_token``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase, JsonResponse

from .challenges import BearerError
from .request import authenticate
from .verification import VerifiedToken

View = TypeVar("View", bound=Callable[..., Any])


def error_response(error: BearerError) -> JsonResponse:
    """The HTTP answer to a BearerError (RS-04, RS-06, RS-07)."""
    response = JsonResponse(error.body(), status=error.status)
    for name, value in error.headers().items():
        response[name] = value
    return response


def _authenticate_django(
    request: HttpRequest, resource: str | None, scopes: Iterable[str]
) -> VerifiedToken:
    form_body = None
    if request.content_type == "application/x-www-form-urlencoded":
        form_body = request.body  # read (and cached) before the view parses it
    return authenticate(
        authorization=request.headers.get("Authorization"),
        query_string=request.META.get("QUERY_STRING", ""),
        form_body=form_body,
        resource=resource,
        scopes=scopes,
    )


def require_bearer_token(
    scopes: Iterable[str] = (), *, resource: str | None = None
) -> Callable[[View], View]:
    """Protect a Django view (sync or async) with mcp_consent access tokens.

    The view runs only for a verified token, available as ``request.mcp_token`` (a
    VerifiedToken); every other request gets the RFC 6750 answer of ``BearerError``::

        @require_bearer_token(["items:read"])
        def items(request):
            ...
    """
    required = list(scopes)

    def decorator(view: View) -> View:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapped(
                request: HttpRequest, *args: Any, **kwargs: Any
            ) -> HttpResponseBase:
                try:
                    token = await sync_to_async(_authenticate_django)(request, resource, required)
                except BearerError as error:
                    return error_response(error)
                request.mcp_token = token  # type: ignore[attr-defined]
                return cast(HttpResponseBase, await view(request, *args, **kwargs))

            wrapped: Any = markcoroutinefunction(async_wrapped)
        else:

            @functools.wraps(view)
            def sync_wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
                try:
                    token = _authenticate_django(request, resource, required)
                except BearerError as error:
                    return error_response(error)
                request.mcp_token = token  # type: ignore[attr-defined]
                return cast(HttpResponseBase, view(request, *args, **kwargs))

            wrapped = sync_wrapped
        # The bearer token is not ambient (browsers never attach it by themselves), so a
        # cross-site request cannot ride on it: CSRF protection has nothing to protect here
        # and would refuse every MCP client's POST.
        wrapped.csrf_exempt = True
        # Authenticated by the token, not by a session (Django's LoginRequiredMiddleware).
        wrapped.login_required = False
        return cast(View, wrapped)

    return decorator
