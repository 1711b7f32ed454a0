"""System checks of mcp_consent (mcp_consent/checks.py), compared as whole messages.

In the style of django-axes: each unsafe setting produces exactly its Error/Warning, with
the fixed id, message and hint; the project's own settings produce nothing; and a
production-like ``manage.py check --deploy`` reports no mcp_consent message.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, Warning, run_checks
from django.core.management.utils import get_random_secret_key
from django.test import override_settings

from mcp_consent import checks
from mcp_consent.checks import (
    E001,
    E002,
    E003,
    E004,
    E005,
    E006,
    E007,
    E008,
    E009,
    E010,
    E011,
    E012,
    E013,
    E030,
    W001,
    W002,
    W003,
    W004,
    W005,
    W006,
    check_configuration,
    check_deployment,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

PRODUCTION_UPSTREAM = {
    "AUTHORIZE_URL": "https://github.com/login/oauth/authorize",
    "TOKEN_URL": "https://github.com/login/oauth/access_token",
    "USERINFO_URL": "https://api.github.com/user",
    "REVOCATION_URL": "",
    "CLIENT_ID": "x",
    "CLIENT_SECRET": "y",
    "SCOPES": ["read:user"],
    "PKCE": True,
}


def oauth2(**changes: Any) -> dict[str, Any]:
    """A copy of the project's OAUTH2_PROVIDER with changes (override_settings reloads DOT)."""
    return {**settings.OAUTH2_PROVIDER, **changes}


def mcp_consent(**changes: Any) -> dict[str, Any]:
    return {**settings.MCP_CONSENT, **changes}


def upstream(**changes: Any) -> dict[str, Any]:
    raw = {**settings.MCP_CONSENT["UPSTREAM"], **changes}
    return {key: value for key, value in raw.items() if value is not None}


def production(**changes: Any) -> override_settings:
    """Settings that pass every deployment check: https issuer and upstream, a vault key."""
    consent = mcp_consent(
        UPSTREAM={**PRODUCTION_UPSTREAM, **changes.pop("upstream", {})},
        ENCRYPTION_KEYS=[Fernet.generate_key().decode()],
        AUDIT_KEYS=[Fernet.generate_key().decode()],
    )
    consent.update(changes.pop("consent", {}))
    changes.setdefault("CACHES", SHARED_CACHE)
    return override_settings(
        OAUTH2_PROVIDER=oauth2(
            **{"OIDC_ISS_ENDPOINT": "https://proxy.example.com", **changes.pop("oauth2", {})}
        ),
        MCP_CONSENT=consent,
        **changes,
    )


# A shared cache (production's Redis); the check reads the backend, it does not connect.
SHARED_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/15",
    }
}


# --- check_configuration ---------------------------------------------------------------------


def test_project_settings_pass_the_configuration_checks():
    """STYLE 9: the shipped configuration is clean."""
    assert check_configuration() == []


# Every message of checks.py, read from its source: a new check is in these tests by itself.
CHECKS_SOURCE = REPO_ROOT / "mcp_consent" / "checks.py"
CHECK_IDS = sorted(set(re.findall(r'id="mcp_consent\.([EW]\d{3})"', CHECKS_SOURCE.read_text())))
CHECK_FUNCTIONS = {"check_configuration", "check_deployment", "check_resource_server", "run_checks"}
# The messages built by a function, with sample arguments.
BUILT = {"E001": E001, "E030": lambda: E030("MCP_CONSENT", "X", ["Y"])}


def test_every_message_has_a_fixed_id_and_a_hint():
    """STYLE 9: ids mcp_consent.E/W###, every message with a hint, of the class its letter says."""
    assert len(CHECK_IDS) >= 24
    for check_id in CHECK_IDS:
        message = BUILT[check_id]() if check_id in BUILT else getattr(checks, check_id)
        assert isinstance(message, Warning if check_id.startswith("W") else Error), check_id
        assert message.id == f"mcp_consent.{check_id}"
        assert message.hint, check_id


def triggering_tests(path: Path) -> dict[str, list[str]]:
    """check id -> the tests in ``path`` named for it (``test_e020_...``) that run a check
    function and name the message (``E020`` or ``"mcp_consent.E020"``)."""
    found: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.FunctionDef):
            continue
        named = set()
        runs_a_check = False
        for inner in ast.walk(node):
            if isinstance(inner, ast.Name):
                named.add(inner.id)
            elif isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                named.update(re.findall(r"mcp_consent\.([EW]\d{3})", inner.value))
            elif isinstance(inner, ast.Call):
                function = inner.func
                name = (
                    function.id if isinstance(function, ast.Name) else getattr(function, "attr", "")
                )
                runs_a_check |= name in CHECK_FUNCTIONS
        for check_id in CHECK_IDS:
            if (
                node.name.startswith(f"test_{check_id.lower()}_")
                and runs_a_check
                and check_id in named
            ):
                found.setdefault(check_id, []).append(f"{path.name}::{node.name}")
    return found


