"""Translated pages (issue 9 item 6): every string of the app is in the catalogs, which are complete
and compiled, and the pages follow the browser's language, right to left for Arabic.

The catalogs are checked without gettext tools: msgids are extracted from the templates with
Django's own ``templatize`` and from the Python sources with ``ast``; the compiled ``.mo`` files
(committed, so no build step) are read with the standard library.
"""

from __future__ import annotations

import ast
import gettext
import re
from pathlib import Path

import pytest
from django.utils.translation.template import templatize

from tests.browser_client import Browser, authorize_params
from tests.factories import MCPClientFactory

APP = Path(__file__).resolve().parents[1] / "mcp_consent"
LANGUAGES = ["fr", "de", "es", "ar"]
GETTEXT_NAMES = {"_", "gettext", "gettext_lazy", "gettext_noop", "ngettext", "ngettext_lazy"}


def template_msgids() -> set[str]:
    found: set[str] = set()
    call = re.compile(r"""\b(?:n?gettext|pgettext)\((u?(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"))""")
    for path in (APP / "templates" / "mcp_consent").glob("*.html"):
        for literal in call.findall(templatize(path.read_text(), origin=str(path))):
            found.add(ast.literal_eval(literal.lstrip("u")))
    return found


def python_msgids() -> set[str]:
    """The strings of the views: what the person reads on the pages (the admin is English)."""
    found: set[str] = set()
    for path in (APP / "views").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in GETTEXT_NAMES
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
    return found


def po_entries(language: str) -> dict[str, list[str]]:
    """msgid -> msgstr forms of mcp_consent's .po for ``language`` (a small, strict parser)."""
    text = (APP / "locale" / language / "LC_MESSAGES" / "django.po").read_text()
    entries: dict[str, list[str]] = {}
    for block in text.strip().split("\n\n"):
        assert "#, fuzzy" not in block, block
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            match = re.match(r'^(msgid|msgid_plural|msgstr(?:\[\d\])?) (".*")$', line)
            if match:
                key = match.group(1)
                fields[key] = ast.literal_eval(match.group(2))
            elif line.startswith('"') and key:
                fields[key] += ast.literal_eval(line)
        if fields.get("msgid"):
            entries[fields["msgid"]] = [
                v for k, v in sorted(fields.items()) if k.startswith("msgstr")
            ]
    return entries


def test_every_string_of_the_app_is_in_the_catalogs() -> None:
    used = template_msgids() | python_msgids()
    assert "Approve" in used  # the extraction works
    assert "Revoked by the operator" in used
    for language in LANGUAGES:
        missing = used - set(po_entries(language))
        assert not missing, (language, sorted(missing))


@pytest.mark.parametrize("language", LANGUAGES)
def test_catalog_is_complete_and_compiled(language: str) -> None:
    """Every entry translated, placeholders kept, and the committed .mo says the same."""
    entries = po_entries(language)
    with (APP / "locale" / language / "LC_MESSAGES" / "django.mo").open("rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    for msgid, forms in entries.items():
        assert forms, (language, msgid)
        assert all(forms), (language, msgid)
        placeholders = set(re.findall(r"%\(\w+\)s", msgid))
        # Each form keeps the placeholders (Arabic's singular/dual forms may spell the number).
        assert placeholders <= set(re.findall(r"%\(\w+\)s", forms[-1])), (language, msgid)
        if len(forms) == 1:
            assert compiled.gettext(msgid) == forms[0], (language, msgid, "stale .mo")
        else:
            assert compiled.ngettext(msgid, msgid, 5) in forms, (language, msgid, "stale .mo")


CONSENT_WORDS = {"fr": "Approuver", "de": "Genehmigen", "es": "Aprobar", "ar": "موافقة"}


@pytest.mark.django_db
@pytest.mark.parametrize("language", [*LANGUAGES, "en"])
def test_consent_page_follows_the_browser_language(language: str) -> None:
    """The consent page in the Accept-Language of the browser; dir="rtl" for Arabic."""
    client = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    page = Browser().authorize(authorize_params(client), **{"Accept-Language": language})
    body = page.content.decode()
    direction = "rtl" if language == "ar" else "ltr"
    assert f'<html lang="{language}" dir="{direction}">' in body
    if language == "en":
        assert ">Approve</button>" in body
    else:
        assert f">{CONSENT_WORDS[language]}</button>" in body
        # No English sentence of the page is left (the client's own name stays as it is).
        for english in ("Approve", "Deny", "Where your access will be sent", "Read your items"):
            assert f">{english}<" not in body
            assert english not in re.sub(r"<[^>]+>", "", body)


@pytest.mark.django_db
def test_unshipped_language_falls_back_to_english() -> None:
    """A language mcp_consent does not ship gets English, with lang saying so."""
    client = MCPClientFactory(redirect_uris=["https://app.example/cb"])
    body = Browser().authorize(authorize_params(client), **{"Accept-Language": "it"})
    assert '<html lang="en" dir="ltr">' in body.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("language", LANGUAGES)
def test_error_page_and_connected_apps_are_translated(language: str) -> None:
    browser = Browser()
    error = browser.get("/upstream/callback/?state=forged&code=x", **{"Accept-Language": language})
    apps = browser.get("/connections/", **{"Accept-Language": language})
    for page in (error, apps):
        text = re.sub(r"<[^>]+>", " ", page.content.decode())
        assert f'lang="{language}"' in page.content.decode()
        for english in ("This sign-in cannot be completed", "Connected apps", "Sign in with"):
            assert english not in text, (language, english)


@pytest.mark.django_db
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_page_for_a_blocked_cimd_domain_is_translated(language: str) -> None:
    """CIMD-13: the operators' refusal of an application's domain reads in the person's
    language, naming the host."""
    from mcp_consent.models import CIMDDomainRule

    CIMDDomainRule.objects.create(domain=".example.org", policy="block")
    page = Browser().get(
        "/authorize/?client_id=https%3A%2F%2Fclient.example.org%2Fclient.json&response_type=code",
        **{"Accept-Language": language},
    )
    assert page.status_code == 403
    text = re.sub(r"<[^>]+>", " ", page.content.decode())
    assert "client.example.org" in text
    for english in ("not allowed here", "operators do not allow", "sent anywhere"):
        assert english not in text, (language, english)
