"""The one authorization path: every route resolves its resource to the owner recorded with it (thread, run,
assistant, cron, approval), checks the owning tenant against the caller's, then applies the auth hook's filter.
A resource the caller may not see answers 404, exactly as one that does not exist.

Routes never call `Authorizer.authorize` themselves; they ask an `Access` for the resource. `ROUTE_RULES`
names the rule of every route; the app refuses to start with a route that has none (tests/server
test_authorization_matrix.py checks each rule through a real server).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from interlock.server.assistants import system_assistant_id
from interlock.server.auth import Filter, User, equality_part, matches, request_user
from interlock.server.errors import Invalid, NotFound
from interlock.server.serialization import loads
from interlock.server.services import Services, services
from interlock.server.threads import check_uuid
from starlette.exceptions import HTTPException
from starlette.requests import Request

from interlock.kernel.settings import get_settings
from interlock.kernel.tenants import TenantRegistry, UnknownTenant, named_tenants

OPERATOR_PERMISSION = "approvals:decide"

# Every route's authorization rule, keyed by "METHOD /path". The matrix test and the issue note are
# generated from this table; `check_routes` refuses to serve a route that is missing from it.
ROUTE_RULES: dict[str, str] = {
    "GET /ok": "public",
    "GET /ready": "public (dependency names and states only)",
    "GET /info": "public",
    "GET /docs": "public",
    "GET /openapi.json": "public",
    "GET /.well-known/jwks.json": "public (public keys only)",
    "GET /metrics": "any authenticated caller when auth is configured; tenant labels only for callers with a tenant",
    "POST /assistants": "auth hook `assistants:create`; metadata stamped with the hook's filter",
    "POST /assistants/search": "auth hook `assistants:search` filter (system assistants visible to all)",
    "POST /assistants/count": "auth hook `assistants:search` filter",
    "GET /assistants/{assistant_id}": "assistant visible under `assistants:read` filter and of the caller's tenant, "
    "else 404 (a graph's system assistant is readable by every authenticated caller)",
    "PATCH /assistants/{assistant_id}": "assistant visible under `assistants:update` filter, else 404",
    "DELETE /assistants/{assistant_id}": "assistant visible under `assistants:delete` filter, else 404",
    "POST /assistants/{assistant_id}/versions": "assistant visible under `assistants:read` filter, else 404",
    "POST /assistants/{assistant_id}/latest": "assistant visible under `assistants:update` filter, else 404",
    "GET /assistants/{assistant_id}/graph": "assistant visible under `assistants:read` filter, else 404",
    "GET /assistants/{assistant_id}/schemas": "assistant visible under `assistants:read` filter, else 404",
    "GET /assistants/{assistant_id}/subgraphs": "assistant visible under `assistants:read` filter, else 404",
    "GET /assistants/{assistant_id}/subgraphs/{namespace:path}": "assistant visible under `assistants:read`, else 404",
    "POST /runs/crons": "`crons:create`; creator's principal (identity, tenant, permissions) recorded; runs as it",
    "POST /runs/crons/search": "only crons of the caller's tenant visible under `crons:search` (and their thread)",
    "POST /runs/crons/count": "only crons of the caller's tenant visible under `crons:search` (and their thread)",
    "GET /runs/crons/{cron_id}": "cron of the caller's tenant, visible under `crons:read` and its thread, else 404",
    "PATCH /runs/crons/{cron_id}": "cron of the caller's tenant, visible under `crons:update` and its thread, else 404",
    "DELETE /runs/crons/{cron_id}": "cron of the caller's tenant, visible under `crons:delete` and its thread, else 404",
    "POST /threads/{thread_id}/runs/crons": "thread visible under `threads:update` (else 404), then as POST /runs/crons",
    "POST /threads": "auth hook `threads:create`; metadata stamped with the hook's filter",
    "POST /threads/search": "auth hook `threads:search` filter",
    "POST /threads/count": "auth hook `threads:search` filter",
    "GET /threads/{thread_id}": "thread visible under `threads:read`, else 404",
    "PATCH /threads/{thread_id}": "thread visible under `threads:update`, else 404",
    "DELETE /threads/{thread_id}": "thread visible under `threads:delete`, else 404",
    "POST /threads/{thread_id}/copy": "thread visible under `threads:read` and `threads:create`, else 404",
    "POST /threads/prune": "each thread visible under `threads:delete`; others skipped",
    "GET /threads/{thread_id}/state": "thread visible under `threads:read`, else 404",
    "POST /threads/{thread_id}/state": "thread visible under `threads:update`, else 404; refused (403) while an "
    "approval waits unless the caller may decide it",
    "GET /threads/{thread_id}/state/{checkpoint_id}": "thread visible under `threads:read`, else 404",
    "POST /threads/{thread_id}/state/checkpoint": "thread visible under `threads:read`, else 404",
    "POST /threads/{thread_id}/history": "thread visible under `threads:read`, else 404",
    "GET /threads/{thread_id}/history": "thread visible under `threads:read`, else 404",
    "GET /threads/{thread_id}/stream": "thread visible under `threads:read`, else 404; then that thread's runs only",
    "POST /threads/{thread_id}/runs": "thread visible under `threads:create_run` (else 404), assistant visible under "
    "`assistants:read` (else 404); a command while an approval waits needs the right to decide it",
    "GET /threads/{thread_id}/runs": "thread visible under `threads:read`, else 404",
    "POST /threads/{thread_id}/runs/stream": "as POST /threads/{thread_id}/runs",
    "POST /threads/{thread_id}/runs/wait": "as POST /threads/{thread_id}/runs",
    "GET /threads/{thread_id}/runs/{run_id}": "run of a thread visible under `threads:read`, else 404",
    "DELETE /threads/{thread_id}/runs/{run_id}": "run of a thread visible under `threads:delete`, else 404",
    "POST /threads/{thread_id}/runs/{run_id}/cancel": "run of a thread visible under `threads:update`, else 404",
    "GET /threads/{thread_id}/runs/{run_id}/join": "run of a thread visible under `threads:read`, else 404",
    "GET /threads/{thread_id}/runs/{run_id}/stream": "run of a thread visible under `threads:read`, else 404",
    "GET /threads/{thread_id}/runs/{run_id}/trace": "run of a thread visible under `threads:read`, else 404",
    "POST /runs": "`threads:create_run`; assistant visible under `assistants:read` (else 404); run owned by the "
    "caller's tenant and the hook's filter",
    "POST /runs/stream": "as POST /runs",
    "POST /runs/wait": "as POST /runs",
    "POST /runs/batch": "as POST /runs, per item",
    "POST /runs/cancel": "each run of the caller's tenant visible under `threads:update`; others skipped",
    "GET /runs/{run_id}/join": "run of the caller's tenant visible under `threads:read` (its thread or its recorded "
    "owner), else 404",
    "GET /runs/{run_id}/stream": "as GET /runs/{run_id}/join",
    "PUT /store/items": "auth hook `store:put` (may rewrite the namespace)",
    "GET /store/items": "auth hook `store:get` (may rewrite the namespace)",
    "DELETE /store/items": "auth hook `store:delete` (may rewrite the namespace)",
    "POST /store/items/search": "auth hook `store:search` (may rewrite the namespace prefix)",
    "POST /store/namespaces": "auth hook `store:list_namespaces` (may rewrite the prefix)",
    "GET /approvals": "`approvals:decide` in the caller's tenant (403 otherwise); only that tenant's approvals",
    "GET /approvals/{approval_id}": "`approvals:decide`; approval of the caller's tenant, else 404",
    "GET /approvals/events": "`approvals:decide` in the caller's tenant (403 otherwise); only that tenant's changes",
    "GET /approvals/operator": "`approvals:decide` in the caller's tenant (403 otherwise); the caller's own identity",
    "GET /console": "public page (no data); every API call it makes is authorized as above",
    "GET /console/": "public page (no data)",
    "GET /console/config.json": "public (whether auth is configured; no data)",
    "GET /console/static/{name}": "public static assets shipped in the package",
    "POST /approvals/{approval_id}": "approval of the caller's tenant (else 404); decided per policies/tools.yaml "
    "(`approvals:decide`, separation of duties for destructive tools, `confirm` tools by their requester); "
    "decided_by is the authenticated principal",
}


def route_key(method: str, path: str) -> str:
    return f"{method} {path}"


def check_routes(routes: list[Any]) -> None:
    """Refuse to serve a route whose authorization rule nobody wrote down."""
    missing = [
        route_key(method, route.path)
        for route in routes
        for method in sorted((getattr(route, "methods", None) or set()) - {"HEAD"})
        if route_key(method, route.path) not in ROUTE_RULES
    ]
    if missing:
        raise RuntimeError(f"routes without an authorization rule in server/authorization.py: {missing}")


def user_tenant(user: User) -> str | None:
    tenant = user.extra.get("tenant_id") or user.extra.get("tenant")
    return str(tenant) if tenant else None


class Access:
    """What one caller may reach. Every lookup answers 404 for a resource outside the caller's reach."""

    def __init__(self, svc: Services, user: User) -> None:
        self.svc = svc
        self.user = user

    @classmethod
    def of(cls, request: Request) -> Access:
        return cls(services(request), request_user(request))

    @property
    def enabled(self) -> bool:
        return self.svc.authorizer.enabled

    async def filter(self, resource: str, action: str, value: dict[str, Any]) -> Filter | None:
        return await self.svc.authorizer.authorize(self.user, resource, action, value)

    def same_tenant(self, tenant: str | None) -> bool:
        """A resource recorded with a tenant is reachable only from that tenant (when auth is configured)."""
        return not self.enabled or tenant is None or tenant == user_tenant(self.user)

    def owner(self, filt: Filter | None) -> dict[str, Any]:
        """What a new resource records as its owner: the caller's tenant and the hook filter's equalities."""
        out = equality_part(filt)
        tenant = user_tenant(self.user)
        if self.enabled and tenant:
            out.setdefault("tenant", tenant)
        return out

    # -- tenants named by the caller (local development mode) ---------------------------------------
    async def check_named_tenants(self, *configs: Any) -> None:
        """In local development mode a config names its tenant: refuse one nobody registered (422 naming it and
        the known ones) instead of running against an empty tenant. With auth the token decides the tenant."""
        await self.check_tenants([name for config in configs for name in named_tenants(config)])

    async def check_tenants(self, names: list[str]) -> None:
        if self.enabled or not names:
            return
        registry = self.svc.tenants or TenantRegistry(self.svc.db)
        try:
            await registry.require(names)
        except UnknownTenant as exc:
            raise Invalid(str(exc), tenant=exc.tenant, known_tenants=exc.known) from None

    # -- threads and runs ---------------------------------------------------------------------------
    async def thread(self, thread_id: str, action: str = "read", **value: Any) -> dict[str, Any]:
        check_uuid(thread_id, "thread ID")
        filt = await self.filter("threads", action, {"thread_id": thread_id, **value})
        return await self.svc.threads.get(thread_id, filt)

    def may_reuse(self, thread: Mapping[str, Any], filt: Filter | None) -> bool:
        """`if_exists: do_nothing` returns an existing thread only to a caller who could read it."""
        return matches(thread["metadata"], filt)

    async def run_visible(self, run: Mapping[str, Any], action: str) -> bool:
        kwargs = loads(run["kwargs"]) if isinstance(run.get("kwargs"), (str, bytes)) else (run.get("kwargs") or {})
        creator = kwargs.get("user") or {}
        if not self.same_tenant(creator.get("tenant_id") or creator.get("tenant")):
            return False
        filt = await self.filter("threads", action, {"thread_id": run["thread_id"], "run_id": run["run_id"]})
        thread = await self.svc.threads.find(run["thread_id"])
        if thread is not None:
            return matches(thread["metadata"], filt)
        # A stateless run has no thread row: it carries the owner recorded when it was created.
        return matches(kwargs.get("owner") or {}, filt)

    async def run(self, run_id: str, thread_id: str | None = None, action: str = "read") -> dict[str, Any]:
        check_uuid(run_id, "run ID")
        if thread_id is not None:
            await self.thread(thread_id, action, run_id=run_id)
            return await self.svc.runs.get(thread_id, run_id)
        run = await self.svc.runs.find(run_id)
        if run is None or not await self.run_visible(run, action):
            raise NotFound(f"Run {run_id} not found")
        return run

    # -- assistants ---------------------------------------------------------------------------------
    async def assistant(
        self, assistant_id: str, action: str = "read", *, found: dict[str, Any] | None = None, **value: Any
    ) -> dict[str, Any]:
        """`found`: the assistant's row when the caller has just read it (no second read)."""
        if found is None or found["assistant_id"] != assistant_id:
            found = await self.svc.assistants.get(assistant_id)
        if action == "read" and found["assistant_id"] == system_assistant_id(found["graph_id"]):
            return found  # each served graph's own assistant is readable by every authenticated caller
        filt = await self.filter("assistants", action, {"assistant_id": found["assistant_id"], **value})
        if not matches(found["metadata"], filt) or not self.same_tenant(found["metadata"].get("tenant")):
            raise NotFound(f"Assistant {found['assistant_id']} not found")
        return found

    async def assistant_for_run(
        self, assistant_id_or_graph: str, *, row: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A run may name a graph or an assistant the caller can read; another tenant's answers 404. `row`: the
        assistant's row, already read."""
        found = await self.svc.assistants.resolve(assistant_id_or_graph, row=row)
        return await self.assistant(found["assistant_id"], "read", found=found)

    # -- crons --------------------------------------------------------------------------------------
    async def cron_visible(self, cron: Mapping[str, Any], action: str) -> bool:
        principal = cron.get("principal") or {}
        if not self.same_tenant(principal.get("tenant_id") or principal.get("tenant")):
            return False
        if self.enabled and not principal:
            return False  # made without a recorded principal (before auth was configured): operators only via SQL
        if cron.get("thread_id"):
            filt = await self.filter("threads", "read", {"thread_id": cron["thread_id"]})
            thread = await self.svc.threads.find(cron["thread_id"])
            if thread is None or not matches(thread["metadata"], filt):
                return False
        filt = await self.filter("crons", action, {"cron_id": cron["cron_id"]})
        return matches(cron.get("metadata") or {}, filt)

    async def cron(self, cron_id: str, action: str) -> dict[str, Any]:
        cron = await self.svc.crons.find(cron_id)
        if cron is None or not await self.cron_visible(cron, action):
            raise NotFound(f"Cron {cron_id} not found")
        return cron

    def visible_crons(self, action: str) -> Callable[[dict[str, Any]], Awaitable[bool]]:
        async def visible(cron: dict[str, Any]) -> bool:
            return await self.cron_visible(cron, action)

        return visible

    # -- approvals ----------------------------------------------------------------------------------
    def decider(self) -> tuple[str, list[str], str | None]:
        """The deciding identity, its permissions and tenant: the authenticated principal, or in local
        development mode the configured local operator (INTERLOCK_LOCAL_OPERATOR), who may decide in any tenant."""
        if not self.enabled:
            return get_settings().local_operator, [OPERATOR_PERMISSION], None
        return self.user.identity, list(self.user.permissions), user_tenant(self.user)

    def operator_tenant(self, requested: str | None) -> str:
        """The tenant whose approvals the caller administers (403 without the operator permission)."""
        identity, permissions, tenant = self.decider()
        if not self.enabled:
            if not requested:
                raise HTTPException(422, "query parameter 'tenant' is required in local development mode")
            return requested
        if not tenant:
            raise HTTPException(403, "the authenticated user has no tenant")
        if OPERATOR_PERMISSION not in permissions:
            raise HTTPException(403, f"reading or deciding approvals needs the '{OPERATOR_PERMISSION}' permission")
        return tenant

    def decision_tenant(self, requested: str | None) -> str | None:
        """The tenant the caller decides in: their own; in local mode the one they name (`?tenant=`)."""
        if not self.enabled:
            if not requested:
                raise HTTPException(422, "query parameter 'tenant' is required in local development mode")
            return requested
        return user_tenant(self.user)

    def check_decision(self, *, tool: str | None, requester: str | None, tenant: str | None, what: str) -> None:
        """May the caller decide this approval? Policy per tool (policies/tools.yaml `decision`):
        `operator` (default) needs `approvals:decide` in the approval's tenant, and for a destructive tool the
        requester may not approve their own request; `confirm` also lets the requesting user confirm it."""
        identity, permissions, own_tenant = self.decider()
        if self.enabled and tenant != own_tenant:
            raise NotFound(f"{what} not found")
        mode, risk = decision_rule(tool)
        if mode == "confirm" and requester and identity == requester:
            return
        if OPERATOR_PERMISSION not in permissions:
            raise HTTPException(403, f"deciding this approval needs the '{OPERATOR_PERMISSION}' permission")
        if risk == "destructive" and requester and identity == requester:
            raise HTTPException(403, "separation of duties: the requester may not approve their own destructive call")

    def check_thread_command(self, thread: Mapping[str, Any]) -> None:
        """Resuming, updating or commanding a thread that waits on an approval is deciding that approval."""
        for items in (thread.get("interrupts") or {}).values():
            for item in items:
                value = item.get("value") if isinstance(item, Mapping) else None
                if isinstance(value, Mapping) and value.get("type") == "approval":
                    self.check_decision(
                        tool=value.get("tool"),
                        requester=value.get("requester"),
                        tenant=value.get("tenant"),
                        what=f"Thread {thread.get('thread_id')}",
                    )


def decision_rule(tool: str | None) -> tuple[str, str]:
    """(who may decide, risk) for a tool from policies/tools.yaml; an unknown tool is destructive."""
    from interlock.policies.loader import get_policies

    rule = get_policies().tools.tools.get(tool or "")
    if rule is None:
        return "operator", "destructive"
    return rule.decision, rule.risk
