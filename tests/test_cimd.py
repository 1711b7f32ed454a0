"""Client ID Metadata Documents: an https client_id that DOT fetches, under our policy.

No test opens a socket. Document fetches are answered by patching
``oauth2_provider.cimd.SafeMetadataFetcher.fetch`` (the parent our ``CIMDMetadataFetcher``
calls through ``super().fetch``); DOT's URL and address validation is exercised unpatched
with the resolver and ``socket.connect`` replaced by tripwires.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.utils import timezone
from oauth2_provider.cimd import CIMDError, SafeMetadataFetcher
from oauth2_provider.models import get_application_model

from mcp_consent.models import MCPClient, RedirectURI
from tests.browser_client import pkce_pair

pytestmark = pytest.mark.django_db

Application = get_application_model()

CLIENT_ID = "https://client.example.org/mcp/client.json"
REDIRECT_URI = "https://client.example.org/oauth/callback"
LOOPBACK_URI = "http://127.0.0.1:33418/callback"


def document(client_id: str = CLIENT_ID, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "client_id": client_id,
        "client_name": "Example MCP Client",
        "client_uri": "https://client.example.org/",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
    }
    for key, value in overrides.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


class FakeFetch:
    """Stands in for the network: serves one document (or error) and counts the fetches."""

    def __init__(self, result: dict[str, Any] | Exception, max_age: int = 3600) -> None:
        self.result = result
        self.max_age = max_age
        self.calls: list[str] = []

    def __call__(self, fetcher: SafeMetadataFetcher, client_id: str) -> tuple[dict[str, Any], int]:
        self.calls.append(client_id)
        if isinstance(self.result, Exception):
            raise self.result
        return dict(self.result), self.max_age


@pytest.fixture(autouse=True)
def _forget_fetched_documents() -> Any:
    """Test isolation: the per-context store of fetched documents starts empty."""
    from mcp_consent.registration import fetched_cimd_metadata

    fetched_cimd_metadata.set(None)
    yield
    fetched_cimd_metadata.set(None)


@pytest.fixture
def serve(monkeypatch) -> Callable[..., FakeFetch]:
    def install(result: dict[str, Any] | Exception, max_age: int = 3600) -> FakeFetch:
        fake = FakeFetch(result, max_age)

        def fetch(self: SafeMetadataFetcher, client_id: str) -> tuple[dict[str, Any], int]:
            return fake(self, client_id)

        monkeypatch.setattr(SafeMetadataFetcher, "fetch", fetch)
        return fake

    return install


@pytest.fixture
def no_network(monkeypatch) -> list[tuple[Any, ...]]:
    """Fails any DNS lookup or connection; records the attempts."""
    attempts: list[tuple[Any, ...]] = []

    def refuse_lookup(*args: Any, **kwargs: Any) -> Any:
        attempts.append(("getaddrinfo", *args))
        raise AssertionError(f"DNS lookup attempted: {args!r}")

    def refuse_connect(sock: socket.socket, address: Any) -> Any:
        attempts.append(("connect", address))
        raise AssertionError(f"connection attempted to {address!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_connect)
    return attempts


@pytest.fixture
def no_connect(monkeypatch) -> list[Any]:
    """Lets numeric/patched resolution happen but fails any TCP connection."""
    attempts: list[Any] = []

    def refuse_connect(sock: socket.socket, address: Any) -> Any:
        attempts.append(address)
        raise AssertionError(f"connection attempted to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_connect)
    return attempts


@pytest.fixture
def numeric_resolver(monkeypatch) -> list[str]:
    """The real resolver, limited to numeric hosts (AI_NUMERICHOST): no DNS query can leave."""
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        kwargs.pop("flags", None)
        return real(host, port, *args, flags=socket.AI_NUMERICHOST, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return looked_up


def authorize(
    client: Any, client_id: str = CLIENT_ID, redirect_uri: str = REDIRECT_URI, **extra: str
) -> Any:
    _verifier, challenge = pkce_pair()
    params = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st-cimd",
        **extra,
    }
    return client.get("/authorize/?" + urlencode(params))


def assert_refused(response: Any) -> None:
    """AS-50: an unusable client is an error page, never a redirect anywhere."""
    assert response.status_code == 400, response.content
    assert "Location" not in response
    assert "This sign-in request is not valid" in response.content.decode()


def assert_no_client(client_id: str = CLIENT_ID) -> None:
    assert not Application.objects.filter(client_id=client_id).exists()
    assert not MCPClient.objects.filter(application__client_id=client_id).exists()


# --- First sight ----------------------------------------------------------------------------------


def test_cd_05_fresh_cimd_client_gets_the_consent_page(client, serve, upstream_http):
    """CD-05 / CIMD-01 / CIMD-11: a fresh CIMD URL is fetched once and gets the consent page."""
    fake = serve(document())
    response = authorize(client)
    assert response.status_code == 200, response.content
    assert "Location" not in response
    html = response.content.decode()
    assert "Example MCP Client" in html
    assert "Domain verified" in html
    assert "<strong>client.example.org</strong>" in html
    assert fake.calls == [CLIENT_ID]
    assert upstream_http.requests == []  # CD-02: nothing reached the upstream


def test_cimd_accepted_client_is_recorded(client, serve):
    """CIMD-01: an accepted document gives an Application, a 'cimd' MCPClient and RedirectURI rows."""
    serve(document(redirect_uris=[REDIRECT_URI, LOOPBACK_URI]))
    assert authorize(client).status_code == 200

    application = Application.objects.get(client_id=CLIENT_ID)
    assert application.registration_source == Application.RegistrationSource.CIMD
    assert application.client_type == Application.CLIENT_PUBLIC
    assert application.redirect_uris.split() == [REDIRECT_URI, LOOPBACK_URI]
    mcp_client = MCPClient.objects.get(application=application)
    assert mcp_client.registration_source == "cimd"
    assert mcp_client.verified is True
    assert mcp_client.metadata_version == 1
    assert list(mcp_client.redirect_uris.values_list("uri", flat=True)) == [
        REDIRECT_URI,
        LOOPBACK_URI,
    ]
    assert RedirectURI.objects.filter(client=mcp_client, removed_at__isnull=True).count() == 2


def test_cimd_08_cached_document_is_not_refetched(client, serve):
    """CIMD-08: within its max-age the stored document is used without a fetch."""
    fake = serve(document(), max_age=3600)
    assert authorize(client).status_code == 200
    assert authorize(client).status_code == 200
    assert fake.calls == [CLIENT_ID]


def test_cd_05_cimd_client_without_a_usable_name_shows_hostname(client, serve):
    """CD-10 / CIMD-11: the page always names the verified domain of a CIMD client."""
    serve(document(client_name="Totally Official GitHub App"))
    html = authorize(client).content.decode()
    assert "Totally Official GitHub App" in html
    assert "client.example.org" in html


# --- CIMD-02: the client_id URL -----------------------------------------------------------------


BAD_CLIENT_IDS = [
    pytest.param("https://client.example.org", id="no-path"),
    pytest.param("https://user:pass@client.example.org/client.json", id="userinfo"),
    pytest.param("https://client.example.org/a/../client.json", id="dot-dot"),
    pytest.param("https://client.example.org/./client.json", id="dot"),
    pytest.param("https://client.example.org/client.json#frag", id="fragment"),
    pytest.param("https://client.example.org:99999/client.json", id="bad-port"),
    pytest.param("HTTPS://client.example.org:0x1bb/client.json", id="hex-port"),
]


@pytest.mark.parametrize("client_id", BAD_CLIENT_IDS)
def test_cimd_02_bad_client_id_url_is_refused_without_network(client, no_network, client_id):
    """CIMD-02: malformed client_id URLs are refused before any DNS lookup or connection."""
    response = authorize(client, client_id=client_id)
    assert_refused(response)
    assert no_network == []
    assert_no_client(client_id)


@pytest.mark.parametrize(
    "client_id",
    [
        "https://client.example.org/a/%2e%2e/client.json",
        "https://client.example.org/%2E/client.json",
    ],
)
def test_cimd_02_percent_encoded_dot_segments_are_refused_without_network(
    client, no_network, client_id
):
    """CIMD-02: a dot segment spelled with percent-encoding is still a dot segment."""
    assert_refused(authorize(client, client_id=client_id))
    assert no_network == []


@pytest.mark.parametrize(
    "client_id", ["http://client.example.org/client.json", "ftp://client.example.org/c.json"]
)
def test_ssrf_01_non_https_client_id_is_not_fetched(client, no_network, client_id):
    """SSRF-01: only https client_id URLs are CIMD; others are unknown clients, no fetch."""
    assert_refused(authorize(client, client_id=client_id))
    assert no_network == []
    assert_no_client(client_id)


@pytest.mark.parametrize("client_id", BAD_CLIENT_IDS[:5])
def test_cimd_02_dot_validates_the_url_inside_fetch(no_network, client_id):
    """CIMD-02: the fetcher itself (ours, through DOT's) refuses the URL with CIMDError."""
    from mcp_consent.registration import CIMDMetadataFetcher

    with pytest.raises(CIMDError):
        CIMDMetadataFetcher().fetch(client_id)
    assert no_network == []


# --- SSRF-02: DOT's resolver refuses non-public destinations ------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/c.json",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:127.0.0.1]/c.json",
        "https://[::1]/c.json",
        "https://10.0.0.5/c.json",
        "https://192.168.1.1/c.json",
        "https://[fd00::1]/c.json",
        "https://[64:ff9b::a9fe:a9fe]/c.json",
        "https://0.0.0.0/c.json",
        "https://0x7f000001/c.json",
        "https://2130706433/c.json",
        "https://127.1/c.json",
        "https://0177.0.0.1/c.json",
    ],
)
def test_ssrf_02_private_addresses_are_refused_without_connecting(
    numeric_resolver, no_connect, url
):
    """SSRF-02 / CIMD-09: loopback, link-local, private and mapped addresses: CIMDError, no TCP."""
    with pytest.raises(CIMDError):
        SafeMetadataFetcher().fetch(url)
    assert no_connect == []


