"""/runs/crons and /threads/{id}/runs/crons routes."""

from __future__ import annotations

import logging
from typing import Any

from interlock.policies.pii import seal_input
from interlock.server import schemas
from interlock.server.auth import User
from interlock.server.authorization import Access
from interlock.server.bodies import parse
from interlock.server.run_service import create_run, seals_user_input
from interlock.server.services import Services, services
from interlock.server.webhooks import check_url
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("interlock.crons")


async def create(request: Request) -> Response:
    body = await parse(request, schemas.CronCreate, empty_ok=False)
    if body.webhook:
        check_url(body.webhook)
    access = Access.of(request)
    thread_id = request.path_params.get("thread_id")
    if thread_id:
        await access.thread(thread_id, "update")  # never a cron on a thread the caller cannot change
    value = {**body.model_dump(), "thread_id": thread_id, "metadata": dict(body.metadata or {})}
    filt = await access.filter("crons", "create", value)
    assistant = await access.assistant_for_run(body.assistant_id)
    await access.check_named_tenants(assistant.get("config"), body.config)
    if body.input is not None and seals_user_input(access.svc, assistant["graph_id"], access.user, body.config):
        body.input = seal_input(body.input)  # the stored payload holds no raw user input (pii.yaml store_raw_input)
    cron = await access.svc.crons.create(
        assistant_id=assistant["assistant_id"],
        thread_id=thread_id,
        body=body,
        user=access.user,
        metadata={**value["metadata"], **access.owner(filt)},
    )
    return JSONResponse(cron)


async def get(request: Request) -> Response:
    cron = await Access.of(request).cron(request.path_params["cron_id"], "read")
    return JSONResponse(await services(request).crons.get(cron["cron_id"]))


async def patch(request: Request) -> Response:
    body = await parse(request, schemas.CronPatch)
    if body.webhook:
        check_url(body.webhook)
    access = Access.of(request)
    cron = await access.cron(request.path_params["cron_id"], "update")
    if body.metadata:  # the owner keys stay what the hook's filter says: a patch cannot move a cron to another owner
        filt = await access.filter("crons", "update", {"cron_id": cron["cron_id"], **body.model_dump()})
        body.metadata = {**body.metadata, **access.owner(filt)}
    if body.input is not None:
        assistant = await access.svc.assistants.resolve(cron["assistant_id"])
        config = body.config if body.config is not None else (cron.get("payload") or {}).get("config")
        if seals_user_input(access.svc, assistant["graph_id"], access.user, config):
            body.input = seal_input(body.input)
    return JSONResponse(await access.svc.crons.patch(cron["cron_id"], body))


async def delete(request: Request) -> Response:
    cron = await Access.of(request).cron(request.path_params["cron_id"], "delete")
    await services(request).crons.delete(cron["cron_id"])
    return Response(status_code=204)


async def search(request: Request) -> Response:
    body = await parse(request, schemas.CronSearch)
    access = Access.of(request)
    return JSONResponse(await access.svc.crons.search(body, access.visible_crons("search")))


async def count(request: Request) -> Response:
    body = await parse(request, schemas.CronCount)
    access = Access.of(request)
    return JSONResponse(await access.svc.crons.count(body, access.visible_crons("search")))


def firer(svc: Services) -> Any:
    """The scheduler's callback: a cron tick becomes a run, as if its creator had asked for it."""

    async def fire(cron: dict[str, Any]) -> None:
        payload = dict(cron["payload"])
        body = schemas.RunCreate(
            assistant_id=cron["assistant_id"],
            metadata={**cron["metadata"], "cron_id": cron["cron_id"]},
            on_completion=None if cron["thread_id"] else (cron["on_run_completed"] or "delete"),
            **{k: v for k, v in payload.items() if k in schemas.RunCreate.model_fields},
        )
        if cron.get("principal"):
            user = User.from_dict(cron["principal"])  # the creator's identity, tenant and permissions
        elif svc.authorizer.enabled:
            # Never a development fallback identity on a server with auth configured.
            log.error("cron %s has no recorded principal; not run", cron["cron_id"])
            return
        else:
            user = User(identity="cron", is_authenticated=False)
        # The payload's user messages were sealed when the cron was stored (kept as they are, not sealed twice).
        await create_run(svc, user, cron["thread_id"], body, affinity=False, stored_input=True)

    return fire


routes = [
    Route("/runs/crons", create, methods=["POST"]),
    Route("/runs/crons/search", search, methods=["POST"]),
    Route("/runs/crons/count", count, methods=["POST"]),
    Route("/runs/crons/{cron_id}", get, methods=["GET"]),
    Route("/runs/crons/{cron_id}", patch, methods=["PATCH"]),
    Route("/runs/crons/{cron_id}", delete, methods=["DELETE"]),
    Route("/threads/{thread_id}/runs/crons", create, methods=["POST"]),
]
