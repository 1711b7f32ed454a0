"""Tests of the bundled demo upstream ("Demo Hub", project/demo_upstream/).

It must behave like GitHub for the static client: consent is remembered in a cookie and the next
authorization is answered with an immediate redirect carrying a code (the confused-deputy
precondition). The module mounts the app under /demo-upstream/ with its own URLconf, so these
tests do not depend on the project's URLconf.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.urls import include, path, reverse
from django.utils import timezone

from project.demo_upstream.models import (
    Account,
    AuthorizationCode,
    Item,
    RequestLog,
    Token,
    hash_secret,
)
from project.demo_upstream.seed import seed_demo_data
from project.demo_upstream.views import CONSENT_COOKIE, USER_COOKIE

urlpatterns = [path("demo-upstream/", include("project.demo_upstream.urls"))]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

CLIENT_ID = "test-proxy"
CLIENT_SECRET = "test-proxy-secret"
REDIRECT_URI = "http://127.0.0.1:8000/upstream/callback/"
ISSUER = "http://localhost:8001/demo-upstream"
PREFIX = "/demo-upstream/"


@pytest.fixture(autouse=True)
def demo_upstream_settings():
    conf = {
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
        "REDIRECT_URIS": [REDIRECT_URI],
        "ISSUER": ISSUER,
    }
    # A fast hasher: every login would otherwise cost a full PBKDF2 run.
    hashers = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]
    with override_settings(DEMO_UPSTREAM=conf, PASSWORD_HASHERS=hashers):
        seed_demo_data()  # idempotent: the data migration already ran
        for account in Account.objects.filter(login__in=["octocat", "hubot"]):
            account.set_password("demo")
            account.save(update_fields=["password"])
        yield conf


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_url(**overrides) -> str:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": "read:user repo:read",
        "state": "state-123",
    }
    params.update(overrides)
    params = {k: v for k, v in params.items() if v is not None}
    return f"{reverse('demo_upstream:authorize')}?{urlencode(params)}"


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def login(client: Client, username: str = "octocat", password: str = "demo", next_url=""):  # noqa: S107
    return client.post(
        reverse("demo_upstream:login"),
        {"username": username, "password": password, "next": next_url},
    )


def approve(client: Client, decision: str = "authorize", **overrides):
    """GET the authorization request (expects the consent page), then POST the decision."""
    url = authorize_url(**overrides)
    page = client.get(url)
    assert page.status_code == 200, page
    return client.post(reverse("demo_upstream:authorize"), {**query_of(url), "decision": decision})


def get_code(client: Client, **overrides) -> str:
    response = approve(client, **overrides)
    assert response.status_code == 302
    return query_of(response["Location"])["code"]


def basic(client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def exchange(client: Client, code: str, verifier: str | None = None, **extra):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    if verifier is not None:
        data["code_verifier"] = verifier
    data.update(extra)
    return client.post(reverse("demo_upstream:access_token"), data, HTTP_AUTHORIZATION=basic())


def tokens_for(client: Client, scope: str = "read:user repo:read") -> dict:
    verifier, challenge = pkce_pair()
    code = get_code(client, scope=scope, code_challenge=challenge, code_challenge_method="S256")
    response = exchange(client, code, verifier)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture
def octocat(client: Client) -> Client:
    response = login(client)
    assert response.status_code == 302
    return client


# --- seed -----------------------------------------------------------------------------------


def test_seeded_accounts_and_items():
    Account.objects.all().delete()
    seed_demo_data()
    seed_demo_data()  # idempotent
    assert Account.objects.count() == 2
    for login_name in ("octocat", "hubot"):
        account = Account.objects.get(login=login_name)
        assert account.check_password("demo")
        assert not account.check_password("wrong")
        assert "demo" not in account.password
        assert Item.objects.filter(account=account).exists()


# --- login ----------------------------------------------------------------------------------


def test_login_page_shows_form_and_demo_hint(client):
    response = client.get(reverse("demo_upstream:login"))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in body
    assert "octocat" in body
    assert "hubot" in body
    assert "<strong>demo</strong>" in body
    assert response["Cache-Control"] == "no-store"


def test_login_success_sets_signed_cookie_and_follows_next(client):
    next_url = authorize_url()
    response = login(client, next_url=next_url)
    assert response.status_code == 302
    assert response["Location"] == next_url
    cookie = response.cookies[USER_COOKIE]
    assert cookie.value != "octocat"  # signed, not the bare login
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == PREFIX


def test_login_wrong_password_rerenders_without_cookie(client):
    response = login(client, password="nope")
    assert response.status_code == 200
    assert b"Incorrect username or password" in response.content
    assert USER_COOKIE not in response.cookies
    response = login(client, username="nobody", password="demo")
    assert response.status_code == 200
    assert USER_COOKIE not in response.cookies


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/demo-upstream/",
        "//evil.example/demo-upstream/",
        "/\\evil.example/demo-upstream/",
        "/demo-upstream/\\evil",
        "/admin/",
        "/demo-upstream/../admin/",
        "/demo-upstream/%2e%2e/admin/",
        "javascript:alert(1)",
        "/demo-upstream/\nSet-Cookie:x",
    ],
)
def test_login_refuses_open_redirect(client, next_url):
    response = login(client, next_url=next_url)
    assert response.status_code == 302
    assert response["Location"] == reverse("demo_upstream:login")


def test_pages_keep_the_origin_header_for_csrf():
    """Under "Referrer-Policy: no-referrer" browsers send "Origin: null" with form POSTs and
    Django's CSRF check rejects them: the pages with forms use "same-origin"."""
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(reverse("demo_upstream:login"))
    assert page["Referrer-Policy"] == "same-origin"
    token = page.context["csrf_token"]
    response = browser.post(
        reverse("demo_upstream:login"),
        {"username": "octocat", "password": "demo", "csrfmiddlewaretoken": token},
        HTTP_ORIGIN="http://testserver",
    )
    assert response.status_code == 302
    page = browser.get(authorize_url())
    assert page.status_code == 200
    assert page["Referrer-Policy"] == "same-origin"
    response = browser.post(
        reverse("demo_upstream:authorize"),
        {**query_of(authorize_url()), "decision": "authorize", "csrfmiddlewaretoken": token},
        HTTP_ORIGIN="http://testserver",
    )
    assert response.status_code == 302
    assert "code" in query_of(response["Location"])
    # What a browser sends under no-referrer is refused:
    response = browser.post(
        reverse("demo_upstream:authorize"),
        {**query_of(authorize_url()), "decision": "authorize", "csrfmiddlewaretoken": token},
        HTTP_ORIGIN="null",
    )
    assert response.status_code == 403


