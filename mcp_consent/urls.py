"""URLs of mcp_consent. Include both lists at the origin root::

    path("", include(mcp_consent.urls.oauth2_urls)),   # namespace oauth2_provider
    path("", include("mcp_consent.urls")),             # namespace mcp_consent

``oauth2_urls`` is a curated list of DOT endpoints under DOT's own namespace (its views
reverse ``oauth2_provider:<name>``): no application-management, device or OIDC views.
At the root because the issuer has no path: under a prefix such as ``o/`` the issuer would be
``https://host/o`` and the RFC 8414 metadata at the root would answer 404.
"""

from django.urls import path
from django.views.decorators.debug import sensitive_post_parameters

from .cors import public_cors
from .views.authorize import AuthorizeView
from .views.connections import ConnectionsView
from .views.registration import RegistrationManagementView, RegistrationView
from .views.resource import IntrospectionView, ProtectedResourceMetadataView
from .views.token import SENSITIVE_POST, RevokeTokenView, ServerMetadataView, TokenView
from .views.upstream import UpstreamCallbackView

app_name = "mcp_consent"

urlpatterns = [
    path("upstream/callback/", UpstreamCallbackView.as_view(), name="upstream-callback"),
    # RFC 9728 metadata of the MCP resources on this origin (RS-01..03): Django is the one
    # owner of these URLs, whatever framework serves the MCP endpoint itself.
    path(
        ".well-known/oauth-protected-resource",
        public_cors(ProtectedResourceMetadataView.as_view(), ["GET"]),
        name="protected-resource-metadata",
    ),
    path(
        ".well-known/oauth-protected-resource/<path:resource_path>",
        public_cors(ProtectedResourceMetadataView.as_view(), ["GET"]),
        name="protected-resource-metadata-path",
    ),
    path("connections/", ConnectionsView.as_view(), name="connections"),
]

oauth2_urls = (
    [
        path(
            ".well-known/oauth-authorization-server",
            public_cors(ServerMetadataView.as_view(), ["GET"]),
            name="oauth-server-metadata",
        ),
        path("authorize/", AuthorizeView.as_view(), name="authorize"),
        # Browser-based MCP clients call these with fetch (mcp_consent.cors); /authorize/
        # never gets CORS (CD-17).
        path("token/", public_cors(TokenView.as_view()), name="token"),
        path(
            "revoke/",
            public_cors(RevokeTokenView.as_view()),
            name="revoke-token",
        ),
        # RFC 7662 for MCP servers running as separate services (INT-01..03); DOT's metadata
        # view advertises introspection_endpoint because this name reverses.
        path(
            "introspect/",
            sensitive_post_parameters(*SENSITIVE_POST)(IntrospectionView.as_view()),
            name="introspect",
        ),
        path("register/", public_cors(RegistrationView.as_view()), name="dcr-register"),
        path(
            "register/<str:client_id>/",
            RegistrationManagementView.as_view(),
            name="dcr-register-management",
        ),
    ],
    "oauth2_provider",
)