def test_ssrf_02_hostname_resolving_to_private_address_is_refused(monkeypatch, no_connect):
    """SSRF-02: the check is on the resolved address, so a public-looking name does not help."""
    looked_up: list[str] = []

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        looked_up.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(CIMDError):
        SafeMetadataFetcher().fetch("https://internal.client.example/c.json")
    assert looked_up == ["internal.client.example"]
    assert no_connect == []


def test_ssrf_02_one_private_address_among_public_ones_refuses_the_host(monkeypatch, no_connect):
    """SSRF-02: a split public/private answer cannot smuggle a connection inside."""

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(CIMDError):
        SafeMetadataFetcher().fetch("https://mixed.client.example/c.json")
    assert no_connect == []


def test_ssrf_02_cimd_client_on_private_address_gets_an_error_page(
    client, numeric_resolver, no_connect
):
    """SSRF-02 / CIMD-07: through /authorize the refused fetch is an unknown client, no row."""
    client_id = "https://127.0.0.1/client.json"
    assert_refused(authorize(client, client_id=client_id))
    assert no_connect == []
    assert_no_client(client_id)


# --- Documents DOT or our policy refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(
            document(client_id="https://client.example.org/other.json"),
            id="CIMD-03 other client_id",
        ),
        pytest.param(
            document(client_id="https://CLIENT.example.org/mcp/client.json"),
            id="CIMD-03 case differs",
        ),
        pytest.param(document(client_id=None), id="CIMD-03/04 no client_id"),
        pytest.param(document(client_name=None), id="CIMD-04 no client_name"),
        pytest.param(document(client_name="   "), id="CIMD-04 blank client_name"),
        pytest.param(document(redirect_uris=None), id="CIMD-04 no redirect_uris"),
        pytest.param(document(redirect_uris=[]), id="CIMD-04 empty redirect_uris"),
        pytest.param(
            document(token_endpoint_auth_method="client_secret_post"),
            id="CIMD-06 client_secret_post",
        ),
        pytest.param(
            document(token_endpoint_auth_method="client_secret_basic"),
            id="CIMD-06 client_secret_basic",
        ),
        pytest.param(document(client_secret="s3cret"), id="CIMD-06 client_secret"),
        pytest.param(document(client_secret_expires_at=0), id="CIMD-06 client_secret_expires_at"),
        pytest.param(
            document(redirect_uris=["http://evil.example/cb"]), id="DCR-11 http off loopback"
        ),
        pytest.param(document(redirect_uris=["javascript:alert(1)"]), id="URL-02 javascript"),
        pytest.param(
            document(redirect_uris=["https://client.example.org:*/cb"]), id="DCR-14 port wildcard"
        ),
        pytest.param(
            document(grant_types=["authorization_code", "implicit"]), id="DCR-15 implicit"
        ),
        pytest.param(document(client_name="X" * 81), id="DCR-19 long name"),
    ],
)
def test_cimd_refused_document_leaves_no_client(client, serve, doc):
    """CIMD-03 / CIMD-04 / CIMD-06 / our policy: a refused document is an error page, no rows."""
    fake = serve(doc)
    response = authorize(client, redirect_uri=(doc.get("redirect_uris") or [REDIRECT_URI])[0])
    assert_refused(response)
    assert fake.calls == [CLIENT_ID]
    assert_no_client()


