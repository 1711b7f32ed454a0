"""Create the introspection credentials of an MCP server that runs as a separate service."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from mcp_consent.app_settings import app_settings, canonical_resource
from mcp_consent.flows import resource_servers


class Command(BaseCommand):
    help = (
        "Create client credentials for a separate MCP server to call /introspect/ (RFC 7662). "
        "The secret is printed once."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name", help="What the server is, e.g. 'Billing MCP server'.")
        parser.add_argument(
            "--resource",
            action="append",
            required=True,
            help="Canonical URI of the MCP resource it serves (repeatable); must be in RESOURCES.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        resources = []
        for value in options["resource"]:
            canonical = canonical_resource(value)
            if canonical is None:
                raise CommandError(
                    f"{value!r} is not an absolute http(s) URI without query or fragment"
                )
            if canonical not in app_settings.RESOURCES:
                self.stderr.write(
                    f"warning: {canonical} is not in MCP_CONSENT['RESOURCES']: no token can be "
                    "minted for it until it is."
                )
            resources.append(canonical)
        application, secret = resource_servers.create_resource_server(options["name"])
        w = self.stdout.write
        w(f"client_id:     {application.client_id}")
        w(f"client_secret: {secret}   (shown once; stored hashed)")
        w("Allow it to introspect tokens for its resources:")
        w(
            f'  MCP_CONSENT["INTROSPECTION_CLIENTS"] = {json.dumps({application.client_id: resources})}'
        )
