"""What the server does about approvals on its own, polling the shared database (MCP servers in other processes
create approvals too):

- expires approvals that were not decided in time (tools.yaml `approval_ttl_s`, default 24 h) and resumes the run
  waiting on each, which then ends with outcome "expired" and a message saying nothing was done;
- POSTs an `approval.requested` webhook for every new pending approval when INTERLOCK_APPROVALS_WEBHOOK_URL is
  set, through the run webhooks' sender and SSRF guard.

Each side effect is claimed in the database first, so several replicas do it once between them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from interlock.server.auth import User
from interlock.server.services import Services
from interlock.server.webhooks import Webhooks, check_url

from interlock.kernel.settings import get_settings

log = logging.getLogger("interlock.approvals")

EXPIRY_ACTOR = "interlock:expiry"


def requested_payload(approval: Any) -> dict[str, Any]:
    """The webhook body. Raw arguments stay out (they may carry personal data); the hash identifies the call."""
    return {
        "event": "approval.requested",
        "approval_id": approval.id,
        "tenant": approval.tenant,
        "tool": approval.tool,
        "server": approval.server,
        "args_hash": approval.args_hash,
        "requester": approval.principal,
        "risk": approval.risk,
        "reason": approval.reason,
        "thread_id": approval.thread_id,
        "run_id": approval.run_id,
        "created_at": approval.created_at.isoformat(),
        "expires_at": approval.expires_at.isoformat(),
    }


class ApprovalNotices:
    def __init__(self, svc: Services, webhooks: Webhooks) -> None:
        from interlock.tools.approvals import ApprovalStore

        self.svc = svc
        self.webhooks = webhooks
        self.store = ApprovalStore(svc.db_url)
        self.webhook_url = get_settings().approvals_webhook_url
        if self.webhook_url:
            check_url(self.webhook_url)  # a bad URL stops the start, naming the problem
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.store.close()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed round is retried on the next tick
                log.exception("approval notices round failed")
            await asyncio.sleep(get_settings().approvals_poll_seconds)

    async def tick(self) -> None:
        await self.store.expire_due()
        for approval in await self.store.unclaimed("run_ended", "expired"):
            thread = await self.svc.threads.find(approval.thread_id) if approval.thread_id else None
            if thread is not None and thread.get("status") == "busy":
                continue  # the run is still on its way to the interrupt: end it on a later round
            if await self.store.claim(approval.id, "run_ended") and thread is not None:
                await self._end_run(approval)
        if self.webhook_url:
            for approval in await self.store.unclaimed("requested_webhook", "pending"):
                if await self.store.claim(approval.id, "requested_webhook"):
                    self.webhooks.send(self.webhook_url, requested_payload(approval))

    async def _end_run(self, approval: Any) -> None:
        from interlock.server.api.approvals import resume_waiting_run
        from starlette.exceptions import HTTPException

        user = User(identity=EXPIRY_ACTOR, extra={"tenant": approval.tenant})
        resume = {"decision": "reject", "reason": "the approval expired", "by": EXPIRY_ACTOR}
        try:
            result = await resume_waiting_run(self.svc, user, approval, resume)
        except HTTPException as exc:  # no run waits any more (decided through the runs API, thread deleted)
            log.info("approval %s expired; %s", approval.id, exc.detail)
            return
        log.info("approval %s expired; run %s ended", approval.id, result["run_id"])