def test_cimd_07_failed_fetch_is_an_error_page_and_backs_off(client, serve):
    """CIMD-07: a failed fetch aborts the request (error page, no row) and is not retried at once."""
    fake = serve(CIMDError("client_id document returned HTTP 500"))
    assert_refused(authorize(client))
    assert_refused(authorize(client))
    assert fake.calls == [CLIENT_ID]
    assert_no_client()


def test_cimd_05_redirect_uri_must_be_in_the_document(client, serve):
    """CIMD-05 / CD-30: a redirect_uri the document does not list gets an error page, no redirect."""
    serve(document())
    for redirect_uri in [
        "https://attacker.example/cb",
        "https://client.example.org/oauth/callback/",
        "https://client.example.org/oauth/callback?x=1",
    ]:
        assert_refused(authorize(client, redirect_uri=redirect_uri))


# --- CIMD-12: re-fetched documents ---------------------------------------------------------------


def expire(client_id: str = CLIENT_ID) -> None:
    Application.objects.filter(client_id=client_id).update(
        cimd_expires_at=timezone.now() - timedelta(seconds=1)
    )


def test_cimd_12_changed_name_is_refetched_and_shown(client, serve):
    """CIMD-12: after max-age the document is fetched again and the page shows the new name."""
    serve(document())
    assert authorize(client).status_code == 200

    expire()
    fake = serve(document(client_name="Renamed MCP Client"))
    response = authorize(client)
    assert response.status_code == 200
    assert fake.calls == [CLIENT_ID]
    html = response.content.decode()
    assert "Renamed MCP Client" in html
    assert "Example MCP Client" not in html
    assert Application.objects.get(client_id=CLIENT_ID).name == "Renamed MCP Client"


