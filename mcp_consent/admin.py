"""The operators' view (issue 4 extends it): clients with their redirect URIs, consents, tokens."""

from __future__ import annotations

from django.contrib import admin

from .models import AuthorizationTransaction, Consent, MCPClient, RedirectURI, UpstreamIdentity, UpstreamToken


class RedirectURIInline(admin.TabularInline):
    model = RedirectURI
    extra = 0
    can_delete = False
    readonly_fields = ("uri", "added_at", "removed_at")

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(MCPClient)
class MCPClientAdmin(admin.ModelAdmin):
    list_display = ("__str__", "registration_source", "verified", "created_at", "last_used_at", "disabled_at")
    list_filter = ("registration_source", "verified")
    search_fields = ("application__name", "application__client_id")
    list_select_related = ("application",)
    readonly_fields = (
        "application", "registration_source", "client_uri", "logo_uri", "software_id", "software_version",
        "application_type", "metadata", "metadata_version", "created_at", "updated_at", "last_used_at",
    )
    inlines = [RedirectURIInline]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False


@admin.register(Consent)
class ConsentAdmin(admin.ModelAdmin):
    list_display = ("user", "client", "scopes", "resource", "granted_at", "expires_at", "revoked_at")
    list_filter = ("revoked_at", "granted_at")
    search_fields = ("user__username", "client__application__name", "client__application__client_id")
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
    fields = ("consent", "identity", "token_type", "scopes", "expires_at", "refresh_expires_at", "created_at", "updated_at")
    readonly_fields = fields

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False


@admin.register(UpstreamIdentity)
class UpstreamIdentityAdmin(admin.ModelAdmin):
    list_display = ("login", "provider", "user", "last_login_at")
    search_fields = ("login", "subject", "user__username")
    raw_id_fields = ("user",)


@admin.register(AuthorizationTransaction)
class AuthorizationTransactionAdmin(admin.ModelAdmin):
    list_display = ("pk", "client", "outcome", "failure_reason", "created_at", "consumed_at")
    list_filter = ("outcome",)
    list_select_related = ("client__application",)
    fields = ("client", "redirect_uri", "scopes", "upstream_scopes", "resource", "user", "ip_address",
              "user_agent", "created_at", "expires_at", "consumed_at", "outcome", "failure_reason", "consent")
    readonly_fields = fields

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False
