"""Credentials of MCP servers that run as separate services (RFC 7662 introspection callers)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from oauth2_provider.models import get_application_model

from .. import audit


def create_resource_server(name: str, *, actor: audit.ActorInfo = audit.SYSTEM) -> tuple[Any, str]:
    """A confidential client for a separate MCP server to authenticate at /introspect/ (INT-01).

    Returns the Application and its secret, which is shown once and stored hashed. It gets no
    MCPClient record, so mcp_consent's OAuth flows do not know it: it can neither authorize
    nor obtain a token. It is allowed at /introspect/ only once it is listed in
    ``MCP_CONSENT["INTROSPECTION_CLIENTS"]`` with the resources it serves.
    """
    Application = get_application_model()
    application = Application(
        name=name[:255],
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        redirect_uris="",
    )
    secret = str(application.client_secret)
    application.full_clean(exclude=["client_secret"])
    with transaction.atomic():
        application.save()
        audit.record(
            audit.Action.CLIENT_REGISTERED,
            actor=actor,
            client_id=application.client_id,
            details={"kind": "resource server (introspection)", "name": application.name},
        )
    return application, secret