def test_cimd_12_changed_name_bumps_metadata_version(client, serve):
    """CIMD-12 / CD-04: a re-fetched document with another name is a new version of the client."""
    serve(document())
    assert authorize(client).status_code == 200
    mcp_client = MCPClient.objects.get(application__client_id=CLIENT_ID)
    assert mcp_client.metadata_version == 1

    expire()
    serve(document(client_name="Renamed MCP Client"))
    assert authorize(client).status_code == 200
    mcp_client.refresh_from_db()
    assert mcp_client.metadata_version == 2


def test_cimd_12_approval_of_a_page_shown_before_a_rename_is_not_accepted(client, serve):
    """CIMD-12 / CD-10: approving a page that showed the old name must re-ask, not go upstream."""
    serve(document())
    _verifier, challenge = pkce_pair()
    query = urlencode(
        {
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "st-cimd",
        }
    )
    page = client.get("/authorize/?" + query)
    assert page.status_code == 200
    fingerprint = re.search(r'name="fingerprint" value="([0-9a-f]+)"', page.content.decode()).group(
        1
    )

    expire()
    serve(document(client_name="Renamed MCP Client"))
    response = client.post(
        "/authorize/?" + query, {"decision": "approve", "fingerprint": fingerprint}
    )
    assert response.status_code == 409
    assert "Location" not in response
    assert "Renamed MCP Client" in response.content.decode()


