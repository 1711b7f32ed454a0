"""The layers of mcp_consent: no module imports a higher layer, and each imports on its own.

models <- audit, vault, upstream, registration <- flows <- views, admin, integrations
(issue 12: every write is a flow, views call flows). Every import counts: at module level,
inside a function, and under ``TYPE_CHECKING``, because a lower layer that reaches up, even
lazily, is the circle this test exists to keep out (vault -> flows -> authorization -> vault).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mcp_consent"

# The lowest layer a module may sit in, by dotted prefix (the longest prefix wins).
LAYERS: dict[str, int] = {
    # 0: the records and the configuration everything reads.
    "mcp_consent": 0,  # the package's own __init__
    "mcp_consent.models": 0,
    "mcp_consent.app_settings": 0,
    "mcp_consent.signals": 0,
    "mcp_consent.cors": 0,
    # 1: single-purpose services over the records: no writes of a flow, no request handling.
    "mcp_consent.audit": 1,
    "mcp_consent.vault": 1,
    "mcp_consent.upstream": 1,
    "mcp_consent.registration": 1,
    "mcp_consent.ratelimit": 1,
    # 2: every write (the flows), and the adapter whose hooks the flows call.
    "mcp_consent.flows": 2,
    "mcp_consent.adapter": 2,
    # 3: the edges Django, DOT, the MCP SDK and operators call into.
    "mcp_consent.views": 3,
    "mcp_consent.admin": 3,
    "mcp_consent.forms": 3,
    "mcp_consent.integrations": 3,
    "mcp_consent.resource": 3,
    "mcp_consent.oauth": 3,
    "mcp_consent.urls": 3,
    "mcp_consent.checks": 3,
    "mcp_consent.apps": 3,
    "mcp_consent.management": 3,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if "migrations" in relative.parts:
            continue  # generated; they import nothing of the app but Django's migration API
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def layer_of(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported mcp_consent module) for every import statement anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                # `from .. import flows` imports a module; `from ..models import Consent` a name.
                candidate = f"{target}.{alias.name}"
                found.append((node.lineno, candidate if candidate in MODULES else target))
    return [(line, name) for line, name in found if name.split(".")[0] == "mcp_consent"]


def test_every_module_has_a_layer() -> None:
    assert "mcp_consent.vault" in MODULES
    for module in MODULES:
        assert layer_of(module) in {0, 1, 2, 3}, module


def test_no_module_imports_a_higher_layer() -> None:
    """Issue 12 "No circle": lower layers never import higher ones, not even in a function."""
    violations = [
        f"{module} (layer {layer_of(module)}) line {line} imports {target} "
        f"(layer {layer_of(target)})"
        for module, path in MODULES.items()
        for line, target in imports_of(module, path)
        if layer_of(target) > layer_of(module)
    ]
    assert violations == []


def test_the_layer_test_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    """Control case: an import hidden in a function or under TYPE_CHECKING is found."""
    source = tmp_path / "vault.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from .resource import VerifiedToken\n"
        "def f():\n"
        "    from . import flows\n"
    )
    found = {name for _line, name in imports_of("mcp_consent.vault", source)}
    assert found == {"mcp_consent.resource", "mcp_consent.flows"}
    assert all(layer_of(name) > layer_of("mcp_consent.vault") for name in found)


# Run in a fresh interpreter: Django is set up once without admin autodiscovery (which
# would import half the package), then every module is imported in a forked child, so each one
# is the first of its dependencies to be imported and a circle between them fails there.
IMPORT_EACH = r"""
import importlib, json, os, sys, traceback
import django
from django.conf import settings
from project import settings as project

names = [n for n in dir(project) if n.isupper()]
config = {n: getattr(project, n) for n in names}
config["INSTALLED_APPS"] = [
    "django.contrib.admin.apps.SimpleAdminConfig" if a == "django.contrib.admin" else a
    for a in project.INSTALLED_APPS
]
settings.configure(**config)
django.setup()
failures = {}
for module in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
            message = b""
        except BaseException:
            message = traceback.format_exc().encode()
        os.write(write, message[-4000:])
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    if message:
        failures[module] = message.decode()
print(json.dumps(failures))
"""


def test_each_module_imports_on_its_own() -> None:
    """Issue 12: every module of the app can be the first one imported (no import circle)."""
    root = PACKAGE.parent
    result = subprocess.run(  # noqa: S603 - fixed argv: this interpreter, our own script
        [sys.executable, "-c", IMPORT_EACH, json.dumps(sorted(MODULES))],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
            "PYTHONPATH": str(root),
        },
    )
    assert result.returncode == 0, result.stderr
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert failures == {}


TESTS = Path(__file__).resolve().parent


def imports_of_test_modules(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, name) of every test_* module the file ``path`` imports, anywhere in it."""
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    package = ".".join(path.relative_to(TESTS.parent).parent.parts)  # "tests" or "tests.browser"
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            )
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.rpartition(".")[2].startswith("test_")]


def test_no_test_module_imports_another() -> None:
    """Issue 12 item 6: what tests share lives in helper modules (mcp_tokens, asgi_helpers,
    browser/pages, conftest fixtures), so a test module can be read, run and changed alone."""
    modules = sorted(TESTS.rglob("test_*.py"))
    assert len(modules) > 40
    imports = [
        f"{path.relative_to(TESTS)} line {line} imports {name}"
        for path in modules
        for line, name in imports_of_test_modules(path)
    ]
    assert imports == []


def test_the_cross_import_test_sees_every_spelling() -> None:
    """Control case: absolute, relative and function-level imports of a test module are found."""
    source = (
        "import tests.test_a\n"
        "from tests.test_b import x\n"
        "from .test_c import y\n"
        "from . import test_d\n"
        "from tests.mcp_tokens import issue_token\n"
        "def f():\n"
        "    from tests.browser.test_e import z\n"
    )
    found = {name for _line, name in imports_of_test_modules(TESTS / "browser" / "x.py", source)}
    assert found == {
        "tests.test_a",
        "tests.test_b",
        "tests.browser.test_c",
        "tests.browser.test_d",
        "tests.browser.test_e",
    }


def conjunctions_asserted(source: str, filename: str = "<test>") -> list[int]:
    """Lines of ``assert a and b``: a failure of it does not say which of the two failed."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source, filename))
        if isinstance(node, ast.Assert)
        and isinstance(node.test, ast.BoolOp)
        and isinstance(node.test.op, ast.And)
    ]


def test_each_assert_checks_one_condition() -> None:
    """Issue 12 item 6: ``assert a`` then ``assert b`` (with the same message), never
    ``assert a and b``, so that pytest's report names the condition that failed."""
    found = [
        f"{path.relative_to(TESTS)} line {line}"
        for path in sorted(TESTS.rglob("*.py"))
        for line in conjunctions_asserted(path.read_text(), str(path))
    ]
    assert found == []
    # Control case: a conjunction at the top of an assert counts, one inside an operand not.
    assert conjunctions_asserted("assert a and b, 'm'\nassert all(x and y for x, y in z)\n") == [1]