def test_forged_user_cookie_is_not_a_login(client):
    client.cookies[USER_COOKIE] = "octocat"
    response = client.get(authorize_url())
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("demo_upstream:login"))


# --- authorize: errors that must never redirect ---------------------------------------------


def test_authorize_unknown_client_is_400_without_redirect(octocat):
    response = octocat.get(authorize_url(client_id="someone-else"))
    assert response.status_code == 400
    assert "Location" not in response
    assert b"Unknown application" in response.content


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://127.0.0.1:8000/upstream/callback",
        "http://127.0.0.1:8000/upstream/callback/?x=1",
        "http://evil.example/upstream/callback/",
        "HTTP://127.0.0.1:8000/upstream/callback/",
        "",
        None,
    ],
)
def test_authorize_unregistered_redirect_uri_is_400(octocat, redirect_uri):
    response = octocat.get(authorize_url(redirect_uri=redirect_uri))
    assert response.status_code == 400
    assert "Location" not in response
    assert not AuthorizationCode.objects.exists()


def test_authorize_repeated_redirect_uri_is_400(octocat):
    url = authorize_url() + "&" + urlencode({"redirect_uri": "http://evil.example/"})
    response = octocat.get(url)
    assert response.status_code == 400
    assert "Location" not in response


# --- authorize: errors redirected to the client ---------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "unsupported_response_type"),
        ({"code_challenge": "x" * 43, "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "x" * 43, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
        ({"scope": "admin:everything"}, "invalid_scope"),
    ],
)
def test_authorize_errors_redirect_with_error_and_state(octocat, overrides, error):
    response = octocat.get(authorize_url(**overrides))
    assert response.status_code == 302
    assert response["Location"].startswith(REDIRECT_URI + "?")
    params = query_of(response["Location"])
    assert params["error"] == error
    assert params["state"] == "state-123"
    assert params["iss"] == ISSUER
    assert "code" not in params