def test_cimd_12_changed_redirect_uris_update_the_rows(client, serve):
    """CIMD-12 / CD-31: a URI dropped from the document stops working; the history is kept."""
    serve(document(redirect_uris=[REDIRECT_URI, LOOPBACK_URI]))
    assert authorize(client).status_code == 200

    expire()
    serve(document(redirect_uris=[REDIRECT_URI]))
    assert authorize(client).status_code == 200
    mcp_client = MCPClient.objects.get(application__client_id=CLIENT_ID)
    assert mcp_client.metadata_version == 2
    rows = {row.uri: row for row in mcp_client.redirect_uris.all()}
    assert rows[LOOPBACK_URI].removed_at is not None
    assert rows[REDIRECT_URI].removed_at is None
    assert_refused(authorize(client, redirect_uri=LOOPBACK_URI))


def test_cimd_12_unchanged_document_keeps_metadata_version(client, serve):
    """CIMD-12: a re-fetch that changes nothing shown does not invalidate consents."""
    serve(document())
    assert authorize(client).status_code == 200
    expire()
    fake = serve(document())
    assert authorize(client).status_code == 200
    assert fake.calls == [CLIENT_ID]
    assert MCPClient.objects.get(application__client_id=CLIENT_ID).metadata_version == 1


def test_cimd_12_refetch_refused_by_policy_keeps_the_last_good_document(client, serve):
    """CIMD-07 / CIMD-12: a re-fetched document that breaks our policy changes nothing."""
    serve(document())
    assert authorize(client).status_code == 200
    expire()
    serve(document(redirect_uris=["http://evil.example/cb"], client_name="Evil"))
    authorize(client)
    application = Application.objects.get(client_id=CLIENT_ID)
    assert application.redirect_uris.split() == [REDIRECT_URI]
    assert application.name == "Example MCP Client"
    assert not RedirectURI.objects.filter(uri="http://evil.example/cb").exists()


def test_cimd_03_refetched_document_with_other_client_id_changes_nothing(client, serve):
    """CIMD-03 / CIMD-12: a re-fetched document naming another client_id is refused entirely."""
    serve(document())
    assert authorize(client).status_code == 200
    expire()
    serve(
        document(
            client_id="https://client.example.org/other.json",
            client_name="Changed By Refused Document",
            redirect_uris=["https://elsewhere.example/cb"],
        )
    )
    authorize(client)
    application = Application.objects.get(client_id=CLIENT_ID)
    mcp_client = MCPClient.objects.get(application=application)
    assert application.name == "Example MCP Client"
    assert application.redirect_uris.split() == [REDIRECT_URI]
    assert mcp_client.metadata["redirect_uris"] == [REDIRECT_URI]
    assert mcp_client.metadata_version == 1
    assert not RedirectURI.objects.filter(uri="https://elsewhere.example/cb").exists()


class _FakeResponse:
    """What SafeMetadataFetcher._read_document reads of a urllib3 response."""

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        content_type: str = "application/json",
        cache_control: str | None = None,
    ) -> None:
        self.status = status
        self.headers = {"Content-Type": content_type}
        if cache_control is not None:
            self.headers["Cache-Control"] = cache_control
        self._body = body

    def read(self, amount: int) -> bytes:
        return self._body[:amount]


