"""The operators' view (issue 4 extends it): clients with their redirect URIs, consents, tokens."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from oauth2_provider.admin import ApplicationAdmin
from oauth2_provider.models import get_application_model

from . import flows
from .forms import AdminClientRegistrationForm
from .models import (
    AuthorizationTransaction,
    Consent,
    MCPClient,
    RedirectURI,
    RegistrationSource,
    UpstreamIdentity,
    UpstreamToken,
)


class RedirectURIInline(admin.TabularInline):
    model = RedirectURI
    extra = 0
    can_delete = False
    readonly_fields = ("uri", "added_at", "removed_at")

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(MCPClient)
class MCPClientAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "registration_source",
        "verified",
        "created_at",
        "last_used_at",
        "disabled_at",
    )
    list_filter = ("registration_source", "verified")
    search_fields = ("application__name", "application__client_id")
    list_select_related = ("application",)
    readonly_fields = (
        "application",
        "registration_source",
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
    )
    inlines = [RedirectURIInline]

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


@admin.register(Consent)
class ConsentAdmin(admin.ModelAdmin):
    list_display = (
        "user",
        "client",
        "scopes",
        "resource",
        "granted_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = ("revoked_at", "granted_at")
    search_fields = (
        "user__username",
        "client__application__name",
        "client__application__client_id",
    )
    list_select_related = ("user", "client__application")
    raw_id_fields = ("user", "client", "revoked_by")
    date_hierarchy = "granted_at"

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(UpstreamToken)
class UpstreamTokenAdmin(admin.ModelAdmin):
    list_display = ("consent", "identity", "scopes", "expires_at", "updated_at")
    list_select_related = ("consent", "identity")
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

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False


@admin.register(UpstreamIdentity)
class UpstreamIdentityAdmin(admin.ModelAdmin):
    list_display = ("login", "provider", "user", "last_login_at")
    search_fields = ("login", "subject", "user__username")
    raw_id_fields = ("user",)
    readonly_fields = (
        "provider",
        "subject",
        "user",
        "login",
        "email",
        "created_at",
        "last_login_at",
    )

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False


@admin.register(AuthorizationTransaction)
class AuthorizationTransactionAdmin(admin.ModelAdmin):
    list_display = ("pk", "client", "outcome", "failure_reason", "created_at", "consumed_at")
    list_filter = ("outcome",)
    list_select_related = ("client__application",)
    fields = (
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

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False


class MCPApplicationAdmin(ApplicationAdmin):
    """DOT's Application admin without the ways around mcp_consent's registration policy.

    New clients are registered through "MCP clients > Register" (the same flow as DCR and
    CIMD); what oauthlib validates against (redirect URIs, client type, grant) is read-only.
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


admin.site.unregister(get_application_model())
admin.site.register(get_application_model(), MCPApplicationAdmin)
