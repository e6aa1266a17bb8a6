"""Issue 13, the web operator console, in Debian's Chromium driven by Playwright, against a real `interlock serve`
with an auth hook of two tenants (console_auth.py), the four sample MCP servers and the zero-key router.

A customer's chat run asks to cancel an order; the operator's open console shows the pending approval live (SSE);
an edit that breaks the tool's input schema is refused with the schema error; approving cancels the order and the
audit trail names the operator; a second operator sees it decided; rejecting leaves the order alone; the other
tenant's operator sees nothing. Screenshots at 1280 and 390 px go to $INTERLOCK_CONSOLE_SCREENSHOTS (or the
test's temporary directory).

Skipped when /usr/bin/chromium is missing (`apt-get install chromium`); Playwright never downloads a browser."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_testkit import *  # noqa: F403 - the shared fixtures
from e2e_testkit import ROOT, Environment, Server, free_port

CHROMIUM = Path("/usr/bin/chromium")
HERE = Path(__file__).resolve().parent
CUSTOMER = {"Authorization": "Bearer tok-customer-globex"}
ANN, BOB, GINA = "tok-ops-ann", "tok-ops-bob", "tok-ops-acme"  # globex, globex, acme
WAIT_MS = 20_000  # upper bound for anything the page waits on (live updates arrive in well under a second)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                "(apt-get install chromium); Playwright's own browser downloads are not used")


@pytest.fixture(scope="module")
def console_server(e2e_env: Environment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    project = tmp_path_factory.mktemp("console-project")
    config = {
        "dependencies": ["."],
        "graphs": {"router": "interlock.graphs.router:graph", "planner": "interlock.graphs.planner:graph",
                   "rag": "interlock.graphs.rag:graph"},
        "auth": {"path": f"{HERE / 'console_auth.py'}:auth"},
    }
    (project / "langgraph.json").write_text(json.dumps(config))
    port = free_port()
    log = e2e_env.root / "server-console.log"
    env = {**e2e_env.env, "INTERLOCK_APPROVALS_POLL_SECONDS": "0.2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "interlock", "serve", "--config", str(project / "langgraph.json"), "--port", str(port)],
        cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )
    server = Server("console", f"http://127.0.0.1:{port}", log, proc)
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


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        await chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("INTERLOCK_CONSOLE_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("console-shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


async def operator_page(browser: Any, server: Server, token: str, width: int = 1280) -> Any:
    """A fresh browser context signed in with `token`, using the keyboard only."""
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": width, "height": 900})
    page = await context.new_page()
    await page.goto(server.url + "/console")
    field = page.get_by_label("Operator token")
    await expect(field).to_be_focused(timeout=WAIT_MS)
    await page.keyboard.type(token)
    await page.keyboard.press("Enter")
    await expect(page.locator("#who-name")).to_contain_text("tenant", timeout=WAIT_MS)
    await expect(page.locator("#live")).to_have_text("live", timeout=WAIT_MS)
    return page


async def ask_to_cancel(server: Server, env: Environment, extra: str = "") -> tuple[str, str]:
    """The customer's chat run asking to cancel a fresh globex order, up to its interrupt: (order, thread)."""
    _, order = env.claim_order("globex", customer="CUS-201")  # the customer's own order
    async with httpx.AsyncClient(base_url=server.url, headers=CUSTOMER, timeout=120) as http:
        thread = (await http.post("/threads", json={})).json()["thread_id"]
        body = {"assistant_id": "router", "input": {"messages": [
            {"role": "user", "content": f"Please cancel order {order}.{extra}"}]}}
        response = await http.post(f"/threads/{thread}/runs/wait", json=body)
        assert response.status_code == 200, response.text
        state = (await http.get(f"/threads/{thread}")).json()
    assert state["status"] == "interrupted", state
    return order, thread


async def approvals_api(server: Server, token: str, path: str = "/approvals", **params: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        return await http.get(path, params=params)


async def test_console_page_is_served_with_a_strict_csp_and_no_inline_script(console_server: Server) -> None:
    async with httpx.AsyncClient(base_url=console_server.url) as http:
        page = await http.get("/console")
        script = await http.get("/console/static/console.js")
        missing = await http.get("/console/static/..%2Fapp.py")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert "<script>" not in page.text and "<script src=\"/console/static/console.js\"" in page.text
    assert script.status_code == 200 and "innerHTML" not in script.text and "insertAdjacentHTML" not in script.text
    assert missing.status_code == 404
    # The API behind it still needs a token.
    async with httpx.AsyncClient(base_url=console_server.url) as http:
        assert (await http.get("/approvals")).status_code == 401


async def test_operator_console_end_to_end(
    console_server: Server, e2e_env: Environment, browser: Any, shots: Path
) -> None:
    from playwright.async_api import expect

    # Sign-in: a wrong token is refused with the server's reason.
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    wrong = await context.new_page()
    await wrong.goto(console_server.url + "/console")
    await wrong.get_by_label("Operator token").fill("tok-nobody")
    await wrong.get_by_role("button", name="Sign in").click()
    await expect(wrong.locator("#sign-in-error")).to_contain_text("invalid or missing token", timeout=WAIT_MS)
    await context.close()

    ann = await operator_page(browser, console_server, ANN)
    bob = await operator_page(browser, console_server, BOB)
    gina = await operator_page(browser, console_server, GINA)
    await expect(ann.locator("#who-name")).to_have_text("ops-ann · tenant globex")
    xss = ' <img src=x onerror="document.title=\'pwned\'">'

    # A customer's chat run asks to cancel: the pending approval appears live in both globex consoles.
    order, thread = await ask_to_cancel(console_server, e2e_env, xss)
    pending = (await approvals_api(console_server, ANN, status="pending")).json()
    (approval,) = [a for a in pending if a["thread_id"] == thread]
    item = ann.locator(f"#list button[data-id='{approval['id']}']")
    await expect(item).to_be_visible(timeout=WAIT_MS)
    await expect(bob.locator(f"#list button[data-id='{approval['id']}']")).to_be_visible(timeout=WAIT_MS)
    await expect(item).to_contain_text("cancel_order · orders")

    # Keyboard: focus the item and open it with Enter; the exact call is shown, escaped.
    await item.focus()
    await ann.keyboard.press("Enter")
    detail = ann.locator("#detail")
    await expect(detail.locator("#detail-title")).to_have_text("cancel_order on orders", timeout=WAIT_MS)
    await expect(detail.locator("#args")).to_contain_text(f'"order_id": "{order}"')
    await expect(detail).to_contain_text("CUS-201")
    await expect(detail).to_contain_text("cannot be undone")
    await expect(detail.locator(".messages")).to_contain_text(f"Please cancel order {order}")
    await expect(detail.locator(".messages")).to_contain_text('<img src=x onerror="document.title')
    assert await ann.title() == "Interlock operator console"
    assert await ann.locator("#detail img").count() == 0
    await ann.screenshot(path=str(shots / "pending-1280.png"), full_page=True)

    # An edit that breaks the tool's input schema is refused with the schema error; nothing is decided.
    await ann.get_by_role("button", name="Edit…").click()
    order_field = ann.get_by_label("order_id", exact=True)
    await order_field.fill("not-an-order")
    await expect(ann.locator("#edit-diff")).to_contain_text('"not-an-order"')
    await ann.get_by_role("button", name="Approve with these arguments").click()
    error = ann.locator("#decision-error")
    # The waiting call's schema (the one its toolbox listed) refuses it, in words naming the argument.
    await expect(error).to_contain_text("edit refused", timeout=WAIT_MS)
    await expect(error).to_contain_text("order ids look like ORD-")
    await ann.screenshot(path=str(shots / "edit-error-1280.png"), full_page=True)
    assert (await approvals_api(console_server, ANN, f"/approvals/{approval['id']}")).json()["status"] == "pending"
    assert e2e_env.order_status(order) != "cancelled"

    # Approve with a reason: the order is cancelled and the audit trail names the operator.
    await order_field.fill(order)
    await ann.get_by_label("Reason (recorded in the audit trail)").fill("customer confirmed by phone")
    await ann.get_by_role("button", name="Approve", exact=True).click()
    result = ann.locator("#decision-result")
    await expect(result).to_contain_text("Approved as ops-ann; run outcome: executed", timeout=60_000)
    assert e2e_env.order_status(order) == "cancelled"
    audit = ann.locator("#audit")
    await expect(audit.locator("tr", has_text="approved")).to_contain_text("ops-ann")
    await expect(audit.locator("tr", has_text="approved")).to_contain_text("customer confirmed by phone")
    await expect(audit.locator("tr", has_text="consumed")).to_be_visible()
    await expect(audit.locator("tr", has_text="tool call: ok")).to_contain_text("cancel_order on orders")
    await ann.screenshot(path=str(shots / "approved-1280.png"), full_page=True)

    # The second operator's console drops it from pending live and shows it decided by ann, without controls.
    await expect(bob.locator(f"#list button[data-id='{approval['id']}']")).to_have_count(0, timeout=WAIT_MS)
    await bob.get_by_role("link", name="History").click()
    decided = bob.locator(f"#list button[data-id='{approval['id']}']")
    await expect(decided).to_contain_text("decided by ops-ann", timeout=WAIT_MS)
    await decided.click()
    await expect(bob.locator("#detail .badge").first).to_have_text("consumed", timeout=WAIT_MS)
    await expect(bob.get_by_role("button", name="Approve", exact=True)).to_have_count(0)

    # The trace of the resumed run: spans on a timeline, with the tool call.
    await result.get_by_role("link", name="Trace of the resumed run").click()
    spans = ann.locator("#trace-spans")
    await expect(spans.locator("li.k-tool", has_text="cancel_order")).to_contain_text("tool call", timeout=WAIT_MS)
    await expect(spans.locator("li.k-guard").first).to_contain_text("guard verdict")
    await expect(ann.locator("#trace-summary")).to_contain_text("Tool calls")
    await ann.screenshot(path=str(shots / "trace-1280.png"), full_page=True)

    # Reject path: the order stays as it was and the run ends rejected.
    order2, thread2 = await ask_to_cancel(console_server, e2e_env)
    (approval2,) = [a for a in (await approvals_api(console_server, ANN, status="pending")).json()
                    if a["thread_id"] == thread2]
    await ann.get_by_role("link", name="Back to approvals").click()
    item2 = ann.locator(f"#list button[data-id='{approval2['id']}']")
    await expect(item2).to_be_visible(timeout=WAIT_MS)
    await item2.click()
    await ann.get_by_label("Reason (recorded in the audit trail)").fill("not the customer's order")
    await ann.get_by_role("button", name="Reject").click()
    await expect(ann.locator("#decision-result")).to_contain_text("Rejected as ops-ann; run outcome: rejected",
                                                                  timeout=60_000)
    assert e2e_env.order_status(order2) not in ("cancelled",)
    e2e_env.release_order(order2)
    await expect(ann.locator("#audit tr", has_text="rejected")).to_contain_text("not the customer's order")

    # The other tenant's operator sees none of it, live or by id. (The e2e home is shared with other modules, so
    # acme may have approvals of its own: only those may show.)
    ours = {approval["id"], approval2["id"]}
    for listed in await gina.locator("#list button").all():
        assert await listed.get_attribute("data-id") not in ours
    await gina.goto(f"{console_server.url}/console#/pending/{approval['id']}")
    await expect(gina.locator("#detail-body .error")).to_contain_text("not found", timeout=WAIT_MS)
    await gina.get_by_role("link", name="History").click()
    await expect(gina.locator("#list-title")).to_have_text("Decided approvals")
    for listed in await gina.locator("#list button").all():
        assert await listed.get_attribute("data-id") not in ours
    assert (await approvals_api(console_server, GINA, f"/approvals/{approval['id']}")).status_code == 404
    for status in ("pending", "decided"):
        seen = (await approvals_api(console_server, GINA, status=status, limit="500")).json()
        assert {a["tenant"] for a in seen} <= {"acme"} and not ours & {a["id"] for a in seen}

    # Narrow screen (390 px): the same approval and the trace, in one column.
    phone = await operator_page(browser, console_server, ANN, width=390)
    await phone.goto(f"{console_server.url}/console#/history/{approval['id']}")
    await expect(phone.locator("#detail-title")).to_have_text("cancel_order on orders", timeout=WAIT_MS)
    widths = await phone.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths  # nothing wider than the screen
    await phone.screenshot(path=str(shots / "decided-390.png"), full_page=True)
    await phone.goto(f"{console_server.url}/console#/pending/{approval2['id']}")
    await expect(phone.locator("#detail-title")).to_have_text("cancel_order on orders", timeout=WAIT_MS)
    await phone.screenshot(path=str(shots / "rejected-390.png"), full_page=True)
    for page in (ann, bob, gina, phone):
        await page.context.close()
    await asyncio.sleep(0)
