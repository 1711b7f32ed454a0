"""URLs of the demo project: mcp_consent at the origin root, the admin, the demo upstream."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

import mcp_consent.urls

from . import views

urlpatterns = [
    path("", include(mcp_consent.urls.oauth2_urls)),
    path("", include("mcp_consent.urls")),
    path("admin/", admin.site.urls),
    path("", views.home, name="home"),
]

if settings.USE_DEMO_UPSTREAM:
    from .demo_upstream.admin import site as demo_upstream_admin

    urlpatterns += [
        path("demo-upstream/admin/", demo_upstream_admin.urls),
        path("demo-upstream/", include("project.demo_upstream.urls")),
    ]