# --- authorize: login, consent, remembered consent ------------------------------------------


def test_authorize_requires_login_and_comes_back(client):
    url = authorize_url()
    response = client.get(url)
    assert response.status_code == 302
    location = response["Location"]
    assert location == f"{reverse('demo_upstream:login')}?{urlencode({'next': url})}"
    # Sign in from there: back to the authorization request, which now shows the consent page.
    response = login(client, next_url=query_of(location)["next"])
    assert response["Location"] == url
    response = client.get(url)
    assert response.status_code == 200
    assert b"wants access to your Demo Hub account" in response.content


def test_first_authorization_shows_consent_page(octocat):
    response = octocat.get(authorize_url())
    assert response.status_code == 200
    body = response.content.decode()
    assert f"<strong>{CLIENT_ID}</strong> wants access to your Demo Hub account" in body
    assert "read:user" in body
    assert "repo:read" in body
    assert body.count("<form") == 1
    assert 'value="authorize"' in body
    assert 'value="cancel"' in body
    assert 'name="csrfmiddlewaretoken"' in body
    assert response["Cache-Control"] == "no-store"
    assert not AuthorizationCode.objects.exists()


def test_consent_page_escapes_everything(octocat, demo_upstream_settings):
    with override_settings(DEMO_UPSTREAM={**demo_upstream_settings, "CLIENT_NAME": "<b>x</b>"}):
        response = octocat.get(authorize_url(state='"><script>alert(1)</script>'))
    body = response.content.decode()
    assert "<script>alert(1)" not in body
    assert "&lt;script&gt;" in body
    assert "<b>x</b>" not in body
    assert "&lt;b&gt;x&lt;/b&gt;" in body


def test_approve_redirects_with_code_state_and_iss(octocat):
    response = approve(octocat)
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    params = query_of(location)
    assert set(params) == {"code", "state", "iss"}
    assert params["state"] == "state-123"
    assert params["iss"] == ISSUER
    code = AuthorizationCode.objects.get()
    assert code.code_hash == hash_secret(params["code"]) != params["code"]
    assert code.account.login == "octocat"
    assert code.scope == "read:user repo:read"
    assert code.redirect_uri == REDIRECT_URI
    assert code.expires_at - code.created_at == timedelta(minutes=10)
    cookie = response.cookies[CONSENT_COOKIE]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == PREFIX
    assert int(cookie["max-age"]) == 365 * 24 * 60 * 60


def test_remembered_consent_skips_the_consent_page(octocat):
    """The GitHub behaviour the confused-deputy attack relies on."""
    approve(octocat)
    response = octocat.get(authorize_url(state="second"))
    assert response.status_code == 302
    params = query_of(response["Location"])
    assert response["Location"].startswith(REDIRECT_URI + "?")
    assert params["state"] == "second"
    assert params["iss"] == ISSUER
    assert AuthorizationCode.objects.filter(code_hash=hash_secret(params["code"])).exists()
    # A subset of the approved scopes is covered too.
    response = octocat.get(authorize_url(scope="repo:read"))
    assert response.status_code == 302
    assert "code" in query_of(response["Location"])


def test_remembered_consent_does_not_cover_new_scopes_or_other_users(octocat):
    approve(octocat)
    response = octocat.get(authorize_url(scope="read:user repo:write"))
    assert response.status_code == 200
    assert b"repo:write" in response.content
    # Approving the extra scope adds to what was approved.
    approve(octocat, scope="repo:write")
    response = octocat.get(authorize_url(scope="read:user repo:read repo:write"))
    assert response.status_code == 302
    # The consent cookie is per upstream user.
    login(octocat, username="hubot")
    response = octocat.get(authorize_url())
    assert response.status_code == 200


def test_tampered_consent_cookie_is_ignored(octocat):
    approve(octocat)
    value = octocat.cookies[CONSENT_COOKIE].value
    octocat.cookies[CONSENT_COOKIE] = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    response = octocat.get(authorize_url())
    assert response.status_code == 200


def test_cancel_redirects_with_access_denied(octocat):
    response = approve(octocat, decision="cancel")
    assert response.status_code == 302
    params = query_of(response["Location"])
    assert params["error"] == "access_denied"
    assert params["state"] == "state-123"
    assert params["iss"] == ISSUER
    assert CONSENT_COOKIE not in response.cookies
    assert not AuthorizationCode.objects.exists()


