"""Error reports without secrets (SEC-02, BCP-18).

Django's error reports (the DEBUG page, the mails to ADMINS, error trackers that capture
locals) show every frame's local variables, the request's query string and its GET items.
On the upstream callback those are the upstream ``code`` and our ``state``; in the flows
they are upstream tokens, PKCE verifiers and our codes. Three layers keep them out:

* the objects that hold secrets mark those fields ``repr=False`` (STYLE 15);
* the functions that handle them are marked with ``sensitive_variables`` and the forms
  with ``sensitive_post_parameters``;
* ``ExceptionReporterFilter`` below, which projects set as Django's
  ``DEFAULT_EXCEPTION_REPORTER_FILTER = "mcp_consent.debug.ExceptionReporterFilter"``:
  it honours those marks even with DEBUG on, masks the browser-binding and CSRF cookies, and
  the callback's query string (META and the request's repr in any frame), also for a failure
  raised before the view ran.

The GET items section of Django's report reads ``request.GET`` directly (no filter hook), so
the callback view also takes the secrets out of its request as soon as it has read them
(``hide_callback_secrets``): whatever renders the request afterwards sees them masked.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from django.conf import settings
from django.http import HttpRequest, QueryDict
from django.urls import reverse
from django.views.debug import SafeExceptionReporterFilter

from .app_settings import app_settings

# The callback's query parameters that are secrets: the upstream's authorization code and
# the state that claims our pending transaction. `error`, `error_description` and `iss`
# are what a person debugging a failed sign-in needs, and stay readable.
CALLBACK_SECRET_PARAMETERS = frozenset({"code", "state"})
MASK = SafeExceptionReporterFilter.cleansed_substitute
# META keys that carry the raw query (WSGI/ASGI servers differ in which they set).
QUERY_META_KEYS = ("QUERY_STRING", "REQUEST_URI", "RAW_URI")


def _callback_path() -> str:
    return reverse("mcp_consent:upstream-callback")


def _is_callback(request: Any) -> bool:
    path = getattr(request, "path_info", None) or getattr(request, "path", None)
    try:
        return isinstance(path, str) and path.endswith(_callback_path())
    except Exception:  # an error report must never fail because of its filter
        return False


def masked_query(query: str) -> str:
    """``query`` with the values of the callback's secret parameters replaced by the mask."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode(
        [(k, MASK if k in CALLBACK_SECRET_PARAMETERS else v) for k, v in pairs], safe="*"
    )


def _masked_uri(value: str) -> str:
    path, sep, query = value.partition("?")
    return path + sep + masked_query(query) if sep else value


def hide_callback_secrets(request: HttpRequest) -> None:
    """SEC-02: replace the callback's code and state in ``request`` once they were read.

    After this, ``request.GET``, ``request.get_full_path()``, the request's repr and its META
    show the mask: no error report, log line or tracker rendering this request can carry them.
    """
    for key in QUERY_META_KEYS:
        value = request.META.get(key)
        if isinstance(value, str) and value:
            request.META[key] = masked_query(value) if key == "QUERY_STRING" else _masked_uri(value)
    request.GET = QueryDict(request.META.get("QUERY_STRING", ""))


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's SafeExceptionReporterFilter, always active, masking the upstream callback.

    Set ``DEFAULT_EXCEPTION_REPORTER_FILTER = "mcp_consent.debug.ExceptionReporterFilter"``.
    Active with DEBUG on as well: a DEBUG page shown to the wrong person, or pasted into a
    bug report, must not carry upstream tokens, verifiers, codes or state (SEC-02).
    Settings are cleansed by the parent class as usual.
    """

    def is_active(self, request: HttpRequest | None) -> bool:
        return True

    def get_safe_cookies(self, request: HttpRequest) -> dict[str, Any]:
        cookies = super().get_safe_cookies(request)
        # The browser-binding nonce claims a pending sign-in (CD-20..22); the CSRF cookie
        # is the other half of every form's token. Django masks only the session cookie.
        for name in (app_settings.TRANSACTION_COOKIE_NAME, settings.CSRF_COOKIE_NAME):
            if name in cookies:
                cookies[name] = self.cleansed_substitute
        return cookies

    def get_safe_request_meta(self, request: HttpRequest) -> dict[str, Any]:
        meta = super().get_safe_request_meta(request)
        if _is_callback(request):
            for key in QUERY_META_KEYS:
                value = meta.get(key)
                if isinstance(value, str) and value:
                    meta[key] = masked_query(value) if key == "QUERY_STRING" else _masked_uri(value)
        return meta

    def cleanse_special_types(self, request: HttpRequest | None, value: Any) -> Any:
        if isinstance(value, HttpRequest) and _is_callback(value):
            # The request's repr is "<WSGIRequest: GET '/upstream/callback/?code=…'>".
            query = value.META.get("QUERY_STRING", "")
            return f"<{type(value).__name__}: {value.method} {value.path!r} query={masked_query(query)!r}>"
        if isinstance(value, QueryDict) and request is not None and _is_callback(request):
            value = value.copy()
            for name in CALLBACK_SECRET_PARAMETERS & set(value):
                value.setlist(name, [MASK])
            return value
        return super().cleanse_special_types(request, value)
