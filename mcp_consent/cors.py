"""CORS for the machine-to-machine endpoints that browser-based MCP clients call.

Browser-based clients (the MCP Inspector, web agents) run discovery, registration and the
token exchange with ``fetch``. These endpoints are authenticated by what each request
carries (a code and its PKCE verifier, a refresh token, a registration access token) and
never by cookies, so ``Access-Control-Allow-Origin: *`` without credentials gives a foreign
page nothing it could not do from a server. Never on the authorization endpoint or the
consent and callback pages (CD-17, BCP-15), never ``Allow-Credentials``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase

ALLOWED_HEADERS = "Authorization, Content-Type, MCP-Protocol-Version"
EXPOSED_HEADERS = "WWW-Authenticate"


def public_cors(
    view: Callable[..., HttpResponseBase], methods: Iterable[str] = ("POST",)
) -> Callable[..., HttpResponseBase]:
    """Answer CORS preflights for ``methods`` and let any origin read the responses."""
    allowed_methods = ", ".join(dict.fromkeys([*methods, "OPTIONS"]))

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in request.META:
            response: HttpResponseBase = HttpResponse(status=204)
            response["Access-Control-Allow-Methods"] = allowed_methods
            response["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response["Access-Control-Max-Age"] = "600"
        else:
            response = view(request, *args, **kwargs)
            response["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response["Access-Control-Allow-Origin"] = "*"
        return response

    return wrapped
