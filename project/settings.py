"""Settings of the mcp-consent demo project, read from the environment (12-factor).

Every deployment value comes from an environment variable (see README "Settings reference").
With no UPSTREAM_* variables the bundled demo upstream (project/demo_upstream/, a small
GitHub-like provider served on http://localhost:8001) stands in for the third-party
provider, so the whole flow -- and the confused-deputy attack -- runs on one machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def gettext_noop(message: str) -> str:
    """Marks a string for makemessages (project/locale); the adapter translates it on the page.

    Django's own gettext_noop reads settings, which do not exist yet while this module runs.
    """
    return message


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    value = env(name)
    if not value:
        return default
    return value.lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DJANGO_DEBUG", False)

# The issuer: one exact string everywhere (metadata `issuer`, RFC 9207 `iss`, introspection).
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
_public = urlsplit(PUBLIC_BASE_URL)
if _public.scheme not in {"http", "https"} or not _public.hostname or _public.path:
    raise ImproperlyConfigured(
        "PUBLIC_BASE_URL must be an origin like https://proxy.example.com (no path, no trailing slash)."
    )
PUBLIC_HOST = _public.hostname

SECRET_KEY = env("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG and _public.scheme == "https":
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set outside local development.")
    # Local demo and tests only: a fixed, obviously-insecure key. check --deploy flags it.
    SECRET_KEY = "django-insecure-mcp-consent-demo-key-do-not-use-in-production"

UPSTREAM_AUTHORIZE_URL = env("UPSTREAM_AUTHORIZE_URL")
USE_DEMO_UPSTREAM = not UPSTREAM_AUTHORIZE_URL
DEMO_UPSTREAM_BASE_URL = env("DEMO_UPSTREAM_BASE_URL", "http://localhost:8001").rstrip("/")

ALLOWED_HOSTS = [PUBLIC_HOST]
if USE_DEMO_UPSTREAM:
    _demo_host = urlsplit(DEMO_UPSTREAM_BASE_URL).hostname
    if _demo_host and _demo_host not in ALLOWED_HOSTS:
        ALLOWED_HOSTS.append(_demo_host)
CSRF_TRUSTED_ORIGINS = [PUBLIC_BASE_URL]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "oauth2_provider",
    "mcp_consent",
    "project.apps.DemoProjectConfig",
]
if USE_DEMO_UPSTREAM:
    INSTALLED_APPS.append("project.demo_upstream")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The consent page, error pages and Connected apps in the browser's language (issue 9).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

# Connections outlive requests (docs/performance.md): opening one costs 5-20 ms on PostgreSQL,
# more than a whole token verification. PostgreSQL gets Django's connection pool (psycopg 3 +
# psycopg-pool): each request borrows a connection and gives it back when Django "closes" it,
# so CONN_MAX_AGE stays 0 (Django refuses a pool with persistent connections). Behind an
# external pooler (PgBouncer) set DATABASE_POOL=0. SQLite keeps its connection per thread.
DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
    "DATABASE_POOL", True
):
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": int(env("DATABASE_POOL_MIN_SIZE", "2")),
        # One connection per request being served (each runs in its own thread under ASGI);
        # more concurrent requests wait for one. Size it below PostgreSQL's max_connections
        # divided by the number of app processes.
        "max_size": int(env("DATABASE_POOL_MAX_SIZE", "20")),
        "timeout": 10,  # seconds to wait for a free connection before failing the request
    }
    # Prepared statements: with server-side parameter binding psycopg prepares a statement
    # it has run prepare_threshold times on a connection (Django turns that off unless told),
    # and PostgreSQL plans it once instead of at every execution. The token verification (one
    # SELECT joining four tables) went from ~390 to ~150 µs, most of it planning
    # (benchmarks/verify_cost.py). Prepared statements live on the pooled connection, which
    # is why they go with the pool: a pooler in transaction mode (PgBouncer, DATABASE_POOL=0)
    # hands each transaction another server connection.
    DATABASES["default"]["OPTIONS"]["server_side_binding"] = True
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 5  # psycopg's own default
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Two demo processes (proxy and demo upstream) share the file: wait for locks.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    # Write-ahead log: readers do not wait for a writer, and a commit is one append and one
    # fsync (synchronous=FULL, SQLite's default: a committed revocation survives a power
    # loss) instead of the rollback journal's several; a registration spent most of its
    # time in the commit (docs/performance.md). The mode is kept in the file itself.
    DATABASES["default"]["OPTIONS"].setdefault("init_command", "PRAGMA journal_mode=WAL")
    DATABASES["default"]["CONN_MAX_AGE"] = None
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# People's passwords keep Django's key-stretching hashers; machine-generated client secrets
# get one keyed SHA-256 (mcp_consent.hashers, DOT's CLIENT_SECRET_HASHER below).
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
    "mcp_consent.hashers.ClientSecretHasher",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# The languages mcp_consent ships (mcp_consent/locale): a browser asking for another one gets
# English, not a page whose lang attribute names a language it is not written in.
LANGUAGES = [
    ("en", "English"),
    ("fr", "Français"),
    ("de", "Deutsch"),
    ("es", "Español"),
    ("ar", "العربية"),
]
# The demo's own strings (its scope descriptions).
LOCALE_PATHS = [BASE_DIR / "project" / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "admin:login"

# --- Cookies and transport (CD-20, CD-21): __Host- names, Secure, HttpOnly, SameSite=Lax. ---
# Browsers accept Secure cookies from http://127.0.0.1 and http://localhost (potentially
# trustworthy origins), so the demo keeps the production cookie posture.
# Django's database sessions (same table, same data) in one statement per new or changed
# session instead of four or three (mcp_consent/integrations/sessions.py): every sign-in
# creates one.
SESSION_ENGINE = "mcp_consent.integrations.sessions"
SESSION_COOKIE_NAME = "__Host-sessionid"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 60 * 60 * 8
CSRF_COOKIE_NAME = "__Host-csrftoken"
CSRF_COOKIE_SECURE = True
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
# "same-origin", not "no-referrer": under no-referrer browsers send `Origin: null` with
# same-origin form POSTs and Django's CSRF check refuses them (the admin login would fail).
# mcp_consent's own pages and redirects send no-referrer where nothing is posted back.
SECURE_REFERRER_POLICY = "same-origin"
CSRF_FAILURE_VIEW = "mcp_consent.views.common.csrf_failure"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if _public.scheme == "https":
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(env("DJANGO_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)
    if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
        # BCP-19: only behind a proxy that strips and sets this header itself.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- django-oauth-toolkit, configured for MCP (each line is explained in the README) ---
# Not swapped; named so that makemigrations can resolve DOT's swappable model.
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
MCP_RESOURCE = env("MCP_RESOURCE", f"{PUBLIC_BASE_URL}/mcp")

OAUTH2_PROVIDER = {
    # The issuer is one exact string (AS-13, MU-01): never derived from the Host header.
    "OIDC_ISS_ENDPOINT": PUBLIC_BASE_URL,
    # Marked for translation (project/locale); the adapter translates them on the page.
    "SCOPES": {
        "items:read": gettext_noop("Read your items"),
        "items:write": gettext_noop("Create and change your items"),
    },
    "DEFAULT_SCOPES": ["items:read"],
    # The server class adds what DOT leaves open: S256 only, `resource` allowlist (AS-30..35),
    # only the code and refresh grants.
    "OAUTH2_SERVER_CLASS": "mcp_consent.oauth.MCPAuthorizationServer",
    "OAUTH2_VALIDATOR_CLASS": "mcp_consent.oauth.MCPOAuth2Validator",
    "PKCE_REQUIRED": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": 3600,  # AS-43: short-lived access tokens
    "REFRESH_TOKEN_EXPIRE_SECONDS": 60 * 60 * 24 * 30,  # AS-46: refresh tokens expire
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 120,  # AS-40: short, yet enough to paste by hand in the demo
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,  # AS-44: reuse revokes the family
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
    # Client secrets are 128 random characters: one keyed SHA-256, not PBKDF2's ~0.4 s per
    # registration (mcp_consent.hashers; PBKDF2 hashes of earlier versions still verify).
    "CLIENT_SECRET_HASHER": "mcp_consent_sha256",
    "ALLOWED_REDIRECT_URI_SCHEMES": ["http", "https"],
    "ALLOW_URI_WILDCARDS": False,
    # CD-33: RFC 8252 loopback clients may use any port; MCP clients commonly register
    # http://localhost:<port>/callback, so localhost counts as loopback too.
    "ALLOW_LOCALHOST_LOOPBACK": True,
    "DCR_ENABLED": True,
    # MCP clients register without a user (DCR-02).
    "DCR_REGISTRATION_PERMISSION_CLASSES": ("oauth2_provider.dcr.AllowAllDCRPermission",),
    "CIMD_ENABLED": True,
    "CIMD_METADATA_FETCHER": "mcp_consent.registration.CIMDMetadataFetcher",
    # ABUSE-04 / SSRF-06: fetch only while authorizing, within the operators' domain rules
    # and the registering address's limits.
    "CIMD_REGISTRATION_PERMISSION_CLASSES": ("mcp_consent.registration.CIMDFetchPolicy",),
    "CIMD_MAX_DOCUMENT_SIZE": 5 * 1024,  # CIMD-10: the draft recommends about 5 KB
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    # Off on purpose: with "http" allowed for RFC 8252 loopback clients this gate fails
    # check --deploy (oauth2_provider.E003). mcp_consent.registration enforces
    # "http only on loopback" for DCR, CIMD and the admin instead (DCR-11, BCP-14).
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": False,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code", "refresh_token"],
    "OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": [
        "none",
        "client_secret_basic",
        "client_secret_post",
    ],
}

# --- mcp_consent ---
if USE_DEMO_UPSTREAM:
    _up = f"{DEMO_UPSTREAM_BASE_URL}/demo-upstream"
    UPSTREAM = {
        "NAME": "Demo Hub",
        "AUTHORIZE_URL": f"{_up}/login/oauth/authorize",
        "TOKEN_URL": f"{_up}/login/oauth/access_token",
        "USERINFO_URL": f"{_up}/user",
        "REVOCATION_URL": f"{_up}/revoke",
        "ISSUER": _up,
        "CLIENT_ID": "mcp-consent-demo-proxy",
        "CLIENT_SECRET": env("UPSTREAM_CLIENT_SECRET", "demo-upstream-secret-not-for-production"),
        "SCOPES": ["read:user"],
        "PKCE": True,
        "REQUIRE_ISS": True,  # Demo Hub sends RFC 9207 `iss`; GitHub does not.
        "API_BASE_URL": f"{_up}/",  # the MCP tools call /user and /api/items under it
    }
    DEMO_UPSTREAM = {
        "CLIENT_ID": UPSTREAM["CLIENT_ID"],
        "CLIENT_SECRET": UPSTREAM["CLIENT_SECRET"],
        "REDIRECT_URIS": [f"{PUBLIC_BASE_URL}/upstream/callback/"],
        "CLIENT_NAME": "MCP proxy (mcp-consent demo)",
        "ISSUER": _up,
    }
else:
    UPSTREAM = {
        "NAME": env("UPSTREAM_NAME", "the upstream provider"),
        "AUTHORIZE_URL": UPSTREAM_AUTHORIZE_URL,
        "TOKEN_URL": env("UPSTREAM_TOKEN_URL"),
        "USERINFO_URL": env("UPSTREAM_USERINFO_URL"),
        "REVOCATION_URL": env("UPSTREAM_REVOKE_URL"),
        "ISSUER": env("UPSTREAM_ISSUER"),
        "CLIENT_ID": env("UPSTREAM_CLIENT_ID"),
        "CLIENT_SECRET": env("UPSTREAM_CLIENT_SECRET"),
        "SCOPES": env("UPSTREAM_SCOPES", "read:user").split(),
        "PKCE": env_bool("UPSTREAM_PKCE", True),
        "REQUIRE_ISS": env_bool("UPSTREAM_REQUIRE_ISS", False),
        "API_BASE_URL": env("UPSTREAM_API_BASE_URL"),
    }

UPSTREAM["SCOPE_MAP"] = {
    "items:read": ["repo:read"],
    # SM-05: items:write implies items:read (SCOPE_IMPLIES below), so its upstream grant
    # must be able to read too.
    "items:write": ["repo:read", "repo:write"],
}


def env_list(name: str) -> list[str]:
    return [v.strip() for v in env(name).split(",") if v.strip()]


MCP_CONSENT = {
    # The demo's own MCP endpoint, plus MCP servers running as separate services.
    "RESOURCES": [MCP_RESOURCE, *env_list("MCP_EXTRA_RESOURCES")],
    "UPSTREAM": UPSTREAM,
    # SEC-10: the vault's keys (comma-separated, newest first), apart from SECRET_KEY. The
    # local http demo and the tests use a fixed, obviously-insecure key, as for SECRET_KEY;
    # with an https PUBLIC_BASE_URL there is none and `check` refuses to start (E002).
    "ENCRYPTION_KEYS": env_list("MCP_CONSENT_ENCRYPTION_KEY")
    or (["aW5zZWN1cmUtZGVtby12YXVsdC1rZXktbWNwLWNvbnM="] if _public.scheme != "https" else []),
    # SEC-06: the audit chain's HMAC key, kept out of the database (comma-separated, newest
    # first). The local http demo and the tests use a fixed, obviously-insecure key, as for
    # SECRET_KEY; with an https PUBLIC_BASE_URL there is none and `check` refuses to start.
    "AUDIT_KEYS": env_list("MCP_CONSENT_AUDIT_KEY")
    or (["django-insecure-mcp-consent-demo-audit-key"] if _public.scheme != "https" else []),
    "REMEMBER_CONSENT": env_bool("MCP_CONSENT_REMEMBER_CONSENT", False),
    # SM-05: whoever may change items may read them.
    "SCOPE_IMPLIES": {"items:write": ["items:read"]},
    "RESOURCE_NAME": "Demo Hub (via mcp-consent)",
    # RS-10: /mcp's own origin and those of browser-based MCP clients, e.g. the MCP
    # Inspector's http://localhost:6274 (comma-separated MCP_ALLOWED_ORIGINS).
    "MCP_ALLOWED_ORIGINS": [
        "{0.scheme}://{0.netloc}".format(urlsplit(MCP_RESOURCE)),
        *env_list("MCP_ALLOWED_ORIGINS"),
    ],
    # INT-01: separate MCP servers allowed to introspect, as JSON {"client_id": [resource, ...]}.
    "INTROSPECTION_CLIENTS": json.loads(env("MCP_INTROSPECTION_CLIENTS", "{}")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        # The MCP SDK's streamable HTTP transport logs "Terminating session: None" at INFO
        # after every request of a stateless server (no session to terminate): noise, not news.
        # Its warnings and errors still show.
        "mcp.server.streamable_http": {"level": "WARNING"},
    },
}

# SEC-02: error reports (DEBUG page, mails to ADMINS) hide the secrets mcp_consent marks, and
# the upstream callback's code and state, with DEBUG on as well.
DEFAULT_EXCEPTION_REPORTER_FILTER = "mcp_consent.debug.ExceptionReporterFilter"
