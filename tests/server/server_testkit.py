"""Helpers that start real `interlock serve` processes on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
PROJECT = Path(__file__).resolve().parent / "project"
STUDIO_ORIGIN = "https://smith.langchain.com"
PG_ADMIN = os.environ.get("INTERLOCK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    home: Path
    config: Path
    env: dict[str, str]
    port: int
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    program: tuple[str, ...] = (sys.executable, "-m", "interlock")  # what runs `serve ...`

    def start(self, timeout: float = 30.0) -> None:
        assert self.log_path is not None
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [*self.program, "serve", "--config", str(self.config), "--port", str(self.port)],
            cwd=str(ROOT),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/ok", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()  # a server stuck in startup must not outlive the test
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""


def register_tenants(env: dict[str, str], *names: str) -> None:
    """`interlock tenants add`: a local development server accepts only registered tenants."""
    done = subprocess.run([sys.executable, "-m", "interlock", "tenants", "add", *names], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def make_server(tmp: Path, database_url: str | None, config: Path = PROJECT / "langgraph.json",
                tenants: tuple[str, ...] = (), program: tuple[str, ...] | None = None, **env: str) -> ServerProcess:
    port = free_port()
    home = tmp / f"home-{port}"
    home.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "INTERLOCK_HOME": str(home),
        "INTERLOCK_HEARTBEAT_SECONDS": "1",
        "INTERLOCK_MAX_BODY_BYTES": str(256 * 1024),
        "INTERLOCK_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",  # the tests' webhook receiver
        "INTERLOCK_CORS_ORIGINS": STUDIO_ORIGIN,  # Studio, configured as an operator would
        "INTERLOCK_CORS_PRIVATE_NETWORK": "1",
        "LANGGRAPH_API_KEY": "",
        "LANGSMITH_API_KEY": "",
        **env,
    }
    full_env.pop("INTERLOCK_DATABASE_URL", None)
    if database_url:
        full_env["INTERLOCK_DATABASE_URL"] = database_url
    if tenants:
        register_tenants(full_env, *tenants)
    server = ServerProcess(
        url=f"http://127.0.0.1:{port}", home=home, config=config, env=full_env, port=port, log_path=home / "server.log"
    )
    if program:
        server.program = program
    server.start()
    return server


