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
from django.contrib.auth.decorators import login_not_required
from django.db.models import Exists, OuterRef, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.views import View
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_variables
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from .. import audit, ratelimit
from ..adapter import DefaultConsentAdapter, get_adapter
from ..app_settings import app_settings
from ..flows import abuse, authorization, revocation
from ..models import AuditEvent, Consent, MCPClient, UpstreamIdentity
from .common import (
    browser_binding,
    protect_page,
    render_form_page,
    send_upstream,
    too_many_requests,
)
from .risk import destination

# What the person reads for each of their decisions and what happened to their grants.
DECISION_TEXT: dict[str, Any] = {
    AuditEvent.Action.CONSENT_APPROVED: _("You approved on the consent page"),
    AuditEvent.Action.CONSENT_DENIED: _("You denied"),
    AuditEvent.Action.CONSENT_GRANTED: _("Access granted after you signed in"),
    AuditEvent.Action.CONSENT_EXPIRED: _("Access expired"),
}

# Who ended a grant, in the person's words. An operator's free-text reason stays in the audit
# trail (REV-01..04 are recorded there): it is written for operators, not for this page.
REVOKED_BY_TEXT: dict[str, Any] = {
    AuditEvent.Actor.USER: _("Revoked by you"),
    AuditEvent.Actor.OPERATOR: _("Revoked by the operator"),
    AuditEvent.Actor.CLIENT: _("Revoked by the application"),
    AuditEvent.Actor.SYSTEM: _("Ended by this server"),
}
REVOKED_TEXT = _("Access revoked")

DECISIONS = [
    AuditEvent.Action.CONSENT_APPROVED,
    AuditEvent.Action.CONSENT_DENIED,
    AuditEvent.Action.CONSENT_GRANTED,
    AuditEvent.Action.CONSENT_REVOKED,
    AuditEvent.Action.CONSENT_EXPIRED,
]


def _event_text(event: AuditEvent) -> Any:
    if event.action == AuditEvent.Action.CONSENT_REVOKED:
        return REVOKED_BY_TEXT.get(event.actor_type, REVOKED_TEXT)
    return DECISION_TEXT.get(event.action, event.get_action_display())


def _row(
    consent: Consent, revoked_by: dict[int | None, str], adapter: DefaultConsentAdapter
) -> dict[str, Any]:
    client = consent.client
    host = urlsplit(consent.redirect_uri).hostname or consent.redirect_uri
    if consent.revoked_at:
        ended: Any = REVOKED_BY_TEXT.get(revoked_by.get(consent.pk, ""), REVOKED_TEXT)
    elif consent.status == Consent.Status.EXPIRED:
        ended = DECISION_TEXT[AuditEvent.Action.CONSENT_EXPIRED]
    else:
        ended = ""
    return {
        "consent": consent,
        "name": client.display_name,
        "verified": client.verified,
        "redirect_host": host,
        "redirect_domain": destination(host),
        "scopes": adapter.scope_descriptions(consent.scope_list),
        "ended": ended,
    }


def _with_live_tokens(consents: QuerySet[Consent]) -> QuerySet[Consent]:
    """Each consent with whether DOT still holds a usable token of its user at its client."""
    now = timezone.now()
    access = get_access_token_model().objects.filter(
        user_id=OuterRef("user_id"),
        application_id=OuterRef("client__application_id"),
        expires__gt=now,
    )
    refresh = get_refresh_token_model().objects.filter(
        user_id=OuterRef("user_id"),
        application_id=OuterRef("client__application_id"),
        revoked__isnull=True,
    )
    return consents.annotate(live_tokens=Exists(access) | Exists(refresh))


def _has_access(consent: Any) -> bool:
    """SEC-01: listed under "Applications with access" while it is live, and also while a
    grant whose consent lapsed still has tokens (the cleanup has not run): the person is
    never told "No application has access" while something of it is left, and can Revoke."""
    if consent.status == Consent.Status.ACTIVE:
        return True
    return consent.revoked_at is None and consent.expired_at is None and consent.live_tokens


def upstream_login(user: Any) -> str:
    """The person's login at the upstream (octocat), not our internal username (octocat@upstream)."""
    identity = UpstreamIdentity.objects.filter(user=user).order_by("-last_login_at", "-pk").first()
    if identity is not None and (identity.login or identity.email):
        return identity.login or identity.email
    return str(user.get_username())


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
            consents = list(
                _with_live_tokens(Consent.objects.filter(user=request.user)).select_related(
                    "client__application"
                )[:200]
            )
            revoked_by = dict(
                AuditEvent.objects.filter(
                    action=AuditEvent.Action.CONSENT_REVOKED,
                    consent_id__in=[c.pk for c in consents if c.revoked_at],
                ).values_list("consent_id", "actor_type")
            )
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
                    "text": _event_text(e),
                    "client": names.get(e.client_id, ""),
                    "at": e.created_at,
                }
                for e in events
            ]
            adapter = get_adapter(request)
            context.update(
                {
                    "signed_in_as": upstream_login(request.user),
                    "connections": [
                        _row(c, revoked_by, adapter) for c in consents if _has_access(c)
                    ],
                    "history": decisions,
                    "past": [_row(c, revoked_by, adapter) for c in consents if not _has_access(c)][
                        :50
                    ],
                }
            )
        return render_form_page(request, self.template_name, context)

    @sensitive_variables("binding")  # SEC-02: the browser-binding nonce of the sign-in
    def post(self, request: HttpRequest) -> HttpResponse:
        action = request.POST.get("action")
        # ABUSE-01: each sign-in stores a pending upstream hop and each revoke looks a
        # consent up; a flood of any of these POSTs is refused per address (a person
        # clicks far fewer than the burst).
        limited = ratelimit.hit("connections", request)
        if limited is not None:
            if limited.first_refusal:
                abuse.record_rate_limited("connections", request)
            return too_many_requests(request, limited, html=True)
        if action == "sign-in":
            binding = browser_binding(request)
            return send_upstream(
                request, authorization.begin_sign_in(binding=binding, request=request), binding
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
            revocation.revoke_consent(
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
