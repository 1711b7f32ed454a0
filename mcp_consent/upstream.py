"""The proxy as an OAuth client of the upstream provider (UP-01..10).

The only module that opens sockets (besides DOT's CIMD fetcher). Every URL comes from
configuration, never from request data (UP-03, UP-10); TLS certificates are verified
(requests' default, never turned off); every call has a timeout; only idempotent calls
are retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote_plus, urljoin, urlsplit

import requests
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables
from oauthlib.common import add_params_to_uri, urldecode
from oauthlib.oauth2 import WebApplicationClient
from oauthlib.oauth2.rfc6749.parameters import prepare_token_request
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from urllib3.util.retry import Retry

from .app_settings import app_settings

log = logging.getLogger(__name__)

_session: requests.Session | None = None


class UpstreamError(Exception):
    """The upstream failed or answered something we cannot use. ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamRefused(UpstreamError):
    """The upstream's token endpoint refused the grant (e.g. invalid_grant): not an outage."""


class UpstreamAuthorizationRequired(UpstreamError):
    """Only a new authorization can help: the upstream grant is gone (RS-11).

    The API answered 401 even after a refresh, the refresh was refused, or there is no live
    consent with an upstream token. The MCP endpoint turns it into a 401 for the client.
    """


def http_session() -> requests.Session:
    """The process-wide session to the upstream: pooled, GET retried on connect errors."""
    global _session
    if _session is None:
        session = requests.Session()
        retry = Retry(
            total=2, connect=2, read=0, status=0, allowed_methods={"GET"}, backoff_factor=0.2
        )
        session.mount("https://", HTTPAdapter(max_retries=retry))
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.headers["User-Agent"] = "mcp-consent"
        _session = session
    return _session


def callback_url() -> str:
    """UP-03: the one fixed callback registered at the upstream, from the issuer."""
    return app_settings.ISSUER + reverse("mcp_consent:upstream-callback")


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2 S256 challenge, by oauthlib's client."""
    return str(WebApplicationClient(None).create_code_challenge(verifier, "S256"))


@sensitive_variables("state", "code_verifier", "params")
def authorization_url(*, state: str, scopes: list[str], code_verifier: str | None) -> str:
    """Where the approved browser goes: the upstream authorize URL with the static client.

    oauthlib's ``add_params_to_uri`` keeps the URL's own query. Not
    ``WebApplicationClient.prepare_request_uri``: it refuses http URLs unless
    OAUTHLIB_INSECURE_TRANSPORT is set for the whole process, and the demo upstream and the
    test fakes run on http://localhost (production is https: ``mcp_consent.E008``).
    """
    upstream = app_settings.UPSTREAM
    params = [
        ("response_type", "code"),
        ("client_id", upstream.client_id),
        ("redirect_uri", callback_url()),
        ("scope", " ".join(scopes)),  # UP-05: exactly what the consent page showed
        ("state", state),
    ]
    if code_verifier:
        params.append(("code_challenge", pkce_challenge(code_verifier)))  # UP-01
        params.append(("code_challenge_method", "S256"))
    return str(add_params_to_uri(upstream.authorize_url, params))


def client_auth() -> HTTPBasicAuth:
    """client_secret_basic as RFC 6749 §2.3.1 defines it: the client id and secret are each
    form-encoded *before* the Basic encoding (a secret with ``+``, ``/`` or ``:`` is otherwise
    read wrongly by a conforming server). requests and oauthlib send them unencoded."""
    upstream = app_settings.UPSTREAM
    return HTTPBasicAuth(quote_plus(upstream.client_id), quote_plus(upstream.client_secret))


def _token_body(response: requests.Response) -> dict[str, Any]:
    """The token endpoint's answer: JSON, or form-encoded from a provider that ignores our
    ``Accept: application/json`` (GitHub's default), decoded as oauthlib's
    ``parse_token_response`` does."""
    try:
        return _json(response, "token endpoint")
    except UpstreamError:
        content_type = response.headers.get("Content-Type", "")
        if "application/x-www-form-urlencoded" not in content_type:
            raise
        try:
            return dict(urldecode(response.text))
        except ValueError:
            raise UpstreamError("token endpoint: response is not form-encoded") from None


