"""The cost of one bearer-token verification: microseconds and SQL statements.

Run: .venv/bin/python benchmarks/verify_cost.py [--database sqlite|postgres://…/perfbench_verify]

A real token (from a whole in-process flow), then ``resource.verify_token`` N times, alone
and followed by ``release_connections()`` as the MCP endpoint does at the end of each
request (with the demo's database settings, so a closed-and-reopened connection shows here).
Figures only, never a pass/fail.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
parser = argparse.ArgumentParser()
parser.add_argument("--database", default="sqlite")
parser.add_argument("--count", type=int, default=2000)
args = parser.parse_args()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ["DATABASE_URL"] = (
    f"sqlite:///{Path(tempfile.gettempdir()) / 'mcp-consent-verify.sqlite3'}"
    if args.database == "sqlite"
    else args.database
)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402


def main() -> None:
    setup_test_environment()
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    from django.core.management import call_command

    if args.database == "sqlite":
        Path(settings.DATABASES["default"]["NAME"]).unlink(missing_ok=True)
    call_command("migrate", verbosity=0)
    from project.demo_upstream.seed import seed_demo_data

    seed_demo_data()

    from mcp_consent import resource, upstream
    from tests.mcp_tokens import RESOURCE, issue_token
    from tests.upstream_fakes import UPSTREAM_ORIGIN, DjangoClientAdapter

    upstream.http_session().mount(UPSTREAM_ORIGIN + "/", DjangoClientAdapter())
    raw = issue_token().access_token

    with CaptureQueriesContext(connection) as ctx:
        resource.verify_token(raw, resource=RESOURCE)
    queries = len(ctx.captured_queries)

    def timed(release: bool) -> list[float]:
        times = []
        for _ in range(args.count):
            start = time.perf_counter()
            resource.verify_token(raw, resource=RESOURCE)
            if release:
                resource.release_connections()
            times.append(time.perf_counter() - start)
        return times

    timed(True)  # warm
    alone, released = timed(False), timed(True)
    conn = settings.DATABASES["default"]
    print(
        f"database: {conn['ENGINE'].rsplit('.', 1)[-1]}, CONN_MAX_AGE={conn.get('CONN_MAX_AGE')}, pool={bool(conn.get('OPTIONS', {}).get('pool'))}"
    )
    print(f"SQL statements per verification: {queries}")
    for label, times in (
        ("verify_token", alone),
        ("verify_token + end-of-request release", released),
    ):
        p50 = statistics.median(times) * 1e6
        p90 = statistics.quantiles(times, n=10)[8] * 1e6
        print(f"{label:42} p50 {p50:8.0f} µs   p90 {p90:8.0f} µs   ({args.count} calls)")
    for query in ctx.captured_queries:
        print("  " + query["sql"][:400])


if __name__ == "__main__":
    main()
