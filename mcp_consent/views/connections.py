"""Connected apps: the end user's own view of what they approved, with Revoke (issue 4).

A visitor who is not signed in signs in through the upstream (the same upstream leg, no
MCP client involved and no consent to give), so the page works without local passwords.
Every change is a POST with Django's CSRF protection and calls the same revocation flow
as the admin and the endpoints.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth import logout
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_protect
from oauth2_provider.compat import login_not_required

from .. import audit, flows
from ..app_settings import app_settings
from ..models import AuditEvent, Consent, MCPClient
from .common import browser_binding, protect_page, render_form_page, send_upstream

# What the person reads for each of their decisions.
DECISION_TEXT: dict[str, str] = {
    AuditEvent.Action.CONSENT_APPROVED: "You approved on the consent page",
    AuditEvent.Action.CONSENT_DENIED: "You denied",
    AuditEvent.Action.CONSENT_GRANTED: "Access granted after you signed in",
    AuditEvent.Action.CONSENT_REVOKED: "Access revoked",
    AuditEvent.Action.CONSENT_EXPIRED: "Access expired",
}

DECISIONS = [
    AuditEvent.Action.CONSENT_APPROVED,
    AuditEvent.Action.CONSENT_DENIED,
    AuditEvent.Action.CONSENT_GRANTED,
    AuditEvent.Action.CONSENT_REVOKED,
    AuditEvent.Action.CONSENT_EXPIRED,
]


def _row(consent: Consent) -> dict[str, Any]:
    client = consent.client
    return {
        "consent": consent,
        "name": client.display_name,
        "client_id": client.application.client_id,
        "verified": client.verified,
        "redirect_host": urlsplit(consent.redirect_uri).netloc,
        "scopes": app_settings.ADAPTER.scope_descriptions(consent.scope_list),
    }


@method_decorator(login_not_required, name="dispatch")
@method_decorator(protect_page, name="dispatch")
@method_decorator(csrf_protect, name="dispatch")
class ConnectionsView(View):
    """GET: the list and the history; POST: sign in, revoke, or sign out."""

    template_name = "mcp_consent/connections.html"
    http_method_names = ["get", "post"]

    def get(self, request: HttpRequest) -> HttpResponse:
        context: dict[str, Any] = {"upstream_name": app_settings.UPSTREAM.name}
        if request.user.is_authenticated:
            consents = Consent.objects.filter(user=request.user).select_related(
                "client__application"
            )
            active = [c for c in consents if c.status == Consent.Status.ACTIVE]
            history = AuditEvent.objects.filter(
                subject_user_id=request.user.pk, action__in=DECISIONS
            ).order_by("-pk")[:50]
            denied = AuditEvent.objects.filter(
                actor_user_id=request.user.pk, action=AuditEvent.Action.CONSENT_DENIED
            ).order_by("-pk")[:50]
            events = sorted({e.pk: e for e in [*history, *denied]}.values(), key=lambda e: -e.pk)[
                :50
            ]
            names = {
                c.application.client_id: c.display_name
                for c in MCPClient.objects.filter(
                    application__client_id__in={e.client_id for e in events}
                ).select_related("application")
            }
            decisions = [
                {
                    "text": DECISION_TEXT.get(e.action, e.get_action_display()),
                    "client": names.get(e.client_id, "a deleted application"),
                    "at": e.created_at,
                    "reason": e.details.get("reason", "")
                    if e.action != AuditEvent.Action.CONSENT_DENIED
                    else "",
                }
                for e in events
            ]
            context.update(
                {
                    "connections": [_row(c) for c in active],
                    "history": decisions,
                    "past": [_row(c) for c in consents if c.status != Consent.Status.ACTIVE][:50],
                }
            )
        return render_form_page(request, self.template_name, context)

    def post(self, request: HttpRequest) -> HttpResponse:
        action = request.POST.get("action")
        if action == "sign-in":
            binding = browser_binding(request)
            return send_upstream(
                request, flows.begin_sign_in(binding=binding, request=request), binding
            )
        if not request.user.is_authenticated:
            return HttpResponseRedirect(reverse("mcp_consent:connections"))
        if action == "revoke":
            try:
                consent = Consent.objects.get(
                    pk=int(request.POST.get("consent", "")), user=request.user
                )
            except (ValueError, Consent.DoesNotExist):
                # Another user's consent is as unknown as a missing one.
                raise Http404("no such connection") from None
            flows.revoke_consent(
                consent,
                actor=audit.actor_from(request),
                reason="revoked by the user on Connected apps",
                request=request,
            )
        elif action == "sign-out":
            logout(request)
        response = HttpResponseRedirect(reverse("mcp_consent:connections"))
        response.status_code = 303
        return response
