"""Decide mutants again, each in a fresh pytest process, against any tests you name.

`make mutation` (tests/mutation/run.py) leaves in ``mutants-work/<module>/mutants/`` the
project with every mutant compiled in, switched by the ``MUTANT_UNDER_TEST`` variable.
This script switches one mutant on, runs the tests you give in a new process, and says
whether a test failed (killed) or not (survived). Use it for what mutmut's own run cannot
decide well:

- a survivor that a test outside the module's row may kill (name that test file);
- a timeout on a loaded machine (a fresh process, no time limit);
- code that runs at import time, or is cached before mutmut forks its workers: here the
  mutant is switched on before the first import, so it takes effect everywhere.

    python tests/mutation/recheck.py MODULE                       # every survivor of MODULE
    python tests/mutation/recheck.py MODULE NAME [NAME ...]       # these mutants
    python tests/mutation/recheck.py MODULE --tests tests/test_token.py,tests/test_audit.py

The tests are first run once with no mutant switched on: if they fail then, nothing is
decided (a "killed" would mean nothing).

NAME is mutmut's name (``mcp_consent.flows.authorization.x__claim__mutmut_9``) or the
part after the module (``x__claim__mutmut_9``, ``_claim__mutmut_9``,
``AuthorizeViewǁshow__mutmut_12``). Prints one line per mutant, then the counts; exits 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MODULES, ROOT, WORK  # noqa: E402 - the runner's table, beside this file

MARKERS = "not browser and not postgres and not servers and not fuzz"


def full_names(module: str, names: list[str]) -> list[str]:
    """mutmut's names of ``names`` (short or full); every survivor when none is given."""
    work = WORK / module
    mutmut = Path(sys.executable).with_name("mutmut")
    listed = subprocess.run(  # noqa: S603 - our mutmut, fixed argv
        [str(mutmut), "results", "--all", "true"], cwd=work, capture_output=True, text=True
    ).stdout.splitlines()
    statuses = {}
    for line in listed:
        name, _, status = line.strip().rpartition(": ")
        if name:
            statuses[name] = status
    if not names:
        return [name for name, status in statuses.items() if status != "killed"]
    chosen = []
    for short in names:
        matches = [
            name
            for name in statuses
            if name == short or name.endswith((f".{short}", f".x_{short}", f".xǁ{short}"))
        ]
        if len(matches) != 1:
            sys.exit(f"{short}: {len(matches)} mutants of {module} have that name")
        chosen.append(matches[0])
    return chosen


def decide(module: str, name: str, tests: list[str], postgres: bool) -> str:
    """'killed' when a test fails with ``name`` switched on, 'survived' when all pass."""
    env = {**os.environ, "MUTANT_UNDER_TEST": name}
    markers = MARKERS.replace("not postgres and ", "") if postgres else MARKERS
    if postgres:
        env["MCP_CONSENT_REQUIRE_POSTGRES"] = "1"
        env.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    ran = subprocess.run(  # noqa: S603 - our python, fixed argv
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", markers]
        + tests,
        cwd=WORK / module / "mutants",
        env=env,
        capture_output=True,
        text=True,
    )
    if ran.returncode == 0:
        return "survived"
    if ran.returncode == 1:
        failed = [line for line in ran.stdout.splitlines() if line.startswith("FAILED")]
        return "killed  " + (failed[0][len("FAILED ") :] if failed else "")
    # 2-5: interrupted, internal error, usage error, no tests: the mutant is not decided.
    tail = (ran.stdout + ran.stderr).strip().splitlines()[-1:] or [""]
    return f"error {ran.returncode}: {tail[0]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", choices=list(MODULES))
    parser.add_argument("names", nargs="*", help="mutants (default: every survivor)")
    parser.add_argument(
        "--tests", help="comma-separated test files or node ids (default: the row's)"
    )
    parser.add_argument("--postgres", action="store_true", help="run on PostgreSQL, its tests too")
    args = parser.parse_args()
    if not (WORK / args.module / "mutants").is_dir():
        sys.exit(
            f"no mutants-work/{args.module}/mutants: run make mutation MUTATION_MODULES={args.module}"
        )
    # The tests as they are in the checkout now (tests are never mutated): a test written
    # for a survivor since `make mutation` ran is the one to check it against.
    shutil.copytree(
        ROOT / "tests",
        WORK / args.module / "mutants" / "tests",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    tests = (
        args.tests.split(",")
        if args.tests
        else [f"tests/{test}.py" for test in MODULES[args.module][1]]
    )
    names = full_names(args.module, args.names)
    # The control: with no mutant switched on the tests must pass, or a "killed" below would
    # only say that they fail anyway.
    control = decide(args.module, "", tests, args.postgres)
    if control != "survived":
        sys.exit(f"the tests fail with no mutant switched on ({control}): fix that first")
    counts: dict[str, int] = {}
    for name in names:
        outcome = decide(args.module, name, tests, args.postgres)
        counts[outcome.split()[0]] = counts.get(outcome.split()[0], 0) + 1
        print(f"{name.rpartition('.')[2]:60} {outcome}", flush=True)
    print(" ".join(f"{status}: {count}" for status, count in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
