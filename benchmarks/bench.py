"""`make bench`: mcp-consent against FastMCP's OAuthProxy, side by side, on SQLite and PostgreSQL.

Run: make bench            (full, ~10-15 min on 2 cores)
     make bench QUICK=1    (the same figures, shorter loops, smaller scale: ~4 min)
     .venv/bin/python -m benchmarks.bench [--quick] [--no-postgres] [--out FILE]

Figures only: nothing here fails on a time. Every server is a uvicorn process (one worker
unless said otherwise) on a free 127.0.0.1 port, behind the same fake GitHub
(benchmarks/fake_upstream.py), driven by the same load generator (benchmarks/load.py), and
stopped by its pid at the end. Each figure is measured in rounds, interleaved A B A B, so
that the noise of a shared machine falls on both sides alike.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import load  # noqa: E402
from benchmarks.servers import (  # noqa: E402
    FASTMCP_VENV,
    PY,
    ROOT,
    Server,
    free_port,
    mcp_consent_env,
    migrate,
)

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432"
# The bench drops and re-creates its databases: PREFIX, PREFIX_workers, PREFIX_verify,
# PREFIX_small, PREFIX_large, PREFIX_admin. BENCH_DB_PREFIX keeps two runs on one server apart.
DB_PREFIX = os.environ.get("BENCH_DB_PREFIX", "perfbench")


class Plan:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.rounds = 2
        # (max ops, max seconds) per round and side; flows are slow, MCP calls fast.
        self.fast = (300, 1.5) if quick else (2000, 5.0)
        self.slow = (40, 2.0) if quick else (300, 6.0)
        self.scale = (10_000, 100_000) if quick else (100_000, 1_000_000)


def out(line: str = "") -> None:
    print(line, flush=True)


# --- Environment ---------------------------------------------------------------------------------


def version(package: str, python: str = PY) -> str:
    if python == PY:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "-"
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    result = subprocess.run([python, "-c", code], capture_output=True, text=True)  # noqa: S603
    return result.stdout.strip() or "-"


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(
            int(line.split()[1]) // (1024 * 1024)
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem = 0
    return f"{os.cpu_count()} cores ({model or platform.processor()}), {mem} GiB, {platform.system()} {platform.release()}"


def postgres_version(url: str) -> str | None:
    try:
        import psycopg

        with psycopg.connect(url + "/postgres", connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]).split()[0] if row else "?"
    except Exception:
        return None


def recreate_database(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{url}/{name}"


# --- Figures ---------------------------------------------------------------------------------


FIGURES = [
    ("register", "dynamic registration, per s"),
    ("flow", "whole authorization flow, per s"),
    ("mcp", "MCP tools/list with a bearer token, sequential, per s"),
    ("mcp8", "the same from 8 threads, per s"),
    ("refresh", "refresh grant, per s"),
]


def operations(
    target: load.Target, plan: Plan
) -> dict[str, tuple[Callable[[], Any], tuple[int, float], int]]:
    """Each figure's operation for one target: (op, limits, threads)."""
    if isinstance(target, load.Floor):
        return {
            "mcp": (lambda: target.mcp_call(None), plan.fast, 1),
            "mcp8": (lambda: target.mcp_call(None), plan.fast, 8),
        }
    tokens = target.flow()
    target.mcp_call(tokens.access)  # warm
    return {
        "register": (target.register, plan.slow, 1),
        "flow": (target.flow, plan.slow, 1),
        "mcp": (lambda: target.mcp_call(tokens.access), plan.fast, 1),
        "mcp8": (lambda: target.mcp_call(tokens.access), plan.fast, 8),
        "refresh": (lambda: target.refresh(tokens), plan.fast, 1),
    }


def interleaved(
    targets: dict[str, load.Target], plan: Plan, figures: list[str]
) -> dict[str, dict[str, load.Sample]]:
    """{figure: {target name: Sample}}, rounds A B A B."""
    ops = {name: operations(t, plan) for name, t in targets.items()}
    results: dict[str, dict[str, load.Sample]] = {}
    for figure in figures:
        for _ in range(plan.rounds):
            for name in targets:
                if figure not in ops[name]:
                    continue
                op, (count, seconds), threads = ops[name][figure]
                sample = load.measure(op, count=count, seconds=seconds, threads=threads)
                results.setdefault(figure, {}).setdefault(name, load.Sample()).add(sample)
    return results


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def print_figures(
    title: str, results: dict[str, dict[str, load.Sample]], ours: str, peer: str
) -> None:
    out(f"\n### {title}\n")
    out(f"| figure | side | ops | per s | p50 ms | p90 ms | errors | {ours} / {peer} |")
    out("|---|---|---:|---:|---:|---:|---:|---:|")
    labels = dict(FIGURES)
    for figure, sides in results.items():
        mine, theirs = sides.get(ours), sides.get(peer)
        for name, sample in sides.items():
            cell = ""
            if name == ours and mine and theirs:
                cell = ratio(mine.per_second, theirs.per_second)
            out(
                f"| {labels[figure]} | {name} | {sample.ops} | {sample.per_second:.1f} | "
                f"{ms(sample.pct(50))} | {ms(sample.pct(90))} | {sample.errors} | {cell} |"
            )
            if sample.first_error:
                out(f"|  | (first error: {sample.first_error[:120]!r}) | | | | | | |")
    floor = results.get("mcp", {}).get("floor (no auth)")
    if floor:
        for name in (ours, peer):
            sample = results["mcp"].get(name)
            if sample:
                out(
                    f"\nMCP call latency, {name} / unauthenticated floor (p50): "
                    f"{sample.pct(50) / floor.pct(50):.2f}x"
                )


