"""The packaging test: docs/quickstart.md, followed as written, on the built wheel.

1. Build the wheel (hatchling, through ``pip wheel``) and check what it holds: the
   ``mcp_consent`` package, all of it (templates, static files, migrations, translations),
   and nothing else (no demo project, tests or docs).
2. Follow docs/quickstart.md in an empty directory: its ``shell`` blocks line by line (a fresh
   virtualenv, ``pip install`` of that wheel, ``django-admin startproject``, the key command,
   ``migrate``, ``check``, uvicorn) and its file blocks (appended to or replacing the files
   they name). The snippets are read from the document, marked there with
   ``<!-- quickstart:... -->`` comments, so the document cannot drift from what works.
3. The only departures, both printed: the GitHub app's placeholder credentials and GitHub's
   URLs point at a local GitHub-like fake (``FakeGitHub`` below), and uvicorn listens on a
   free port (``PUBLIC_BASE_URL`` follows it).
4. Against the running project: one whole authorization as an MCP client and a browser do it
   (registration, consent page, approve, upstream, callback, token) and an MCP ``tools/call``
   with the issued token, whose tool calls the fake's API with the upstream token.

Run: ``make test-packaging`` (``.ci/run`` does). Prints ``PACKAGING TEST PASSED`` at the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import requests

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "docs" / "quickstart.md"
BLOCK = re.compile(
    r"<!-- quickstart:(?P<action>[a-z]+)(?: (?P<path>\S+))? -->\n```[a-z]*\n(?P<body>.*?)```",
    re.S,
)
STEP_TIMEOUT = 300  # seconds for any one command (pip install is the slowest)


def say(message: str) -> None:
    print(f"packaging: {message}", flush=True)


def fail(message: str) -> None:
    print(f"PACKAGING TEST FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(condition: Any, message: str) -> None:
    if not condition:
        fail(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- 1. the wheel -------------------------------------------------------------------------------


def package_files() -> set[str]:
    """Every file of the mcp_consent package in the source tree (tracked or new, not ignored)."""
    listed = subprocess.run(  # noqa: S603 - fixed argv
        [shutil.which("git") or "git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        name
        for name in listed
        if name.startswith("mcp_consent/") and (REPO / name).is_file() and "__pycache__" not in name
    }


def build_wheel(out: Path) -> Path:
    subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
        timeout=STEP_TIMEOUT,
    )
    wheels = list(out.glob("mcp_consent-*.whl"))
    check(len(wheels) == 1, f"expected one wheel, got {wheels}")
    return wheels[0]


def check_wheel(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = {n for n in names if n.split("/")[0].endswith(".dist-info")}
    outside = sorted(n for n in names - dist_info if not n.startswith("mcp_consent/"))
    check(not outside, f"the wheel holds files outside mcp_consent/: {outside[:10]}")
    expected = package_files()
    missing = sorted(expected - names)
    check(not missing, f"the wheel lacks package files: {missing[:10]}")
    extra = sorted(n for n in names - dist_info - expected)
    check(not extra, f"the wheel holds files that are not in the source tree: {extra[:10]}")
    for required in (
        "mcp_consent/templates/mcp_consent/consent.html",
        "mcp_consent/migrations/0001_initial.py",
    ):
        check(required in names, f"the wheel lacks {required}")
    kinds = sorted({n.split("/")[1] for n in names - dist_info if n.count("/") > 1})
    say(
        f"wheel {wheel.name}: {len(names - dist_info)} files of mcp_consent only ({', '.join(kinds)})"
    )


# --- 2. the quickstart ----------------------------------------------------------------------------


def quickstart_blocks() -> list[dict[str, str]]:
    blocks = [m.groupdict() for m in BLOCK.finditer(QUICKSTART.read_text())]
    actions = [b["action"] for b in blocks]
    check("shell" in actions and "append" in actions, f"no marked blocks in {QUICKSTART}")
    return blocks


class Project:
    """An empty directory in which the quickstart's commands run, as in one shell session."""

    def __init__(self, root: Path, wheel: Path, fake: FakeGitHub, port: int) -> None:
        self.root = root
        self.wheel = wheel
        self.fake = fake
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        venv_bin = root / ".venv" / "bin"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "VIRTUAL_ENV"))},
            "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
            "VIRTUAL_ENV": str(root / ".venv"),
            "PUBLIC_BASE_URL": self.base,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.env.pop("PYTHONPATH", None)
        self.server: subprocess.Popen[bytes] | None = None

    def bash(self, line: str) -> str:
        result = subprocess.run(  # noqa: S603 - the quickstart's own lines, in a scratch dir
            ["bash", "-euo", "pipefail", "-c", line],  # noqa: S607
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
        )
        if result.returncode != 0:
            fail(f"`{line}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def run_line(self, line: str) -> None:
        if line.startswith("pip install"):
            # The wheel just built instead of the release on the package index.
            line = line.replace('"mcp-consent[mcp]"', f'"mcp-consent[mcp] @ {self.wheel.as_uri()}"')
            check("@ file://" in line, f"unexpected install line: {line}")
        export = re.fullmatch(r'export (\w+)="(.*)"', line)
        if export:
            name, value = export.groups()
            if value.startswith("<"):
                # A placeholder for the GitHub app's credentials: the fake's.
                value = self.fake.credentials[name]
                say(f"{name}: the fake GitHub app's (the document says {export.group(2)})")
            elif value.startswith("$("):
                value = self.bash(f'echo "{value}"').strip()
                check(value, f"`{line}` printed nothing")
                say(f"{name}: {len(value)} characters from `{export.group(2)}`")
            self.env[name] = value
            return
        if line.startswith("uvicorn "):
            command = re.sub(r"--port \d+", f"--port {self.port}", line)
            say(f"starting `{command}`")
            self.server = subprocess.Popen(  # noqa: S603 - the quickstart's own command
                shlex.split(command),
                cwd=self.root,
                env=self.env,
                stdout=(self.root / "uvicorn.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            self.wait_until_up()
            return
        started = time.monotonic()
        self.bash(line)
        say(f"ran `{line}` ({time.monotonic() - started:.1f} s)")

    def apply_file(self, action: str, path: str, body: str) -> None:
        target = self.root / path
        check(target.is_file(), f"{path} does not exist (the quickstart {action}s it)")
        if action == "append":
            target.write_text(target.read_text() + "\n\n" + body)
        elif action == "replace":
            target.write_text(body)
        else:
            fail(f"unknown quickstart action {action!r}")
        done = {"append": "appended to", "replace": "replaced"}[action]
        say(f"{done} {path} ({body.count(chr(10))} lines from the quickstart)")
        if path.endswith("settings.py"):
            # The one test-only addition: GitHub's URLs -> the local fake (printed, not hidden).
            override = (
                "\n\n# Packaging test only: GitHub's endpoints -> the GitHub-like fake.\n"
                f"MCP_CONSENT['UPSTREAM'].update({self.fake.urls!r})\n"
            )
            target.write_text(target.read_text() + override)
            say(f"pointed the GitHub upstream at the fake on {self.fake.base}")

    def follow(self, blocks: list[dict[str, str]]) -> None:
        for block in blocks:
            if block["action"] == "shell":
                for line in block["body"].splitlines():
                    if line.strip() and not line.lstrip().startswith("#"):
                        self.run_line(line.strip())
            else:
                self.apply_file(block["action"], block["path"], block["body"])
        check(self.server is not None, "the quickstart never starts the server")

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server is not None and self.server.poll() is not None:
                fail(f"uvicorn exited:\n{(self.root / 'uvicorn.log').read_text()[-3000:]}")
            try:
                requests.get(f"{self.base}/.well-known/oauth-authorization-server", timeout=2)
                say(f"serving on {self.base}")
                return
            except requests.ConnectionError:
                time.sleep(0.3)
        fail("uvicorn did not start within 60 s")

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()


# --- 3. a GitHub-like upstream ------------------------------------------------------------------


class FakeGitHub:
    """GitHub's OAuth app endpoints as GitHub behaves: no ``iss`` in the callback, the token
    as JSON only when asked by Accept (form-encoded otherwise), errors as 200 with ``error``,
    comma-separated scopes; ``/user`` answers with the signed-in account."""

    def __init__(self) -> None:
        self.credentials = {
            "UPSTREAM_CLIENT_ID": "Iv1.fake" + secrets.token_hex(4),
            "UPSTREAM_CLIENT_SECRET": secrets.token_hex(20),
        }
        self.codes: dict[str, dict[str, str]] = {}
        self.tokens: set[str] = set()
        self.calls: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                fake.calls.append(f"GET {parts.path}")
                if parts.path == "/login/oauth/authorize":
                    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                    if q.get("client_id") != fake.credentials["UPSTREAM_CLIENT_ID"]:
                        return self.answer(404, b"unknown client", "text/plain")
                    code = secrets.token_hex(10)
                    fake.codes[code] = q
                    target = (
                        q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]})
                    )
                    return self.answer(302, b"", "text/plain", Location=target)
                if parts.path == "/user":
                    token = self.headers.get("Authorization", "").partition(" ")[2]
                    if token not in fake.tokens:
                        return self.answer(
                            401, b'{"message": "Bad credentials"}', "application/json"
                        )
                    body = {"id": 583231, "login": "octocat", "name": "The Octocat"}
                    return self.answer(200, json.dumps(body).encode(), "application/json")
                return self.answer(404, b"", "text/plain")

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                fake.calls.append(f"POST {self.path}")
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                client_id, client_secret = form.get("client_id"), form.get("client_secret")
                basic = self.headers.get("Authorization", "")
                if basic.startswith("Basic "):
                    decoded = base64.b64decode(basic[6:]).decode()
                    client_id, _, client_secret = decoded.partition(":")
                grant = fake.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                if (client_id, client_secret) != (
                    fake.credentials["UPSTREAM_CLIENT_ID"],
                    fake.credentials["UPSTREAM_CLIENT_SECRET"],
                ):
                    answer = {"error": "incorrect_client_credentials"}
                elif grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
                    answer = {"error": "bad_verification_code"}
                elif grant.get("code_challenge") != challenge.decode().rstrip("="):
                    answer = {"error": "bad_verification_code"}
                else:
                    token = "gho_" + secrets.token_hex(16)
                    fake.tokens.add(token)
                    scopes = grant.get("scope", "").replace(" ", ",")
                    answer = {"access_token": token, "token_type": "bearer", "scope": scopes}
                if "application/json" in self.headers.get("Accept", ""):
                    return self.answer(200, json.dumps(answer).encode(), "application/json")
                return self.answer(
                    200, urlencode(answer).encode(), "application/x-www-form-urlencoded"
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.urls = {
            "AUTHORIZE_URL": f"{self.base}/login/oauth/authorize",
            "TOKEN_URL": f"{self.base}/login/oauth/access_token",
            "USERINFO_URL": f"{self.base}/user",
            "API_BASE_URL": f"{self.base}/",
        }
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


# --- 4. an MCP client and a person's browser ----------------------------------------------------


class Forms(HTMLParser):
    """The hidden fields and action of the first POST form of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method", "").lower() == "post" and self.action is None:
            self.action, self.in_form = a.get("action", ""), True
        elif tag == "input" and self.in_form and a.get("type") == "hidden" and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.in_form = False


class Browser:
    """requests with redirects followed by hand and one cookie jar per host name. Browsers
    send Secure (and __Host-) cookies to http://127.0.0.1; http.cookiejar would not."""

    def __init__(self) -> None:
        self.jars: dict[str, dict[str, str]] = {}

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        jar = self.jars.setdefault(urlsplit(url).hostname or "", {})
        headers = dict(kwargs.pop("headers", {}) or {})
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        response = requests.request(
            method, url, headers=headers, allow_redirects=False, timeout=30, **kwargs
        )
        for raw in response.raw.headers.getlist("Set-Cookie"):
            cookie = SimpleCookie()
            cookie.load(raw)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0":
                    jar.pop(name, None)
                else:
                    jar[name] = morsel.value
        return response


def one_authorization_and_an_mcp_call(base: str, fake: FakeGitHub) -> None:
    metadata = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()
    check(metadata["issuer"] == base, f"metadata issuer {metadata['issuer']!r}, not {base!r}")
    mcp = f"{base}/mcp"
    prm = requests.get(f"{base}/.well-known/oauth-protected-resource/mcp", timeout=10)
    check(prm.status_code == 200, f"protected resource metadata answered {prm.status_code}")
    check(prm.json()["resource"] == mcp, f"PRM resource {prm.json()['resource']!r}")
    unauthenticated = requests.post(
        mcp, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=30
    )
    check(
        unauthenticated.status_code == 401, f"/mcp without a token: {unauthenticated.status_code}"
    )
    challenge = unauthenticated.headers.get("WWW-Authenticate", "")
    check("resource_metadata=" in challenge, f"/mcp challenge: {challenge!r}")
    say("metadata, protected resource metadata and the 401 challenge of /mcp are right")

    redirect_uri = "http://127.0.0.1:33418/callback"
    registered = requests.post(
        metadata["registration_endpoint"],
        json={
            "client_name": "Packaging test client",
            "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "application_type": "native",
        },
        timeout=30,
    )
    check(
        registered.status_code == 201, f"registration: {registered.status_code} {registered.text}"
    )
    client_id = registered.json()["client_id"]

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge.decode().rstrip("="),
        "code_challenge_method": "S256",
        "state": "packaging-state",
        "scope": "profile:read",
        "resource": mcp,
    }
    browser = Browser()
    page = browser.request("GET", f"{metadata['authorization_endpoint']}?{urlencode(params)}")
    check(page.status_code == 200, f"authorize: {page.status_code} {page.text[:300]}")
    check("Packaging test client" in page.text, "the consent page does not name the client")
    forms = Forms()
    forms.feed(page.text)
    check(forms.action is not None, "the consent page has no form")
    approved = browser.request(
        "POST",
        urljoin(page.url, forms.action or ""),
        data={**forms.fields, "decision": "approve"},
        headers={"Origin": base, "Referer": page.url},
    )
    check(approved.status_code in (302, 303), f"approve: {approved.status_code}")
    to_github = approved.headers["Location"]
    check(to_github.startswith(fake.urls["AUTHORIZE_URL"]), f"approve went to {to_github}")
    say("consent page shown and approved; the browser goes to GitHub (the fake)")
    back = browser.request("GET", to_github)
    check(back.status_code == 302, f"fake GitHub authorize: {back.status_code}")
    callback = browser.request("GET", back.headers["Location"])
    check(callback.status_code == 302, f"callback: {callback.status_code} {callback.text[:300]}")
    landing = callback.headers["Location"]
    check(landing.startswith(redirect_uri + "?"), f"callback redirected to {landing}")
    query = {k: v[0] for k, v in parse_qs(urlsplit(landing).query).items()}
    check(query.get("state") == "packaging-state", f"state came back as {query.get('state')}")
    check(query.get("iss") == base, f"iss came back as {query.get('iss')}")
    say("upstream callback done: the client got a code with its state and iss")

    tokens = requests.post(
        metadata["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
            "resource": mcp,
        },
        timeout=30,
    )
    check(tokens.status_code == 200, f"token: {tokens.status_code} {tokens.text}")
    access_token = tokens.json()["access_token"]
    say("token endpoint issued an access token for " + mcp)

    call = requests.post(
        mcp,
        json={
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "whoami", "arguments": {}},
        },
        headers={
            "Authorization": f"Bearer {access_token}",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
        },
        timeout=30,
    )
    check(call.status_code == 200, f"tools/call: {call.status_code} {call.text[:500]}")
    result = call.json().get("result", {})
    check(not result.get("isError"), f"whoami failed: {call.text[:500]}")
    check("octocat" in json.dumps(result), f"whoami answered {call.text[:500]}")
    check("GET /user" in fake.calls, "the tool did not call the upstream API")
    say("MCP tools/call whoami answered with the upstream account (octocat)")


def main() -> None:
    started = time.monotonic()
    fake = FakeGitHub()
    with tempfile.TemporaryDirectory(prefix="mcp-consent-packaging-") as scratch:
        root = Path(scratch)
        wheel = build_wheel(root / "dist")
        check_wheel(wheel)
        project_dir = root / "project"
        project_dir.mkdir()
        project = Project(project_dir, wheel, fake, free_port())
        try:
            project.follow(quickstart_blocks())
            one_authorization_and_an_mcp_call(project.base, fake)
        finally:
            project.stop()
    print(
        f"PACKAGING TEST PASSED: wheel -> fresh virtualenv -> docs/quickstart.md as written -> "
        f"one authorization and an MCP call, in {time.monotonic() - started:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
