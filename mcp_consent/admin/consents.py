"""Consents and what hangs off them: read-only records, revocation through the flow."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest

from ..flows import revocation
from ..models import (
    AuthorizationTransaction,
    Consent,
    MCPClient,
    UpstreamIdentity,
    UpstreamToken,
)
from .base import (
    InputFilter,
    ReadOnlyMixin,
    ScaleMixin,
    confirm_with_reason,
    hosts_of,
    operator,
    redirect_host,
    without_delete_selected,
)


class ConsentStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [(value, label) for value, label in Consent.Status.choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        # Each status is defined once, by ConsentQuerySet (SEC-01: "active" is live_consent).
        if self.value() == Consent.Status.REVOKED:
            return queryset.revoked()  # type: ignore[attr-defined]
        if self.value() == Consent.Status.EXPIRED:
            return queryset.expired()  # type: ignore[attr-defined]
        if self.value() == Consent.Status.ACTIVE:
            return queryset.live()  # type: ignore[attr-defined]
        return queryset


class ClientFilter(InputFilter):
    """By client: its exact client_id, shown with its name and redirect hosts once chosen."""

    title = "client"
    parameter_name = "client"
    placeholder = "client_id"
    lookup = "client__application__client_id"

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value():
            return queryset.filter(**{self.lookup: self.value()})
        return queryset

    def selected_label(self, value: str) -> str:
        client = (
            MCPClient.objects.select_related("application")
            .filter(application__client_id=value)
            .first()
        )
        if client is None:
            return f"{value} (no such client)"
        hosts = hosts_of(client.application.redirect_uris.split())
        return f"{client.display_name} — {value} — {hosts}"


class UserFilter(InputFilter):
    title = "user"
    parameter_name = "user"
    placeholder = "username"
    lookup = f"user__{get_user_model().USERNAME_FIELD}"

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value():
            return queryset.filter(**{self.lookup: self.value()})
        return queryset


def describe_consent(consent: Consent) -> list[str]:
    client = consent.client
    return [
        str(consent.user),
        client.display_name,
        client.application.client_id,
        redirect_host(consent.redirect_uri),
        consent.scopes,
        f"{consent.granted_at:%Y-%m-%d %H:%M}",
    ]


CONSENT_HEADERS = ["user", "client", "client_id", "redirect host", "scopes", "granted"]


@admin.register(Consent)
class ConsentAdmin(ScaleMixin, admin.ModelAdmin):
    list_display = (
        "user",
        "client_name",
        "client_id",
        "redirect_host",
        "scopes",
        "granted_at",
        "last_used_at",
        "status",
    )
    list_filter = (ConsentStatusFilter, ClientFilter, UserFilter, "granted_at")
    search_fields = (
        "user__username",
        "client__application__name",
        "=client__application__client_id",
        "redirect_uri",
    )
    list_select_related = ("user", "client__application")
    raw_id_fields = ("user", "client", "revoked_by")
    date_hierarchy = "granted_at"
    actions = ["revoke_consents"]

    @admin.display(description="client", ordering="client__application__name")
    def client_name(self, obj: Consent) -> str:
        return obj.client.display_name

    @admin.display(description="client_id")
    def client_id(self, obj: Consent) -> str:
        return obj.client.application.client_id

    @admin.display(description="redirect host")
    def redirect_host(self, obj: Consent) -> str:
        return redirect_host(obj.redirect_uri)

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        # Every field is a record; revocation is the action below.
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return without_delete_selected(super().get_actions(request))

    @admin.action(
        description="Revoke selected consents (tokens and upstream token too)",
        permissions=["revoke"],
    )
    def revoke_consents(self, request: HttpRequest, queryset: QuerySet):  # type: ignore[no-untyped-def]
        page, reason = confirm_with_reason(
            self,
            request,
            queryset,
            title="Revoke consents",
            action="revoke_consents",
            headers=CONSENT_HEADERS,
            describe=describe_consent,
        )
        if page is not None:
            return page
        count = revocation.revoke_consents(
            list(queryset), actor=operator(request), reason=reason, request=request
        )
        self.message_user(request, f"{count} consent(s) revoked.", messages.SUCCESS)
        return None


@admin.register(UpstreamToken)
class UpstreamTokenAdmin(ScaleMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("consent", "identity", "scopes", "expires_at", "updated_at")
    list_select_related = ("consent__user", "consent__client__application", "identity")
    # Never the ciphertexts: an operator has no use for them and they are secrets' shadows.
    fields = (
        "consent",
        "identity",
        "token_type",
        "scopes",
        "expires_at",
        "refresh_expires_at",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields


@admin.register(UpstreamIdentity)
class UpstreamIdentityAdmin(ScaleMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("login", "provider", "user", "last_login_at")
    list_select_related = ("user",)
    search_fields = ("=login", "=subject", "=user__username")
    readonly_fields = (
        "provider",
        "subject",
        "user",
        "login",
        "email",
        "created_at",
        "last_login_at",
    )


@admin.register(AuthorizationTransaction)
class AuthorizationTransactionAdmin(ScaleMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "pk",
        "purpose",
        "client",
        "outcome",
        "failure_reason",
        "created_at",
        "consumed_at",
    )
    list_filter = ("outcome", "purpose")
    list_select_related = ("client__application",)
    date_hierarchy = "created_at"
    fields = (
        "purpose",
        "client",
        "redirect_uri",
        "scopes",
        "upstream_scopes",
        "resource",
        "user",
        "ip_address",
        "user_agent",
        "created_at",
        "expires_at",
        "consumed_at",
        "outcome",
        "failure_reason",
        "consent",
    )
    readonly_fields = fields