def test_every_check_id_has_a_test_that_triggers_it():
    """Issue 12 item 6: each id in checks.py has a ``test_<id>_...`` that runs the checks on
    settings that trigger it and compares the message (here, in test_checks_resource_server.py
    or in the test file of the feature, e.g. test_providers.py for E031)."""
    covered: dict[str, list[str]] = {}
    for path in sorted((REPO_ROOT / "tests").glob("test_*.py")):
        for check_id, tests in triggering_tests(path).items():
            covered.setdefault(check_id, []).extend(tests)
    assert [check_id for check_id in CHECK_IDS if check_id not in covered] == []


@pytest.mark.parametrize(
    "resources",
    [
        pytest.param([], id="empty"),
        pytest.param(["https://proxy.example.com/mcp#frag"], id="fragment"),
        pytest.param(["https://proxy.example.com/mcp?tenant=1"], id="query"),
        pytest.param(["proxy.example.com/mcp"], id="relative"),
        pytest.param(
            ["https://proxy.example.com/mcp", "ftp://proxy.example.com/mcp"], id="one-bad"
        ),
    ],
)
def test_e001_resources_must_be_canonical_uris(resources):
    """E001 / AS-31: RESOURCES empty or not an absolute URI without query/fragment."""
    with override_settings(MCP_CONSENT=mcp_consent(RESOURCES=resources)):
        assert check_configuration() == [E001()]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"PKCE_REQUIRED": False}, id="pkce-optional"),
        pytest.param({"COMPLIANT_BCP_RFC9700_PKCE_METHOD": False}, id="plain-allowed"),
    ],
)
def test_e004_pkce_required_and_s256(changes):
    """E004 / AS-20 / AS-21: PKCE off or plain allowed."""
    with override_settings(OAUTH2_PROVIDER=oauth2(**changes)):
        assert check_configuration() == [E004]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"OAUTH2_SERVER_CLASS": "oauthlib.oauth2.Server"}, id="server"),
        pytest.param(
            {"OAUTH2_VALIDATOR_CLASS": "oauth2_provider.oauth2_validators.OAuth2Validator"},
            id="validator",
        ),
    ],
)
def test_e005_server_and_validator_must_be_ours(changes):
    """E005 / AS-31 / AS-21: stock oauthlib/DOT classes lose the resource allowlist and S256 only."""
    with override_settings(OAUTH2_PROVIDER=oauth2(**changes)):
        assert check_configuration() == [E005]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"REFRESH_TOKEN_REUSE_PROTECTION": False}, id="no-reuse-protection"),
        pytest.param({"ROTATE_REFRESH_TOKEN": False}, id="no-rotation"),
        pytest.param({"REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 120}, id="grace-period"),
    ],
)
def test_e006_refresh_tokens_rotate_with_reuse_detection(changes):
    """E006 / AS-44 / BCP-08."""
    with override_settings(OAUTH2_PROVIDER=oauth2(**changes)):
        assert check_configuration() == [E006]


@pytest.mark.parametrize(
    "gate", ["COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT", "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT"]
)
def test_e011_implicit_and_password_gates_on(gate):
    """E011 / BCP-06 / BCP-07."""
    with override_settings(OAUTH2_PROVIDER=oauth2(**{gate: False})):
        assert check_configuration() == [E011]


@pytest.mark.parametrize("missing", ["AUTHORIZE_URL", "TOKEN_URL", "USERINFO_URL", "CLIENT_ID"])
def test_e007_upstream_must_be_configured(missing):
    """E007 / UP-10: the upstream provider needs all its URLs and the static client id."""
    with override_settings(MCP_CONSENT=mcp_consent(UPSTREAM=upstream(**{missing: None}))):
        assert check_configuration() == [E007]


def test_e009_transaction_cookie_must_be_host_prefixed():
    """E009 / CD-20."""
    with override_settings(MCP_CONSENT=mcp_consent(TRANSACTION_COOKIE_NAME="mcp_consent_tx")):
        assert check_configuration() == [E009]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"SESSION_COOKIE_SECURE": False}, id="session-not-secure"),
        pytest.param({"CSRF_COOKIE_SECURE": False}, id="csrf-not-secure"),
        pytest.param({"SESSION_COOKIE_SAMESITE": "None"}, id="session-samesite-none"),
        pytest.param({"CSRF_COOKIE_SAMESITE": False}, id="csrf-samesite-off"),
    ],
)
def test_e010_cookies_secure_and_same_site(changes):
    """E010 / CD-13 / CD-21."""
    with override_settings(**changes):
        assert check_configuration() == [E010]


