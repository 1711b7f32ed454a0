"""URLs of mcp_consent. Include both lists at the origin root (DOT-NOTES "URLs and the issuer")::

    path("", include(mcp_consent.urls.oauth2_urls)),   # namespace oauth2_provider
    path("", include("mcp_consent.urls")),             # namespace mcp_consent

``oauth2_urls`` is a curated list of DOT endpoints under DOT's own namespace (its views
reverse ``oauth2_provider:<name>``): no application-management, device or OIDC views.
"""

from django.urls import path
from oauth2_provider import views as dot_views

from .views.authorize import AuthorizeView
from .views.registration import RegistrationManagementView, RegistrationView
from .views.token import ServerMetadataView, TokenView
from .views.upstream import UpstreamCallbackView

app_name = "mcp_consent"

urlpatterns = [
    path("upstream/callback/", UpstreamCallbackView.as_view(), name="upstream-callback"),
]

oauth2_urls = (
    [
        path(
            ".well-known/oauth-authorization-server",
            ServerMetadataView.as_view(),
            name="oauth-server-metadata",
        ),
        path("authorize/", AuthorizeView.as_view(), name="authorize"),
        path("token/", TokenView.as_view(), name="token"),
        path("revoke/", dot_views.RevokeTokenView.as_view(), name="revoke-token"),
        path("register/", RegistrationView.as_view(), name="dcr-register"),
        path(
            "register/<str:client_id>/",
            RegistrationManagementView.as_view(),
            name="dcr-register-management",
        ),
    ],
    "oauth2_provider",
)
