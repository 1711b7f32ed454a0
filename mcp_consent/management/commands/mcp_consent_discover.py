"""Print MCP_CONSENT["UPSTREAM"] for any OpenID Connect / RFC 8414 provider, by its issuer."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mcp_consent import upstream


class Command(BaseCommand):
    help = (
        "Read the provider's discovery document (/.well-known/openid-configuration, or RFC 8414 "
        "metadata) and print the MCP_CONSENT['UPSTREAM'] settings for it."
    )
    # Run while configuring the upstream: the checks would refuse the missing upstream.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "issuer", help="the provider's issuer, e.g. https://accounts.example.com"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            found = upstream.discover(options["issuer"])
        except upstream.UpstreamError as exc:
            raise CommandError(exc.reason) from None
        lines = [f"    {json.dumps(key)}: {_python(value)}," for key, value in found.items()]
        lines.append('    "CLIENT_ID": os.environ["UPSTREAM_CLIENT_ID"],')
        lines.append('    "CLIENT_SECRET": os.environ["UPSTREAM_CLIENT_SECRET"],')
        self.stdout.write('"UPSTREAM": {\n' + "\n".join(lines) + "\n},")


def _python(value: Any) -> str:
    """A Python literal: json.dumps for strings and lists, True/False for booleans."""
    return repr(value) if isinstance(value, bool) else json.dumps(value)
