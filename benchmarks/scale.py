"""Scale: authorize and verify with 100 clients and consents vs 100,000 clients / 1,000,000 consents.

Run: .venv/bin/python benchmarks/scale.py [--clients N] [--consents M] [--quick]

Two PostgreSQL databases (perfbench_small, perfbench_large), one mcp-consent server on each,
behind the fake upstream. Each gets one real authorization through the load generator; its
rows are then copied in bulk SQL (INSERT … SELECT … generate_series) into the large one:
clients with their DOT applications and redirect URIs, 1,000 users, consents spread over
them, and access tokens. The consent page (GET /authorize) and an MCP call (verification)
are then measured on both, interleaved. Figures only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from benchmarks import load  # noqa: E402
from benchmarks.bench import DB_PREFIX, recreate_database  # noqa: E402
from benchmarks.servers import Server, free_port, mcp_consent_env, migrate  # noqa: E402


def columns(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return [r[0] for r in rows if r[0] != "id"]


def clone(
    conn: psycopg.Connection,
    table: str,
    template_id: int,
    overrides: dict[str, str],
    source: str,
    where: str = "",
) -> int:
    """INSERT copies of row ``template_id`` of ``table``, one per row of ``source``."""
    cols = columns(conn, table)
    select = ", ".join(overrides.get(c, f't."{c}"') for c in cols)
    names = ", ".join(f'"{c}"' for c in cols)
    sql = f'INSERT INTO "{table}" ({names}) SELECT {select} FROM "{table}" t, {source} WHERE t.id = {int(template_id)} {where}'  # noqa: S608 -- our own identifiers
    return conn.execute(sql).rowcount  # type: ignore[arg-type]


def seed(url: str, clients: int, consents: int, tokens: int) -> float:
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        app_id = conn.execute("SELECT max(id) FROM oauth2_provider_application").fetchone()[0]  # type: ignore[index]
        (mcp_id,) = conn.execute(
            "SELECT id FROM mcp_consent_mcpclient WHERE application_id = %s", [app_id]
        ).fetchone()  # type: ignore[misc]
        (uri_id,) = conn.execute("SELECT max(id) FROM mcp_consent_redirecturi").fetchone()  # type: ignore[misc]
        (user_id,) = conn.execute("SELECT max(id) FROM auth_user").fetchone()  # type: ignore[misc]
        (consent_id,) = conn.execute("SELECT max(id) FROM mcp_consent_consent").fetchone()  # type: ignore[misc]
        (token_id,) = conn.execute("SELECT max(id) FROM oauth2_provider_accesstoken").fetchone()  # type: ignore[misc]
        n = clients - 1
        clone(
            conn,
            "oauth2_provider_application",
            app_id,
            {"client_id": "'bench-' || g", "name": "'bench client ' || g"},
            f"generate_series(1, {n}) g",
        )
        clone(
            conn,
            "mcp_consent_mcpclient",
            mcp_id,
            {"application_id": "a.id", "name_key": "lower(a.name)"},  # as name_key_of
            "oauth2_provider_application a",
            "AND a.client_id LIKE 'bench-%%'",
        )
        clone(
            conn,
            "mcp_consent_redirecturi",
            uri_id,
            {"client_id": "m.id"},
            "mcp_consent_mcpclient m",
            f"AND m.id <> {int(mcp_id)}",
        )
        clone(
            conn,
            "auth_user",
            user_id,
            {"username": "'bench-user-' || g", "email": "''"},
            "generate_series(1, 999) g",
        )
        ids = (
            "(SELECT array_agg(id) AS ids FROM mcp_consent_mcpclient) c, "
            "(SELECT array_agg(id) AS ids FROM auth_user) u, "
            "(SELECT array_agg(id) AS ids FROM oauth2_provider_application) a"
        )
        pick = "{0}.ids[1 + g % array_length({0}.ids, 1)]"
        clone(
            conn,
            "mcp_consent_consent",
            consent_id,
            {"client_id": pick.format("c"), "user_id": pick.format("u")},
            f"{ids}, generate_series(1, {consents - 1}) g",
        )
        clone(
            conn,
            "oauth2_provider_accesstoken",
            token_id,
            {
                "token": "'bench-' || g",
                "token_checksum": "md5(g::text) || md5((-g)::text)",
                "application_id": pick.format("a"),
                "user_id": pick.format("u"),
                "source_refresh_token_id": "NULL",
                "id_token_id": "NULL",
            },
            f"{ids}, generate_series(1, {tokens - 1}) g",
        )
        conn.execute("ANALYZE")
    return time.perf_counter() - start


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # type: ignore[index]  # noqa: S608


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432"),
    )
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--consents", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    limits = (200, 1.5) if args.quick else (1000, 5.0)
    logdir = Path(tempfile.gettempdir())

    fake = Server("scale-fake-upstream", "benchmarks.fake_upstream:app", logdir=logdir)
    servers: dict[str, Server] = {}
    try:
        urls = {}
        for size in ("small", "large"):
            urls[size] = recreate_database(args.postgres_url, f"{DB_PREFIX}_{size}")
            port = free_port()
            env = mcp_consent_env(f"http://127.0.0.1:{port}", fake.url, urls[size])
            migrate(env)
            servers[size] = Server(
                f"scale-{size}", "project.asgi:application", env=env, logdir=logdir, port=port
            )
        targets, tokens = {}, {}
        for size, server in servers.items():
            targets[size] = load.McpConsent(server.url, server.url + "/mcp")
            tokens[size] = targets[size].flow()
        seconds = {
            "small": seed(urls["small"], 100, 100, 100),
            "large": seed(urls["large"], args.clients, args.consents, args.consents),
        }
        for size, url in urls.items():
            print(
                f"{size}: {count(url, 'mcp_consent_mcpclient'):,} clients, {count(url, 'mcp_consent_consent'):,} consents, "
                f"{count(url, 'oauth2_provider_accesstoken'):,} access tokens, {count(url, 'auth_user'):,} users "
                f"(seeded in {seconds[size]:.0f} s)"
            )

        def consent_page(size: str) -> None:
            target = targets[size]
            _, challenge = load.pkce()
            params = target.authorize_params(tokens[size].client_id, challenge)
            response = target.http.get(
                f"{target.base}/authorize/?{urlencode(params)}", allow_redirects=False
            )
            if response.status_code != 200:
                raise RuntimeError(f"authorize: HTTP {response.status_code}")

        results: dict[str, dict[str, load.Sample]] = {}
        figures = {
            "GET /authorize (consent page)": consent_page,
            "MCP tools/list (verification)": lambda size: targets[size].mcp_call(
                tokens[size].access
            ),
        }
        for figure, op in figures.items():
            for size in servers:
                op(size)  # warm
            for _ in range(2):
                for size in servers:
                    sample = load.measure(lambda s=size: op(s), count=limits[0], seconds=limits[1])
                    results.setdefault(figure, {}).setdefault(size, load.Sample()).add(sample)
        print("\n| figure | size | ops | per s | p50 ms | p90 ms | large / small (p50) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for figure, sides in results.items():
            for size, s in sides.items():
                cell = f"{s.pct(50) / sides['small'].pct(50):.2f}x" if size == "large" else ""
                print(
                    f"| {figure} | {size} | {s.ops} | {s.per_second:.1f} | {s.pct(50) * 1000:.1f} | {s.pct(90) * 1000:.1f} | {cell} |"
                )
    finally:
        for server in servers.values():
            server.stop()
        fake.stop()


if __name__ == "__main__":
    main()
