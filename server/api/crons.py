"""/runs/crons and /threads/{id}/runs/crons routes."""

from __future__ import annotations

from typing import Any

from interlock.server import schemas
from interlock.server.auth import User, request_user
from interlock.server.bodies import parse
from interlock.server.run_service import create_run
from interlock.server.services import Services, services
from interlock.server.threads import check_uuid
from interlock.server.webhooks import check_url
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def _authorize(request: Request, action: str, value: dict[str, Any]) -> None:
    await services(request).authorizer.authorize(request_user(request), "crons", action, value)


async def create(request: Request) -> Response:
    body = await parse(request, schemas.CronCreate, empty_ok=False)
    if body.webhook:
        check_url(body.webhook)
    svc = services(request)
    thread_id = request.path_params.get("thread_id")
    if thread_id:
        check_uuid(thread_id, "thread ID")
        await svc.threads.get(thread_id)
    await _authorize(request, "create", {**body.model_dump(), "thread_id": thread_id})
    assistant = await svc.assistants.resolve(body.assistant_id)
    cron = await svc.crons.create(
        assistant_id=assistant["assistant_id"], thread_id=thread_id, body=body, user=request_user(request)
    )
    return JSONResponse(cron)


async def get(request: Request) -> Response:
    await _authorize(request, "read", {"cron_id": request.path_params["cron_id"]})
    return JSONResponse(await services(request).crons.get(request.path_params["cron_id"]))


async def patch(request: Request) -> Response:
    body = await parse(request, schemas.CronPatch)
    if body.webhook:
        check_url(body.webhook)
    await _authorize(request, "update", {"cron_id": request.path_params["cron_id"], **body.model_dump()})
    return JSONResponse(await services(request).crons.patch(request.path_params["cron_id"], body))


async def delete(request: Request) -> Response:
    await _authorize(request, "delete", {"cron_id": request.path_params["cron_id"]})
    await services(request).crons.delete(request.path_params["cron_id"])
    return Response(status_code=204)


async def search(request: Request) -> Response:
    body = await parse(request, schemas.CronSearch)
    await _authorize(request, "search", body.model_dump())
    return JSONResponse(await services(request).crons.search(body))


async def count(request: Request) -> Response:
    body = await parse(request, schemas.CronCount)
    await _authorize(request, "search", body.model_dump())
    return JSONResponse(await services(request).crons.count(body))


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
        user = User(identity=cron["user_id"]) if cron["user_id"] else User(identity="cron", is_authenticated=False)
        await create_run(svc, user, cron["thread_id"], body, affinity=False)

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
