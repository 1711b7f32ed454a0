"""RFC 7591 registration and RFC 7592 management, through mcp_consent's policy and flows.

DOT's views accept http redirect URIs off loopback, port wildcards and non-code grants,
and drop registered metadata from the response (no ``client_id_issued_at``, ``scope``,
``client_uri``, ``logo_uri``; RFC 7591 §3.2.1 wants it echoed). These subclasses keep
DOT's permission classes and registration-token authentication and replace the rest.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views import (
    DynamicClientRegistrationManagementView,
    DynamicClientRegistrationView,
)

from .. import audit, ratelimit
from ..app_settings import app_settings
from ..flows import abuse, clients
from ..models import MCPClient, RegistrationSource
from ..registration import RegistrationError, clean_client_metadata, registration_budget_refusal
from .common import too_many_requests

MAX_BODY = 64 * 1024


def _error(error: RegistrationError) -> JsonResponse:
    response = JsonResponse(error.as_dict(), status=400)
    response["Cache-Control"] = "no-store"
    return response


def _parse(request: HttpRequest) -> Any:
    """DCR-01: a JSON object in an application/json body, else invalid_client_metadata."""
    content_type = request.content_type or ""
    if content_type != "application/json":
        raise RegistrationError(
            "invalid_client_metadata", "the request body must be application/json"
        )
    if len(request.body) > MAX_BODY:
        raise RegistrationError("invalid_client_metadata", "the request body is too large")
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise RegistrationError(
            "invalid_client_metadata", "the request body is not valid JSON"
        ) from None


def client_information(
    client: MCPClient,
    request: HttpRequest,
    *,
    registration_access_token: str | None,
    client_secret: str | None = None,
) -> dict[str, Any]:
    """RFC 7591 §3.2.1 / RFC 7592 §3: client_id, issue time and all registered metadata."""
    application = client.application
    data: dict[str, Any] = {
        "client_id": application.client_id,
        "client_id_issued_at": int(client.created_at.timestamp()),
        **client.metadata,
    }
    if client_secret:
        data["client_secret"] = client_secret
        data["client_secret_expires_at"] = 0  # REQUIRED with a secret; 0 = does not expire
    if registration_access_token:
        data["registration_access_token"] = registration_access_token
        # From the issuer, not the Host header: one exact origin everywhere (AS-13).
        data["registration_client_uri"] = app_settings.ISSUER + reverse(
            "oauth2_provider:dcr-register-management", kwargs={"client_id": application.client_id}
        )
    return data


def _json(data: dict[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(data, status=status)
    response["Cache-Control"] = "no-store"  # DCR-04: the response carries credentials
    response["Pragma"] = "no-cache"
    return response


@method_decorator(never_cache, name="dispatch")
class RegistrationView(DynamicClientRegistrationView):
    """POST /register/ (RFC 7591). csrf_exempt and anonymous: DOT's permission classes decide."""

    def registration_permitted(self, request: HttpRequest) -> bool:
        """DOT_REGISTRATION_PERMISSION_CLASSES, failing closed when none is configured."""
        classes = oauth2_settings.DCR_REGISTRATION_PERMISSION_CLASSES
        return bool(classes) and all(cls().has_permission(request) for cls in classes)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not self.registration_permitted(request):
            response = JsonResponse(
                {"error": "access_denied", "error_description": "registration not permitted"},
                status=401,
            )
            response["WWW-Authenticate"] = "Bearer"
            return response
        limited = ratelimit.hit("register", request)
        if limited is not None:
            # DCR-02: open registration, but not an unbounded one.
            if limited.first_refusal:
                abuse.record_rate_limited("register", request)
            return too_many_requests(request, limited)
        budget = registration_budget_refusal(request)
        if budget is not None:
            # ABUSE-03: never-used clients are bounded per address; the global cap is the
            # last resort (logged by the check, audited here once per address and window).
            abuse.record_registration_refused(
                "temporarily_unavailable",
                "too many unused clients"
                + (" from all addresses (MAX_UNUSED_DCR_CLIENTS)" if budget.last_resort else ""),
                request,
                anonymous=True,
            )
            response = JsonResponse(
                {"error": "temporarily_unavailable", "error_description": budget.description},
                status=429,
            )
            response["Retry-After"] = str(budget.retry_after)
            response["Cache-Control"] = "no-store"
            return response
        try:
            metadata = clean_client_metadata(_parse(request), RegistrationSource.DCR)
        except RegistrationError as error:
            abuse.record_registration_refused(
                error.error, error.description, request, anonymous=True
            )
            return _error(error)
        registered = clients.register_client(
            metadata, RegistrationSource.DCR, actor=audit.actor_from(request), request=request
        )
        return _json(
            client_information(
                registered.client,
                request,
                registration_access_token=registered.registration_access_token,
                client_secret=registered.client_secret,
            ),
            status=201,
        )


