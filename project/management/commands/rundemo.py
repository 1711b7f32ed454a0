"""`make demo`: migrate, create the demo admin, serve the proxy and the demo upstream.

Demo only: prints a fresh admin password and a PKCE pair so a person can walk the flow
with curl and a browser. Stop with Ctrl-C; both servers are stopped by their pids.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from typing import Any
from urllib.parse import quote, urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


def _wait_for(host: str, port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.2)
    return False


class Command(BaseCommand):
    help = "Run the mcp-consent demo (proxy + bundled demo upstream) on 127.0.0.1."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--no-serve", action="store_true", help="Set up and print, but do not start servers."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        base = settings.PUBLIC_BASE_URL
        public = urlsplit(base)
        if public.hostname not in {"127.0.0.1", "localhost"}:
            raise CommandError(
                "rundemo serves on 127.0.0.1 only; unset PUBLIC_BASE_URL for the demo."
            )
        call_command("migrate", interactive=False, verbosity=0)
        upstream_database = self.upstream_database_url()
        if upstream_database:
            subprocess.run(  # noqa: S603
                [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
                env={**os.environ, "DATABASE_URL": upstream_database},
                cwd=settings.BASE_DIR,
                check=True,
            )

        # One admin with one printed password in each demo database: the proxy's, and Demo
        # Hub's own when it has one, so both admins accept the printed credentials.
        password = secrets.token_urlsafe(12)
        self.set_admin_password(password, None)
        if upstream_database:
            self.set_admin_password(password, upstream_database)

        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .decode()
            .rstrip("=")
        )
        resource = settings.MCP_RESOURCE
        redirect = "http://127.0.0.1:9999/callback"
        authorize = (
            f"{base}/authorize/?response_type=code&client_id=CLIENT_ID&redirect_uri={quote(redirect, safe='')}"
            f"&code_challenge={challenge}&code_challenge_method=S256&state=demo-state&resource={quote(resource, safe='')}"
        )
        w = self.stdout.write
        w("")
        w("mcp-consent demo")
        w("================")
        w(f"  proxy (authorization server)  {base}/")
        w(f"  metadata                      {base}/.well-known/oauth-authorization-server")
        w(
            f"  admin                         {base}/admin/   user: admin   password: {password}   (demo only)"
        )
        w(f"  upstream callback to register {base}/upstream/callback/")
        if settings.USE_DEMO_UPSTREAM:
            w(
                f"  demo upstream (Demo Hub)      {settings.DEMO_UPSTREAM_BASE_URL}/demo-upstream/   accounts: octocat, hubot   password: demo"
            )
            w(
                f"  Demo Hub's own admin          {settings.DEMO_UPSTREAM_BASE_URL}/demo-upstream/admin/   user: admin   password: {password}"
            )
        w("")
        w("1. Register a client:")
        w(f"   curl -s -X POST {base}/register/ -H 'Content-Type: application/json' \\")
        w(
            f'     -d \'{{"client_name": "My MCP client", "redirect_uris": ["{redirect}"], "token_endpoint_auth_method": "none"}}\''
        )
        w("2. Open in a browser (replace CLIENT_ID with the client_id printed by step 1):")
        w(f"   {authorize}")
        w(
            f"   Approve, sign in, and the browser lands on {redirect}?code=...  (nothing listens there: copy the code)"
        )
        w("3. Redeem the code:")
        w(
            f"   curl -s -X POST {base}/token/ -d grant_type=authorization_code -d client_id=CLIENT_ID \\"
        )
        w(
            f"     -d code=CODE -d redirect_uri={redirect} -d code_verifier={verifier} -d resource={resource}"
        )
        attacker = "https://attacker.example/callback"
        w("4. The attack: a second client with the same name and the attacker's redirect URI:")
        w(f"   curl -s -X POST {base}/register/ -H 'Content-Type: application/json' \\")
        w(
            f'     -d \'{{"client_name": "My MCP client", "redirect_uris": ["{attacker}"], "token_endpoint_auth_method": "none"}}\''
        )
        w("   then open, in the same browser (ATTACKER_CLIENT_ID from that answer):")
        w(
            "   "
            + authorize.replace("CLIENT_ID", "ATTACKER_CLIENT_ID").replace(
                quote(redirect, safe=""), quote(attacker, safe="")
            )
        )
        w(
            "   Demo Hub would skip its own page (it remembers you); mcp-consent shows its consent page,"
        )
        w(
            '   warns that another "My MCP client" sends access elsewhere and that this one goes to attacker.example.'
        )
        w(f"Or let an MCP client do all of it against the MCP endpoint {resource}:")
        w(f"   MCP_URL={resource} .venv/bin/python docs/examples/sdk_client.py")
        w("")
        if options["no_serve"]:
            return
        self.serve(public.port or 80)

    @staticmethod
    def set_admin_password(password: str, database_url: str | None) -> None:
        """The demo admin in one database (the password in the environment, not in argv)."""
        env = {**os.environ, "DEMO_ADMIN_PASSWORD": password}
        if database_url:
            env["DATABASE_URL"] = database_url
        subprocess.run(  # noqa: S603
            [sys.executable, "manage.py", "demo_admin"], env=env, cwd=settings.BASE_DIR, check=True
        )

    @staticmethod
    def upstream_database_url() -> str | None:
        """Demo Hub's own database when the proxy's is SQLite, as a third party has its own.

        The proxy refreshes an upstream token inside a transaction that holds its row lock
        (UP-08) while it calls Demo Hub, which writes; in one SQLite file the proxy's open
        transaction would block that write until the call timed out. PostgreSQL locks rows,
        so there one database serves both.
        """
        if not settings.USE_DEMO_UPSTREAM:
            return None
        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
            return None
        return os.environ.get(
            "DEMO_UPSTREAM_DATABASE_URL",
            f"sqlite:///{settings.BASE_DIR / 'db-demo-upstream.sqlite3'}",
        )

    def serve(self, port: int) -> None:
        env = dict(os.environ)
        uvicorn = [
            sys.executable,
            "-m",
            "uvicorn",
            "project.asgi:application",
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
        ]
        processes = [subprocess.Popen([*uvicorn, "--port", str(port)], env=env)]  # noqa: S603
        if settings.USE_DEMO_UPSTREAM:
            upstream_port = urlsplit(settings.DEMO_UPSTREAM_BASE_URL).port or 80
            upstream_env = dict(env)
            upstream_database = self.upstream_database_url()
            if upstream_database:
                upstream_env["DATABASE_URL"] = upstream_database
            processes.append(
                subprocess.Popen([*uvicorn, "--port", str(upstream_port)], env=upstream_env)  # noqa: S603
            )

        def stop(*_: Any) -> None:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()

        signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(0)))
        try:
            if _wait_for("127.0.0.1", port):
                self.stdout.write(f"Serving on {settings.PUBLIC_BASE_URL}/ (Ctrl-C stops the demo)")
            while all(process.poll() is None for process in processes):
                time.sleep(0.5)
            self.stderr.write("a demo server exited; stopping the others")
        except KeyboardInterrupt:
            pass
        finally:
            stop()
