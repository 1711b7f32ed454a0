"""The authorization endpoint: validation, OUR consent page, then the upstream hop.

Top to bottom, for every GET and POST of /authorize/:
1. validate the authorization request with DOT (client, exact redirect URI, PKCE S256,
   resource allowlist, scopes); a bad client or redirect URI gets an error page; any other
   error an error redirect with ``state`` and ``iss`` (AS-51, MU-01) only to a redirect URI
   this person approved before, else our page with a link (AS-50, SEC-03);
2. GET: show the consent page -- always, unless the opt-in remembered-consent rule holds;
3. POST (CSRF-protected): Deny redirects ``access_denied``; Approve records the pending
   upstream hop and sends the browser to the upstream with the static client ID (CD-02,
   CD-41). Nothing reaches the upstream before an approval.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.utils.crypto import salted_hmac
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

# DOT 3.4 defines the errors its views raise only here.
from oauth2_provider.exceptions import FatalClientError, OAuthToolkitError
from oauth2_provider.views import AuthorizationView

from .. import ratelimit
from ..adapter import get_adapter
from ..app_settings import app_settings
from ..flows import abuse, authorization
from ..models import Consent, MCPClient, RegistrationSource
from ..registration import authorizing_request, cimd_domain_blocked, is_private_use_scheme
from .common import (
    as_authorization_request,
    browser_binding,
    client_error_link,
    error_page,
    protect_page,
    redirect_to_client,
    render_form_page,
    send_upstream,
    too_many_requests,
)
from .risk import risk_context

log = logging.getLogger(__name__)


@dataclass
class AuthorizationRequest:
    """A validated authorization request: what the consent page shows and approves."""

    client: MCPClient
    scopes: list[str]
    # SEC-02: the query and DOT's credentials carry the client's state; not in reprs.
    credentials: dict[str, Any] = field(repr=False)
    query: str = field(repr=False)

    @property
    def redirect_uri(self) -> str:
        return str(self.credentials["redirect_uri"])

    @property
    def state(self) -> str | None:
        return self.credentials.get("state")

    @property
    def resource(self) -> str:
        return " ".join(self.credentials.get("resource") or [])

    def fingerprint(self) -> str:
        """What the user saw, bound into the form: a changed client or request re-asks."""
        seen = "\n".join(
            [
                self.client.application.client_id,
                str(self.client.metadata_version),
                self.redirect_uri,
                " ".join(sorted(self.scopes)),
                self.resource,
                self.query,
            ]
        )
        return salted_hmac("mcp_consent.consent-form", seen, algorithm="sha256").hexdigest()


def fatal_error(request: HttpRequest, error: FatalClientError) -> HttpResponse:
    """AS-50 / CD-30: unknown client or unregistered redirect URI: tell the person, never redirect."""
    description = (getattr(error.oauthlib_error, "description", "") or "invalid request").rstrip(
        "."
    )
    return error_page(
        request,
        _("This sign-in request is not valid"),
        _(
            "The application that sent you here made a request this server cannot accept "
            "(%(description)s). You have not been sent anywhere. Close this page and contact "
            "the application's developer if the problem persists."
        )
        % {"description": description},
    )


def _redirect_parts(uri: str) -> dict[str, str]:
    """LH-02: the redirect URI as registered, its host set apart (none for ``app:/path``)."""
    parts = urlsplit(uri)
    if not parts.netloc:
        return {"redirect_scheme": "", "redirect_host": "", "redirect_rest": uri}
    lead = uri.index("//") + 2
    return {
        "redirect_scheme": uri[:lead],
        "redirect_host": uri[lead : lead + len(parts.netloc)],
        "redirect_rest": uri[lead + len(parts.netloc) :],
    }


@method_decorator(login_not_required, name="dispatch")
@method_decorator(protect_page, name="dispatch")
# SEC-02: the consent form's CSRF token is a per-session secret.
@method_decorator(sensitive_post_parameters("csrfmiddlewaretoken"), name="dispatch")
class AuthorizeView(AuthorizationView):
    """DOT's AuthorizationView with consent before login and before any upstream hop."""

    template_name = "mcp_consent/consent.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Skip DOT's LoginRequiredMixin: the person signs in at the upstream, after consent.
        # That also drops DOT's client-controllable approval_prompt and skip_authorization,
        # which must not decide consent here (and DOT's form, the one reader of the
        # oauth2_data its dispatch sets).
        limited = ratelimit.hit("authorize", request)
        if limited is not None:
            if limited.first_refusal:
                abuse.record_rate_limited("authorize", request)
            return too_many_requests(request, limited, html=True)
        if request.method == "GET":
            return self.show(request)
        if request.method == "POST":
            return csrf_protect(self.decide)(request)  # CD-13
        return HttpResponseNotAllowed(["GET", "POST"])

    # --- 1. validation ---------------------------------------------------------------------

    def validate(self, request: HttpRequest) -> AuthorizationRequest | HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        client_id = request.GET.get("client_id", "")
        if cimd_domain_blocked(client_id):
            # CIMD-13: the operators' trust policy, said plainly; nothing is fetched.
            return error_page(
                request,
                _("This application is not allowed here"),
                _(
                    "This server's operators do not allow applications from %(host)s. "
                    "You have not been sent anywhere."
                )
                % {"host": urlsplit(client_id).hostname},
                status=403,
            )
        # ABUSE-04 / SSRF-06: only this validation may fetch a client_id metadata document.
        token = authorizing_request.set(request)
        try:
            scopes, credentials = self.validate_authorization_request(
                as_authorization_request(request, query)
            )
        except FatalClientError as error:
            return fatal_error(request, error)
        except ValueError:
            # AS-54: a malformed percent-escape (oauthlib's urldecode) is a bad request, not a 500.
            return error_page(
                request,
                _("This sign-in request is not valid"),
                _("The request is malformed. You have not been sent anywhere."),
            )
        except OAuthToolkitError as error:
            oauthlib_error = error.oauthlib_error
            return self.client_error(
                request,
                client_id=oauthlib_error.client_id,
                redirect_uri=oauthlib_error.redirect_uri,
                params=dict(oauthlib_error.twotuples),
            )
        finally:
            authorizing_request.reset(token)
        client = credentials["request"].client.mcp_client
        return AuthorizationRequest(
            client=client, scopes=list(scopes), credentials=credentials, query=query
        )

    # --- 2. the consent page ---------------------------------------------------------------

    def show(self, request: HttpRequest) -> HttpResponse:
        ar = self.validate(request)
        if isinstance(ar, HttpResponse):
            return ar
        if "none" in request.GET.get("prompt", "").split():
            # OIDC prompt=none: we never decide silently.
            error = "consent_required" if request.user.is_authenticated else "login_required"
            return self.client_error(
                request,
                client_id=ar.client.application.client_id,
                redirect_uri=ar.redirect_uri,
                params={"error": error, "state": ar.state},
            )
        if self.remembered(request, ar):
            return self.approve(request, ar, remembered=True)
        authorization.record_consent_shown(ar.client, ar.scopes, ar.redirect_uri, request)
        return self.consent_page(request, ar)

    def client_error(
        self,
        request: HttpRequest,
        *,
        client_id: str | None,
        redirect_uri: str | None,
        params: dict[str, str | None],
    ) -> HttpResponse:
        """An OAuth error of a request whose client and redirect URI are valid (AS-51).

        SEC-03 (RFC 9700 §4.11.2, BCP-02, AS-53): such an error is found before the person
        did anything, so an automatic redirect would make us an open redirector for anyone
        who self-registers ``https://phish.example/login`` and sends a link with
        ``prompt=none``, ``code_challenge_method=plain`` or an unknown scope. The redirect is
        automatic only to a redirect URI this person approved before (a live consent of
        theirs for this client and URI); everyone else gets our page, with a plainly
        labelled link to the client's host carrying the same error.
        """
        post = request.method == "POST"
        if redirect_uri and self.approved_before(request, client_id, redirect_uri):
            return redirect_to_client(redirect_uri, params, post=post)
        description = (params.get("error_description") or "").rstrip(".")
        error = params.get("error") or "invalid_request"
        return error_page(
            request,
            _("This sign-in request cannot be completed"),
            _(
                "The application that sent you here made a request this server cannot accept "
                "(%(error)s). You have not been sent anywhere and nothing was shared."
            )
            % {"error": f"{error}: {description}" if description else error},
            link=client_error_link(redirect_uri, params) if redirect_uri else None,
        )

    @staticmethod
    def approved_before(request: HttpRequest, client_id: str | None, redirect_uri: str) -> bool:
        """SEC-03: did this person approve this client and redirect URI (a live consent)?"""
        if not client_id or not request.user.is_authenticated:
            return False
        return (
            Consent.objects.live()
            .filter(
                user=request.user,
                client__application__client_id=client_id,
                redirect_uri=redirect_uri,
            )
            .exists()
        )

    def remembered(self, request: HttpRequest, ar: AuthorizationRequest) -> bool:
        """Opt-in (REMEMBER_CONSENT): skip the page only for an identical, same-site request.

        Never on a cross-site navigation, never without fetch metadata: a link on another
        site must always land on the page (CD-00). Residual risk (documented): a
        user-started navigation that another site redirects keeps Sec-Fetch-Site: none,
        so an authorization server in the middle (GHSA-6x8h-498w-gv8c) looks direct.
        """
        if not app_settings.REMEMBER_CONSENT or not request.user.is_authenticated:
            return False
        if request.headers.get("Sec-Fetch-Site") not in {"none", "same-origin"}:
            return False
        candidates = (
            Consent.objects.live()
            .filter(
                user=request.user,
                client=ar.client,
                redirect_uri=ar.redirect_uri,
                resource=ar.resource,
                client_metadata_version=ar.client.metadata_version,
            )
            .values_list("scopes", flat=True)
        )
        wanted = set(ar.scopes)
        return any(wanted <= set(scopes.split()) for scopes in candidates)

    def consent_page(
        self, request: HttpRequest, ar: AuthorizationRequest, *, notice: str = "", status: int = 200
    ) -> HttpResponse:
        client = ar.client
        upstream_config = app_settings.UPSTREAM
        redirect = urlsplit(ar.redirect_uri)
        max_name = app_settings.CLIENT_NAME_MAX_LENGTH
        name = client.display_name
        context = {
            "client": client,
            "client_name": name if len(name) <= max_name else name[: max_name - 1] + "…",
            "client_id": client.application.client_id,
            "verified": client.verified,
            "source": client.registration_source,
            "is_cimd": client.registration_source == RegistrationSource.CIMD,
            "cimd_host": urlsplit(client.application.client_id).hostname
            if client.registration_source == RegistrationSource.CIMD
            else "",
            "redirect_uri": ar.redirect_uri,
            **_redirect_parts(ar.redirect_uri),
            # CD-01, CD-12, LH-01, LH-02, DCR-19: first time, namesakes, where access goes.
            **risk_context(request, client, ar.redirect_uri),
            # DCR-13 / LH-01: like loopback, any program on this computer can claim the scheme.
            "private_scheme": redirect.scheme if is_private_use_scheme(ar.redirect_uri) else "",
            "scopes": get_adapter(request).scope_descriptions(ar.scopes),
            "upstream_name": upstream_config.name,
            "upstream_scopes": upstream_config.upstream_scopes_for(ar.scopes),
            "base_upstream_scopes": upstream_config.scopes,
            "resource": ar.resource,
            "fingerprint": ar.fingerprint(),
            "form_action": request.get_full_path(),
            "notice": notice,
        }
        return render_form_page(request, self.template_name, context, status=status)

    # --- 3. the decision ---------------------------------------------------------------------

    def decide(self, request: HttpRequest) -> HttpResponse:
        ar = self.validate(request)
        if isinstance(ar, HttpResponse):
            return ar
        decision = request.POST.get("decision")
        if decision == "deny":
            # CD-18: access_denied with the client's state and iss; nothing stored or sent
            # upstream; the decision itself goes to the audit trail.
            authorization.record_denial(ar.client, ar.scopes, ar.redirect_uri, request)
            return redirect_to_client(
                ar.redirect_uri,
                {
                    "error": "access_denied",
                    "error_description": "The user denied the request.",
                    "state": ar.state,
                },
                post=True,
            )
        if decision != "approve":
            return self.consent_page(request, ar, notice=_("Choose Approve or Deny."), status=400)
        if not hmac.compare_digest(
            request.POST.get("fingerprint", "").encode(), ar.fingerprint().encode()
        ):
            # The client or the request changed since the page was shown: show it again.
            return self.consent_page(
                request,
                ar,
                notice=_("This request changed since the page was shown. Review it again."),
                status=409,
            )
        return self.approve(request, ar)

    @sensitive_variables("binding", "pending")  # SEC-02: the browser nonce, state, verifier
    def approve(
        self, request: HttpRequest, ar: AuthorizationRequest, *, remembered: bool = False
    ) -> HttpResponse:
        """CD-41/42: the pending state exists only from here on, set with the redirect upstream."""
        binding = browser_binding(request)
        pending = authorization.begin_upstream_authorization(
            client=ar.client,
            authorization_query=ar.query,
            redirect_uri=ar.redirect_uri,
            scopes=ar.scopes,
            resource=ar.resource,
            binding=binding,
            request=request,
            remembered=remembered,
        )
        return send_upstream(request, pending, binding)
