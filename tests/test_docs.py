"""The documentation stays true: every document the project points to is in the project.

A comment or page that sends the reader to a document the project does not contain (a
private note, a file that was renamed) is a dead end; these tests fail on each one, naming
the file and line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# A document name: ``docs/settings.md``, ``README.md``, ``threat-model.md``.
MD_REFERENCE = re.compile(r"(?<![\w/.:-])((?:[\w.-]+/)*[\w-]+\.md)\b(?![\w-])")
# Names of notes that were never part of the project, with or without the extension.
NEVER_IN_PROJECT = re.compile(r"DOT-NOTES|\b(?:STYLE|DESIGN|REQUIREMENTS)\.md\b")
# Documents of other repositories that docs/requirements.md cites as its sources.
EXTERNAL_SOURCES = {
    "draft-ietf-oauth-v2-1.md",
    "draft-ietf-oauth-client-id-metadata-document.md",
    "seps/2207-oidc-refresh-token-guidance.md",
    "seps/2468-recommend-issuer-claim-for-auth.md",
}
TEXT_SUFFIXES = {".py", ".md", ".html", ".txt", ".toml", ".cfg", ".ini", ".sh", ""}


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(  # noqa: S603 - fixed argv
        [shutil.which("git") or "git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    files = [REPO_ROOT / name for name in listed]
    return [f for f in files if f.is_file() and f.suffix in TEXT_SUFFIXES]


def resolves(reference: str, source: Path, names: set[str]) -> bool:
    """A path relative to the file or to the repository, or a bare name of a tracked file."""
    if (source.parent / reference).is_file() or (REPO_ROOT / reference).is_file():
        return True
    return "/" not in reference and reference in names


def missing_references() -> list[str]:
    files = tracked_text_files()
    names = {f.name for f in files}
    problems = []
    for source in files:
        if source == Path(__file__).resolve():
            continue  # this module names made-up documents on purpose
        try:
            text = source.read_text()
        except UnicodeDecodeError:
            continue
        where = source.relative_to(REPO_ROOT)
        for number, line in enumerate(text.splitlines(), 1):
            if NEVER_IN_PROJECT.search(line):
                problems.append(
                    f"{where}:{number}: names a note outside the project: {line.strip()}"
                )
                continue
            for reference in MD_REFERENCE.findall(line):
                if reference in EXTERNAL_SOURCES or resolves(reference, source, names):
                    continue
                problems.append(f"{where}:{number}: {reference} is not in the project")
    return problems


def test_every_referenced_document_is_in_the_project() -> None:
    assert missing_references() == []


def test_the_reference_check_fails_on_a_missing_document(tmp_path: Path) -> None:
    """The check above is not vacuous: a made-up reference is reported, a real one is not."""
    names = {f.name for f in tracked_text_files()}
    source = REPO_ROOT / "mcp_consent" / "urls.py"
    assert resolves("docs/threat-model.md", source, names)
    assert resolves("README.md", source, names)
    assert not resolves("docs/no-such-page.md", source, names)
    assert not resolves("NOTES-NOT-HERE.md", source, names)
    assert MD_REFERENCE.findall("see docs/no-such-page.md for details") == ["docs/no-such-page.md"]
    assert NEVER_IN_PROJECT.search('(DOT-NOTES "Gaps")')


# --- docs/settings.md is the settings reference of app_settings -----------------------------

SETTINGS_DOC = REPO_ROOT / "docs" / "settings.md"


def documented_keys(heading: str) -> list[str]:
    """The keys of the table under ``## <heading>`` in docs/settings.md."""
    section = SETTINGS_DOC.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z_]+)` \|", section, re.M)


def test_settings_reference_documents_every_mcp_consent_key_and_no_other() -> None:
    from mcp_consent.app_settings import AppSettings

    documented = documented_keys("`MCP_CONSENT`")
    assert len(documented) == len(set(documented))
    assert sorted(documented) == AppSettings.known_keys()


def test_settings_reference_documents_every_upstream_key_and_no_other() -> None:
    from mcp_consent.app_settings import UpstreamConfig

    documented = documented_keys('`MCP_CONSENT["UPSTREAM"]`')
    assert len(documented) == len(set(documented))
    assert sorted(documented) == sorted(f.upper() for f in UpstreamConfig.__dataclass_fields__)


def test_adapter_page_describes_every_hook_and_no_other() -> None:
    from mcp_consent.adapter import DefaultConsentAdapter

    text = (REPO_ROOT / "docs" / "adapter.md").read_text()
    documented = re.findall(r"^### `(\w+)\(", text, re.M)
    hooks = [
        name
        for name, value in vars(DefaultConsentAdapter).items()
        if callable(value) and not name.startswith("_")
    ]
    assert sorted(documented) == sorted(hooks)


def test_mutation_page_names_each_modules_files_and_tests_as_the_runner_has_them() -> None:
    """docs/mutation.md's table says what `make mutation` mutates against which tests: every
    module of tests/mutation/run.py has a row naming its files and exactly its test modules."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "mutation_run", REPO_ROOT / "tests/mutation/run.py"
    )
    assert spec is not None
    assert spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    rows = [
        line
        for line in (REPO_ROOT / "docs/mutation.md").read_text().splitlines()
        if line.startswith("| `mcp_consent/")
    ]
    assert len(rows) == len(runner.MODULES)
    for name, (files, tests) in runner.MODULES.items():
        where = files[0] if len(files) == 1 else files[0].rsplit("/", 1)[0] + "/"
        (row,) = [row for row in rows if row.startswith(f"| `{where}`")]
        listed = row.rsplit("|", 2)[1]
        assert set(re.findall(r"`(test_\w+)\.py`", listed)) == set(tests), name
