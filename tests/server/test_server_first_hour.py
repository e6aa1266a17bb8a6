"""A newcomer's first hour: busy ports, MCP children that live and die with the server, one-line CLI errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from interlock.graphs.nodes.playbooks import validate_args

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("orders", "crm", "billing", "tickets")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def interlock(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interlock", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT, timeout=timeout)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_serve_names_a_busy_port_and_how_to_pick_another(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = interlock("serve", "--config", str(ROOT / "langgraph.json"), "--port", str(port),
                         env={"INTERLOCK_HOME": str(tmp_path)})
    assert done.returncode == 2
    assert f"port {port}" in done.stderr and "--port" in done.stderr and "PORT=" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_failures_are_one_line_with_a_hint() -> None:
    port = free_port()  # nothing listens there
    done = interlock("approvals", "list", "--tenant", "acme", "--url", f"http://127.0.0.1:{port}")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach the server" in lines[0] and "INTERLOCK_URL" in lines[0]


def test_approvals_options_are_accepted_after_the_subcommand_and_url_default_is_documented(tmp_path: Path) -> None:
    helped = interlock("approvals", "list", "--help")
    assert "http://127.0.0.1:2024" in helped.stdout and "INTERLOCK_URL" in helped.stdout
    # The README writes the options after the subcommand; against a real server both orders give the same list.
    assert interlock("tenants", "add", "acme", env={"INTERLOCK_HOME": str(tmp_path)}).returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "interlock", "serve", "--config", str(ROOT / "langgraph.json"), "--port", str(port)],
        env={**os.environ, "INTERLOCK_HOME": str(tmp_path)}, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/ok", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
                time.sleep(0.2)
        after = interlock("approvals", "list", "--tenant", "acme", "--url", url)
        before = interlock("approvals", "--url", url, "--tenant", "acme", "list")
        assert after.returncode == 0, after.stderr
        assert after.stdout == before.stdout and after.stdout.strip().startswith("[")
    finally:
        proc.terminate()
        proc.wait(30)


def test_validation_errors_speak_the_users_language() -> None:
    schema = {"type": "object", "required": ["order_id"],
              "properties": {"order_id": {"type": "string", "pattern": r"^ORD-\d{4}$",
                                          "description": "Order id, e.g. ORD-1001"}}}
    assert validate_args({"order_id": "ORD-12"}, schema) == ["order ids look like ORD-1001"]
    assert validate_args({}, schema) == ["order id is missing"]
    assert validate_args({"order_id": "ORD-1234"}, schema) == []


def _mcp_env(tmp_path: Path) -> dict[str, str]:
    env = {"INTERLOCK_HOME": str(tmp_path)}
    for system in SYSTEMS:
        env[f"INTERLOCK_MCP_{system.upper()}_URL"] = f"http://127.0.0.1:{free_port()}/mcp"
    return env


def _start_with_mcp(tmp_path: Path) -> tuple[subprocess.Popen[bytes], dict[str, str], list[int]]:
    env = _mcp_env(tmp_path)
    seeded = interlock("seed", env=env, timeout=300)
    assert seeded.returncode == 0, seeded.stderr
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "interlock", "serve", "--config", str(ROOT / "langgraph.json"), "--port", str(port),
         "--with-mcp"],
        env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/ok", timeout=1)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.2)
    kids = children_of(proc.pid)
    assert len(kids) == len(SYSTEMS), kids
    for system in SYSTEMS:  # every MCP server accepts connections once the server answers
        url = env[f"INTERLOCK_MCP_{system.upper()}_URL"]
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0])), timeout=2):
            pass
    return proc, env, kids


def _wait_gone(pids: list[int], timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_no_mcp_server_outlives_the_server(tmp_path: Path, sig: signal.Signals) -> None:
    proc, _env, kids = _start_with_mcp(tmp_path)
    try:
        proc.send_signal(sig)
        proc.wait(30)
        survivors = _wait_gone(kids)
        assert survivors == [], f"MCP servers still running after {sig.name}: {survivors}"
    finally:
        for pid in kids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


def test_a_crashed_mcp_server_is_restarted(tmp_path: Path) -> None:
    proc, env, kids = _start_with_mcp(tmp_path)
    try:
        os.kill(kids[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = children_of(proc.pid)
            if len([k for k in now if k not in kids]) == 1 and len([k for k in now if alive(k)]) == len(SYSTEMS):
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"no restart: children {children_of(proc.pid)}, before {kids}")
    finally:
        proc.terminate()
        proc.wait(30)
        _wait_gone(children_of(proc.pid) + kids)
