"""Views of the demo upstream ("Demo Hub"), a small GitHub-like OAuth 2.0 provider.

Like GitHub it knows one static client (the MCP proxy, ``settings.DEMO_UPSTREAM``) and
remembers the user's consent for it in a cookie: the next authorization request for that client
is answered with an immediate redirect carrying a code, with no page shown. That is the
precondition of the confused-deputy attack the main product defends against.

Every endpoint is wrapped by :func:`upstream_endpoint`, which writes one ``RequestLog`` row per
request (parameter names only), even for rejected methods and failed CSRF checks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import wraps
from urllib.parse import unquote, unquote_plus, urlencode, urlsplit

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    QueryDict,
)
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods

from .models import Account, AuthorizationCode, Item, RequestLog, Token, hash_secret

PROVIDER_NAME = "Demo Hub"

USER_COOKIE = "demo_upstream_user"
USER_COOKIE_SALT = "demo_upstream.user"
USER_COOKIE_MAX_AGE = 8 * 60 * 60
CONSENT_COOKIE = "demo_upstream_consent"
CONSENT_COOKIE_MAX_AGE = 365 * 24 * 60 * 60

CODE_LIFETIME = timedelta(minutes=10)
ACCESS_TOKEN_EXPIRES_IN = 28800  # 8 hours, like GitHub App user tokens
REFRESH_TOKEN_EXPIRES_IN = 15897600  # about 6 months, like GitHub

# The scopes Demo Hub knows, with the text shown on its consent page.
SCOPES = {
    "read:user": "Read your profile data",
    "user:email": "Read your email address",
    "repo:read": "Read your items",
    "repo:write": "Create and change your items",
}
ITEMS_SCOPE = "repo:read"

# RFC 7636: code_challenge = BASE64URL(SHA256(code_verifier)), 43 characters, no padding.
CODE_CHALLENGE_RE = re.compile(r"[A-Za-z0-9_-]{43}")
CODE_VERIFIER_RE = re.compile(r"[A-Za-z0-9._~-]{43,128}")

AUTHORIZE_PARAMS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)

# Parameter names written to RequestLog as they are; any other name is logged as "?", so that a
# secret sent as a bare name ("?<token>") can never end up in the log.
LOGGED_PARAM_NAMES = frozenset(
    {
        *AUTHORIZE_PARAMS,
        "client_secret",
        "code",
        "code_verifier",
        "grant_type",
        "refresh_token",
        "token",
        "token_type_hint",
        "username",
        "password",
        "next",
        "decision",
        "csrfmiddlewaretoken",
        "login",
        "allow_signup",
        "resource",
        "nonce",
        "prompt",
        "page",
        "per_page",
    }
)

# Headers for HTML pages: no caching of consent pages, no external resources.
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "base-uri 'none'; frame-ancestors 'none'"
)


# --------------------------------------------------------------------------------------------
# Configuration (read live, so tests can use override_settings)
# --------------------------------------------------------------------------------------------


def _conf() -> dict:
    conf = getattr(settings, "DEMO_UPSTREAM", None)
    return conf if isinstance(conf, dict) else {}


def _client_id() -> str:
    return str(_conf().get("CLIENT_ID") or "")


def _client_name() -> str:
    conf = _conf()
    return str(conf.get("CLIENT_NAME") or conf.get("CLIENT_ID") or "")


def _redirect_uris() -> list[str]:
    return [str(uri) for uri in _conf().get("REDIRECT_URIS") or []]


def _issuer() -> str:
    return str(_conf().get("ISSUER") or "")


def _equal(a: str, b: str) -> bool:
    """Constant-time comparison of two strings."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _is_static_client(client_id: str) -> bool:
    expected = _client_id()
    return bool(expected) and _equal(client_id, expected)


def _prefix() -> str:
    """The URL prefix the app is mounted under ("/demo-upstream/"): cookie path, next= check."""
    return reverse("demo_upstream:home")


