"""MCP clients and DOT's Application: told apart by client_id and redirect host (issue 9
item 4), registered through the same flow as DCR and CIMD, disabled and deleted through the
revocation cascade."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from oauth2_provider.admin import ApplicationAdmin
from oauth2_provider.models import get_access_token_model, get_application_model
from oauth2_provider.settings import oauth2_settings

from ..flows.clients import delete_client, disable_client, register_client
from ..forms import AdminClientRegistrationForm
from ..models import Consent, MCPClient, RedirectURI, RegistrationSource
from .base import (
    ReadOnlyMixin,
    ScaleMixin,
    confirm_with_reason,
    hosts_of,
    operator,
    without_delete_selected,
)


def describe_client(client: MCPClient) -> list[str]:
    """The cells of the reason page: what tells one client apart from another."""
    application = client.application
    return [
        client.display_name,
        application.client_id,
        hosts_of(application.redirect_uris.split()),
        client.get_registration_source_display(),
    ]


CLIENT_HEADERS = ["name", "client_id", "redirect hosts", "registered by"]


class RedirectURIInline(admin.TabularInline):
    model = RedirectURI
    extra = 0
    can_delete = False
    readonly_fields = ("uri", "added_at", "removed_at")

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(MCPClient)
class MCPClientAdmin(ScaleMixin, admin.ModelAdmin):
    list_display = (
        "__str__",
        "client_id",
        "redirect_hosts",
        "registration_source",
        "verified",
        "active_consents",
        "last_used_at",
        "disabled_at",
    )
    list_filter = ("registration_source", "verified", ("disabled_at", admin.EmptyFieldListFilter))
    search_fields = ("application__name", "=application__client_id")
    search_help_text = "A name (contains) or an exact client_id."
    list_select_related = ("application",)
    readonly_fields = (
        "application",
        "client_id",
        "registration_access_token",
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
        # A correlated subquery, computed for the rows of the page only. A Count() over a
        # join made the list GROUP BY every client, twice (the count could not drop it).
        active = (
            Consent.objects.live()
            .filter(client=OuterRef("pk"))
            .order_by()
            .values("client")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(_active_consents=Coalesce(Subquery(active, output_field=IntegerField()), 0))
        )

    @admin.display(description="client_id", ordering="application__client_id")
    def client_id(self, obj: MCPClient) -> str:
        return obj.application.client_id

    @admin.display(description="redirect hosts")
    def redirect_hosts(self, obj: MCPClient) -> str:
        return hosts_of(obj.application.redirect_uris.split())

    @admin.display(description="active consents")
    def active_consents(self, obj: MCPClient) -> str:
        count = getattr(obj, "_active_consents", 0)
        url = reverse("admin:mcp_consent_consent_changelist")
        return format_html(
            '<a href="{}?client={}&amp;status=active">{}</a>', url, obj.application.client_id, count
        )

    @admin.display(description="registration access token")
    def registration_access_token(self, obj: MCPClient) -> str:
        """MGMT-05: the RFC 7592 token is valid while the client is registered; DOT stores it
        as an access token with no user and a far expiry, which is not what it is."""
        issued = (
            get_access_token_model()
            .objects.filter(
                application=obj.application,
                user__isnull=True,
                scope=oauth2_settings.DCR_REGISTRATION_SCOPE,
            )
            .values_list("created", flat=True)
            .first()
        )
        if issued is None:
            return "none (this client cannot manage its own registration)"
        return (
            f"RFC 7592 registration access token issued {issued:%Y-%m-%d %H:%M} UTC; "
            "valid while the client is registered (deleting the client ends it)"
        )

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return without_delete_selected(super().get_actions(request))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Recorded fields are read-only; changes go through RFC 7592 or the actions below.
        return False

    def has_disable_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    @admin.action(
        description="Disable selected clients (revokes every consent and token)",
        permissions=["disable"],
    )
    def disable_clients(self, request: HttpRequest, queryset: QuerySet):  # type: ignore[no-untyped-def]
        page, reason = confirm_with_reason(
            self,
            request,
            queryset,
            title="Disable clients",
            action="disable_clients",
            headers=CLIENT_HEADERS,
            describe=describe_client,
        )
        if page is not None:
            return page
        done = sum(
            disable_client(c, actor=operator(request), reason=reason, request=request)
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
        page, reason = confirm_with_reason(
            self,
            request,
            queryset,
            title="Delete clients",
            action="delete_clients",
            headers=CLIENT_HEADERS,
            describe=describe_client,
        )
        if page is not None:
            return page
        clients = list(queryset)
        for client in clients:
            delete_client(client, actor=operator(request), reason=reason, request=request)
        self.message_user(
            request,
            f"{len(clients)} client(s) deleted with their consents and tokens.",
            messages.SUCCESS,
        )
        return None

    def delete_model(self, request: HttpRequest, obj: MCPClient) -> None:
        delete_client(obj, actor=operator(request), reason="deleted in the admin", request=request)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for client in list(queryset):
            self.delete_model(request, client)

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
            registered = register_client(
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


class MCPApplicationAdmin(ScaleMixin, ReadOnlyMixin, ApplicationAdmin):
    """DOT's Application admin, read-only (SEC-09).

    New clients are registered through "MCP clients > Register" (the same flow as DCR and
    CIMD); what oauthlib validates against (redirect URIs, client type, grant) and the name
    the consent page shows change only through RFC 7592 or that flow, which bump the
    client's metadata version and invalidate consents (MGMT-06); deletion goes through the
    cascade on the MCP client.
    """

    list_display = (
        "pk",
        "name",
        "client_id",
        "client_type",
        "authorization_grant_type",
        "registration_source",
    )
    list_select_related = ("user",)
    search_fields = ("name", "=client_id")
    exclude = ("client_secret",)


# Not through OAUTH2_PROVIDER["APPLICATION_ADMIN_CLASS"] (DOT 3.4.1): DOT's admin module imports
# that class while it is itself being imported. When this module loads first (it imports DOT's
# ApplicationAdmin above) the import goes in a circle and fails ("does not define
# MCPApplicationAdmin"); when DOT's loads first, it imports this package before it has
# registered any of its own admins. Replacing the registration works in any INSTALLED_APPS order.
admin.site.unregister(get_application_model())
admin.site.register(get_application_model(), MCPApplicationAdmin)