def test_cimd_10_documents_larger_than_5_kb_are_refused(settings) -> None:
    """CIMD-10 / SSRF-06: the document size is capped (5 KB, as the draft recommends)."""
    assert settings.OAUTH2_PROVIDER["CIMD_MAX_DOCUMENT_SIZE"] == 5 * 1024
    padding = "x" * (5 * 1024)
    with pytest.raises(CIMDError, match="maximum allowed size"):
        SafeMetadataFetcher()._read_document(
            _FakeResponse(json.dumps({"client_name": padding}).encode())
        )
    small, _age = SafeMetadataFetcher()._read_document(_FakeResponse(b'{"client_name": "ok"}'))
    assert small == {"client_name": "ok"}


@pytest.mark.parametrize(
    ("cache_control", "lifetime"),
    [
        ("public, max-age=600", 600),  # the document's own lifetime
        ("max-age=31536000", 86400),  # a year is cut to the bounded lifetime (a day)
        ("max-age=0", 300),  # re-fetched at most every 5 minutes, not on every request
        ("no-store", 300),
        ("no-cache", 300),
        (None, 86400),  # no header: the longest lifetime, still bounded
    ],
)
def test_cimd_08_documents_are_cached_per_their_cache_headers_within_bounds(
    cache_control, lifetime
) -> None:
    """CIMD-08 / ABUSE-04: a document's Cache-Control sets how long it is used without a
    fetch, clamped to [CIMD_METADATA_MIN_AGE_SECONDS, CIMD_METADATA_MAX_AGE_SECONDS] so a
    client can make us neither fetch on every authorization nor keep a document forever."""
    _document, age = SafeMetadataFetcher()._read_document(
        _FakeResponse(b'{"client_name": "ok"}', cache_control=cache_control)
    )
    assert age == lifetime


def test_cimd_07_only_200_json_is_a_document() -> None:
    """CIMD-07: any other status (a redirect included) or a non-JSON type is an error."""
    for response in (
        _FakeResponse(b"{}", status=302),
        _FakeResponse(b"{}", status=500),
        _FakeResponse(b"{}", content_type="text/html"),
    ):
        with pytest.raises(CIMDError):
            SafeMetadataFetcher()._read_document(response)


# --- ABUSE-04 / SSRF-06: fetched only while authorizing ------------------------------------------


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/revoke/", {"token": "junk", "client_id": CLIENT_ID}),
        (
            "/token/",
            {"grant_type": "authorization_code", "code": "junk", "client_id": CLIENT_ID},
        ),
        ("/introspect/", {"token": "junk", "client_id": CLIENT_ID}),
    ],
)
def test_abuse_04_unknown_url_client_id_is_never_fetched_outside_authorize(
    client, serve, path, data
):
    """ABUSE-04 / SSRF-06: anonymous requests cannot send our fetcher anywhere or add rows."""
    fake = serve(document())
    response = client.post(path, data)
    assert response.status_code < 500
    assert fake.calls == []
    assert_no_client()


def test_abuse_04_stale_document_is_not_refetched_from_token(client, serve):
    """ABUSE-04: a known client's stale document is refetched at /authorize, not at /token."""
    fake = serve(document(), max_age=300)
    assert authorize(client).status_code == 200
    Application.objects.filter(client_id=CLIENT_ID).update(
        cimd_expires_at=timezone.now() - timedelta(seconds=1)
    )
    client.post(
        "/token/", {"grant_type": "authorization_code", "code": "x", "client_id": CLIENT_ID}
    )
    assert fake.calls == [CLIENT_ID]
    assert authorize(client).status_code == 200
    assert fake.calls == [CLIENT_ID, CLIENT_ID]


