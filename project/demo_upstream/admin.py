"""Read-only admin for the demo upstream. Hashes of passwords, codes and tokens are not shown.

Demo Hub plays a third party: under ``make demo`` it runs as its own server
(http://localhost:8001) with its own database, so its tables are shown by its own admin site,
at /demo-upstream/admin/ on that server, not in the proxy's admin (where they would be the
proxy database's empty copies).
"""

from django.contrib import admin

from .models import Account, AuthorizationCode, Item, RequestLog, Token


class DemoHubAdminSite(admin.AdminSite):
    site_header = "Demo Hub admin (the demo's stand-in for a third-party provider)"
    site_title = "Demo Hub admin"
    index_title = "Demo Hub's own records"


site = DemoHubAdminSite(name="demo_upstream_admin")


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Account, site=site)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["login", "name", "email"]
    fields = ["login", "name", "email"]
    search_fields = ["login", "name", "email"]


@admin.register(Item, site=site)
class ItemAdmin(ReadOnlyAdmin):
    list_display = ["id", "title", "account"]
    fields = ["title", "account"]
    list_filter = ["account"]


@admin.register(AuthorizationCode, site=site)
class AuthorizationCodeAdmin(ReadOnlyAdmin):
    list_display = ["id", "account", "client_id", "scope", "created_at", "expires_at", "used_at"]
    fields = [
        "account",
        "client_id",
        "redirect_uri",
        "scope",
        "code_challenge_method",
        "created_at",
        "expires_at",
        "used_at",
    ]
    list_filter = ["client_id"]


@admin.register(Token, site=site)
class TokenAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "account",
        "client_id",
        "scope",
        "created_at",
        "access_expires_at",
        "revoked_at",
        "refresh_used_at",
    ]
    fields = [
        "account",
        "client_id",
        "scope",
        "family",
        "parent",
        "authorization_code",
        "created_at",
        "access_expires_at",
        "refresh_expires_at",
        "refresh_used_at",
        "revoked_at",
    ]
    list_filter = ["client_id"]


@admin.register(RequestLog, site=site)
class RequestLogAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "method", "path", "endpoint", "query_params", "status_code"]
    fields = [
        "created_at",
        "method",
        "path",
        "endpoint",
        "query_params",
        "body_params",
        "auth_scheme",
        "status_code",
    ]
    list_filter = ["endpoint", "method"]