# --- Sections ----------------------------------------------------------------------------------


def side_by_side(
    db_label: str, database_url: str, shared: dict[str, Server], logdir: Path, plan: Plan
) -> None:
    port = free_port()
    env = mcp_consent_env(f"http://127.0.0.1:{port}", shared["fake"].url, database_url)
    migrate(env)
    ours = Server(
        f"mcp-consent-{db_label}", "project.asgi:application", env=env, logdir=logdir, port=port
    )
    try:
        targets: dict[str, load.Target] = {
            "mcp-consent": load.McpConsent(ours.url, ours.url + "/mcp"),
            "FastMCP": load.FastMCPProxy(shared["fastmcp"].url, shared["fastmcp"].url + "/mcp"),
            "floor (no auth)": load.Floor(shared["floor"].url, shared["floor"].url + "/mcp"),
        }
        results = interleaved(targets, plan, [f for f, _ in FIGURES])
    finally:
        ours.stop()
    print_figures(
        f"mcp-consent on {db_label} vs FastMCP OAuthProxy (1 uvicorn process each)",
        results,
        "mcp-consent",
        "FastMCP",
    )


def workers(database_url: str, fake: Server, logdir: Path, plan: Plan) -> None:
    """1 vs 2 uvicorn workers on PostgreSQL, MCP calls and flows from 8 threads."""
    servers = {}
    try:
        for n in (1, 2):
            port = free_port()
            env = mcp_consent_env(f"http://127.0.0.1:{port}", fake.url, database_url)
            if n == 1:
                migrate(env)
            servers[n] = Server(
                f"mcp-consent-{n}w",
                "project.asgi:application",
                env=env,
                workers=n,
                logdir=logdir,
                port=port,
            )
        targets = {
            f"{n} worker{'s' if n > 1 else ''}": load.McpConsent(s.url, s.url + "/mcp")
            for n, s in servers.items()
        }
        results: dict[str, dict[str, load.Sample]] = {}
        ops = {}
        for name, target in targets.items():
            tokens = target.flow()
            ops[name] = {
                "MCP tools/list, 8 threads": (
                    lambda t=target, k=tokens: t.mcp_call(k.access),
                    plan.fast,
                ),
                "whole flow, 8 threads": (target.flow, plan.slow),
            }
        for figure in ("MCP tools/list, 8 threads", "whole flow, 8 threads"):
            for _ in range(plan.rounds):
                for name in targets:
                    op, (count, seconds) = ops[name][figure]
                    sample = load.measure(op, count=count, seconds=seconds, threads=8)
                    results.setdefault(figure, {}).setdefault(name, load.Sample()).add(sample)
    finally:
        for server in servers.values():
            server.stop()
    out("\n### 1 vs 2 uvicorn workers, PostgreSQL (8 client threads)\n")
    out("| figure | workers | ops | per s | p50 ms | p90 ms | errors | 2 / 1 |")
    out("|---|---|---:|---:|---:|---:|---:|---:|")
    for figure, sides in results.items():
        one, two = sides["1 worker"], sides["2 workers"]
        for name, s in sides.items():
            cell = ratio(two.per_second, one.per_second) if name == "2 workers" else ""
            out(
                f"| {figure} | {name} | {s.ops} | {s.per_second:.1f} | {ms(s.pct(50))} | {ms(s.pct(90))} | {s.errors} | {cell} |"
            )


