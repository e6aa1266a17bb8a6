"""Fixtures that start real `interlock serve` processes (SQLite and PostgreSQL) on free loopback ports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from server_testkit import PG_ADMIN, ServerProcess, make_server


@pytest.fixture(scope="session")
def pg_factory() -> Iterator[object]:
    """Creates fresh PostgreSQL databases (one per server, so servers never share a queue); drops them at the end."""
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:  # pragma: no cover - CI always has PostgreSQL
        pytest.fail(f"PostgreSQL is required at {PG_ADMIN}: {exc}")
    created: list[str] = []

    def create() -> str:
        name = f"interlock_test_{uuid.uuid4().hex[:10]}"
        admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + name

    try:
        yield create
    finally:
        for name in created:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def postgres_url(pg_factory) -> str:  # noqa: ANN001
    return pg_factory()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    proc = make_server(tmp, url)
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess):  # noqa: ANN201
    from langgraph_sdk import get_client

    return get_client(url=server.url, api_key=None)


@pytest.fixture
def sync_client(server: ServerProcess):  # noqa: ANN201
    from langgraph_sdk import get_sync_client

    return get_sync_client(url=server.url, api_key=None)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def tenant_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the two-tenant auth hook (tests/server/project/tenants_auth.py)."""
    from server_testkit import PROJECT

    url = request.getfixturevalue("pg_factory")() if request.param == "postgres" else None
    proc = make_server(tmp_path_factory.mktemp(f"tenants-{request.param}"), url, config=PROJECT / "langgraph_tenants.json")
    yield proc
    proc.stop()
