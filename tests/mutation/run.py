"""`make mutation`: mutmut over each security-critical module, against the tests that guard it.

Each module is mutated on its own, in a copy of the project under ``mutants-work/<module>/``
whose ``[tool.mutmut]`` names only that module and only the test modules that exercise it
(the table below, also in docs/mutation.md). mutmut learns from that selection which tests
execute each function and runs only those per mutant; a narrow selection keeps the first
pass (the whole selection once, traced) short and says plainly what each module is tested by.

Prints, per module, the mutants and what became of them, then every survivor (a mutant no
test noticed) with its name: ``mutmut show <name>`` in ``mutants-work/<module>/`` prints its
diff. docs/mutation.md explains each one. A report, not a gate: it exits 0 whatever survives,
and 1 only when mutmut itself could not run.

    python tests/mutation/run.py [MODULE ...]      # default: every module of the table
    MUTATION_JOBS=2 python tests/mutation/run.py vault audit
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "mutants-work"

# module -> (the files mutated, the test modules run against them)
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "resource": (
        [
            f"mcp_consent/resource/{name}.py"
            for name in (
                "__init__",
                "challenges",
                "decorators",
                "query",
                "request",
                "scopes",
                "verification",
            )
        ],
        ["test_resource", "test_mcp_sdk", "test_introspection"],
    ),
    "authorize": (
        ["mcp_consent/views/authorize.py"],
        [
            "test_authorize",
            "test_consent_page",
            "test_confused_deputy",
            "test_flow_records",
            "test_consent_warnings",
            "test_cimd",
            "test_ratelimit",
            "test_adapter",
            "test_performance",
        ],
    ),
    "upstream": (
        ["mcp_consent/views/upstream.py"],
        [
            "test_upstream_callback",
            "test_faults",
            "test_secrets_in_logs",
            "test_revocation",
            "test_connections",
            "test_adapter",
            "test_flow_records",
            "test_performance",
            "test_token",
            "test_upstream_api",
            "test_introspection",
            "test_ratelimit",
        ],
    ),
    "authorization": (
        ["mcp_consent/flows/authorization.py"],
        [
            "test_upstream_callback",
            "test_faults",
            "test_authorize",
            "test_flow_records",
            "test_adapter",
            "test_connections",
            "test_performance",
        ],
    ),
    "identities": (
        ["mcp_consent/flows/identities.py"],
        ["test_upstream_callback", "test_faults", "test_revocation", "test_adapter"],
    ),
    "sessions": (["mcp_consent/integrations/sessions.py"], ["test_sessions"]),
    "upstream_tokens": (
        ["mcp_consent/flows/upstream_tokens.py"],
        ["test_upstream_callback", "test_upstream_api", "test_faults", "test_revocation"],
    ),
    "tokens": (
        ["mcp_consent/flows/tokens.py"],
        [
            "test_token",
            "test_flow_records",
            "test_revocation",
            "test_connections",
            "test_introspection",
            "test_resource",
            "test_performance",
        ],
    ),
    "vault": (["mcp_consent/vault.py"], ["test_vault", "test_upstream_api", "test_commands"]),
    "audit": (["mcp_consent/audit.py"], ["test_audit", "test_revocation"]),
}

COPIED = ["mcp_consent", "tests", "project", "templates", "docs", "manage.py", "pyproject.toml"]


def toml_list(items: list[str]) -> str:
    return "[\n" + "".join(f'    "{item}",\n' for item in items) + "]"


def prepare(module: str) -> Path:
    """A fresh copy of the project whose [tool.mutmut] names this module and its tests."""
    files, tests = MODULES[module]
    work = WORK / module
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.sqlite3*")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=ignore)
        else:
            shutil.copy2(source, work / name)
    pyproject = work / "pyproject.toml"
    text = pyproject.read_text()
    text, mutated = re.subn(
        r"only_mutate = \[.*?\]", f"only_mutate = {toml_list(files)}", text, flags=re.S
    )
    selection = [f"tests/{test}.py" for test in tests]
    text, selected = re.subn(
        r"pytest_add_cli_args_test_selection = \[.*?\]",
        f"pytest_add_cli_args_test_selection = {toml_list(selection)}",
        text,
        flags=re.S,
    )
    if not (mutated and selected):
        sys.exit("pyproject.toml has no [tool.mutmut] only_mutate / test selection to narrow")
    pyproject.write_text(text)
    return work


def run(module: str, jobs: str) -> list[tuple[str, str]]:
    """mutmut on one module; (mutant, status) of every mutant."""
    work = prepare(module)
    mutmut = Path(sys.executable).with_name("mutmut")
    print(f"== {module}: {' '.join(MODULES[module][0])}", flush=True)
    print(f"   against {' '.join(MODULES[module][1])}", flush=True)
    with open(work / "mutmut.log", "w") as log:
        ran = subprocess.run(  # noqa: S603 - our mutmut, fixed argv
            [str(mutmut), "run", "--max-children", jobs], cwd=work, stdout=log, stderr=log
        )
    results = subprocess.run(  # noqa: S603 - our mutmut, fixed argv
        [str(mutmut), "results", "--all", "true"], cwd=work, capture_output=True, text=True
    )
    statuses = []
    for line in results.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            statuses.append((name, status))
    if ran.returncode != 0 and all(status == "not checked" for _, status in statuses):
        # e.g. "failed to collect stats": a test of the row fails on the unmutated copy.
        tail = (work / "mutmut.log").read_text(errors="replace").strip().splitlines()[-3:]
        print(f"   mutmut failed (exit {ran.returncode}): see {work / 'mutmut.log'}", flush=True)
        print("   " + "\n   ".join(tail), flush=True)
        return []
    return statuses


def main(argv: list[str]) -> int:
    modules = argv or list(MODULES)
    unknown = [module for module in modules if module not in MODULES]
    if unknown:
        sys.exit(f"unknown module(s) {' '.join(unknown)}; known: {' '.join(MODULES)}")
    jobs = os.environ.get("MUTATION_JOBS", "2")
    failed = False
    summary: list[tuple[str, Counter[str]]] = []
    survivors: list[tuple[str, str, str]] = []
    for module in modules:
        statuses = run(module, jobs)
        failed |= not statuses
        counts = Counter(status for _, status in statuses)
        summary.append((module, counts))
        survivors += [(module, name, status) for name, status in statuses if status != "killed"]
        print(f"   {len(statuses)} mutants: {dict(counts)}", flush=True)
    lines = ["", "== surviving mutants (mutmut show NAME, in mutants-work/MODULE/)"]
    lines += [f"{module:16} {status:10} {name}" for module, name, status in survivors]
    lines += ["", "== per module"]
    lines.append(
        f"{'module':16} {'mutants':>8} {'killed':>8} {'survived':>9} {'timeout':>8} {'no tests':>9}"
    )
    for module, counts in summary:
        lines.append(
            f"{module:16} {sum(counts.values()):8} {counts['killed']:8} {counts['survived']:9}"
            f" {counts['timeout']:8} {counts['no tests']:9}"
        )
    print("\n".join(lines))
    (WORK / "report.txt").write_text("\n".join(lines) + "\n")
    print(f"\n(also in {WORK / 'report.txt'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
