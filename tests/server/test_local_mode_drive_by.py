"""A server without auth (local development) cannot be driven by a page from another origin: Host and Origin
checks, no CORS for unconfigured origins, JSON-only bodies; and its approvals are decided by the configured
local operator (INTERLOCK_LOCAL_OPERATOR) under the same rules.

The browser test opens a page served by a second local HTTP server (another port, so another origin) in
headless Chromium (Debian's `chromium` package, driven by Playwright; no browser download).
"""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_testkit import PROJECT, ServerProcess, free_port, make_server

CHROMIUM = "/usr/bin/chromium"
LOCAL_OPERATOR = "dana@local"


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = make_server(
        tmp_path_factory.mktemp("local"), None, config=PROJECT / "langgraph_local.json", tenants=("acme",),
        INTERLOCK_LOCAL_OPERATOR=LOCAL_OPERATOR
    )
    yield proc
    proc.stop()


def pending_approval(server: ServerProcess, tool: str = "cancel_order") -> tuple[str, dict[str, Any]]:
    """A run of the approval graph in local mode (development principal, tenant acme) up to its interrupt."""
    with httpx.Client(base_url=server.url, timeout=60) as http:
        tid = http.post("/threads", json={}).json()["thread_id"]
        out = http.post(
            f"/threads/{tid}/runs/wait",
            json={"assistant_id": "approval", "input": {"call": {"tool": tool, "args": {"order_id": "ORD-9"}}}},
        ).json()
    return tid, out["__interrupt__"][0]["value"]


def test_host_origin_and_content_type_checks(local_server: ServerProcess) -> None:
    _, value = pending_approval(local_server)
    approval = f"/approvals/{value['approval_id']}"
    with httpx.Client(base_url=local_server.url, timeout=30) as http:
        rebound = http.get("/approvals", params={"tenant": "acme"}, headers={"Host": "attacker.example"})
        assert rebound.status_code == 421 and "INTERLOCK_ALLOWED_HOSTS" in rebound.json()["detail"]
        foreign = f"http://127.0.0.1:{free_port()}"
        read = http.get("/approvals", params={"tenant": "acme"}, headers={"Origin": foreign})
        assert read.status_code == 403 and "Origin" in read.json()["detail"]
        decide = http.post(approval, content=b'{"decision": "approve"}', headers={"Origin": foreign, "content-type": "text/plain"})
        assert decide.status_code == 403
        plain = http.post(approval, content=b'{"decision": "approve"}', headers={"content-type": "text/plain"})
        assert plain.status_code == 415 and "application/json" in plain.json()["detail"]
        form = http.post(approval, data={"decision": "approve"})
        assert form.status_code == 415
        assert http.get(approval, params={"tenant": "acme"}).json()["status"] == "pending"
        # The server's own origin (its /docs page) is same-origin and allowed.
        own = http.get("/approvals", params={"tenant": "acme"}, headers={"Origin": local_server.url})
        assert own.status_code == 200 and value["approval_id"] in own.text


def test_local_operator_decides_under_the_same_rules(local_server: ServerProcess) -> None:
    tid, value = pending_approval(local_server)
    with httpx.Client(base_url=local_server.url, timeout=60) as http:
        done = http.post(f"/approvals/{value['approval_id']}", params={"tenant": "acme"},
                         json={"decision": "approve", "reason": "checked"})
        assert done.status_code == 200, done.text
        assert done.json()["approval"]["decided_by"] == LOCAL_OPERATOR
        # Resuming by the runs API with a forged identity still records the local operator.
        tid, value = pending_approval(local_server)
        out = http.post(f"/threads/{tid}/runs/wait", json={
            "assistant_id": "approval", "command": {"resume": {"decision": "reject", "by": "ceo@acme"}}}).json()
        assert out["outcome"] == "rejected"
        record = http.get(f"/approvals/{value['approval_id']}", params={"tenant": "acme"}).json()
        assert record["decided_by"] == LOCAL_OPERATOR and record["status"] == "rejected"


def test_separation_of_duties_applies_to_the_local_operator(tmp_path: Path) -> None:
    # The development principal requests as `dev-user`; a local operator with that identity may not approve it.
    server = make_server(tmp_path, None, config=PROJECT / "langgraph_local.json", tenants=("acme",),
                         INTERLOCK_LOCAL_OPERATOR="dev-user")
    try:
        _, value = pending_approval(server)
        with httpx.Client(base_url=server.url, timeout=60) as http:
            resp = http.post(f"/approvals/{value['approval_id']}", params={"tenant": "acme"}, json={"decision": "approve"})
        assert resp.status_code == 403 and "separation of duties" in resp.json()["detail"]
    finally:
        server.stop()


ATTACK_PAGE = """<!doctype html><html><body><script>
const target = "%(target)s";
window.results = {};
(async () => {
  try {
    const r = await fetch(target + "/approvals?tenant=acme");
    window.results.read = r.status + " " + (await r.text());
  } catch (e) { window.results.read = "blocked: " + e; }
  try {
    await fetch(target + "/approvals/%(approval)s?tenant=acme", {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify({decision: "approve"})});
    window.results.decide = "sent";
  } catch (e) { window.results.decide = "blocked: " + e; }
  try {
    const r = await fetch(target + "/approvals/%(approval)s?tenant=acme", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({decision: "approve"})});
    window.results.preflighted = r.status + " " + (await r.text());
  } catch (e) { window.results.preflighted = "blocked: " + e; }
  window.results.done = true;
})();
</script></body></html>"""


@pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("chromium") is None,
                    reason=f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's package)")
def test_a_page_from_another_origin_cannot_read_or_decide_approvals(local_server: ServerProcess) -> None:
    from playwright.sync_api import sync_playwright

    _, value = pending_approval(local_server)
    page_body = (ATTACK_PAGE % {"target": local_server.url, "approval": value["approval_id"]}).encode()

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page_body)))
            self.end_headers()
            self.wfile.write(page_body)

        def log_message(self, *args: Any) -> None:
            pass

    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
                page.wait_for_function("window.results && window.results.done === true", timeout=30_000)
                results = page.evaluate("window.results")
            finally:
                browser.close()
    finally:
        attacker.shutdown()
    assert results["read"].startswith("blocked"), results  # no CORS grant: the page cannot read the list
    assert value["approval_id"] not in results["read"]
    assert results["preflighted"].startswith("blocked"), results
    with httpx.Client(base_url=local_server.url, timeout=30) as http_:
        record = http_.get(f"/approvals/{value['approval_id']}", params={"tenant": "acme"}).json()
    assert record["status"] == "pending" and record["decided_by"] is None
