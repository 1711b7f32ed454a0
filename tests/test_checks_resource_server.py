"""System checks of the resource-server settings (mcp_consent/checks.py, E020..E022), whole messages.

Kept apart from tests/test_checks.py (the authorization-server checks) only so the two
can be edited independently.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.test import override_settings

from mcp_consent.checks import E008, E020, E021, E022, check_deployment, check_resource_server


def mcp_consent(**changes: Any) -> dict[str, Any]:
    return {**settings.MCP_CONSENT, **changes}


def test_the_project_settings_pass() -> None:
    assert check_resource_server() == []


def test_e020_offline_access_or_an_unknown_scope_in_prm_scopes() -> None:
    """E020 / SM-01 / SM-06."""
    for scopes in (["items:read", "offline_access"], ["*"], ["items:read", "all"]):
        with override_settings(MCP_CONSENT=mcp_consent(PRM_SCOPES=scopes)):
            assert check_resource_server() == [E020]


def test_e021_a_hierarchy_of_unknown_scopes() -> None:
    """E021 / SM-05: a typo would silently grant nothing (or be read as granting)."""
    for implies in ({"items:wirte": ["items:read"]}, {"items:write": ["items:raed"]}):
        with override_settings(MCP_CONSENT=mcp_consent(SCOPE_IMPLIES=implies)):
            assert check_resource_server() == [E021]


def test_e022_introspection_clients_must_serve_configured_resources() -> None:
    """E022 / INT-01 / INT-02."""
    for clients in (
        {"rs-1": ["https://unknown.example/mcp"]},
        {"rs-1": []},
        {"https://cimd.example/client.json": ["http://127.0.0.1:8000/mcp"]},
    ):
        with override_settings(MCP_CONSENT=mcp_consent(INTROSPECTION_CLIENTS=clients)):
            assert check_resource_server() == [E022]
    with override_settings(
        MCP_CONSENT=mcp_consent(INTROSPECTION_CLIENTS={"rs-1": ["http://127.0.0.1:8000/mcp"]})
    ):
        assert check_resource_server() == []


def test_e008_covers_the_upstream_api_base() -> None:
    """E008 / UP-10: the API the tools call carries upstream tokens: https under --deploy."""
    upstream = {**settings.MCP_CONSENT["UPSTREAM"]}
    https = {
        k: v.replace("http://localhost:8001", "https://hub.example")
        for k, v in upstream.items()
        if isinstance(v, str)
    }
    with override_settings(MCP_CONSENT=mcp_consent(UPSTREAM={**upstream, **https})):
        assert E008 not in check_deployment()
        with override_settings(
            MCP_CONSENT=mcp_consent(
                UPSTREAM={**upstream, **https, "API_BASE_URL": "http://hub.example/api/"}
            )
        ):
            assert E008 in check_deployment()