def test_abuse_03_first_sight_of_a_cimd_client_counts_against_the_address(client, serve, settings):
    """ABUSE-03: CIMD clients share the per-address budget of never-used clients."""
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "MAX_UNUSED_CLIENTS_PER_ADDRESS": 1}
    serve(document())
    assert authorize(client).status_code == 200
    assert MCPClient.objects.get().registered_from == "127.0.0.1"
    other = "https://other.example.org/mcp/client.json"
    serve(document(client_id=other))
    assert_refused(authorize(client, client_id=other))
    assert_no_client(other)
    # The known client still works: a refetch is no new registration.
    assert authorize(client).status_code == 200


# --- CIMD-13: the operators' trust policy --------------------------------------------------------


def test_cimd_13_blocked_domain_gets_a_clear_page_and_no_fetch(client, serve):
    from mcp_consent.models import CIMDDomainRule

    CIMDDomainRule.objects.create(domain=".example.org", policy="block")
    fake = serve(document())
    response = authorize(client)
    assert response.status_code == 403
    assert "Location" not in response
    assert "do not allow applications from client.example.org" in response.content.decode()
    assert fake.calls == []
    assert_no_client()


def test_cimd_13_blocking_a_known_client_stops_it(client, serve):
    from mcp_consent.models import CIMDDomainRule

    serve(document())
    assert authorize(client).status_code == 200
    CIMDDomainRule.objects.create(domain="client.example.org", policy="block")
    assert authorize(client).status_code == 403
    token = client.post(
        "/token/", {"grant_type": "authorization_code", "code": "x", "client_id": CLIENT_ID}
    )
    assert token.json()["error"] == "invalid_client"


def test_cimd_13_with_allow_rules_only_listed_domains_are_fetched(client, serve):
    from mcp_consent.models import CIMDDomainRule

    CIMDDomainRule.objects.create(domain="trusted.example.net", policy="allow")
    fake = serve(document())
    assert authorize(client).status_code == 403
    assert fake.calls == []
    CIMDDomainRule.objects.create(domain="CLIENT.example.org", policy="allow")
    assert authorize(client).status_code == 200
    assert fake.calls == [CLIENT_ID]


def test_cimd_08_the_callback_leaves_a_stale_document_to_dots_own_load(serve, monkeypatch):
    """CIMD-08 (da0a09d): at the upstream callback, a CIMD client whose document went stale
    while the person was at the upstream is loaded by DOT itself, whose load is where a stale
    document is refreshed, not taken from the client the callback read with its transaction
    (oauth.known_client, kept for DCR clients). ABUSE-04 then refuses the fetch outside
    /authorize, so the last good document is kept and the sign-in completes."""
    from oauth2_provider import cimd as dot_cimd

    from tests.browser_client import Browser, code_from

    fake = serve(document(), max_age=300)
    browser = Browser()
    browser.login_upstream()
    _verifier, challenge = pkce_pair()
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st-cimd",
    }
    page = browser.authorize(params)
    assert page.status_code == 200, page.content[:300]
    to_upstream = browser.post_form(page, "approve")
    assert to_upstream.status_code == 303
    to_callback = browser.through_upstream(to_upstream["Location"])
    expire()  # stale while the person was at the upstream
    refetch = serve(document(client_name="Renamed MCP Client"), max_age=300)
    consulted: list[str] = []
    refresh_if_stale = dot_cimd.refresh_if_stale

    def spy(application: Any, request: Any) -> Any:
        consulted.append(application.client_id)
        return refresh_if_stale(application, request)

    monkeypatch.setattr(dot_cimd, "refresh_if_stale", spy)
    final = browser.get(to_callback["Location"])
    assert final.status_code == 302, final.content[:300]
    assert final["Location"].startswith(REDIRECT_URI + "?")
    assert code_from(final)
    assert CLIENT_ID in consulted, "the callback reused its in-memory client: no refresh"
    assert fake.calls == [CLIENT_ID]  # the one fetch, at /authorize
    assert refetch.calls == []  # ABUSE-04: no fetch at the callback
    assert Application.objects.get(client_id=CLIENT_ID).name == "Example MCP Client"
