"""Shared fixtures: the demo upstream reached in-process, PKCE pairs, a browser-like client."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from mcp_consent import upstream
from tests.browser_client import pkce_pair
from tests.upstream_fakes import UPSTREAM_ORIGIN, DjangoClientAdapter


def pytest_configure(config: pytest.Config) -> None:
    from django.conf import settings

    # Tests log in to the demo upstream many times: a fast hasher keeps the suite quick.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "mcp_consent.hashers.ClientSecretHasher",
    ]
    _flush_may_truncate_the_audit_trail()


# SEC-06: PostgreSQL refuses TRUNCATE of the audit trail (migration 0004). Transactional
# tests empty the test database with TRUNCATE after each test; only there, and only for
# that statement, the two triggers are switched off (as the database owner can).
NO_TRUNCATE_TRIGGERS = [
    ("mcp_consent_auditevent", "mcp_consent_auditevent_no_truncate"),
    ("mcp_consent_auditchainhead", "mcp_consent_auditchainhead_no_truncate"),
]


def _flush_may_truncate_the_audit_trail() -> None:
    try:
        from django.db.backends.postgresql.operations import DatabaseOperations
    except ImportError:  # no psycopg: no PostgreSQL run
        return
    original = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self: DatabaseOperations, sql_list: list[str]) -> None:
        if any("mcp_consent_auditevent" in sql for sql in sql_list):
            off = [f'ALTER TABLE "{t}" DISABLE TRIGGER "{n}"' for t, n in NO_TRUNCATE_TRIGGERS]
            on = [f'ALTER TABLE "{t}" ENABLE TRIGGER "{n}"' for t, n in NO_TRUNCATE_TRIGGERS]
            sql_list = [*off, *sql_list, *on]
        original(self, sql_list)

    DatabaseOperations.execute_sql_flush = execute_sql_flush  # type: ignore[method-assign]


DEMO_TEST_MODULES = ("tests/test_demo_upstream.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Demo-upstream tests check the bundled stand-in provider, not the product: mark them."""
    for item in items:
        if item.nodeid.startswith(DEMO_TEST_MODULES):
            item.add_marker(pytest.mark.demo)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Count product and demo-upstream tests apart (issue 8: demo tests are not product tests)."""
    counts = {"product": Counter[str](), "demo": Counter[str]()}
    for outcome in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") not in {"call", "setup"}:
                continue
            if report.when == "setup" and outcome == "passed":
                continue  # a passed setup is followed by the call's report
            kind = "demo" if report.nodeid.startswith(DEMO_TEST_MODULES) else "product"
            counts[kind][outcome] += 1
    if not any(counts.values()):
        return
    terminalreporter.section("product vs demo-upstream tests")
    for kind, counter in counts.items():
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counter.items())) or "none ran"
        terminalreporter.write_line(f"{kind + ' tests:':16} {summary}")


@pytest.fixture(autouse=True)
def upstream_http() -> Iterator[DjangoClientAdapter]:
    adapter = DjangoClientAdapter()
    session = upstream.http_session()
    session.mount(UPSTREAM_ORIGIN + "/", adapter)
    yield adapter
    session.adapters.pop(UPSTREAM_ORIGIN + "/", None)


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def pkce() -> tuple[str, str]:
    return pkce_pair()
