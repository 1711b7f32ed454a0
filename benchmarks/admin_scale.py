"""The operators' admin at scale (issue 11): every changelist at 100 rows and at full size.

Seeds PostgreSQL in bulk (INSERT ... SELECT FROM generate_series, no ORM loop) with 100,000
clients, 1,000,000 consents, 1,000,000 access tokens, 1,000,000 refresh tokens and
1,000,000 audit events (sizes adjustable), then renders each admin list as a logged-in
superuser through Django's test client and prints, per page, the median time, the number of
SQL statements and the size of the HTML, at 100 rows and at full size.

    python benchmarks/admin_scale.py --database postgres://postgres@127.0.0.1:5432/adminbench

The named database is DROPPED and re-created for each size: give it a database of its own.
It never fails on a time; it prints figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = [
    ("MCP clients", "admin:mcp_consent_mcpclient_changelist", ""),
    ("consents", "admin:mcp_consent_consent_changelist", ""),
    ("consents, active", "admin:mcp_consent_consent_changelist", "status=active"),
    ("consents, one client", "admin:mcp_consent_consent_changelist", "client={client_id}"),
    ("consents, one month", "admin:mcp_consent_consent_changelist", "{month}"),
    ("audit events", "admin:mcp_consent_auditevent_changelist", ""),
    ("upstream tokens", "admin:mcp_consent_upstreamtoken_changelist", ""),
    ("upstream identities", "admin:mcp_consent_upstreamidentity_changelist", ""),
    ("authorization transactions", "admin:mcp_consent_authorizationtransaction_changelist", ""),
    ("DOT applications", "admin:oauth2_provider_application_changelist", ""),
    ("DOT access tokens", "admin:oauth2_provider_accesstoken_changelist", ""),
    ("DOT refresh tokens", "admin:oauth2_provider_refreshtoken_changelist", ""),
    ("consent (change page)", "admin:mcp_consent_consent_change", "pk"),
    ("MCP client (change page)", "admin:mcp_consent_mcpclient_change", "pk"),
    ("Connected apps", "mcp_consent:connections", "person"),
]


def sizes(scale: float) -> dict[str, int]:
    full = {
        "users": 100_000,
        "clients": 100_000,
        "consents": 1_000_000,
        "access_tokens": 1_000_000,
        "refresh_tokens": 1_000_000,
        "audit_events": 1_000_000,
        "upstream_tokens": 100_000,
        "transactions": 100_000,
    }
    return {k: max(1, int(v * scale)) for k, v in full.items()}


SMALL = {k: 100 for k in sizes(1)}


def recreate(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


# Columns we do not name get NULL when nullable, else a neutral value of their type, so the
# seeding keeps working when a column is added to a model.
NEUTRAL = {
    "boolean": "false",
    "integer": "0",
    "bigint": "0",
    "smallint": "0",
    "jsonb": "'{}'::jsonb",
    "uuid": "gen_random_uuid()",
    "timestamp with time zone": "now()",
    "date": "current_date",
}


def insert(cursor, table: str, count: int, values: dict[str, str]) -> float:  # type: ignore[no-untyped-def]
    cursor.execute(
        "SELECT column_name, is_nullable, data_type, column_default FROM information_schema.columns"
        " WHERE table_name = %s AND table_schema = current_schema()",
        [table],
    )
    columns, expressions = [], []
    for name, nullable, data_type, default in cursor.fetchall():
        if name in values:
            expression = values[name]
        elif default is not None:
            continue
        elif nullable == "YES":
            continue
        else:
            expression = NEUTRAL.get(data_type, "''")
        columns.append(f'"{name}"')
        expressions.append(expression)
    started = time.perf_counter()
    # Table names and expressions are this script's own constants, never input.
    cursor.execute(
        f'INSERT INTO "{table}" ({", ".join(columns)}) '  # noqa: S608
        f"SELECT {', '.join(expressions)} FROM generate_series(1, {count}) AS g"
    )
    cursor.execute(
        f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "  # noqa: S608
        f'(SELECT coalesce(max(id), 1) FROM "{table}"))'
    )
    return time.perf_counter() - started


def seed(n: dict[str, int]) -> float:
    from django.db import connection
    from oauth2_provider.settings import oauth2_settings

    users, clients = n["users"], n["clients"]
    registration_scope = oauth2_settings.DCR_REGISTRATION_SCOPE
    started = time.perf_counter()
    with connection.cursor() as c:
        insert(
            c,
            "auth_user",
            users,
            {
                "id": "g",
                "username": "'person' || g",
                "password": "'!'",
                "is_active": "true",
                "date_joined": "now()",
            },
        )
        insert(
            c,
            "oauth2_provider_application",
            clients,
            {
                "id": "g",
                "client_id": "'client-' || g || '-' || left(md5(g::text), 8)",
                "name": "'Agent ' || g",
                "client_type": "'public'",
                "authorization_grant_type": "'authorization-code'",
                "redirect_uris": "'https://app' || g || '.example/cb'",
                "client_secret": "''",
                "registration_source": "'dcr'",
                "created": "now()",
                "updated": "now()",
            },
        )
        insert(
            c,
            "mcp_consent_mcpclient",
            clients,
            {
                "id": "g",
                "application_id": "g",
                "name_key": "'agent ' || g",  # MCPClient.name_key_of("Agent <g>")
                "registration_source": "'dcr'",
                "metadata_version": "1",
                "created_at": "now() - g * interval '1 minute'",
                "updated_at": "now()",
            },
        )
        insert(
            c,
            "mcp_consent_redirecturi",
            clients,
            {
                "id": "g",
                "client_id": "g",
                "uri": "'https://app' || g || '.example/cb'",
                "added_at": "now()",
            },
        )
        # Consent g: user g mod users, client g mod clients; granted over about a year;
        # every tenth revoked.
        insert(
            c,
            "mcp_consent_consent",
            n["consents"],
            {
                "id": "g",
                "user_id": f"1 + (g % {users})",
                "client_id": f"1 + (g % {clients})",
                "redirect_uri": f"'https://app' || (1 + (g % {clients})) || '.example/cb'",
                "scopes": "'mcp'",
                "upstream_scopes": "'repo'",
                "resource": "'http://127.0.0.1:8000/mcp'",
                "client_metadata_version": "1",
                "granted_at": "now() - g * interval '30 seconds'",
                "expires_at": "now() + interval '30 days'",
                "revoked_at": "CASE WHEN g % 10 = 0 THEN now() END",
                "revoke_reason": "''",
                "user_agent": "'Mozilla/5.0'",
            },
        )
        insert(
            c,
            "mcp_consent_upstreamidentity",
            users,
            {
                "id": "g",
                "provider": "'https://upstream.example'",
                "subject": "g::text",
                "user_id": "g",
                "login": "'octocat' || g",
                "created_at": "now()",
            },
        )
        insert(
            c,
            "mcp_consent_upstreamtoken",
            n["upstream_tokens"],
            {
                "id": "g",
                "consent_id": "g",
                "identity_id": f"1 + (g % {users})",
                "access_token_encrypted": "'ciphertext'",
                "token_type": "'bearer'",
                "created_at": "now()",
                "updated_at": "now()",
            },
        )
        insert(
            c,
            "mcp_consent_authorizationtransaction",
            n["transactions"],
            {
                "id": "g",
                "state_hash": "encode(sha256(('s' || g)::bytea), 'hex')",
                "binding_hash": "'b'",
                "purpose": "'authorize'",
                "client_id": f"1 + (g % {clients})",
                "authorization_query": "''",
                "redirect_uri": "'https://app.example/cb'",
                "scopes": "'mcp'",
                "upstream_scopes": "''",
                "resource": "''",
                "created_at": "now() - g * interval '1 minute'",
                "expires_at": "now() - g * interval '1 minute' + interval '10 minutes'",
                "outcome": "'completed'",
            },
        )
        # One registration access token per client first, then users' access tokens.
        insert(
            c,
            "oauth2_provider_accesstoken",
            n["access_tokens"],
            {
                "id": "g",
                "user_id": f"CASE WHEN g > {clients} THEN 1 + (g % {users}) END",
                "application_id": f"1 + (g % {clients})",
                "token": "''",
                "token_checksum": "encode(sha256(('a' || g)::bytea), 'hex')",
                "expires": f"CASE WHEN g > {clients} THEN now() + interval '1 hour'"
                " ELSE now() + interval '36500 days' END",
                "scope": f"CASE WHEN g > {clients} THEN 'mcp' ELSE '{registration_scope}' END",
                "resource": "'[]'::jsonb",
                "created": "now()",
                "updated": "now()",
            },
        )
        insert(
            c,
            "oauth2_provider_refreshtoken",
            n["refresh_tokens"],
            {
                "id": "g",
                "user_id": f"1 + (g % {users})",
                "application_id": f"1 + (g % {clients})",
                "token": "''",
                "token_checksum": "encode(sha256(('r' || g)::bytea), 'hex')",
                "token_family": "gen_random_uuid()",
                "resource": "'[]'::jsonb",
                "created": "now()",
                "updated": "now()",
            },
        )
        insert(
            c,
            "mcp_consent_auditevent",
            n["audit_events"],
            {
                "id": "g",
                "created_at": f"now() - ({n['audit_events']} - g) * interval '30 seconds'",
                "action": "(ARRAY['consent_approved','token_issued','token_refreshed',"
                "'consent_revoked'])[1 + g % 4]",
                "actor_type": "'user'",
                "actor_user_id": f"1 + (g % {users})",
                "actor_label": "'person' || (1 + (g % " + str(users) + "))",
                "subject_user_id": f"1 + (g % {users})",
                "client_id": f"'client-' || (1 + (g % {clients}))",
                "consent_id": f"1 + (g % {n['consents']})",
                "ip_address": "('203.0.113.' || (g % 250))::inet",
                "user_agent": "'Mozilla/5.0'",
                "details": "'{}'::jsonb",
                "previous_hash": "encode(sha256(('h' || (g - 1))::bytea), 'hex')",
                "hash": "encode(sha256(('h' || g)::bytea), 'hex')",
            },
        )
        c.execute("ANALYZE")
    return time.perf_counter() - started


def measure(repeat: int) -> dict[str, tuple[float, int, int]]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from mcp_consent.models import Consent, MCPClient

    operator = get_user_model().objects.create_superuser("bench-operator", "op@example.com", "x")
    browser = Client()
    browser.force_login(operator)
    person = Client()
    person.force_login(get_user_model().objects.get(pk=2))
    client = MCPClient.objects.select_related("application").order_by("pk").first()
    consent = Consent.objects.order_by("pk").first()
    figures: dict[str, tuple[float, int, int]] = {}
    for label, name, query in PAGES:
        who = browser
        if query == "pk":
            obj = consent if "consent" in name else client
            url, query = reverse(name, args=[obj.pk]), ""  # type: ignore[union-attr]
        else:
            url = reverse(name)
        if query == "person":
            who, query = person, ""
        if query == "{month}":
            now = consent.granted_at  # type: ignore[union-attr]
            query = f"granted_at__year={now.year}&granted_at__month={now.month}"
        query = query.format(client_id=client.application.client_id)  # type: ignore[union-attr]
        full = f"{url}?{query}" if query else url
        who.get(full)  # warm: per-process caches, the plan cache
        times = []
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = who.get(full, HTTP_HOST="127.0.0.1")
                times.append(time.perf_counter() - started)
        status = response.status_code
        if status != 200:
            label = f"{label} (HTTP {status})"
        figures[label] = (statistics.median(times), len(queries), len(response.content))
    return figures


def run(
    url: str, n: dict[str, int], repeat: int
) -> tuple[dict[str, tuple[float, int, int]], float]:
    from django.core.management import call_command
    from django.db import connections

    connections.close_all()
    recreate(url)
    call_command("migrate", verbosity=0)
    seconds = seed(n)
    return measure(repeat), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database",
        default=os.environ.get(
            "ADMIN_BENCH_DATABASE", "postgres://postgres@127.0.0.1:5432/adminbench"
        ),
        help="a PostgreSQL URL whose database this script drops and re-creates",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the full size (default 1.0)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed requests per page")
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = args.database
    # No connection pool: each size drops and re-creates the database (WITH (FORCE), which
    # kills open connections), and a pooled connection would outlive it. The figures here
    # are statements, time and HTML per page, not connection set-up.
    os.environ["DATABASE_POOL"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from django.conf import settings

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1", "testserver"]
    settings.DEBUG = False

    full = sizes(args.scale)
    small_figures, _ = run(args.database, SMALL, args.repeat)
    big_figures, seeded = run(args.database, full, args.repeat)

    import django as dj

    print(f"# mcp-consent admin at scale — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(
        f"# {platform.node()} ({os.cpu_count()} cores), Python {platform.python_version()},"
        f" Django {dj.__version__}, {django.db.connection.vendor}"
    )
    print(
        "# full size: "
        + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in full.items())
        + f" (seeded in {seeded:.0f} s)"
    )
    print(
        f"{'page':<30} {'100 rows':>10} {'full':>10} {'ratio':>6}"
        f" {'SQL@100':>8} {'SQL@full':>9} {'KB@100':>7} {'KB@full':>8}"
    )
    for label in big_figures:
        small = small_figures.get(label, (float("nan"), 0, 0))
        big = big_figures[label]
        ratio = big[0] / small[0] if small[0] else float("nan")
        print(
            f"{label:<30} {small[0] * 1000:>8.0f}ms {big[0] * 1000:>8.0f}ms {ratio:>6.2f}"
            f" {small[1]:>8} {big[1]:>9} {small[2] / 1024:>7.0f} {big[2] / 1024:>8.0f}"
        )


if __name__ == "__main__":
    main()
