"""Local development mode accepts only registered tenants: a typo is a 422 naming it and the known ones, through
every way a caller names a tenant (run config, a local principal, an assistant's or a cron's config, `?tenant=`,
`interlock approvals --tenant`), on SQLite and PostgreSQL. With auth the token decides and nothing is checked."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from server_testkit import PROJECT, ROOT, ServerProcess, make_server, register_tenants


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def local(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    url = request.getfixturevalue("pg_factory")() if request.param == "postgres" else None
    server = make_server(tmp_path_factory.mktemp(f"tenants-{request.param}"), url,
                         config=PROJECT / "langgraph_local.json")
    yield server
    server.stop()


def run(http: httpx.Client, configurable: dict) -> httpx.Response:
    return http.post("/runs/wait", json={"assistant_id": "two_node", "input": {"n": 1},
                                         "config": {"configurable": configurable}})


def assert_unknown(response: httpx.Response, tenant: str, known: list[str]) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["tenant"] == tenant and body["known_tenants"] == known, body
    assert repr(tenant) in body["detail"] and "interlock tenants add" in body["detail"]
    for name in known:
        assert name in body["detail"]


def test_unknown_tenants_are_refused_naming_the_known_ones(local: ServerProcess) -> None:
    with httpx.Client(base_url=local.url, timeout=60) as http:
        # Nothing registered yet: the error says so, and how to register.
        empty = run(http, {"tenant": "acme"})
        assert_unknown(empty, "acme", [])
        assert "no tenants are registered" in empty.json()["detail"]
        assert run(http, {}).status_code == 200  # a run naming no tenant is not a tenant's

        register_tenants(local.env, "acme", "globex")  # seen by the running server on the next request
        assert run(http, {"tenant": "acme"}).status_code == 200
        assert_unknown(run(http, {"tenant": "nosuch"}), "nosuch", ["acme", "globex"])
        assert_unknown(run(http, {"tenant_id": "acmee"}), "acmee", ["acme", "globex"])
        assert_unknown(run(http, {"tenant": "acme", "principal": {"sub": "x", "tenant": "globx"}}), "globx",
                       ["acme", "globex"])
        tid = http.post("/threads", json={}).json()["thread_id"]
        stateful = http.post(f"/threads/{tid}/runs", json={"assistant_id": "two_node", "input": {"n": 1},
                                                           "config": {"configurable": {"tenant": "nosuch"}}})
        assert_unknown(stateful, "nosuch", ["acme", "globex"])
        assert http.get(f"/threads/{tid}/runs").json() == []  # nothing was queued
        # An assistant or a cron carrying a tenant in its config is checked when it is made, not when it fires.
        assistant = http.post("/assistants", json={"graph_id": "two_node",
                                                   "config": {"configurable": {"tenant": "nosuch"}}})
        assert_unknown(assistant, "nosuch", ["acme", "globex"])
        cron = http.post("/runs/crons", json={"assistant_id": "two_node", "schedule": "0 0 * * *",
                                              "config": {"configurable": {"tenant": "nosuch"}}})
        assert_unknown(cron, "nosuch", ["acme", "globex"])
        # The operator's side names the tenant as a query parameter.
        assert_unknown(http.get("/approvals", params={"tenant": "nosuch"}), "nosuch", ["acme", "globex"])
        assert_unknown(http.get("/approvals/operator", params={"tenant": "nosuch"}), "nosuch", ["acme", "globex"])
        assert_unknown(http.post("/approvals/apr_x", params={"tenant": "nosuch"}, json={"decision": "approve"}),
                       "nosuch", ["acme", "globex"])
        assert http.get("/approvals", params={"tenant": "globex"}).status_code == 200


def test_the_cli_prints_one_line_naming_the_known_tenants(local: ServerProcess) -> None:
    register_tenants(local.env, "acme", "globex")
    done = subprocess.run([sys.executable, "-m", "interlock", "approvals", "list", "--tenant", "nosuch", "--url",
                           local.url], cwd=ROOT, env=local.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "'nosuch'" in lines[0] and "acme, globex" in lines[0] and "interlock tenants add nosuch" in lines[0]
    listed = subprocess.run([sys.executable, "-m", "interlock", "tenants", "list"], cwd=ROOT, env=local.env,
                            capture_output=True, text=True, timeout=120)
    assert listed.stdout.split() == ["acme", "globex"]


def test_with_auth_the_token_decides_the_tenant(tenant_server: ServerProcess) -> None:
    # tests/server/project/tenants_auth.py: ann is a user of tenant acme; nothing is registered on this server.
    with httpx.Client(base_url=tenant_server.url, timeout=60, headers={"Authorization": "Bearer acme-ann"}) as http:
        done = http.post("/runs/wait", json={"assistant_id": "two_node", "input": {"n": 1},
                                             "config": {"configurable": {"tenant": "not-registered"}}})
        assert done.status_code == 200, done.text
