"""The resource-server endpoints: RFC 9728 metadata and RFC 7662 introspection.

Protected resource metadata is served by Django for every configured MCP resource on this
origin, so an MCP endpoint built with any framework (the MCP SDK's included) has one owner
for its well-known URL. Introspection serves MCP servers that run as separate services.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote_plus, urlencode

from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.views import IntrospectTokenView, OAuthProtectedResourceMetadataView
from oauthlib.common import Request as OAuthlibRequest

from .. import ratelimit, resource
from ..app_settings import app_settings, canonical_resource
from ..flows import abuse
from .common import too_many_requests


class ProtectedResourceMetadataView(OAuthProtectedResourceMetadataView):
    """RFC 9728 metadata of one configured MCP resource (RS-01..03, SM-01, SM-06).

    ``/.well-known/oauth-protected-resource/<path>`` describes the resource
    ``<this origin>/<path>``; the bare ``/.well-known/oauth-protected-resource`` describes the
    only resource on this origin (404 when there are several: which one would be a guess).
    DOT's view supplies the document; this subclass says which resource it is about.
    """

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.resource = self._resource_for(request, kwargs.get("resource_path"))
        return super().get(request, *args, **kwargs)

    @staticmethod
    def _resource_for(request: HttpRequest, path: str | None) -> str:
        # The resource identifier the well-known URL was built from (RFC 9728 §3.1); the
        # Host has passed ALLOWED_HOSTS, so this names one of our own origins.
        origin = f"{request.scheme}://{request.get_host()}"
        here = [r for r in app_settings.RESOURCES if r.startswith(origin + "/") or r == origin]
        if path is None:
            if len(here) != 1:
                raise Http404("no single MCP resource on this origin")
            return here[0]
        wanted = canonical_resource(f"{origin}/{path}")
        for candidate in here:
            if candidate == wanted:
                return candidate
        raise Http404("not an MCP resource of this server")

    def get_resource(self, request: HttpRequest) -> str:
        # RS-03: exactly the canonical URI, the string clients compare and send as `resource`.
        return str(self.resource)

    def get_authorization_servers(self, request: HttpRequest) -> list[str]:
        # RS-01: the issuer, byte for byte as in the AS metadata (clients compare it).
        return [app_settings.ISSUER]

    def get_scopes_supported(self) -> list[str]:
        # SM-01 / SM-06: the minimal set for basic use, never offline_access.
        return app_settings.PRM_SCOPES

    def get_bearer_methods_supported(self) -> list[str]:
        # RS-09: the Authorization header is the only way a token is accepted.
        return ["header"]

    def get_resource_name(self) -> str:
        return app_settings.RESOURCE_NAME


def _basic_client_id(request: HttpRequest) -> str | None:
    # The client_id of HTTP Basic credentials (RFC 6749 §2.3.1: form-encoded inside), read
    # by hand only to check the allowlist *before* any lookup. DOT's decoding is private
    # (OAuth2Validator._authenticate_basic_auth) and loads the application first, which
    # for a URL-shaped client_id means a CIMD fetch for a caller that could never be allowed.
    # DOT then authenticates the caller itself (authorized_resources).
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, _ = decoded.partition(":")
    return unquote_plus(client_id) if sep else None


@method_decorator(csrf_exempt, name="dispatch")  # machine to machine, authenticated per call
@method_decorator(login_not_required, name="dispatch")
class IntrospectionView(IntrospectTokenView):
    """RFC 7662 token introspection for MCP servers that run as separate services.

    DOT's IntrospectTokenView, with its caller authentication narrowed (INT-01): DOT admits
    any client that authenticates, or any bearer token with the ``introspection`` scope.
    Here anybody can register a client (DCR), and a public client "authenticates" with its
    client_id and an empty secret, so that would open token scanning to everyone. Only the
    confidential clients listed in ``MCP_CONSENT["INTROSPECTION_CLIENTS"]`` may call, with
    their secret (HTTP Basic or form body), by POST (a token in a URL leaks, RS-09); each
    learns only about tokens whose audience is one of its resources (INT-02). The answer
    comes from the same checks as an MCP endpoint's (``resource.introspect``).
    """

    http_method_names = ["post"]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return self.http_method_not_allowed(request, *args, **kwargs)
        limited = ratelimit.refused("introspect", request)
        if limited is not None:
            # ABUSE-01: an address that keeps failing client authentication is refused;
            # a resource server that authenticates is never counted.
            if limited.first_refusal:
                abuse.record_rate_limited("introspect", request)
            return too_many_requests(request, limited)
        resources = self.authorized_resources(request)
        if resources is None:
            ratelimit.failed("introspect", request)
            # RFC 7662 §2.3 / RFC 6749 §5.2: 401 invalid_client, the same answer for an unknown
            # caller, a wrong secret and a client that is not allowed (no oracle).
            response = JsonResponse(
                {"error": "invalid_client", "error_description": "Client authentication failed."},
                status=401,
            )
            response["WWW-Authenticate"] = 'Basic realm="introspection"'
            response["Cache-Control"] = "no-store"
            return response
        token = request.POST.get("token")
        if not token:
            response = JsonResponse(
                {
                    "error": "invalid_request",
                    "error_description": "The token parameter is missing.",
                },
                status=400,
            )
        else:
            response = JsonResponse(resource.introspect(token, resources=resources))
        # The answer describes a credential: never cached by intermediaries.
        response["Cache-Control"] = "no-store"
        response["Pragma"] = "no-cache"
        return response

    @staticmethod
    def authorized_resources(request: HttpRequest) -> list[str] | None:
        """The resources of an authenticated, allowed caller; None for anyone else."""
        allowed = app_settings.INTROSPECTION_CLIENTS
        client_id = _basic_client_id(request) or request.POST.get("client_id")
        # Allowlist first: nothing is looked up (or fetched, for a URL-shaped client_id) for
        # a caller that could not be allowed anyway.
        if not client_id or client_id not in allowed:
            return None
        oauth_request = OAuthlibRequest(
            request.build_absolute_uri(),
            http_method="POST",
            body=urlencode(list(request.POST.items())),
            # DOT's validator reads the WSGI-style name (as OAuthLibCore passes request.META).
            headers={"HTTP_AUTHORIZATION": request.headers.get("Authorization", "")},
        )
        # DOT's own client authentication (hashed secrets, Basic or body), not mcp_consent's
        # validator: a resource server is not an MCP client and has no consent to give.
        if not OAuth2Validator().authenticate_client(oauth_request):
            return None
        client = oauth_request.client
        if client is None or client.client_id != client_id:
            return None
        if client.client_type != client.CLIENT_CONFIDENTIAL:
            # A public client "authenticates" with an empty secret: that is no authentication.
            return None
        return allowed[client_id]
