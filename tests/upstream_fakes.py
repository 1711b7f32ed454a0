"""Stand-ins for the upstream provider's HTTP endpoints, mounted on the proxy's session.

``mcp_consent.upstream.http_session()`` is the only way the proxy reaches the upstream;
requests picks the adapter with the longest matching URL prefix, so an adapter mounted on
one endpoint URL overrides the in-process demo upstream (tests/conftest.py) for that
endpoint only. ``DjangoClientAdapter`` (conftest mounts it for every test) serves the demo
upstream in-process; ``FaultAdapter`` answers with a failure; ``RecordingAdapter`` serves the
demo upstream in-process like the conftest adapter, records requests AND responses (to
collect the upstream's secrets), and is safe to call from several threads at once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from django.test import Client
from requests.structures import CaseInsensitiveDict

from mcp_consent import upstream

UPSTREAM_ORIGIN = "http://localhost:8001"
TOKEN_URL = f"{UPSTREAM_ORIGIN}/demo-upstream/login/oauth/access_token"
USERINFO_URL = f"{UPSTREAM_ORIGIN}/demo-upstream/user"


def served_in_process(client: Client, request: requests.PreparedRequest) -> requests.Response:
    """Answer an outbound ``requests`` request with Django's test client (no socket)."""
    url = urlsplit(request.url)
    path = url.path + (f"?{url.query}" if url.query else "")
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    headers = {
        k: v for k, v in request.headers.items() if k.lower() not in {"content-length", "host"}
    }
    reply = client.generic(
        request.method or "GET",
        path,
        data=body,
        content_type=request.headers.get("Content-Type", ""),
        headers=headers,
        HTTP_HOST=url.netloc,
    )
    response = requests.Response()
    response.status_code = reply.status_code
    response._content = reply.content
    response.headers = CaseInsensitiveDict(dict(reply.items()))
    response.url = request.url or ""
    response.request = request
    return response


class DjangoClientAdapter(requests.adapters.BaseAdapter):
    """Serves the proxy's outbound requests to the demo upstream from this process.

    The demo upstream is mounted in the test URLconf under /demo-upstream/; this adapter
    lets mcp_consent.upstream talk to it through Django's test client, with no socket.
    """

    def __init__(self) -> None:
        super().__init__()
        self.client = Client()
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        self.requests.append(request)
        return served_in_process(self.client, request)

    def close(self) -> None:
        pass


def make_response(
    request: requests.PreparedRequest,
    status: int,
    body: bytes | str | dict[str, Any] | list[Any],
    content_type: str = "application/json",
) -> requests.Response:
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers = CaseInsensitiveDict({"Content-Type": content_type})
    response.url = request.url or ""
    response.request = request
    return response


class FaultAdapter(requests.adapters.BaseAdapter):
    """Answers every request with ``behaviour(request)``: a Response, or raises."""

    def __init__(self, behaviour: Callable[[requests.PreparedRequest], requests.Response]) -> None:
        super().__init__()
        self.behaviour = behaviour
        self.calls = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.calls += 1
        return self.behaviour(request)

    def close(self) -> None:
        pass


class RecordingAdapter(requests.adapters.BaseAdapter):
    """The demo upstream served in-process (one test client per thread), every exchange kept."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()
        self._lock = threading.Lock()
        self.exchanges: list[tuple[requests.PreparedRequest, requests.Response]] = []

    def _client(self) -> Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = Client()
        return client

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = served_in_process(self._client(), request)
        with self._lock:
            self.exchanges.append((request, response))
        return response

    def calls_to(self, url: str) -> int:
        with self._lock:
            return sum(1 for request, _ in self.exchanges if (request.url or "").startswith(url))

    def close(self) -> None:
        pass


@contextmanager
def mounted(prefix: str, adapter: requests.adapters.BaseAdapter) -> Iterator[Any]:
    """Mount ``adapter`` on the proxy's upstream session for URLs starting with ``prefix``."""
    session = upstream.http_session()
    previous = session.adapters.get(prefix)
    session.mount(prefix, adapter)
    try:
        yield adapter
    finally:
        session.adapters.pop(prefix, None)
        if previous is not None:
            session.mount(prefix, previous)


def revocations_at_upstream(upstream_http: Any) -> set[tuple[str, str]]:
    """(token_type_hint, hash of the token) of each RFC 7009 request the upstream received."""
    from project.demo_upstream.models import hash_secret

    sent = set()
    for request in upstream_http.requests:
        if request.url.endswith("/demo-upstream/revoke"):
            form = parse_qs(
                request.body if isinstance(request.body, str) else request.body.decode()
            )
            sent.add((form["token_type_hint"][0], hash_secret(form["token"][0])))
    return sent


def issued_by_upstream(login: str) -> set[tuple[str, str]]:
    """Both tokens of the one upstream grant issued to us for ``login``, as hashes."""
    from project.demo_upstream.models import Token

    token = Token.objects.get(account__login=login)
    return {("refresh_token", token.refresh_token_hash), ("access_token", token.access_token_hash)}
