"""The operators' audit tool: everything recorded is read-only, no secret is
shown, and every action calls the same flow functions as the endpoints and the user's page.

Actions: MCP clients — disable, delete (the revocation cascade); consents — revoke with a
reason; audit events — CSV export. The "consent auditor" group (data migration 0003) has
view permissions only, so it sees all of it and can change none of it.
"""

from __future__ import annotations

import csv
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from oauth2_provider.admin import ApplicationAdmin
from oauth2_provider.models import get_application_model

from . import audit, flows
from .forms import AdminClientRegistrationForm
from .models import (
    AuditEvent,
    AuthorizationTransaction,
    Consent,
    MCPClient,
    RedirectURI,
    RegistrationSource,
    UpstreamIdentity,
    UpstreamToken,
)


def operator(request: HttpRequest) -> audit.ActorInfo:
    return audit.actor_from(request, operator=True)


class ReadOnlyMixin:
    """Recorded data: no add, no change of recorded fields, no raw delete."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RedirectURIInline(admin.TabularInline):
    model = RedirectURI
    extra = 0
    can_delete = False
    readonly_fields = ("uri", "added_at", "removed_at")

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"size": 60}))


def _confirm_with_reason(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet, title: str, action: str
):  # type: ignore[no-untyped-def]
    """An intermediate page asking for the reason; None once the form was submitted valid."""
    form = ReasonForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        return None, form.cleaned_data["reason"]
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "objects": list(queryset),
        "form": form,
        "action": action,
        "opts": modeladmin.model._meta,
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/mcp_consent/confirm_with_reason.html", context), None


@admin.register(MCPClient)
class MCPClientAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "registration_source",
        "verified",
        "active_consents",
        "last_used_at",
        "disabled_at",
    )
    list_filter = ("registration_source", "verified", ("disabled_at", admin.EmptyFieldListFilter))
    search_fields = ("application__name", "application__client_id")
    list_select_related = ("application",)
    readonly_fields = (
        "application",
        "registration_source",
        "verified",
        "client_uri",
        "logo_uri",
        "software_id",
        "software_version",
        "application_type",
        "metadata",
        "metadata_version",
        "created_at",
        "updated_at",
        "last_used_at",
        "disabled_at",
    )
    inlines = [RedirectURIInline]
    actions = ["disable_clients", "delete_clients"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .annotate(
                _active_consents=Count(
                    "consents",
                    filter=Q(consents__revoked_at__isnull=True, consents__expired_at__isnull=True),
                )
            )
        )

    @admin.display(description="active consents", ordering="_active_consents")
    def active_consents(self, obj: MCPClient) -> int:
        return getattr(obj, "_active_consents", 0)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # replaced by the cascade below
        return actions

    @admin.action(
        description="Disable selected clients (revokes every consent and token)",
        permissions=["change"],
    )
    def disable_clients(self, request: HttpRequest, queryset: QuerySet):  # type: ignore[no-untyped-def]
        page, reason = _confirm_with_reason(
            self, request, queryset, "Disable clients", "disable_clients"
        )
        if page is not None:
            return page
        done = sum(
            flows.disable_client(c, actor=operator(request), reason=reason, request=request)
            for c in queryset
        )
        self.message_user(
            request,
            f"{done} client(s) disabled; their consents and tokens are revoked.",
            messages.SUCCESS,
        )
        return None

    @admin.action(
        description="Delete selected clients with everything they left", permissions=["delete"]
    )
    def delete_clients(self, request: HttpRequest, queryset: QuerySet):  # type: ignore[no-untyped-def]
        page, reason = _confirm_with_reason(
            self, request, queryset, "Delete clients", "delete_clients"
        )
        if page is not None:
            return page
        clients = list(queryset)
        for client in clients:
            flows.delete_client(client, actor=operator(request), reason=reason, request=request)
        self.message_user(
            request,
            f"{len(clients)} client(s) deleted with their consents and tokens.",
            messages.SUCCESS,
        )
        return None

    def delete_model(self, request: HttpRequest, obj: MCPClient) -> None:
        flows.delete_client(
            obj, actor=operator(request), reason="deleted in the admin", request=request
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for client in list(queryset):
            self.delete_model(request, client)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The page is read-only; "change" gates the disable action.
        return super().has_change_permission(request, obj)

    def get_urls(self):  # type: ignore[no-untyped-def]
        register = self.admin_site.admin_view(self.register_view)
        return [
            path("register/", register, name="mcp_consent_mcpclient_register"),
            *super().get_urls(),
        ]

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context=None
    ) -> HttpResponse:  # type: ignore[no-untyped-def]
        return HttpResponseRedirect(reverse("admin:mcp_consent_mcpclient_register"))

    def register_view(self, request: HttpRequest) -> HttpResponse:
        """The operator's registration: same policy and the same flow as DCR and CIMD."""
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = AdminClientRegistrationForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            registered = flows.register_client(
                form.metadata,
                RegistrationSource.ADMIN,
                issue_registration_token=False,
                actor=operator(request),
                request=request,
            )
            shown = f"Client registered. client_id: {registered.client.application.client_id}"
            if registered.client_secret:
                shown += f" — client_secret (shown once, store it now): {registered.client_secret}"
            messages.success(request, shown)
            return HttpResponseRedirect(
                reverse("admin:mcp_consent_mcpclient_change", args=[registered.client.pk])
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Register an MCP client",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/mcp_consent/mcpclient/register.html", context)


class ConsentStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [(value, label) for value, label in Consent.Status.choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        now = timezone.now()
        if self.value() == Consent.Status.REVOKED:
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == Consent.Status.EXPIRED:
            return queryset.filter(revoked_at__isnull=True).filter(
                Q(expired_at__isnull=False) | Q(expires_at__lte=now)
            )
        if self.value() == Consent.Status.ACTIVE:
            return queryset.filter(
                revoked_at__isnull=True, expired_at__isnull=True, expires_at__gt=now
            )
        return queryset


@admin.register(Consent)
class ConsentAdmin(admin.ModelAdmin):
    list_display = ("user", "client", "scopes", "granted_at", "last_used_at", "status")
    list_filter = (ConsentStatusFilter, "client", "user", "granted_at")
    search_fields = (
        "user__username",
        "client__application__name",
        "client__application__client_id",
        "redirect_uri",
    )
    list_select_related = ("user", "client__application")
    raw_id_fields = ("user", "client", "revoked_by")
    date_hierarchy = "granted_at"
    actions = ["revoke_consents"]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.action(
        description="Revoke selected consents (tokens and upstream token too)",
        permissions=["change"],
    )
    def revoke_consents(self, request: HttpRequest, queryset: QuerySet):  # type: ignore[no-untyped-def]
        page, reason = _confirm_with_reason(
            self, request, queryset, "Revoke consents", "revoke_consents"
        )
        if page is not None:
            return page
        count = flows.revoke_consents(
            list(queryset), actor=operator(request), reason=reason, request=request
        )
        self.message_user(request, f"{count} consent(s) revoked.", messages.SUCCESS)
        return None


@admin.register(UpstreamToken)
class UpstreamTokenAdmin(ReadOnlyMixin, admin.ModelAdmin):
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
class UpstreamIdentityAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("login", "provider", "user", "last_login_at")
    search_fields = ("login", "subject", "user__username")
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
class AuthorizationTransactionAdmin(ReadOnlyMixin, admin.ModelAdmin):
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


class _Echo:
    def write(self, value: str) -> str:
        return value


CSV_FIELDS = [
    "id",
    "created_at",
    "action",
    "actor_type",
    "actor_user_id",
    "actor_label",
    "subject_user_id",
    "client_id",
    "consent_id",
    "ip_address",
    "user_agent",
    "details",
    "previous_hash",
    "hash",
]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "action",
        "actor_type",
        "actor_label",
        "client_id",
        "consent_id",
        "ip_address",
    )
    list_filter = ("action", "actor_type", "created_at")
    search_fields = ("client_id", "actor_label", "ip_address")
    date_hierarchy = "created_at"
    readonly_fields = CSV_FIELDS[1:]
    actions = ["export_csv"]

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Export selected events as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
        writer = csv.writer(_Echo())

        def rows():  # type: ignore[no-untyped-def]
            yield writer.writerow(CSV_FIELDS)
            for event in queryset.order_by("pk").iterator():
                yield writer.writerow(
                    [
                        event.pk,
                        *(getattr(event, f) for f in CSV_FIELDS[1:11]),
                        event.details,
                        event.previous_hash,
                        event.hash,
                    ]
                )

        response = StreamingHttpResponse(rows(), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="mcp-consent-audit.csv"'
        return response


class MCPApplicationAdmin(ApplicationAdmin):
    """DOT's Application admin without the ways around mcp_consent's registration policy.

    New clients are registered through "MCP clients > Register" (the same flow as DCR and
    CIMD); what oauthlib validates against (redirect URIs, client type, grant) is read-only;
    deletion goes through the cascade.
    """

    readonly_fields = (
        "client_id",
        "registration_source",
        "cimd_expires_at",
        "redirect_uris",
        "client_type",
        "authorization_grant_type",
        "name",
        "user",
        "skip_authorization",
        "algorithm",
        "post_logout_redirect_uris",
        "allowed_origins",
    )
    exclude = ("client_secret",)

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


# Not through OAUTH2_PROVIDER["APPLICATION_ADMIN_CLASS"] (DOT 3.4): DOT's admin module imports
# that class while it is itself being imported, and when this module loads first (it imports
# DOT's ApplicationAdmin above) the import goes in a circle and fails. Replacing the
# registration works in any INSTALLED_APPS order.
admin.site.unregister(get_application_model())
admin.site.register(get_application_model(), MCPApplicationAdmin)
