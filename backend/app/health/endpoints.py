import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.ops.service import task_kinds_health

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is down"}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database and Redis answer, and the bus listener is subscribed.

    `task_kinds` says, for each kind, whether a live worker can do it now and why not (no
    worker on its queue; a grader without Chromium). It does not decide readiness: this
    replica still accepts that work, which waits in its queue.
    """
    state = request.app.state
    if state.shutting_down:
        return JSONResponse({"status": "shutting_down", "checks": {}}, status_code=503)
    checks = {"database": False, "redis": False, "bus": state.bus.connected.is_set()}
    try:
        async with asyncio.timeout(2):
            async with state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        checks["database"] = True
    except Exception as exc:
        logger.warning("readiness: database check failed", extra={"error": repr(exc)})
    kinds: dict[str, object] = {}
    try:
        async with asyncio.timeout(2):
            clients = {id(c): c for c in (state.broker, state.redis)}.values()  # one ping when they are one
            checks["redis"] = all([await client.ping() for client in clients])
            health = await task_kinds_health(state.redis, state.registry)
            kinds = {
                name: {"available": h.available, "reason": h.reason, "workers": h.workers} for name, h in health.items()
            }
    except Exception as exc:
        logger.warning("readiness: redis check failed", extra={"error": repr(exc)})
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks, "task_kinds": kinds},
        status_code=200 if ready else 503,
    )
