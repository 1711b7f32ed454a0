"""The demo project as a person meets it (issue 9 item 7).

`make demo` prints one admin password that opens both admins (the proxy's, and Demo Hub's own,
whose database is its own); Demo Hub's tables are shown by Demo Hub's admin, not as empty
copies in the proxy's; the printed attack step names the exact second client; the MCP tools
say they only read; a stateless MCP request logs no "Terminating session: None".
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test import Client

from tests.asgi_helpers import mcp_post, serve
from tests.browser_client import PROXY_HOST, UPSTREAM_HOST
from tests.mcp_tokens import issue_token

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def operator() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("op", "op@example.com", "pw"))
    return client


@pytest.mark.django_db
def test_demo_hub_tables_are_shown_by_demo_hub_admin_only(operator: Client) -> None:
    proxy_admin = operator.get("/admin/", HTTP_HOST=PROXY_HOST).content.decode()
    assert "mcp_consent" in proxy_admin
    assert "Demo upstream" not in proxy_admin
    assert "/admin/demo_upstream/" not in proxy_admin

    hub = operator.get("/demo-upstream/admin/", HTTP_HOST=UPSTREAM_HOST)
    assert hub.status_code == 200
    assert "Demo Hub admin" in hub.content.decode()
    accounts = operator.get(
        "/demo-upstream/admin/demo_upstream/account/", HTTP_HOST=UPSTREAM_HOST
    ).content.decode()
    assert "octocat" in accounts
    assert "hubot" in accounts


def test_printed_admin_password_opens_both_admins(tmp_path: Path) -> None:
    """`rundemo` sets the printed password in the proxy's database and in Demo Hub's own."""
    proxy_db, hub_db = tmp_path / "proxy.sqlite3", tmp_path / "hub.sqlite3"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DJANGO_ALLOW")},
        "DATABASE_URL": f"sqlite:///{proxy_db}",
        "DEMO_UPSTREAM_DATABASE_URL": f"sqlite:///{hub_db}",
    }
    env.pop("PUBLIC_BASE_URL", None)
    printed = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "rundemo", "--no-serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    passwords = re.findall(r"user: admin\s+password: (\S+)", printed)
    assert len(passwords) == 2, printed
    assert passwords[0] == passwords[1], printed
    assert "http://localhost:8001/demo-upstream/admin/" in printed
    for database in (proxy_db, hub_db):
        with sqlite3.connect(database) as db:
            (encoded,) = db.execute(
                "SELECT password FROM auth_user WHERE username = 'admin' AND is_superuser"
            ).fetchone()
        # The demo keeps Django's default hasher (the test settings use a faster one).
        assert PBKDF2PasswordHasher().verify(passwords[0], encoded), database
    with sqlite3.connect(hub_db) as db:
        assert db.execute("SELECT count(*) FROM demo_upstream_account").fetchone()[0] >= 2

    # The attack step: the exact command for the second client and its authorize URL.
    attack = printed[printed.index("4. The attack") :]
    assert '"client_name": "My MCP client"' in attack
    assert '"redirect_uris": ["https://attacker.example/callback"]' in attack
    assert (
        "client_id=ATTACKER_CLIENT_ID&redirect_uri=https%3A%2F%2Fattacker.example%2Fcallback"
        in (attack)
    )


@pytest.mark.django_db
def test_demo_tools_declare_that_they_only_read() -> None:
    """The Inspector labels a tool without annotations destructive: ours say readOnlyHint."""
    issued = issue_token()
    response = serve(
        lambda app: mcp_post(
            app,
            {"Authorization": issued.authorization},
            body={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        )
    )
    assert response.status_code == 200, response.text
    tools = response.json()["result"]["tools"]
    assert {t["name"] for t in tools} == {"whoami", "list_items", "get_item"}
    for tool in tools:
        assert tool["annotations"]["readOnlyHint"] is True, tool
        assert tool["annotations"]["destructiveHint"] is False, tool


@pytest.mark.django_db
def test_no_terminating_session_line_per_mcp_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK logs "Terminating session: None" at INFO after every stateless request: dropped.

    (Django's ASGI handler re-applies the project's LOGGING, replacing pytest's capture
    handler, so the test asks the logger itself whether it lets INFO through.)
    """
    from mcp.server import streamable_http

    said: list[str] = []
    sdk_logger = streamable_http.logger
    original = sdk_logger.info
    monkeypatch.setattr(
        sdk_logger, "info", lambda msg, *a, **k: (said.append(str(msg)), original(msg, *a, **k))
    )
    issued = issue_token()
    response = serve(lambda app: mcp_post(app, {"Authorization": issued.authorization}))
    assert response.status_code == 200, response.text  # through the SDK's transport
    assert "Terminating session: None" in said  # what the SDK says at INFO, every request
    assert not sdk_logger.isEnabledFor(logging.INFO)  # ... and the demo drops
    assert sdk_logger.isEnabledFor(logging.WARNING)  # its warnings still show
