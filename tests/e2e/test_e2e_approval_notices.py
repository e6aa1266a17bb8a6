"""Issue 13, notifications and expiry, through a real zero-key `interlock serve` whose tool policy gives approvals a
3-second life (tools.yaml `approval_ttl_s`): a cancel request's approval is announced by the approval-requested
webhook (to a receiver on 127.0.0.1, allowed by INTERLOCK_WEBHOOK_ALLOW_HOSTS) and by `interlock approvals watch`
(a real CLI subprocess); nobody decides, so it expires and the waiting run ends with outcome "expired" and a
message saying nothing was done. Waits are bounded polls (at most 60 s), never timing asserts."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from e2e_testkit import *  # noqa: F403 - the shared fixtures
from e2e_testkit import ROOT, Environment, Server, free_port

TTL_S = 3


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every JSON body it is sent."""

    def __init__(self) -> None:
        bodies: queue.Queue[dict[str, Any]] = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                bodies.put(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/approval-hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def short_lived(e2e_env: Environment, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    policies = tmp_path_factory.mktemp("short-ttl-policies")
    for path in (ROOT / "policies").glob("*.yaml"):
        (policies / path.name).write_bytes(path.read_bytes())
    tools = yaml.safe_load((policies / "tools.yaml").read_text())
    tools["approval_ttl_s"] = TTL_S
    (policies / "tools.yaml").write_text(yaml.safe_dump(tools, sort_keys=False))
    port = free_port()
    log = e2e_env.root / "server-notices.log"
    env = {**e2e_env.env, "INTERLOCK_POLICY_DIR": str(policies), "INTERLOCK_APPROVALS_POLL_SECONDS": "0.2",
           "INTERLOCK_APPROVALS_WEBHOOK_URL": receiver.url, "INTERLOCK_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "interlock", "serve", "--config", str(ROOT / "langgraph.json"), "--port", str(port)],
        cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )
    server = Server("notices", f"http://127.0.0.1:{port}", log, proc)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(server.log()[-3000:])
        try:
            if httpx.get(server.url + "/ok", timeout=1.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(server.log()[-3000:])
        time.sleep(0.2)
    yield server
    server.stop()


def watch(server: Server, env: Environment) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "interlock", "approvals", "--url", server.url, "--tenant", "acme", "watch", "--json"],
        cwd=ROOT, env=env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump(stream: Any, prefix: str) -> None:
        for line in stream:
            lines.put(prefix + line)

    threading.Thread(target=pump, args=(proc.stdout, ""), daemon=True).start()
    threading.Thread(target=pump, args=(proc.stderr, "stderr:"), daemon=True).start()
    return proc, lines


def next_line(lines: queue.Queue[str], predicate: Any, bound_s: float = 60) -> str:
    deadline = time.monotonic() + bound_s
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if predicate(line):
            return line
    raise AssertionError(f"no matching line within {bound_s}s; saw {seen}")


async def test_requested_approval_is_announced_then_expires_and_the_run_ends_expired(
    short_lived: Server, e2e_env: Environment, receiver: Receiver
) -> None:
    watcher, lines = watch(short_lived, e2e_env)
    try:
        next_line(lines, lambda line: line.startswith("stderr:watching approvals"))
        tenant, order = e2e_env.claim_order("acme")
        async with httpx.AsyncClient(base_url=short_lived.url, timeout=120) as http:
            thread = (await http.post("/threads", json={})).json()["thread_id"]
            body = {"assistant_id": "router", "input": {"messages": [
                {"role": "user", "content": f"Please cancel order {order}."}]},
                "config": {"configurable": {"tenant": tenant, "principal": {"sub": "CUS-101", "tenant": tenant}}}}
            assert (await http.post(f"/threads/{thread}/runs/wait", json=body)).status_code == 200
            state = (await http.get(f"/threads/{thread}")).json()
            assert state["status"] == "interrupted", state
            (approval_id,) = [i["value"]["approval_id"] for group in state["interrupts"].values() for i in group]

            # `interlock approvals watch` prints it.
            line = next_line(lines, lambda line: approval_id in line)
            event = json.loads(line)
            assert event["kind"] == "requested" and event["approval"]["tool"] == "cancel_order"
            assert event["approval"]["args"]["order_id"] == order

            # The webhook announces it, without the raw arguments.
            hook = receiver.bodies.get(timeout=60)
            while hook.get("approval_id") != approval_id:
                hook = receiver.bodies.get(timeout=60)
            assert hook["event"] == "approval.requested" and hook["tool"] == "cancel_order"
            assert hook["tenant"] == "acme" and hook["requester"] == "CUS-101" and hook["thread_id"] == thread
            assert order not in json.dumps(hook) and len(hook["args_hash"]) == 64

            # Nobody decides: it expires and the waiting run ends with a clear outcome.
            deadline = time.monotonic() + 60
            while True:
                state = (await http.get(f"/threads/{thread}")).json()
                if state["status"] == "idle" and state["values"].get("outcome"):
                    break
                assert time.monotonic() < deadline, state
                await asyncio.sleep(0.2)
            assert state["values"]["outcome"] == "expired" and not state["interrupts"]
            last = state["values"]["messages"][-1]
            assert last["type"] == "ai" and "expired before an operator decided" in last["content"]
            assert e2e_env.order_status(order) != "cancelled"
            e2e_env.release_order(order)

            approval = (await http.get(f"/approvals/{approval_id}", params={"tenant": "acme"})).json()
            assert approval["status"] == "expired"
            assert [e["kind"] for e in approval["audit"]] == ["requested", "expired"]
            late = await http.post(f"/approvals/{approval_id}", params={"tenant": "acme"}, json={"decision": "approve"})
            assert late.status_code == 409 and "expired" in late.json()["detail"]
        assert e2e_env.order_status(order) != "cancelled"
    finally:
        watcher.terminate()
        watcher.wait(10)


def test_watch_names_the_problem_when_the_server_refuses(short_lived: Server, e2e_env: Environment) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "interlock", "approvals", "--url", short_lived.url, "--tenant", "nosuch", "watch"],
        cwd=ROOT, env=e2e_env.env, capture_output=True, text=True, timeout=60,
    )
    # One line on stderr naming the unknown tenant and the known ones, exit 1, no traceback.
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "unknown tenant 'nosuch'" in done.stderr and "acme" in done.stderr and "Traceback" not in done.stderr


def test_policy_rejects_an_impossible_approval_lifetime(tmp_path: Path) -> None:
    from interlock.policies.loader import PolicyError, load_policies

    for path in (ROOT / "policies").glob("*.yaml"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    tools = yaml.safe_load((tmp_path / "tools.yaml").read_text())
    tools["approval_ttl_s"] = 0
    (tmp_path / "tools.yaml").write_text(yaml.safe_dump(tools))
    with pytest.raises(PolicyError, match="approval_ttl_s"):
        load_policies(tmp_path)


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium at /usr/bin/chromium")
async def test_console_signs_in_as_the_local_operator_in_development_mode(short_lived: Server) -> None:
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 800})
            await page.goto(short_lived.url + "/console")
            await expect(page.get_by_label("Operator token")).to_be_hidden(timeout=20_000)
            await page.get_by_label("Tenant").fill("acme")
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#who-name")).to_have_text("operator@local · tenant acme", timeout=20_000)
            await expect(page.locator("#live")).to_have_text("live", timeout=20_000)
            await page.get_by_role("button", name="Sign out").click()
            await expect(page.locator("#sign-in-error")).to_have_text("Signed out.")
        finally:
            await browser.close()