def test_e012_audit_key_required_outside_debug():
    """E012 / SEC-06: outside DEBUG the audit chain needs its own key, not SECRET_KEY's."""
    with override_settings(DEBUG=False, MCP_CONSENT=mcp_consent(AUDIT_KEYS=[])):
        assert check_configuration() == [E012]
    with override_settings(DEBUG=True, MCP_CONSENT=mcp_consent(AUDIT_KEYS=[])):
        assert check_configuration() == []


def test_e012_is_an_error_of_manage_py_check_not_only_of_deploy():
    """SEC-06: `manage.py check` (and so runserver and migrate) stops on it."""
    with override_settings(DEBUG=False, MCP_CONSENT=mcp_consent(AUDIT_KEYS=[])):
        assert E012 in run_checks(tags=["security"])


def test_w001_remember_consent_warns():
    """W001 / CD-00: remembered consent is an opt-in with a residual risk."""
    with override_settings(MCP_CONSENT=mcp_consent(REMEMBER_CONSENT=True)):
        assert check_configuration() == [W001]


def test_w002_upstream_pkce_off_warns():
    """W002 / UP-01."""
    with override_settings(MCP_CONSENT=mcp_consent(UPSTREAM=upstream(PKCE=False))):
        assert check_configuration() == [W002]


def test_several_problems_are_all_reported():
    """Each unsafe setting is reported, not only the first."""
    with override_settings(
        OAUTH2_PROVIDER=oauth2(PKCE_REQUIRED=False, REFRESH_TOKEN_REUSE_PROTECTION=False),
        MCP_CONSENT=mcp_consent(TRANSACTION_COOKIE_NAME="tx", REMEMBER_CONSENT=True),
    ):
        assert check_configuration() == [E004, E006, E009, W001]


UPSTREAM_KEYS = [
    "API_BASE_URL",
    "AUTHORIZE_URL",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "EMAIL_FIELD",
    "ISSUER",
    "NAME",
    "NAME_FIELD",
    "PKCE",
    "PROVIDER",
    "REQUIRE_ISS",
    "REVOCATION_URL",
    "SCOPES",
    "SCOPE_MAP",
    "SUBJECT_FIELD",
    "TENANT",
    "TIMEOUT",
    "TOKEN_URL",
    "USERINFO_URL",
    "USERNAME_FIELD",
]


def test_e030_mistyped_upstream_key_names_the_closest_known_one():
    """E030: UPSTREAM dropped unknown keys silently, so CLIENT_SECRE meant no secret at all."""
    with override_settings(MCP_CONSENT=mcp_consent(UPSTREAM=upstream(CLIENT_SECRE="s3cret"))):
        assert check_configuration() == [
            Error(
                "MCP_CONSENT['UPSTREAM'] has an unknown key 'CLIENT_SECRE'.",
                hint="Did you mean 'CLIENT_SECRET'?",
                id="mcp_consent.E030",
            )
        ]


def test_e030_unknown_keys_of_every_settings_dict():
    """E030 for MCP_CONSENT itself and its RATE_LIMITS too; no close match lists the keys."""
    with override_settings(
        MCP_CONSENT=mcp_consent(
            REMEMBER_CONSNET=True,
            RATE_LIMITS={"register": (20, 3600), "tokens": (120, 60)},
            UPSTREAM=upstream(XYZZY=1),
        )
    ):
        assert check_configuration() == [
            Error(
                "MCP_CONSENT has an unknown key 'REMEMBER_CONSNET'.",
                hint="Did you mean 'REMEMBER_CONSENT'?",
                id="mcp_consent.E030",
            ),
            Error(
                "MCP_CONSENT['UPSTREAM'] has an unknown key 'XYZZY'.",
                hint="The known keys: " + ", ".join(UPSTREAM_KEYS) + ".",
                id="mcp_consent.E030",
            ),
            Error(
                "MCP_CONSENT['RATE_LIMITS'] has an unknown key 'tokens'.",
                hint="Did you mean 'token'?",
                id="mcp_consent.E030",
            ),
        ]
    assert E030("MCP_CONSENT", "REMEMBER_CONSNET", ["REMEMBER_CONSENT"]) == Error(
        "MCP_CONSENT has an unknown key 'REMEMBER_CONSNET'.",
        hint="Did you mean 'REMEMBER_CONSENT'?",
        id="mcp_consent.E030",
    )


def test_checks_are_registered_with_django():
    """STYLE 9: the configuration checks run with `manage.py check` (security tag)."""
    with override_settings(MCP_CONSENT=mcp_consent(TRANSACTION_COOKIE_NAME="mcp_consent_tx")):
        messages = run_checks(tags=["security"])
    assert E009 in messages


# --- check_deployment --------------------------------------------------------------------------


