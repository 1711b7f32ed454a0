"""DOT's token and grant admins, read-only (SEC-09).

Stock DOT lets an operator edit a token's user, resource, scope or expiry, or clear a
refresh token's ``revoked``, outside every flow and the audit trail. Here nothing can be
added, changed or deleted; the one way to end a token is the action "Revoke with the
consent", which calls ``revocation.revoke_tokens`` (the revocation cascade, audited with the
operator and their address). RFC 7592 registration access tokens are labelled as such.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from oauth2_provider.admin import AccessTokenAdmin, GrantAdmin, IDTokenAdmin, RefreshTokenAdmin
from oauth2_provider.models import (
    get_access_token_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)
from oauth2_provider.settings import oauth2_settings

from ..flows import revocation
from .base import InputFilter, ReadOnlyMixin, ScaleMixin, confirm_with_reason, operator

REGISTRATION_TOKEN = "RFC 7592 registration access token"  # noqa: S105 (a label)


def is_registration_token(token: Any) -> bool:
    """MGMT-05: DOT keeps the RFC 7592 token as an access token with no user, the
    registration scope and an expiry a century away; it is valid while the client exists."""
    return token.user_id is None and token.scope == oauth2_settings.DCR_REGISTRATION_SCOPE


class ApplicationFilter(InputFilter):
    title = "client"
    parameter_name = "client"
    placeholder = "client_id"

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value():
            return queryset.filter(application__client_id=self.value())
        return queryset


class TokenKindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("user", "Access tokens of users"), ("registration", REGISTRATION_TOKEN + "s")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        registration = {"user__isnull": True, "scope": oauth2_settings.DCR_REGISTRATION_SCOPE}
        if self.value() == "registration":
            return queryset.filter(**registration)
        if self.value() == "user":
            return queryset.exclude(**registration)
        return queryset


def describe_token(token: Any) -> list[str]:
    application = token.application
    return [
        str(token),
        str(token.user) if token.user_id else "—",
        application.name if application else "—",
        application.client_id if application else "—",
    ]


class AuditedRevocationMixin(ScaleMixin, ReadOnlyMixin):
    """No add, change or delete; revocation only through the audited flow."""

    actions = ["revoke_with_consent"]
    list_filter: tuple[Any, ...] = (ApplicationFilter,)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        opts = self.opts  # type: ignore[attr-defined]
        return bool(request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}"))

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)  # type: ignore[misc]
        actions.pop("delete_selected", None)
        actions.pop("revoke_tokens", None)  # DOT's: not audited, leaves the consent and upstream
        return actions

    @admin.action(
        description="Revoke selected with the consent behind them (audited)",
        permissions=["revoke"],
    )
    def revoke_with_consent(self, request: HttpRequest, queryset: QuerySet):  # type: ignore[no-untyped-def]
        page, reason = confirm_with_reason(
            self,  # type: ignore[arg-type]
            request,
            queryset.select_related("user", "application"),
            title="Revoke tokens",
            action="revoke_with_consent",
            headers=["token", "user", "client", "client_id"],
            describe=describe_token,
        )
        if page is not None:
            return page
        pairs = revocation.revoke_tokens(
            list(queryset), actor=operator(request), reason=reason, request=request
        )
        self.message_user(  # type: ignore[attr-defined]
            request,
            f"Revoked for {pairs} user(s) and client(s); registration access tokens end "
            "with their client.",
            messages.SUCCESS,
        )
        return None


class MCPAccessTokenAdmin(AuditedRevocationMixin, AccessTokenAdmin):
    list_display = ("pk", "masked_token", "kind", "user", "application", "expires_display")
    list_filter = (TokenKindFilter, ApplicationFilter)

    @admin.display(description="kind")
    def kind(self, obj: Any) -> str:
        return REGISTRATION_TOKEN if is_registration_token(obj) else "access token"

    @admin.display(description="expires", ordering="expires")
    def expires_display(self, obj: Any) -> Any:
        if is_registration_token(obj):
            return "while the client is registered"
        return obj.expires

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        return ("kind", *fields) if obj is not None else fields


class MCPRefreshTokenAdmin(AuditedRevocationMixin, RefreshTokenAdmin):
    list_display = ("pk", "masked_token", "user", "application", "created", "revoked")


class MCPGrantAdmin(AuditedRevocationMixin, GrantAdmin):
    list_select_related = ("user", "application")


class MCPIDTokenAdmin(ScaleMixin, ReadOnlyMixin, IDTokenAdmin):
    list_filter = (ApplicationFilter,)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


# Replaced registrations, like the Application admin's (see clients.py): importing
# oauth2_provider.admin above has registered DOT's classes, whatever the app order.
for model, model_admin in (
    (get_access_token_model(), MCPAccessTokenAdmin),
    (get_refresh_token_model(), MCPRefreshTokenAdmin),
    (get_grant_model(), MCPGrantAdmin),
    (get_id_token_model(), MCPIDTokenAdmin),
):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)
