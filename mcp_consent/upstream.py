"""The proxy as an OAuth client of the upstream provider (UP-01..10).

The only module that opens sockets (besides DOT's CIMD fetcher). Every URL comes from
configuration, never from request data (UP-03, UP-10); TLS certificates are verified
(requests' default, never turned off); every call has a timeout; only idempotent calls
are retried.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests
from django.urls import reverse
from django.utils import timezone
from requests.adapters import HTTPAdapter
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
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def authorization_url(*, state: str, scopes: list[str], code_verifier: str | None) -> str:
    """Where the approved browser goes: the upstream authorize URL with the static client."""
    upstream = app_settings.UPSTREAM
    params = {
        "response_type": "code",
        "client_id": upstream.client_id,
        "redirect_uri": callback_url(),
        "scope": " ".join(scopes),  # UP-05: exactly what the consent page showed
        "state": state,
    }
    if code_verifier:
        params["code_challenge"] = pkce_challenge(code_verifier)  # UP-01
        params["code_challenge_method"] = "S256"
    separator = "&" if "?" in upstream.authorize_url else "?"
    return upstream.authorize_url + separator + urlencode(params)


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


def exchange_code(code: str, code_verifier: str | None) -> dict[str, Any]:
    """Redeem the upstream authorization code; returns the token response with expiries."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": callback_url()}
    if code_verifier:
        data["code_verifier"] = code_verifier
    return _token_request(data, "the code")


def refresh(refresh_token: str) -> dict[str, Any]:
    """UP-08: refresh the upstream grant server-side (the client never sees these tokens)."""
    return _token_request(
        {"grant_type": "refresh_token", "refresh_token": refresh_token}, "the refresh token"
    )


def _token_request(data: dict[str, str], what: str) -> dict[str, Any]:
    upstream = app_settings.UPSTREAM
    try:
        response = http_session().post(
            upstream.token_url,
            data=data,
            auth=(upstream.client_id, upstream.client_secret),
            headers={"Accept": "application/json"},
            timeout=upstream.timeout,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise UpstreamError(f"token endpoint unreachable: {type(exc).__name__}") from None
    body = _json(response, "token endpoint")
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
        "scope": str(body.get("scope", ""))[:1024],
        "expires_at": _expiry(body.get("expires_in")),
        "refresh_expires_at": _expiry(body.get("refresh_token_expires_in")),
    }


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


def revoke_token(token: str, token_type_hint: str) -> bool:
    """RFC 7009 revocation at the upstream (UP-09). False when none is configured."""
    upstream = app_settings.UPSTREAM
    if not upstream.revocation_url or not token:
        return False
    try:
        response = http_session().post(
            upstream.revocation_url,
            data={"token": token, "token_type_hint": token_type_hint},
            auth=(upstream.client_id, upstream.client_secret),
            timeout=upstream.timeout,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise UpstreamError(f"revocation endpoint unreachable: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise UpstreamError(f"revocation endpoint answered HTTP {response.status_code}")
    return True


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