def test_deployment_checks_flag_the_development_settings():
    """E003 / E008: the demo defaults (http issuer and upstream) fail --deploy."""
    messages = check_deployment()
    assert E003 in messages
    assert E008 in messages


def test_e002_vault_key_required_outside_debug_not_only_under_deploy():
    """E002 / SEC-10: without ENCRYPTION_KEYS and DEBUG off, `manage.py check` itself fails
    (the key would be derived from SECRET_KEY); with DEBUG on the demo may run so."""
    with override_settings(DEBUG=False, MCP_CONSENT=mcp_consent(ENCRYPTION_KEYS=[])):
        assert check_configuration() == [E002]
        assert E002 in run_checks(tags=["security"])
    with override_settings(DEBUG=True, MCP_CONSENT=mcp_consent(ENCRYPTION_KEYS=[])):
        assert check_configuration() == []


def test_deployment_checks_pass_with_production_settings():
    """URL-01 / UP-07 / UP-10: https issuer, https upstream and a vault key: nothing to report."""
    with production():
        assert check_deployment() == []
        assert check_configuration() == []


def test_e002_missing_encryption_key():
    """E002 / UP-07 / SEC-10: without a key of its own the vault falls back to SECRET_KEY."""
    with production(consent={"ENCRYPTION_KEYS": []}):
        assert check_configuration() == [E002]
        assert check_deployment() == []


@pytest.mark.parametrize("issuer", ["http://proxy.example.com", "", "proxy.example.com"])
def test_e003_issuer_must_be_https(issuer):
    """E003 / AS-02 / AS-13 / URL-01."""
    with production(oauth2={"OIDC_ISS_ENDPOINT": issuer}):
        assert check_deployment() == [E003]


@pytest.mark.parametrize("key", ["AUTHORIZE_URL", "TOKEN_URL", "USERINFO_URL", "REVOCATION_URL"])
def test_e008_upstream_urls_must_be_https(key):
    """E008 / UP-10."""
    with production(upstream={key: "http://upstream.example/x"}):
        assert check_deployment() == [E008]


def test_w003_token_storage_gate():
    """W003 / AS-47: tokens stored in clear."""
    with production(oauth2={"COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": False}):
        assert check_deployment() == [W003]


# --- manage.py check --deploy ------------------------------------------------------------------


def test_check_deploy_with_production_environment_reports_no_mcp_consent_message(tmp_path):
    """E002 / E003 / E008 / URL-01: the documented production environment passes our checks."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("DJANGO_", "UPSTREAM_", "MCP_", "DEMO_", "PUBLIC_", "DATABASE_", "REDIS_")
        )
    }
    env.update(
        {
            "PUBLIC_BASE_URL": "https://proxy.example.com",
            "DJANGO_SECRET_KEY": get_random_secret_key(),
            "MCP_CONSENT_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "MCP_CONSENT_AUDIT_KEY": Fernet.generate_key().decode(),
            "UPSTREAM_AUTHORIZE_URL": "https://github.com/login/oauth/authorize",
            "UPSTREAM_TOKEN_URL": "https://github.com/login/oauth/access_token",
            "UPSTREAM_USERINFO_URL": "https://api.github.com/user",
            "UPSTREAM_CLIENT_ID": "x",
            "UPSTREAM_CLIENT_SECRET": "y",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'check.sqlite3'}",
            "REDIS_URL": "redis://127.0.0.1:6379/15",
        }
    )
    result = subprocess.run(  # noqa: S603 - fixed argv, our own manage.py
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    print(output)  # other Django warnings, if any, are visible with -s
    assert "Traceback" not in output
    assert "mcp_consent." not in output
    assert result.returncode == 0, output


def test_w004_registration_without_rate_limit_warns():
    """W004 / DCR-02: open registration needs a per-IP limit."""
    with override_settings(MCP_CONSENT=mcp_consent(RATE_LIMITS={"token": (10, 60)})):
        assert W004 in check_configuration()
    assert W004 not in check_configuration()


def test_w006_slow_client_secret_hasher_warns():
    """W006 / DCR-02: a key-stretching hasher makes every confidential registration costly."""
    hashers = ["django.contrib.auth.hashers.PBKDF2PasswordHasher", *settings.PASSWORD_HASHERS]
    with override_settings(
        PASSWORD_HASHERS=hashers, OAUTH2_PROVIDER=oauth2(CLIENT_SECRET_HASHER="default")
    ):
        assert W006 in check_configuration()
    assert W006 not in check_configuration()


def test_e013_unknown_client_secret_hasher_is_an_error():
    """E013: confidential registrations would fail at the first secret."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        assert E013 in check_configuration()
    assert E013 not in check_configuration()


def test_w005_per_process_rate_limit_cache_warns_under_deploy():
    """W005: LocMemCache counts per process; production needs a shared cache."""
    with production(
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    ):
        assert check_deployment() == [W005]
