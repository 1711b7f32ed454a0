"""The demo's front page: what to try, and where."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse


def home(request: HttpRequest) -> HttpResponse:
    base = settings.PUBLIC_BASE_URL
    return render(
        request,
        "home.html",
        {
            "base": base,
            "metadata_url": base + reverse("oauth2_provider:oauth-server-metadata"),
            "register_url": base + reverse("oauth2_provider:dcr-register"),
            "callback_url": base + reverse("mcp_consent:upstream-callback"),
            "resource": settings.MCP_RESOURCE,
            "demo_upstream": settings.USE_DEMO_UPSTREAM,
        },
    )
