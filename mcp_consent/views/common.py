"""Pieces shared by the browser-facing views: security headers, client redirects, errors."""

from __future__ import annotations

import copy
import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    JsonResponse,
    QueryDict,
)
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from .. import upstream
from ..app_settings import app_settings
from ..registration import scheme_may_redirect

# CD-15 / BCP-11: the Referer must never carry one of our URLs (state, code_challenge, codes)
# to another origin. Two policies, chosen for every response in one place (protect_page):
# - a page whose form posts back to us gets "same-origin": under "no-referrer" Chromium sends
#   `Origin: null` with a same-origin form POST, and Django's CSRF check (CD-13) refuses it;
#   "same-origin" sends the Referer only to us;
# - everything else, above all the redirects that carry codes or state to the client or the
#   upstream and the error pages, gets "no-referrer".
FORM_PAGE_REFERRER_POLICY = "same-origin"
DEFAULT_REFERRER_POLICY = "no-referrer"


def render_form_page(
    request: HttpRequest, template_name: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    """Render a page whose forms POST back to this origin (consent page, Connected apps).

    The one way a page gets the "same-origin" referrer policy (see protect_page).
    """
    response = render(request, template_name, context, status=status)
    response.posts_back = True  # type: ignore[attr-defined]
    return response


def referrer_policy(response: HttpResponseBase) -> str:
    """The Referrer-Policy of one of our responses (CD-15, CD-13): see FORM_PAGE_REFERRER_POLICY."""
    if getattr(response, "posts_back", False) and not 300 <= response.status_code < 400:
        return FORM_PAGE_REFERRER_POLICY
    return DEFAULT_REFERRER_POLICY


def protect_page(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Headers of every consent, Connected apps, callback and error page.

    CD-14 / BCP-13: no framing (X-Frame-Options and CSP frame-ancestors). CD-15 / BCP-11: no
    third-party resources and no Referer to another origin (referrer_policy). No caching of
    pages that carry a CSRF token or a code. A per-response nonce allows the inline styles.
    """

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        request.csp_nonce = secrets.token_urlsafe(16)  # type: ignore[attr-defined]
        response = view(request, *args, **kwargs)
        response["X-Frame-Options"] = "DENY"
        response["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'nonce-{request.csp_nonce}'; img-src 'self'; "  # type: ignore[attr-defined]
            "frame-ancestors 'none'; base-uri 'none'"
        )
        response["Referrer-Policy"] = referrer_policy(response)
        response["X-Content-Type-Options"] = "nosniff"
        add_never_cache_headers(response)
        return response

    return wrapped


class ClientRedirect(HttpResponseRedirect):
    """A redirect to a validated client redirect URI: http(s), or the private-use scheme of
    a native client (DCR-11), never a dangerous or browser-internal one (DCR-13)."""

    def __init__(self, redirect_to: str, *args: Any, **kwargs: Any) -> None:
        scheme = urlsplit(redirect_to).scheme
        self.allowed_schemes = ["http", "https"]
        if scheme_may_redirect(scheme):
            self.allowed_schemes.append(scheme)
        super().__init__(redirect_to, *args, **kwargs)


def with_params(uri: str, params: dict[str, str | None]) -> str:
    """Append response parameters to a redirect URI, keeping its own query (AS-52).

    Each parameter appears once (AS-51): a same-named parameter of the registered URI is
    replaced, and ``iss`` is always the issuer (MU-01). Not oauthlib's ``add_params_to_uri``:
    it appends, so a registered ``https://app/cb?state=x`` would carry two ``state``s.
    """
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend((k, v) for k, v in params.items() if v is not None)
    return urlunsplit(parts._replace(query=urlencode(query)))


def redirect_to_client(uri: str, params: dict[str, str | None], *, post: bool) -> HttpResponse:
    """Redirect with ``iss`` added; 303 after a POST, never 307 (CD-16, BCP-12)."""
    response = ClientRedirect(with_params(uri, {**params, "iss": app_settings.ISSUER}))
    if post:
        response.status_code = 303
    return response


@dataclass(frozen=True)
class ErrorLink:
    """A link the person may follow from an error page: where to, and the words it shows."""

    url: str
    host: str


def client_error_link(redirect_uri: str, params: dict[str, str | None]) -> ErrorLink:
    """SEC-03: the error response as a link the person clicks, labelled with the client's host.

    Never followed automatically: the person sees the host it leads to before choosing.
    """
    url = with_params(redirect_uri, {**params, "iss": app_settings.ISSUER})
    return ErrorLink(url=url, host=urlsplit(redirect_uri).netloc or redirect_uri)


def error_page(
    request: HttpRequest,
    title: str,
    message: str,
    *,
    status: int = 400,
    link: ErrorLink | None = None,
) -> HttpResponse:
    """An error shown to the person, never a redirect (AS-50, SEC-03)."""
    return render(
        request,
        "mcp_consent/error.html",
        {
            "title": title,
            "message": message,
            "upstream_name": app_settings.UPSTREAM.name,
            "link": link,
        },
        status=status,
    )


def too_many_requests(request: HttpRequest, limited: Any, *, html: bool = False) -> HttpResponse:
    """429 with Retry-After and an OAuth error body (DCR-02, issue 4 abuse limits)."""
    description = f"Too many requests from this address; retry after {limited.retry_after} seconds."
    if html:
        message = _("Too many requests from this address; retry after %(seconds)s seconds.") % {
            "seconds": limited.retry_after
        }
        response = error_page(request, _("Too many requests"), message, status=429)
    else:
        response = JsonResponse(
            {"error": "temporarily_unavailable", "error_description": description}, status=429
        )
        response["Cache-Control"] = "no-store"
    response["Retry-After"] = str(limited.retry_after)
    return response


@protect_page
def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: a refused form (CD-13) explained to the person, status 403."""
    return error_page(
        request,
        _("This form has expired or did not come from this site"),
        _("Nothing was approved or sent. Go back to the application and start the sign-in again."),
        status=403,
    )


def as_authorization_request(
    request: HttpRequest, query_string: str, user: Any = None
) -> HttpRequest:
    """A GET view of ``request`` carrying exactly ``query_string``.

    The authorization request is always (re-)validated from the query string it arrived
    with: on the consent POST a body can add nothing, and on the upstream callback the
    stored query is validated again by DOT before a code is minted (CD-48).
    """
    clone = copy.copy(request)
    clone.method = "GET"
    clone.META = {**request.META, "QUERY_STRING": query_string, "REQUEST_METHOD": "GET"}
    clone.GET = QueryDict(query_string)
    clone.POST = QueryDict()
    clone.path = clone.path_info = request.path if user is None else _authorize_path()
    if user is not None:
        clone.user = user
    return clone


def _authorize_path() -> str:
    return reverse("oauth2_provider:authorize")


BINDING_SALT = "mcp_consent.upstream-binding"


def browser_binding(request: HttpRequest) -> str:
    """This browser's binding nonce (from its signed cookie), or a fresh 256-bit one."""
    name = app_settings.TRANSACTION_COOKIE_NAME
    return request.get_signed_cookie(
        name, default=None, salt=BINDING_SALT
    ) or secrets.token_urlsafe(32)


def read_browser_binding(request: HttpRequest) -> str | None:
    """The binding nonce of a callback: a missing, tampered or expired cookie is None (CD-22)."""
    return request.get_signed_cookie(
        app_settings.TRANSACTION_COOKIE_NAME,
        default=None,
        salt=BINDING_SALT,
        max_age=app_settings.TRANSACTION_TTL,
    )


@sensitive_variables("pending", "binding")  # SEC-02: state, verifier, the browser nonce
def send_upstream(request: HttpRequest, pending: Any, binding: str) -> HttpResponse:
    """The redirect to the upstream with the static client ID, and the browser-binding cookie."""
    response = HttpResponse(status=303 if request.method == "POST" else 302)
    response["Location"] = upstream.authorization_url(
        state=pending.state,
        scopes=pending.transaction.upstream_scopes.split(),
        code_verifier=pending.code_verifier,
    )
    # CD-20..22: __Host- prefix (Secure, Path=/, no Domain), HttpOnly, SameSite=Lax so the
    # cross-site top-level callback carries it, signed. One per browser: two tabs share it.
    response.set_signed_cookie(
        app_settings.TRANSACTION_COOKIE_NAME,
        binding,
        salt=BINDING_SALT,
        max_age=app_settings.TRANSACTION_TTL,
        secure=True,
        httponly=True,
        samesite="Lax",
        path="/",
    )
    return response
