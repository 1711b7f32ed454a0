"""ASGI entry point of the demo: Django, and the MCP endpoint at /mcp (an MCP SDK server).

``MCPRouter`` sends HTTP requests for /mcp and the lifespan scope to the SDK app (its
session manager runs in the lifespan; Django handles no lifespan) and everything else to
Django, which owns every well-known metadata URL, /.well-known/oauth-protected-resource/mcp
included (one owner). The lifespan must reach the SDK app: if it went to Django, every
authenticated MCP call would fail with 500 "Task group is not initialized".
"""

import os
from urllib.parse import urlsplit

from mcp_consent.integrations.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

django_application = get_asgi_application()  # sets Django up before the MCP server is built

# Demo only: serve the admin's static files from the apps (no collectstatic, no web server in
# front). A deployment serves STATIC_ROOT from its web server or CDN instead.
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

django_application = ASGIStaticFilesHandler(django_application)

from mcp_consent.integrations.mcp_sdk import MCPRouter  # noqa: E402
from project.mcp_server import build_app, resource_uri  # noqa: E402

application = MCPRouter(django_application, build_app(), paths=[urlsplit(resource_uri()).path])
