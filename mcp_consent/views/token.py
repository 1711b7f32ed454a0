"""The token endpoint and the metadata document, with DOT's detours closed.

DOT's TokenView answers the device grant itself before oauthlib sees it, and errors raised
while saving a token (e.g. a resource outside the grant) come back without a JSON content
type or ``no-store``. RFC 8414 metadata gains ``response_modes_supported``.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from oauth2_provider import views as dot_views
from oauth2_provider.models import get_access_token_model

# DOT's own signal, sent as DOT's TokenView sends it: projects listening to it keep working.
from oauth2_provider.signals import app_authorized

from .. import ratelimit
from ..flows import abuse
from ..vault import secret_hash
from .common import too_many_requests

# Secrets that Django's error reports (mails to ADMINS, the DEBUG page) must never show.
SENSITIVE_POST = (
    "code",
    "code_verifier",
    "refresh_token",
    "client_secret",
    "token",
    "password",
    "assertion",
)


@method_decorator(sensitive_post_parameters(*SENSITIVE_POST), name="post")
class TokenView(dot_views.TokenView):
    """POST /token/: every grant type goes through oauthlib's grant allowlist (AS-48)."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        limited = ratelimit.refused("token", request)
        if limited is not None:
            # ABUSE-01: counted are failed requests (unknown codes, bad client credentials),
            # so a busy client that redeems and refreshes is never refused.
            if limited.first_refusal:
                abuse.record_rate_limited("token", request)
            return too_many_requests(request, limited)
        try:
            request.POST  # noqa: B018 - parse now: an oversized body is an OAuth error, not HTML
        except RequestDataTooBig:
            too_big = JsonResponse(
                {"error": "invalid_request", "error_description": "request body too large"},
                status=400,
            )
            too_big["Cache-Control"] = "no-store"
            return too_big
        # One transaction per token request: the row locks taken by the validator (the Grant
        # of a code, the refresh token) serialise racing redemptions of one credential, so
        # the losers see it consumed and revoke what the winner got (AS-41, AS-44).
        with transaction.atomic():
            response = self.authorization_flow_token_response(request)
        if response.status_code != 200:
            ratelimit.failed("token", request)
            # AS-48 / RFC 6749 §5.2: every error is JSON and never cached.
            response["Content-Type"] = "application/json"
            response["Cache-Control"] = "no-store"
            response["Pragma"] = "no-cache"
        return response

    def authorization_flow_token_response(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        """DOT's, without its inner sensitive_post_parameters("password", "client_secret"),
        which would replace ours and let crash reports show codes and tokens (BCP-18)."""
        url, headers, body, status = self.create_token_response(request)
        if status == 200:
            access_token = json.loads(body).get("access_token")
            if not access_token:
                # Never a 200 without a token (e.g. a refresh raced into DOT's grace branch).
                return JsonResponse({"error": "invalid_grant"}, status=400)
            if app_authorized.has_listeners(self):
                # DOT's signal, with the row it expects; read only when someone listens.
                token = (
                    get_access_token_model()
                    .objects.filter(token_checksum=secret_hash(access_token))
                    .first()
                )
                if token is not None:
                    app_authorized.send(sender=self, request=request, token=token)
        response = HttpResponse(content=body, status=status)
        for key, value in headers.items():
            response[key] = value
        return response


@method_decorator(sensitive_post_parameters(*SENSITIVE_POST), name="post")
class RevokeTokenView(dot_views.RevokeTokenView):
    """POST /revoke/ (RFC 7009), throttled per address (ABUSE-01).

    Every request counts: RFC 7009 answers 200 for an unknown token, so a failure cannot
    be told from a success here; legitimate clients revoke rarely.
    """

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        limited = ratelimit.hit("revoke", request)
        if limited is not None:
            if limited.first_refusal:
                abuse.record_rate_limited("revoke", request)
            return too_many_requests(request, limited)
        return super().post(request, *args, **kwargs)  # type: ignore[no-any-return]


class ServerMetadataView(dot_views.OAuthServerMetadataView):
    """RFC 8414 metadata; says responses are in the query only (RFC 8414 default: query+fragment)."""

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().get(request, *args, **kwargs)
        if isinstance(response, JsonResponse) and response.status_code == 200:
            data = json.loads(response.content)
            data["response_modes_supported"] = ["query"]
            if "introspection_endpoint" in data:
                # INT-01: only confidential resource servers authenticate at /introspect/;
                # "none" (DOT copies the token endpoint's list) is no way in.
                data["introspection_endpoint_auth_methods_supported"] = [
                    "client_secret_basic",
                    "client_secret_post",
                ]
            fresh = JsonResponse(data)
            for header in ("Access-Control-Allow-Origin",):
                if header in response:
                    fresh[header] = response[header]
            return fresh
        return response
