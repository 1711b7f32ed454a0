"""Management commands a new project runs before it is configured (docs/quickstart.md)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command, execute_from_command_line
from django.test import override_settings

from mcp_consent.checks import check_configuration

# A project that has just added the app: no vault key, no upstream, no resources yet.
UNCONFIGURED = {"RESOURCES": [], "UPSTREAM": {}}


def test_generate_key_works_before_any_key_or_upstream_exists(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The quickstart runs `manage.py mcp_consent_generate_key` to get the first key: the
    system checks (which refuse this very configuration) must not stop it."""
    with override_settings(MCP_CONSENT=UNCONFIGURED):
        assert check_configuration(), "the configuration must be one the checks refuse"
        # As from the command line: run_from_argv runs the system checks a command asks for.
        execute_from_command_line(["manage.py", "mcp_consent_generate_key"])
    key = capsys.readouterr().out.strip()
    assert key
    assert "\n" not in key


def test_generated_keys_are_fresh_and_usable_by_the_vault() -> None:
    from mcp_consent import vault

    keys = set()
    for _ in range(2):
        out = StringIO()
        call_command("mcp_consent_generate_key", stdout=out)
        keys.add(out.getvalue().strip())
    assert len(keys) == 2
    for key in keys:
        with override_settings(MCP_CONSENT={**UNCONFIGURED, "ENCRYPTION_KEYS": [key]}):
            ad = vault.upstream_token_context(1, "access")
            assert vault.decrypt(vault.encrypt("upstream-token", ad), ad) == "upstream-token"