def test_consent_post_revalidates_the_redirect_uri(octocat):
    data = {**query_of(authorize_url()), "decision": "authorize"}
    data["redirect_uri"] = "http://evil.example/cb"
    response = octocat.post(reverse("demo_upstream:authorize"), data)
    assert response.status_code == 400
    assert "Location" not in response


def test_consent_post_requires_csrf(octocat):
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.cookies = octocat.cookies
    data = {**query_of(authorize_url()), "decision": "authorize"}
    response = csrf_client.post(reverse("demo_upstream:authorize"), data)
    assert response.status_code == 403
    assert not AuthorizationCode.objects.exists()
    # Rejected requests are logged too.
    log = RequestLog.objects.filter(endpoint="authorize", method="POST").get()
    assert log.status_code == 403


# --- token endpoint -------------------------------------------------------------------------


def test_code_exchange_with_pkce(octocat):
    verifier, challenge = pkce_pair()
    code = get_code(octocat, code_challenge=challenge, code_challenge_method="S256")
    response = exchange(octocat, code, verifier)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    data = response.json()
    assert set(data) == {
        "access_token",
        "token_type",
        "scope",
        "expires_in",
        "refresh_token",
        "refresh_token_expires_in",
    }
    assert data["token_type"] == "bearer"
    assert data["scope"] == "read:user repo:read"
    assert data["expires_in"] == 28800
    assert data["refresh_token_expires_in"] == 15897600
    token = Token.objects.get()
    assert token.access_token_hash == hash_secret(data["access_token"])
    assert token.refresh_token_hash == hash_secret(data["refresh_token"])


def test_client_secret_in_body_is_accepted(octocat):
    code = get_code(octocat)
    response = octocat.post(
        reverse("demo_upstream:access_token"),
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    "auth",
    [
        {"HTTP_AUTHORIZATION": basic(secret="wrong")},
        {"HTTP_AUTHORIZATION": basic(client_id="other")},
        {"HTTP_AUTHORIZATION": "Basic !!!not-base64"},
        {},
    ],
)
def test_bad_client_authentication_is_401(octocat, auth):
    code = get_code(octocat)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    response = octocat.post(reverse("demo_upstream:access_token"), data, **auth)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    # The code was not consumed by the failed attempt.
    assert exchange(octocat, code).status_code == 200


def test_wrong_client_secret_in_body_is_401(octocat):
    data = {"grant_type": "authorization_code", "client_id": CLIENT_ID, "client_secret": "x"}
    response = octocat.post(reverse("demo_upstream:access_token"), data)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("verifier", ["wrong-" + "v" * 50, None, "short"])
def test_wrong_or_missing_pkce_verifier_is_invalid_grant(octocat, verifier):
    _, challenge = pkce_pair()
    code = get_code(octocat, code_challenge=challenge, code_challenge_method="S256")
    response = exchange(octocat, code, verifier)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert not Token.objects.exists()


def test_verifier_without_challenge_is_invalid_grant(octocat):
    code = get_code(octocat)
    response = exchange(octocat, code, pkce_pair()[0])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_code_reuse_is_invalid_grant_and_revokes_its_tokens(octocat):
    verifier, challenge = pkce_pair()
    code = get_code(octocat, code_challenge=challenge, code_challenge_method="S256")
    first = exchange(octocat, code, verifier)
    assert first.status_code == 200
    second = exchange(octocat, code, verifier)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    access = first.json()["access_token"]
    response = octocat.get(reverse("demo_upstream:user"), HTTP_AUTHORIZATION=f"Bearer {access}")
    assert response.status_code == 401


def test_redirect_uri_must_match_the_codes(octocat):
    code = get_code(octocat)
    response = exchange(octocat, code, redirect_uri="http://127.0.0.1:8000/other/")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_expired_or_unknown_code_is_invalid_grant(octocat):
    code = get_code(octocat)
    AuthorizationCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = exchange(octocat, code)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    response = exchange(octocat, "not-a-code")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("grant_type", ["password", "client_credentials", "implicit"])
