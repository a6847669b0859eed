"""The baseline for submit latency: a bare FastAPI endpoint that only enqueues a Celery task.

No auth, no database, no idempotency: what any FastAPI + Celery service pays at minimum.
Run by the benchmark as `uvicorn loadtests.bench.baseline_app:app`, with REDIS_URL set.
"""

import os
import uuid

from anyio import to_thread
from celery import Celery
from fastapi import FastAPI

celery = Celery("baseline", broker=os.environ["REDIS_URL"])
app = FastAPI()


@app.post("/enqueue", status_code=202)
async def enqueue() -> dict[str, str]:
    """Enqueue a no-op task and answer at once."""
    task_id = str(uuid.uuid4())
    await to_thread.run_sync(
        lambda: celery.send_task("baseline.noop", args=[task_id], task_id=task_id, queue="baseline")
    )
    return {"task_id": task_id}