def _cookie_secure() -> bool:
    # Follow the project's cookie posture (Secure cookies work on http://localhost too).
    return bool(getattr(settings, "SESSION_COOKIE_SECURE", False))


# --------------------------------------------------------------------------------------------
# Request logging
# --------------------------------------------------------------------------------------------


def _param_names(params: QueryDict) -> str:
    names = []
    for name, values in params.lists():
        shown = name if name in LOGGED_PARAM_NAMES else "?"
        names.extend([shown] * len(values))
    return " ".join(names)


def _log_request(request: HttpRequest, endpoint: str, response: HttpResponse | None) -> None:
    try:
        query_params = _param_names(request.GET)
    except Exception:  # noqa: BLE001 -- e.g. TooManyFieldsSent: still log the request
        query_params = "<unparsable>"
    body_params = ""
    if request.method == "POST":
        try:
            body_params = _param_names(request.POST)
        except Exception:  # noqa: BLE001
            body_params = "<unparsable>"
    scheme = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")[0]
    RequestLog.objects.create(
        method=(request.method or "")[:10],
        path=request.path,
        endpoint=endpoint,
        query_params=query_params,
        body_params=body_params,
        auth_scheme=scheme[:20] if scheme.isalpha() else ("?" if scheme else ""),
        status_code=response.status_code if response is not None else None,
    )


def upstream_endpoint(
    endpoint: str, methods: Iterable[str], *, csrf: bool = False
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Log every request (one RequestLog row) and then enforce methods and, if asked, CSRF.

    The wrapper is csrf_exempt for the middleware and checks CSRF itself (csrf_protect) AFTER it
    is in charge of logging, so that even rejected requests are counted.
    """

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        inner = require_http_methods(list(methods))(view)
        if csrf:
            inner = csrf_protect(inner)

        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            response = None
            try:
                response = inner(request, *args, **kwargs)
                return response
            finally:
                _log_request(request, endpoint, response)

        return csrf_exempt(wrapper)

    return decorator


# --------------------------------------------------------------------------------------------
# Helpers: pages, cookies, redirects, JSON
# --------------------------------------------------------------------------------------------


def _page(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    context = {"provider_name": PROVIDER_NAME, **context}
    response = render(request, f"demo_upstream/{template}", context, status=status)
    response["Cache-Control"] = "no-store"
    response["Content-Security-Policy"] = PAGE_CSP
    # Not the project's "no-referrer": under it browsers send "Origin: null" with same-origin
    # form POSTs (Fetch spec), which Django's CSRF check rejects. "same-origin" keeps the
    # Origin header and still sends nothing to other origins. SecurityMiddleware uses
    # setdefault, so this wins.
    response["Referrer-Policy"] = "same-origin"
    return response


def _error_page(request: HttpRequest, title: str, message: str, status: int = 400):
    return _page(request, "error.html", {"title": title, "message": message}, status=status)


def _current_account(request: HttpRequest) -> Account | None:
    login = request.get_signed_cookie(
        USER_COOKIE, default=None, salt=USER_COOKIE_SALT, max_age=USER_COOKIE_MAX_AGE
    )
    if not login:
        return None
    return Account.objects.filter(login=login).first()


def _consent_salt(client_id: str) -> str:
    # Bound to the client id: a consent cookie never covers another client.
    return f"demo_upstream.consent:{client_id}"


def _read_consent(request: HttpRequest, client_id: str) -> dict[str, set[str]]:
    """Scopes already approved for the static client, per upstream user login."""
    raw = request.COOKIES.get(CONSENT_COOKIE)
    if not raw:
        return {}
    try:
        data = signing.loads(raw, salt=_consent_salt(client_id), max_age=CONSENT_COOKIE_MAX_AGE)
    except signing.BadSignature:
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(login): {s for s in scopes if isinstance(s, str)}
        for login, scopes in data.items()
        if isinstance(scopes, list)
    }


def _write_consent(
    response: HttpResponse, client_id: str, consent: dict[str, set[str]] | None
) -> None:
    if not consent:
        response.delete_cookie(CONSENT_COOKIE, path=_prefix(), samesite="Lax")
        return
    value = signing.dumps(
        {login: sorted(scopes) for login, scopes in consent.items()},
        salt=_consent_salt(client_id),
        compress=True,
    )
    response.set_cookie(
        CONSENT_COOKIE,
        value,
        max_age=CONSENT_COOKIE_MAX_AGE,
        path=_prefix(),
        secure=_cookie_secure(),
        httponly=True,
        samesite="Lax",
    )


def _safe_next(value: str | None) -> str | None:
    """``value`` if it is a relative path under the app's prefix, else None (no open redirect)."""
    if not value or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in value) or "\\" in value:
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith(_prefix()):
        return None
    if any(segment in {".", ".."} for segment in unquote(parts.path).split("/")):
        return None
    return value