def test_unsupported_grant_type(client, grant_type):
    response = client.post(
        reverse("demo_upstream:access_token"),
        {"grant_type": grant_type},
        HTTP_AUTHORIZATION=basic(),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_token_endpoint_rejects_get(client):
    response = client.get(reverse("demo_upstream:access_token"))
    assert response.status_code == 405


def refresh(client: Client, refresh_token: str, **extra):
    return client.post(
        reverse("demo_upstream:access_token"),
        {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra},
        HTTP_AUTHORIZATION=basic(),
    )


def test_refresh_rotates_the_refresh_token(octocat):
    first = tokens_for(octocat)
    response = refresh(octocat, first["refresh_token"])
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == first["scope"]
    assert second["expires_in"] == 28800
    assert second["token_type"] == "bearer"
    user_url = reverse("demo_upstream:user")
    new_access = f"Bearer {second['access_token']}"
    assert octocat.get(user_url, HTTP_AUTHORIZATION=new_access).status_code == 200
    # The old refresh token is refused after rotation...
    response = refresh(octocat, first["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    # ...and its reuse revokes the whole family (RFC 9700 refresh token reuse detection).
    assert octocat.get(user_url, HTTP_AUTHORIZATION=new_access).status_code == 401
    assert refresh(octocat, second["refresh_token"]).status_code == 400


def test_refresh_can_narrow_but_not_widen_scope(octocat):
    first = tokens_for(octocat)
    response = refresh(octocat, first["refresh_token"], scope="repo:write")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    response = refresh(octocat, first["refresh_token"], scope="read:user")
    assert response.status_code == 200
    assert response.json()["scope"] == "read:user"


def test_refresh_with_wrong_client_secret_is_401(octocat):
    first = tokens_for(octocat)
    response = octocat.post(
        reverse("demo_upstream:access_token"),
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        HTTP_AUTHORIZATION=basic(secret="nope"),
    )
    assert response.status_code == 401


# --- /user ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "token"])
def test_user_with_good_token(octocat, scheme):
    access = tokens_for(octocat)["access_token"]
    response = octocat.get(reverse("demo_upstream:user"), HTTP_AUTHORIZATION=f"{scheme} {access}")
    assert response.status_code == 200
    data = response.json()
    account = Account.objects.get(login="octocat")
    assert data == {
        "id": account.pk,
        "login": "octocat",
        "name": account.name,
        "email": account.email,
    }
    assert isinstance(data["id"], int)


@pytest.mark.parametrize(
    "header", [None, "Bearer ", "Bearer not-a-token", "Basic b2N0b2NhdDpkZW1v", "Bearer"]
)
def test_user_with_bad_token_is_401(client, header):
    kwargs = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = client.get(reverse("demo_upstream:user"), **kwargs)
    assert response.status_code == 401
    assert response.json() == {"message": "Bad credentials"}


def test_user_with_expired_token_is_401(octocat):
    access = tokens_for(octocat)["access_token"]
    Token.objects.update(access_expires_at=timezone.now() - timedelta(seconds=1))
    response = octocat.get(reverse("demo_upstream:user"), HTTP_AUTHORIZATION=f"Bearer {access}")
    assert response.status_code == 401


# --- revoke ---------------------------------------------------------------------------------


def revoke(client: Client, token: str, auth: str | None = None):
    return client.post(
        reverse("demo_upstream:revoke"), {"token": token}, HTTP_AUTHORIZATION=auth or basic()
    )


def test_revoke_access_token_then_user_is_401(octocat):
    access = tokens_for(octocat)["access_token"]
    user_url = reverse("demo_upstream:user")
    assert octocat.get(user_url, HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 200
    assert revoke(octocat, access).status_code == 200
    assert octocat.get(user_url, HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 401


def test_revoke_refresh_token_revokes_its_access_tokens(octocat):
    tokens = tokens_for(octocat)
    assert revoke(octocat, tokens["refresh_token"]).status_code == 200
    response = octocat.get(
        reverse("demo_upstream:user"), HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}"
    )
    assert response.status_code == 401
    assert refresh(octocat, tokens["refresh_token"]).status_code == 400


def test_revoke_unknown_token_is_200(client):
    assert revoke(client, "unknown-token").status_code == 200


def test_revoke_requires_client_authentication(octocat):
    access = tokens_for(octocat)["access_token"]
    response = revoke(octocat, access, auth=basic(secret="wrong"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    user_url = reverse("demo_upstream:user")
    assert octocat.get(user_url, HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 200


# --- api/items ------------------------------------------------------------------------------


def test_items_with_repo_read_scope(octocat):
    access = tokens_for(octocat, scope="read:user repo:read")["access_token"]
    response = octocat.get(reverse("demo_upstream:items"), HTTP_AUTHORIZATION=f"Bearer {access}")
    assert response.status_code == 200
    items = response.json()
    own = list(Item.objects.filter(account__login="octocat").values("id", "title"))
    assert items == own
    assert len(items) >= 2
    assert not any(i["title"] in {"Deploy the chat bot"} for i in items)


def test_items_without_repo_read_scope_is_403(octocat):
    access = tokens_for(octocat, scope="read:user")["access_token"]
    response = octocat.get(reverse("demo_upstream:items"), HTTP_AUTHORIZATION=f"Bearer {access}")
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response["WWW-Authenticate"]


def test_items_with_bad_token_is_401(client):
    response = client.get(reverse("demo_upstream:items"), HTTP_AUTHORIZATION="Bearer nope")
    assert response.status_code == 401


# --- request log ----------------------------------------------------------------------------


def test_every_request_writes_one_log_row_without_secret_values(octocat):
    RequestLog.objects.all().delete()
    verifier, challenge = pkce_pair()
    url = authorize_url(code_challenge=challenge, code_challenge_method="S256")
    octocat.get(url)  # consent page
    response = octocat.post(
        reverse("demo_upstream:authorize"), {**query_of(url), "decision": "authorize"}
    )
    code = query_of(response["Location"])["code"]
    tokens = exchange(octocat, code, verifier).json()
    octocat.get(
        reverse("demo_upstream:user"), HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}"
    )
    octocat.get(f"{reverse('demo_upstream:user')}?{tokens['access_token']}=1")
    octocat.get(reverse("demo_upstream:revoke"))  # 405, still logged

    logs = list(RequestLog.objects.order_by("id"))
    assert [(log.method, log.endpoint, log.status_code) for log in logs] == [
        ("GET", "authorize", 200),
        ("POST", "authorize", 302),
        ("POST", "access_token", 200),
        ("GET", "user", 200),
        ("GET", "user", 401),
        ("GET", "revoke", 405),
    ]
    assert logs[0].path == reverse("demo_upstream:authorize")
    assert logs[0].query_params.split() == [
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    ]
    assert "code_verifier" in logs[2].body_params.split()
    assert logs[2].auth_scheme == "Basic"
    assert logs[3].auth_scheme == "Bearer"
    assert logs[4].query_params == "?"
    secret_values = [
        code,
        verifier,
        challenge,
        tokens["access_token"],
        CLIENT_SECRET,
        "state-123",
        REDIRECT_URI,
    ]
    for log in logs:
        text = " ".join(
            str(v) for v in (log.path, log.query_params, log.body_params, log.auth_scheme)
        )
        for value in secret_values:
            assert value not in text


def test_remembered_consent_redirect_is_logged(octocat):
    approve(octocat)
    before = RequestLog.objects.count()
    octocat.get(authorize_url())
    assert RequestLog.objects.count() == before + 1
    assert RequestLog.objects.order_by("-id").first().status_code == 302


def test_login_requests_are_logged_without_password(client):
    RequestLog.objects.all().delete()
    client.get(reverse("demo_upstream:login"))
    login(client, password="s3cret-typo")
    assert RequestLog.objects.filter(endpoint="login").count() == 2
    assert all("s3cret" not in log.body_params for log in RequestLog.objects.all())


# --- account page ---------------------------------------------------------------------------


def test_forget_consent_asks_again_and_revokes_tokens(octocat):
    tokens = tokens_for(octocat)
    home = octocat.get(reverse("demo_upstream:home"))
    assert b"repo:read" in home.content
    response = octocat.post(reverse("demo_upstream:forget_consent"))
    assert response.status_code == 302
    assert octocat.get(authorize_url()).status_code == 200
    response = octocat.get(
        reverse("demo_upstream:user"), HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}"
    )
    assert response.status_code == 401


def test_logout_clears_the_login(octocat):
    response = octocat.post(reverse("demo_upstream:logout"))
    assert response.status_code == 302
    response = octocat.get(authorize_url())
    assert response["Location"].startswith(reverse("demo_upstream:login"))
