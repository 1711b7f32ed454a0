"""Print the SQL statements and the relative time of each step of one authorization.

Run: .venv/bin/python benchmarks/flow_queries.py  [--rounds N] [--show "POST /token (code)"]

Figures only, never a pass/fail: query counts are exact; times are given as ratios to the
cheapest step of the same run (these machines are shared and noisy). Stock DOT 3.4.1, measured
on SQLite, for comparison: anonymous GET /authorize 1, completing authorize after login
8, POST /token (code) 15, POST /token (refresh) 18.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ["DATABASE_URL"] = "sqlite://:memory:"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--show", action="append", default=[], help="print the SQL of this step")
    args = parser.parse_args()
    rounds = args.rounds
    shown: dict[str, list[str]] = {}

    setup_test_environment()
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "mcp_consent.hashers.ClientSecretHasher",
    ]
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from project.demo_upstream.seed import seed_demo_data

    seed_demo_data()

    from mcp_consent import upstream
    from tests.browser_client import Browser, authorize_params, code_from, pkce_pair
    from tests.factories import MCPClientFactory
    from tests.upstream_fakes import UPSTREAM_ORIGIN, DjangoClientAdapter

    upstream.http_session().mount(UPSTREAM_ORIGIN + "/", DjangoClientAdapter())
    client = MCPClientFactory(redirect_uris=["http://127.0.0.1:5555/cb"])
    browser = Browser()
    browser.login_upstream()

    steps: dict[str, list[tuple[int, float]]] = {}

    def measure(name: str, call):  # type: ignore[no-untyped-def]
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            result = call()
            elapsed = time.perf_counter() - start
        steps.setdefault(name, []).append((len(ctx.captured_queries), elapsed))
        shown[name] = [q["sql"] for q in ctx.captured_queries]
        return result

    for _ in range(rounds):
        verifier, challenge = pkce_pair()
        params = authorize_params(client, challenge=challenge)
        page = measure("GET /authorize (consent page)", lambda: browser.authorize(params))
        to_upstream = measure(
            "POST /authorize (approve)", lambda: browser.post_form(page, "approve")
        )
        to_callback = browser.through_upstream(to_upstream["Location"])
        final = measure(
            "GET /upstream/callback (incl. upstream calls)",
            lambda: browser.get(to_callback["Location"]),
        )
        data = {
            "grant_type": "authorization_code",
            "code": code_from(final),
            "client_id": client.application.client_id,
            "redirect_uri": params["redirect_uri"],
            "code_verifier": verifier,
        }
        token = measure(
            "POST /token (code)",
            lambda: browser.client.post("/token/", data, HTTP_HOST="127.0.0.1:8000"),
        )
        refresh = {
            "grant_type": "refresh_token",
            "refresh_token": token.json()["refresh_token"],
            "client_id": client.application.client_id,
        }
        measure(
            "POST /token (refresh)",
            lambda: browser.client.post("/token/", refresh, HTTP_HOST="127.0.0.1:8000"),
        )

    medians = {name: statistics.median(t for _, t in values) for name, values in steps.items()}
    cheapest = min(medians.values())
    print(f"{'step':50} {'queries':>8} {'median time / cheapest':>24}")
    for name, values in steps.items():
        counts = sorted({q for q, _ in values})
        print(f"{name:50} {'/'.join(map(str, counts)):>8} {medians[name] / cheapest:>23.1f}x")
    print(
        f"({rounds} rounds, SQLite in memory; the callback includes two in-process upstream calls)"
    )
    for name in args.show:
        print(f"\n{name}:")
        for number, sql in enumerate(shown.get(name, []), 1):
            print(f"{number:3}. {sql[:300]}")


if __name__ == "__main__":
    main()