@method_decorator(never_cache, name="dispatch")
class RegistrationManagementView(DynamicClientRegistrationManagementView):
    """GET/PUT/DELETE /register/<client_id>/ (RFC 7592) with DOT's token authentication."""

    def _authenticate_registration_request(self, request: HttpRequest, client_id: str) -> Any:
        auth = super()._authenticate_registration_request(request, client_id)
        if not isinstance(auth, HttpResponse) and auth.application.mcp_client.is_disabled:
            # A client an operator disabled cannot re-register itself into use (MGMT-05).
            response = JsonResponse(
                {"error": "invalid_token", "error_description": "the client is disabled"},
                status=401,
            )
            response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response
        return auth

    def get(self, request: HttpRequest, client_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        auth = self._authenticate_registration_request(request, client_id)
        if isinstance(auth, HttpResponse):
            return auth
        client = auth.application.mcp_client
        return _json(
            client_information(client, request, registration_access_token=auth.presented_token)
        )

    def put(self, request: HttpRequest, client_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        auth = self._authenticate_registration_request(request, client_id)
        if isinstance(auth, HttpResponse):
            return auth
        try:
            data = _parse(request)
            if not isinstance(data, dict):
                raise RegistrationError(
                    "invalid_client_metadata", "client metadata must be a JSON object"
                )
            # MGMT-03: the request names the same client and never sets server-managed values.
            if data.get("client_id") != client_id:
                raise RegistrationError(
                    "invalid_request", "client_id must be present and unchanged"
                )
            forbidden = {
                "registration_access_token",
                "registration_client_uri",
                "client_secret_expires_at",
                "client_id_issued_at",
            }
            if forbidden & set(data):
                raise RegistrationError("invalid_request", "server-managed fields must not be sent")
            client = auth.application.mcp_client
            current_public = client.application.client_type == client.application.CLIENT_PUBLIC
            data.setdefault(
                "token_endpoint_auth_method", "none" if current_public else "client_secret_basic"
            )
            metadata = clean_client_metadata(data, RegistrationSource.DCR)
            if metadata.is_public != current_public:
                raise RegistrationError(
                    "invalid_client_metadata",
                    "token_endpoint_auth_method cannot change between public and confidential",
                )
        except RegistrationError as error:
            abuse.record_registration_refused(error.error, error.description, request)
            return _error(error)
        client = clients.update_client(
            client, metadata, actor=audit.client_actor(client), request=request
        )
        return _json(
            client_information(client, request, registration_access_token=auth.presented_token)
        )

    def delete(
        self, request: HttpRequest, client_id: str, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        auth = self._authenticate_registration_request(request, client_id)
        if isinstance(auth, HttpResponse):
            return auth
        client = auth.application.mcp_client
        # MGMT-04: the same cascade as an operator's delete (UP-09).
        clients.delete_client(
            client,
            actor=audit.client_actor(client),
            reason="deleted by the client (RFC 7592)",
            request=request,
        )
        return HttpResponse(status=204)