def _json(response: requests.Response, what: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise UpstreamError(f"{what}: response is not JSON (HTTP {response.status_code})") from None
    if not isinstance(data, dict):
        raise UpstreamError(f"{what}: response is not a JSON object")
    return data


def _expiry(seconds: Any) -> Any:
    try:
        value = int(seconds)
    except (TypeError, ValueError):
        return None
    return timezone.now() + timedelta(seconds=value) if value > 0 else None


@sensitive_variables("code", "code_verifier", "data", "body")
def exchange_code(code: str, code_verifier: str | None) -> dict[str, Any]:
    """Redeem the upstream authorization code; returns the token response with expiries."""
    body = prepare_token_request(
        "authorization_code",
        code=code,
        redirect_uri=callback_url(),
        code_verifier=code_verifier or None,
        include_client_id=False,  # the client authenticates with HTTP Basic (client_auth)
    )
    return _token_request(dict(urldecode(body)), "the code")


@sensitive_variables("refresh_token", "body")
def refresh(refresh_token: str) -> dict[str, Any]:
    """UP-08: refresh the upstream grant server-side (the client never sees these tokens)."""
    body = prepare_token_request(
        "refresh_token", refresh_token=refresh_token, include_client_id=False
    )
    return _token_request(dict(urldecode(body)), "the refresh token")


# SEC-02: the request carries codes, verifiers, refresh tokens; the answer, new tokens.
@sensitive_variables("data", "body", "access_token", "refresh_token")
def _token_request(data: dict[str, str], what: str) -> dict[str, Any]:
    upstream = app_settings.UPSTREAM
    try:
        response = http_session().post(
            upstream.token_url,
            data=data,
            auth=client_auth(),
            headers={"Accept": "application/json"},
            timeout=upstream.timeout,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise UpstreamError(f"token endpoint unreachable: {type(exc).__name__}") from None
    body = _token_body(response)
    if response.status_code != 200 or "error" in body:
        error = str(body.get("error", "unknown"))[:64]
        reason = f"token endpoint refused {what}: HTTP {response.status_code} {error}"
        if "error" in body and response.status_code in (200, 400, 401):
            # RFC 6749 §5.2 (GitHub answers these with 200): the grant itself is refused, so
            # retrying cannot help; an outage (5xx) stays a plain UpstreamError.
            raise UpstreamRefused(reason)
        raise UpstreamError(reason)
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise UpstreamError("token endpoint: no access_token in the response")
    refresh_token = body.get("refresh_token") or ""
    return {
        "access_token": access_token,
        "refresh_token": refresh_token if isinstance(refresh_token, str) else "",
        "token_type": str(body.get("token_type", "bearer"))[:32],
        # GitHub separates granted scopes with commas, RFC 6749 §3.3 with spaces.
        "scope": " ".join(str(body.get("scope", "")).replace(",", " ").split())[:1024],
        "expires_at": _expiry(body.get("expires_in")),
        "refresh_expires_at": _expiry(body.get("refresh_token_expires_in")),
    }


@sensitive_variables("access_token")
def fetch_identity(access_token: str) -> dict[str, Any]:
    """GET the upstream user info with the new token; returns the JSON object."""
    upstream = app_settings.UPSTREAM
    try:
        response = http_session().get(
            upstream.userinfo_url,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            timeout=upstream.timeout,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise UpstreamError(f"user info endpoint unreachable: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise UpstreamError(f"user info endpoint answered HTTP {response.status_code}")
    body = _json(response, "user info endpoint")
    subject = body.get(upstream.subject_field)
    if subject in (None, "") or isinstance(subject, (dict, list, bool)):
        raise UpstreamError(f"user info has no {upstream.subject_field!r}")
    return body


@sensitive_variables("token")
def revoke_token(token: str, token_type_hint: str) -> bool:
    """RFC 7009 revocation at the upstream (UP-09). False when none is configured."""
    upstream = app_settings.UPSTREAM
    if not upstream.revocation_url or not token:
        return False
    try:
        response = http_session().post(
            upstream.revocation_url,
            data={"token": token, "token_type_hint": token_type_hint},
            auth=client_auth(),
            timeout=upstream.timeout,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise UpstreamError(f"revocation endpoint unreachable: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise UpstreamError(f"revocation endpoint answered HTTP {response.status_code}")
    return True


# --- Discovery of any OpenID Connect / RFC 8414 provider (manage.py mcp_consent_discover) ----


def discover(issuer: str) -> dict[str, Any]:
    """The UPSTREAM settings of the provider ``issuer``, from its published metadata.

    Tries ``{issuer}/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0 §4),
    then RFC 8414's ``/.well-known/oauth-authorization-server`` (path inserted after the host,
    §3.1). The document's ``issuer`` must be exactly the one asked for (RFC 8414 §3.3, OIDC
    Discovery §4.3): a document for another issuer is how a mix-up starts (MU-03). Where the
    provider advertises RFC 9207 (``authorization_response_iss_parameter_supported``), a
    callback without its ``iss`` is refused (REQUIRE_ISS); PKCE only if it lists S256.
    Run once, at configuration time: the result is pasted into settings, so no request ever
    depends on a metadata fetch.
    """
    issuer = issuer.rstrip("/")
    parts = urlsplit(issuer)
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
        raise UpstreamError("the issuer must be an https URL without query or fragment")
    candidates = [
        f"{issuer}/.well-known/openid-configuration",
        f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{parts.path}",
    ]
    metadata: dict[str, Any] | None = None
    for url in candidates:
        try:
            response = http_session().get(url, timeout=10, allow_redirects=False)
        except requests.RequestException as exc:
            raise UpstreamError(f"metadata unreachable: {type(exc).__name__}") from None
        if response.status_code == 200:
            metadata = _json(response, "provider metadata")
            break
    if metadata is None:
        raise UpstreamError("no OpenID Connect or RFC 8414 metadata at the issuer")
    if metadata.get("issuer") != issuer:
        raise UpstreamError(
            f"the metadata is for issuer {metadata.get('issuer')!r}, not {issuer!r}"
        )
    for required in ("authorization_endpoint", "token_endpoint"):
        if not isinstance(metadata.get(required), str):
            raise UpstreamError(f"the metadata has no {required}")
    methods = metadata.get("code_challenge_methods_supported") or []
    scopes = metadata.get("scopes_supported") or []
    userinfo = str(metadata.get("userinfo_endpoint") or "")
    return {
        "NAME": parts.netloc,
        "AUTHORIZE_URL": metadata["authorization_endpoint"],
        "TOKEN_URL": metadata["token_endpoint"],
        "USERINFO_URL": userinfo,
        "REVOCATION_URL": str(metadata.get("revocation_endpoint") or ""),
        "ISSUER": issuer,
        "REQUIRE_ISS": metadata.get("authorization_response_iss_parameter_supported") is True,
        "PKCE": "S256" in methods,
        "SCOPES": [s for s in ("openid", "email", "profile") if s in scopes] or ["openid"],
        "SUBJECT_FIELD": "sub",
        "USERNAME_FIELD": "preferred_username",
    }


# --- The third-party API, called with a consent's upstream token (TP-03, RS-11, UP-10) ------


class UpstreamAPISession(requests.Session):
    """A requests.Session for the upstream API that carries one consent's upstream token.

    Made by ``flows.upstream_tokens.upstream_session``; pass paths relative to ``UPSTREAM["API_BASE_URL"]``.

    * UP-10 / SSRF-01..03: only URLs under the configured API base are reachable (no other
      host, no dot segments, no encoded separators) and redirects are never followed: a
      redirect would carry the token elsewhere or point the proxy at an internal address.
    * TP-03: the Authorization header is always the upstream token, set last, whatever the
      caller passed; the MCP client's token never gets here.
    * RS-11: an upstream 401 gets one server-side refresh and one retry; a second 401 raises
      UpstreamAuthorizationRequired. Connection failures raise UpstreamError, whose text
      never contains a secret.
    """

    def __init__(
        self, *, access_token: Callable[[], str], refreshed_access_token: Callable[[], str]
    ) -> None:
        super().__init__()
        shared = http_session()
        # The process-wide adapters: pooled connections, retries of idempotent calls only.
        self.adapters = shared.adapters
        self.headers.update(shared.headers)
        self.headers["Accept"] = "application/json"
        self.trust_env = shared.trust_env
        self.base = app_settings.UPSTREAM.api_base
        self._access_token = access_token
        self._refreshed_access_token = refreshed_access_token

    def api_url(self, url: str) -> str:
        """``url`` resolved against the API base, or UpstreamError if it leaves the base."""
        if not self.base:
            raise UpstreamError("no upstream API is configured (UPSTREAM API_BASE_URL)")
        target = urljoin(self.base, str(url))
        parts = urlsplit(target)
        path = parts.path.lower()
        if (
            not target.startswith(self.base)
            or parts.fragment
            or parts.username
            or parts.password
            or "\\" in target
            or "%2e" in path
            or "%2f" in path
            or "%5c" in path
        ):
            raise UpstreamError("refused a URL outside the upstream API")
        return target

    def request(  # type: ignore[override]
        self, method: str | bytes, url: str | bytes, **kwargs: Any
    ) -> requests.Response:
        target = self.api_url(url.decode() if isinstance(url, bytes) else url)
        headers = {
            k: v
            for k, v in dict(kwargs.pop("headers", None) or {}).items()
            if k.lower() not in {"authorization", "cookie"}
        }
        kwargs.pop("auth", None)
        kwargs.pop("cookies", None)
        kwargs["allow_redirects"] = False
        kwargs.setdefault("timeout", app_settings.UPSTREAM.timeout)

        @sensitive_variables("token")
        def send(token: str) -> requests.Response:
            try:
                return super(UpstreamAPISession, self).request(
                    method,
                    target,
                    headers={**headers, "Authorization": f"Bearer {token}"},
                    **kwargs,
                )
            except requests.RequestException as exc:
                raise UpstreamError(f"upstream API unreachable: {type(exc).__name__}") from None

        response = send(self._access_token())
        if response.status_code == 401:
            # The stored token may have been revoked or expired early: refresh once (under the
            # row lock, so concurrent callers refresh once) and retry. A 401 means the request
            # was not processed, so the retry is safe for any method.
            response.close()
            response = send(self._refreshed_access_token())
            if response.status_code == 401:
                response.close()
                raise UpstreamAuthorizationRequired("the upstream API refused the refreshed token")
        return response

    def close(self) -> None:
        # The adapters belong to the process-wide session: closing them here would drop
        # every pooled connection of the process.
        self.cookies.clear()