class ClientRedirect(HttpResponseRedirect):
    allowed_schemes = ["http", "https"]


def _redirect_to_client(redirect_uri: str, params: dict[str, str | None]) -> HttpResponse:
    """302 to the (registered) redirect URI with the authorization response parameters."""
    base = redirect_uri.split("#", 1)[0]
    query = urlencode({k: v for k, v in params.items() if v is not None})
    response = ClientRedirect(f"{base}{'&' if urlsplit(base).query else '?'}{query}")
    response["Cache-Control"] = "no-store"
    return response


def _json(data, status: int = 200, headers: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse(data, status=status, safe=False, headers=headers)
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def _oauth_error(
    error: str, description: str = "", status: int = 400, headers: dict[str, str] | None = None
) -> JsonResponse:
    body = {"error": error}
    if description:
        body["error_description"] = description
    return _json(body, status=status, headers=headers)


def _new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --------------------------------------------------------------------------------------------
# Pages: home, login, logout, forget consent
# --------------------------------------------------------------------------------------------


@upstream_endpoint("home", ["GET"], csrf=True)
def home(request: HttpRequest) -> HttpResponse:
    account = _current_account(request)
    approved: list[str] = []
    if account is not None and _client_id():
        approved = sorted(_read_consent(request, _client_id()).get(account.login, set()))
    return _page(
        request,
        "home.html",
        {"account": account, "client_name": _client_name(), "approved_scopes": approved},
    )


@upstream_endpoint("login", ["GET", "POST"], csrf=True)
def login(request: HttpRequest) -> HttpResponse:
    data = request.POST if request.method == "POST" else request.GET
    next_url = _safe_next(data.get("next"))
    context = {
        "next": next_url or "",
        "username": "",
        "error": "",
        "account": _current_account(request),
    }
    if request.method == "GET":
        return _page(request, "login.html", context)

    username = request.POST.get("username", "").strip()
    password = request.POST.get("password", "")
    account = Account.objects.filter(login=username).first() if username else None
    if account is None:
        # Same work as a real check, so timing does not tell which logins exist.
        Account(password="").set_password(password)
        ok = False
    else:
        ok = account.check_password(password)
    if not ok:
        context.update(username=username, error="Incorrect username or password.")
        return _page(request, "login.html", context)

    response = HttpResponseRedirect(next_url or reverse("demo_upstream:login"))
    response.set_signed_cookie(
        USER_COOKIE,
        account.login,
        salt=USER_COOKIE_SALT,
        max_age=USER_COOKIE_MAX_AGE,
        path=_prefix(),
        secure=_cookie_secure(),
        httponly=True,
        samesite="Lax",
    )
    return response


@upstream_endpoint("logout", ["POST"], csrf=True)
def logout(request: HttpRequest) -> HttpResponse:
    response = HttpResponseRedirect(reverse("demo_upstream:login"))
    response.delete_cookie(USER_COOKIE, path=_prefix(), samesite="Lax")
    return response


@upstream_endpoint("forget_consent", ["POST"], csrf=True)
def forget_consent(request: HttpRequest) -> HttpResponse:
    """Like GitHub's "Revoke access": forget the approval and revoke the client's tokens."""
    account = _current_account(request)
    response = HttpResponseRedirect(reverse("demo_upstream:home"))
    client_id = _client_id()
    if account is None or not client_id:
        return response
    consent = _read_consent(request, client_id)
    consent.pop(account.login, None)
    _write_consent(response, client_id, consent)
    Token.objects.filter(account=account, client_id=client_id, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    return response


# --------------------------------------------------------------------------------------------
# Authorization endpoint
# --------------------------------------------------------------------------------------------


@upstream_endpoint("authorize", ["GET", "POST"], csrf=True)
def authorize(request: HttpRequest) -> HttpResponse:
    """GET: the authorization request. POST: the consent form (Authorize / Cancel)."""
    data = request.POST if request.method == "POST" else request.GET

    # 1. Client and redirect URI. Errors here are shown, NEVER redirected (RFC 6749 §4.1.2.1).
    if len(data.getlist("client_id")) > 1 or len(data.getlist("redirect_uri")) > 1:
        return _error_page(request, "Invalid request", "A parameter was sent more than once.")
    client_id = data.get("client_id", "")
    if not _is_static_client(client_id):
        return _error_page(
            request, "Unknown application", "No application is registered with this client_id."
        )
    redirect_uri = data.get("redirect_uri", "")
    if redirect_uri not in _redirect_uris():
        return _error_page(
            request,
            "Redirect URI mismatch",
            "The redirect_uri is not registered for this application.",
        )

    # 2. Other errors go back to the client.
    state = data.get("state")

    def error(code: str, description: str) -> HttpResponse:
        return _redirect_to_client(
            redirect_uri,
            {"error": code, "error_description": description, "state": state, "iss": _issuer()},
        )

    for name in AUTHORIZE_PARAMS:
        if len(data.getlist(name)) > 1:
            return error("invalid_request", f"{name} was sent more than once.")
    if data.get("response_type") != "code":
        return error("unsupported_response_type", "Only response_type=code is supported.")
    scopes = sorted(set(data.get("scope", "").split()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        return error("invalid_scope", "Unknown scope.")
    challenge = data.get("code_challenge", "")
    method = data.get("code_challenge_method", "")
    if challenge or method:
        if method != "S256":
            return error("invalid_request", "Only code_challenge_method=S256 is supported.")
        if not CODE_CHALLENGE_RE.fullmatch(challenge):
            return error("invalid_request", "Malformed code_challenge.")

    # 3. The user must be signed in to Demo Hub.
    account = _current_account(request)
    if account is None:
        if request.method == "GET":
            back = request.get_full_path()
        else:
            params = {n: data.get(n) for n in AUTHORIZE_PARAMS if data.get(n) is not None}
            back = f"{reverse('demo_upstream:authorize')}?{urlencode(params)}"
        return HttpResponseRedirect(f"{reverse('demo_upstream:login')}?{urlencode({'next': back})}")

    def grant() -> HttpResponse:
        code = secrets.token_urlsafe(32)
        now = timezone.now()
        AuthorizationCode.objects.create(
            code_hash=hash_secret(code),
            client_id=client_id,
            redirect_uri=redirect_uri,
            scope=" ".join(scopes),
            account=account,
            code_challenge=challenge,
            code_challenge_method=method if challenge else "",
            created_at=now,
            expires_at=now + CODE_LIFETIME,
        )
        return _redirect_to_client(redirect_uri, {"code": code, "state": state, "iss": _issuer()})

    consent = _read_consent(request, client_id)
    approved = consent.get(account.login)

    if request.method == "GET":
        if approved is not None and set(scopes) <= approved:
            # GitHub behaviour: consent already given for these scopes, no page is shown.
            return grant()
        return _page(
            request,
            "authorize.html",
            {
                "account": account,
                "client_name": _client_name(),
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "redirect_origin": "{0.scheme}://{0.netloc}".format(urlsplit(redirect_uri)),
                "scopes": [
                    {"name": s, "description": SCOPES[s], "new": s not in (approved or set())}
                    for s in scopes
                ],
                "params": [(n, data.get(n)) for n in AUTHORIZE_PARAMS if data.get(n) is not None],
            },
        )

    decision = request.POST.get("decision")
    if decision == "authorize":
        response = grant()
        consent[account.login] = (approved or set()) | set(scopes)
        _write_consent(response, client_id, consent)
        return response
    if decision == "cancel":
        return error("access_denied", "The user denied the request.")
    return error("invalid_request", "Missing decision.")


# --------------------------------------------------------------------------------------------
# Token endpoint and revocation (client authentication)
# --------------------------------------------------------------------------------------------


def _invalid_client(basic: bool) -> JsonResponse:
    headers = {"WWW-Authenticate": f'Basic realm="{PROVIDER_NAME}"'} if basic else None
    return _oauth_error("invalid_client", "Client authentication failed.", 401, headers)


def _client_credentials_ok(client_id: str, secret: str) -> bool:
    conf = _conf()
    expected_id = str(conf.get("CLIENT_ID") or "")
    expected_secret = str(conf.get("CLIENT_SECRET") or "")
    if not expected_id or not expected_secret:
        return False
    id_ok = _equal(client_id, expected_id)
    secret_ok = _equal(secret, expected_secret)
    return id_ok and secret_ok


def _authenticate_client(request: HttpRequest) -> tuple[str | None, JsonResponse | None]:
    """HTTP Basic (RFC 6749 §2.3.1) or client_id + client_secret in the body."""
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "basic":
        if "client_secret" in request.POST:
            return None, _oauth_error("invalid_request", "Use one client authentication method.")
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None, _invalid_client(basic=True)
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            return None, _invalid_client(basic=True)
        # RFC 6749 says form-urlencode both; many clients do not. Accept either spelling.
        candidates = {(raw_id, raw_secret), (unquote_plus(raw_id), unquote_plus(raw_secret))}
        matches = [cid for cid, secret in candidates if _client_credentials_ok(cid, secret)]
        body_id = request.POST.get("client_id")
        if not matches or (body_id is not None and body_id != matches[0]):
            return None, _invalid_client(basic=True)
        return matches[0], None
    client_id = request.POST.get("client_id")
    secret = request.POST.get("client_secret")
    if client_id is None or secret is None or not _client_credentials_ok(client_id, secret):
        return None, _invalid_client(basic=False)
    return client_id, None


def _repeated_param(params: QueryDict) -> str | None:
    for name, values in params.lists():
        if len(values) > 1:
            return name
    return None


def _token_response(
    account: Account,
    client_id: str,
    scope: str,
    *,
    family=None,
    parent: Token | None = None,
    code: AuthorizationCode | None = None,
) -> JsonResponse:
    access_token = _new_secret("dho_")
    refresh_token = _new_secret("dhr_")
    now = timezone.now()
    fields = {
        "access_token_hash": hash_secret(access_token),
        "refresh_token_hash": hash_secret(refresh_token),
        "client_id": client_id,
        "account": account,
        "scope": scope,
        "created_at": now,
        "access_expires_at": now + timedelta(seconds=ACCESS_TOKEN_EXPIRES_IN),
        "refresh_expires_at": now + timedelta(seconds=REFRESH_TOKEN_EXPIRES_IN),
        "parent": parent,
        "authorization_code": code,
    }
    if family is not None:
        fields["family"] = family
    Token.objects.create(**fields)
    return _json(
        {
            "access_token": access_token,
            "token_type": "bearer",
            "scope": scope,
            "expires_in": ACCESS_TOKEN_EXPIRES_IN,
            "refresh_token": refresh_token,
            "refresh_token_expires_in": REFRESH_TOKEN_EXPIRES_IN,
        }
    )


def _grant_authorization_code(request: HttpRequest, client_id: str) -> JsonResponse:
    code = request.POST.get("code")
    if not code:
        return _oauth_error("invalid_request", "Missing code.")
    redirect_uri = request.POST.get("redirect_uri", "")
    verifier = request.POST.get("code_verifier")
    now = timezone.now()
    record = (
        AuthorizationCode.objects.select_related("account")
        .filter(code_hash=hash_secret(code))
        .first()
    )
    if record is None or not _equal(record.client_id, client_id):
        return _oauth_error("invalid_grant", "The code is invalid.")
    with transaction.atomic():
        # Single use, race-free: only one request can flip used_at. A failed attempt below
        # (wrong verifier, wrong redirect_uri) consumes the code as well.
        consumed = AuthorizationCode.objects.filter(pk=record.pk, used_at__isnull=True).update(
            used_at=now
        )
        if not consumed:
            # RFC 6749 §4.1.2: a reused code revokes the tokens issued from it.
            Token.objects.filter(authorization_code=record, revoked_at__isnull=True).update(
                revoked_at=now
            )
    if not consumed:
        return _oauth_error("invalid_grant", "The code was already used.")
    if record.expires_at <= now:
        return _oauth_error("invalid_grant", "The code has expired.")
    if not _equal(redirect_uri, record.redirect_uri):
        return _oauth_error("invalid_grant", "redirect_uri does not match.")
    if record.code_challenge:
        if not verifier or not CODE_VERIFIER_RE.fullmatch(verifier):
            return _oauth_error("invalid_grant", "Missing or malformed code_verifier.")
        if not _equal(_s256(verifier), record.code_challenge):
            return _oauth_error("invalid_grant", "code_verifier does not match.")
    elif verifier is not None:
        # RFC 9700 §2.1.1: a code_verifier without a code_challenge is a PKCE downgrade.
        return _oauth_error("invalid_grant", "No code_challenge was sent for this code.")
    return _token_response(record.account, client_id, record.scope, code=record)


def _revoke_family(family) -> None:
    Token.objects.filter(family=family, revoked_at__isnull=True).update(revoked_at=timezone.now())


def _grant_refresh_token(request: HttpRequest, client_id: str) -> JsonResponse:
    refresh_token = request.POST.get("refresh_token")
    if not refresh_token:
        return _oauth_error("invalid_request", "Missing refresh_token.")
    now = timezone.now()
    record = (
        Token.objects.select_related("account")
        .filter(refresh_token_hash=hash_secret(refresh_token))
        .first()
    )
    if record is None or not _equal(record.client_id, client_id):
        return _oauth_error("invalid_grant", "The refresh token is invalid.")
    if record.refresh_used_at is not None:
        # A rotated refresh token came back: it leaked. Revoke the whole family.
        _revoke_family(record.family)
        return _oauth_error("invalid_grant", "The refresh token was already used.")
    if record.revoked_at is not None or (
        record.refresh_expires_at is not None and record.refresh_expires_at <= now
    ):
        return _oauth_error("invalid_grant", "The refresh token is revoked or expired.")
    scope = record.scope
    if "scope" in request.POST:
        requested = set(request.POST["scope"].split())
        if not requested <= set(record.scopes):
            return _oauth_error("invalid_scope", "The scope exceeds the granted scope.")
        scope = " ".join(sorted(requested))
    with transaction.atomic():
        rotated = Token.objects.filter(
            pk=record.pk, refresh_used_at__isnull=True, revoked_at__isnull=True
        ).update(refresh_used_at=now, revoked_at=now)
    if not rotated:
        _revoke_family(record.family)
        return _oauth_error("invalid_grant", "The refresh token was already used.")
    return _token_response(record.account, client_id, scope, family=record.family, parent=record)


@upstream_endpoint("access_token", ["POST"])
def access_token(request: HttpRequest) -> JsonResponse:
    client_id, failure = _authenticate_client(request)
    if failure is not None:
        return failure
    repeated = _repeated_param(request.POST)
    if repeated:
        return _oauth_error("invalid_request", f"{repeated} was sent more than once.")
    grant_type = request.POST.get("grant_type")
    if not grant_type:
        return _oauth_error("invalid_request", "Missing grant_type.")
    if grant_type == "authorization_code":
        return _grant_authorization_code(request, client_id)
    if grant_type == "refresh_token":
        return _grant_refresh_token(request, client_id)
    return _oauth_error("unsupported_grant_type", "Unsupported grant_type.")


@upstream_endpoint("revoke", ["POST"])
def revoke(request: HttpRequest) -> JsonResponse:
    """RFC 7009. Revoking an access token revokes its grant row (the refresh token with it);
    revoking a refresh token revokes its whole rotation family. Unknown tokens: 200."""
    client_id, failure = _authenticate_client(request)
    if failure is not None:
        return failure
    token = request.POST.get("token")
    if not token:
        return _oauth_error("invalid_request", "Missing token.")
    digest = hash_secret(token)
    now = timezone.now()
    record = Token.objects.filter(access_token_hash=digest, client_id=client_id).first()
    if record is not None:
        Token.objects.filter(pk=record.pk, revoked_at__isnull=True).update(revoked_at=now)
    else:
        record = Token.objects.filter(refresh_token_hash=digest, client_id=client_id).first()
        if record is not None:
            _revoke_family(record.family)
    return _json({})


# --------------------------------------------------------------------------------------------
# API (bearer token)
# --------------------------------------------------------------------------------------------


def _bad_credentials(token_sent: bool) -> JsonResponse:
    challenge = f'Bearer realm="{PROVIDER_NAME}"'
    if token_sent:
        challenge += ', error="invalid_token"'
    return _json({"message": "Bad credentials"}, 401, {"WWW-Authenticate": challenge})


def _bearer_token(request: HttpRequest) -> tuple[Token | None, JsonResponse | None]:
    """``Authorization: Bearer <token>`` (or GitHub's ``token <token>``)."""
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    value = value.strip()
    if scheme.lower() not in {"bearer", "token"} or not value:
        return None, _bad_credentials(token_sent=False)
    token = (
        Token.objects.select_related("account")
        .filter(
            access_token_hash=hash_secret(value),
            revoked_at__isnull=True,
            access_expires_at__gt=timezone.now(),
        )
        .first()
    )
    if token is None:
        return None, _bad_credentials(token_sent=True)
    return token, None


@upstream_endpoint("user", ["GET"])
def user(request: HttpRequest) -> JsonResponse:
    token, failure = _bearer_token(request)
    if failure is not None:
        return failure
    account = token.account
    return _json(
        {"id": account.pk, "login": account.login, "name": account.name, "email": account.email},
        headers={"X-OAuth-Scopes": ", ".join(token.scopes)},
    )


@upstream_endpoint("items", ["GET"])
def items(request: HttpRequest) -> JsonResponse:
    token, failure = _bearer_token(request)
    if failure is not None:
        return failure
    if ITEMS_SCOPE not in token.scopes:
        return _json(
            {"message": f"This endpoint needs the {ITEMS_SCOPE} scope."},
            status=403,
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="{PROVIDER_NAME}", error="insufficient_scope", '
                    f'scope="{ITEMS_SCOPE}"'
                ),
                "X-OAuth-Scopes": ", ".join(token.scopes),
                "X-Accepted-OAuth-Scopes": ITEMS_SCOPE,
            },
        )
    owned = Item.objects.filter(account_id=token.account_id)
    data = [{"id": item.pk, "title": item.title} for item in owned]
    return _json(data, headers={"X-OAuth-Scopes": ", ".join(token.scopes)})
