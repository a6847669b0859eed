"""Token counts per model, kept in Redis so every worker adds to the same totals."""

import logging
from typing import Any

import redis

from app.worker.resources import WorkerResources

logger = logging.getLogger(__name__)

TOKENS_KEY = "taskwire:metrics:llm_tokens"


def count_tokens(resources: WorkerResources, model: str, usage: dict[str, Any]) -> None:
    """Add one answer's prompt and completion tokens to the model's totals (best effort)."""
    if not usage:
        return
    try:
        with resources.redis.pipeline(transaction=False) as pipe:
            for kind in ("prompt_tokens", "completion_tokens"):
                if isinstance(usage.get(kind), int):
                    pipe.hincrby(TOKENS_KEY, f"{model}:{kind}", usage[kind])
            pipe.execute()
    except redis.RedisError:
        logger.warning("could not count tokens", exc_info=True)
