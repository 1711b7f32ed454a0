"""Start and stop the bench's servers: uvicorn processes on free 127.0.0.1 ports, stopped by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
FASTMCP_VENV = ROOT / "benchmarks" / ".venv-fastmcp"
ENCRYPTION_KEY = "DdjqsHrmswaGYyqHd_DIn69dEcSbQ3Lntc6QVeB9Dx0="  # bench-only, not a secret


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start within {timeout:.0f} s")


class Server:
    """One uvicorn process; ``url`` is its origin."""

    def __init__(
        self,
        name: str,
        app: str,
        *,
        python: str = PY,
        env: dict[str, str] | None = None,
        workers: int = 1,
        logdir: Path,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [python, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--no-access-log", "--log-level", "warning", "--workers", str(workers)]
        self.log = logdir / f"{name}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 -- our own interpreter and arguments
                argv,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for(self.port, self.proc)
        except RuntimeError:
            self.stop()
            raise RuntimeError(
                f"{name} did not start; see {self.log}:\n{self.log.read_text()[-2000:]}"
            ) from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            # Its own process group (start_new_session): uvicorn's worker processes go too.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def mcp_consent_env(public_url: str, upstream: str, database_url: str) -> dict[str, str]:
    """The demo's 12-factor settings pointed at the fake upstream and a bench database."""
    return {
        "DJANGO_SETTINGS_MODULE": "benchmarks.bench_settings",
        "DATABASE_URL": database_url,
        "PUBLIC_BASE_URL": public_url,
        "MCP_CONSENT_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "UPSTREAM_NAME": "Fake GitHub",
        "UPSTREAM_AUTHORIZE_URL": f"{upstream}/login/oauth/authorize",
        "UPSTREAM_TOKEN_URL": f"{upstream}/login/oauth/access_token",
        "UPSTREAM_USERINFO_URL": f"{upstream}/user",
        "UPSTREAM_REVOKE_URL": f"{upstream}/revoke",
        "UPSTREAM_API_BASE_URL": f"{upstream}/api/",
        "UPSTREAM_CLIENT_ID": "bench-static-client",
        "UPSTREAM_CLIENT_SECRET": "bench-static-secret",
        "DJANGO_LOG_LEVEL": "WARNING",
    }


def migrate(env: dict[str, str]) -> None:
    subprocess.run(  # noqa: S603
        [PY, "manage.py", "migrate", "--verbosity", "0"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )
