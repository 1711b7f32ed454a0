"""The one customisation point of a project: ``MCP_CONSENT["ADAPTER"]``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model, login
from django.contrib.auth.base_user import AbstractBaseUser
from django.utils.translation import gettext
from oauth2_provider.settings import oauth2_settings

from .app_settings import app_settings

if TYPE_CHECKING:
    from django.http import HttpRequest

    from .flows.identities import UpstreamGrant
    from .models import MCPClient


def get_adapter(request: HttpRequest | None = None) -> DefaultConsentAdapter:
    """The project's adapter for this request, as allauth's ``get_adapter(request)``.

    Hooks read the request as ``self.request`` (None outside a request, e.g. in a management
    command). Made with no argument and given the request after, so adapters written before
    the request was passed (an ``__init__`` without parameters) keep working.
    """
    adapter: DefaultConsentAdapter = app_settings.ADAPTER
    adapter.request = request
    return adapter


class DefaultConsentAdapter:
    """Default behaviour; subclass and point ``MCP_CONSENT["ADAPTER"]`` at the subclass."""

    request: HttpRequest | None = None

    def scope_descriptions(self, scopes: list[str]) -> list[dict[str, Any]]:
        """CD-11: each MCP scope with a human description and the upstream scopes it maps to.

        The descriptions (DOT's ``SCOPES``) go through gettext: a project translates them in
        its own catalog (mark them with ``gettext_noop`` where they are written).
        """
        descriptions = oauth2_settings.SCOPES
        upstream = app_settings.UPSTREAM
        return [
            {
                "name": scope,
                "description": gettext(descriptions.get(scope, scope)),
                "upstream_scopes": upstream.scope_map.get(scope, []),
            }
            for scope in scopes
        ]

    def username_for(self, grant: UpstreamGrant) -> str:
        """A local username for a new upstream identity: ``<login>@upstream``, unique."""
        base = re.sub(r"[^\w.@+-]", "", grant.login or grant.subject)[:100] or "user"
        User = get_user_model()
        candidate, n = f"{base}@upstream", 1
        while User._default_manager.filter(username=candidate).exists():
            n += 1
            candidate = f"{base}@upstream-{n}"
        return candidate

    def create_user(self, grant: UpstreamGrant) -> AbstractBaseUser:
        """Create the local user for a first-seen upstream identity (no usable password)."""
        User = get_user_model()
        user = User(username=self.username_for(grant))
        if hasattr(user, "email"):
            user.email = grant.email[:254]
        user.set_unusable_password()
        user.save()
        return user

    def update_user(self, user: AbstractBaseUser, grant: UpstreamGrant) -> None:
        """Refresh local profile fields from the upstream identity at each sign-in."""

    def login(self, request: HttpRequest, user: AbstractBaseUser) -> None:
        """Sign the person in after the upstream callback (Django rotates the session key).

        The backend is recorded in the session: the default, ModelBackend, finds the user
        again by its primary key. Override to name your project's backend instead.
        """
        session = request.session
        # Read first: a cookie naming no stored session loses its key here (Django's load).
        if SESSION_KEY not in session and session.session_key is None:
            # Issue 11, session fixation still ruled out: a session without a key has no key
            # anyone could have planted; the middleware makes a new one when it saves the
            # session, once. Django's login() would cycle_key() it: store it empty under a
            # new key at once, then update it at the end of the request (3 statements more).
            # Marked as this user's beforehand, login() finds nothing to cycle or flush; it
            # still sets the session's user, rotates the CSRF token and sends user_logged_in.
            session[SESSION_KEY] = user._meta.pk.value_to_string(user)
            session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        # django-stubs types login() for the default User; any AUTH_USER_MODEL works.
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")  # type: ignore[arg-type]

    def consent_lifetime(self, client: MCPClient, user: AbstractBaseUser) -> int:
        """Seconds a consent stays valid."""
        return app_settings.CONSENT_MAX_AGE