def run_script(title: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    out(f"\n### {title}\n")
    start = time.perf_counter()
    result = subprocess.run(  # noqa: S603
        [PY, *argv], cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    text = result.stdout.rstrip()
    out("```")
    out(text or "(no output)")
    if result.returncode != 0:
        out(f"(exit {result.returncode}) {result.stderr.strip()[-1500:]}")
    out(f"({time.perf_counter() - start:.0f} s)")
    out("```")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="shorter loops, smaller scale")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    parser.add_argument(
        "--only", default="", help="comma-separated: figures,workers,queries,verify,scale,admin"
    )
    args = parser.parse_args()
    plan = Plan(args.quick)
    only = set(filter(None, args.only.split(",")))

    def wanted(section: str) -> bool:
        return not only or section in only

    fastmcp_python = FASTMCP_VENV / "bin" / "python"
    pg = None if args.no_postgres else postgres_version(args.postgres_url)
    started = time.perf_counter()
    out("## make bench: mcp-consent vs FastMCP OAuthProxy\n")
    out(f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}")
    out(f"- machine: {machine()}")
    out(
        f"- databases: SQLite {sqlite3.sqlite_version}; PostgreSQL {pg or 'not reachable (skipped)'}"
    )
    out(
        f"- versions: Python {platform.python_version()}, mcp-consent {git_revision()}, Django {version('django')}, "
        f"django-oauth-toolkit {version('django-oauth-toolkit')}, mcp {version('mcp')}, uvicorn {version('uvicorn')}; "
        f"fastmcp {version('fastmcp', str(fastmcp_python))} (mcp {version('mcp', str(fastmcp_python))}) in its own venv"
    )
    out(
        f"- run: {'quick' if args.quick else 'full'}, {plan.rounds} interleaved rounds per figure and side"
    )

    logdir = Path(tempfile.mkdtemp(prefix="mcp-consent-bench-"))
    shared: dict[str, Server] = {}
    try:
        if wanted("figures") or wanted("workers"):
            shared["fake"] = Server("fake-upstream", "benchmarks.fake_upstream:app", logdir=logdir)
        if wanted("figures"):
            shared["floor"] = Server("floor", "benchmarks.floor_server:app", logdir=logdir)
            port = free_port()
            shared["fastmcp"] = Server(
                "fastmcp",
                "benchmarks.fastmcp_server:app",
                python=str(fastmcp_python),
                env={
                    "FAKE_UPSTREAM": shared["fake"].url,
                    "BASE_URL": f"http://127.0.0.1:{port}",
                    "FASTMCP_HOME": str(logdir / "fastmcp-home"),
                },
                logdir=logdir,
                port=port,
            )
            side_by_side("SQLite", f"sqlite:///{logdir / 'bench.sqlite3'}", shared, logdir, plan)
            if pg:
                side_by_side(
                    "PostgreSQL",
                    recreate_database(args.postgres_url, DB_PREFIX),
                    shared,
                    logdir,
                    plan,
                )
        if wanted("workers") and pg:
            workers(
                recreate_database(args.postgres_url, f"{DB_PREFIX}_workers"),
                shared["fake"],
                logdir,
                plan,
            )
    finally:
        for server in shared.values():
            server.stop()

    if wanted("queries"):
        run_script(
            "SQL statements per step of the flow (SQLite)",
            ["benchmarks/flow_queries.py", "--rounds", "5" if args.quick else "20"],
        )
    if wanted("verify"):
        urls = ["sqlite"] + (
            [recreate_database(args.postgres_url, f"{DB_PREFIX}_verify")] if pg else []
        )
        for url in urls:
            run_script(
                f"One token verification ({'PostgreSQL' if url != 'sqlite' else 'SQLite'})",
                ["benchmarks/verify_cost.py", "--database", url],
            )
    if wanted("scale") and pg:
        clients, consents = plan.scale
        run_script(
            f"Scale: authorize and verify at 100 vs {clients:,} clients / {consents:,} consents (PostgreSQL)",
            [
                "benchmarks/scale.py",
                "--postgres-url",
                args.postgres_url,
                "--clients",
                str(clients),
                "--consents",
                str(consents),
            ]
            + (["--quick"] if args.quick else []),
        )
    if wanted("admin") and pg:
        admin = ROOT / "benchmarks" / "admin_scale.py"
        if admin.exists():
            run_script(
                "Operators' admin at scale (benchmarks/admin_scale.py)",
                [
                    str(admin),
                    "--database",
                    f"{args.postgres_url}/{DB_PREFIX}_admin",
                    "--repeat",
                    "2",
                    *(["--scale", str(plan.scale[0] / 100_000)] if args.quick else []),
                ],
            )
        else:
            out(
                "\n(benchmarks/admin_scale.py is not there yet: the admin at scale is not measured)"
            )
    out(f"\n(make bench took {time.perf_counter() - started:.0f} s; logs in {logdir})")


def git_revision() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )  # noqa: S603,S607
    return result.stdout.strip() or "?"


if __name__ == "__main__":
    main()
