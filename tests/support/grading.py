"""Helpers for tests that grade pages: made-up exercises, and the processes grading leaves behind."""

import contextlib
from typing import Any

import psutil

from app.exercises.schemas import Exercise


def synthetic_exercise(checkpoints: list[dict[str, Any]]) -> Exercise:
    """An exercise of these checkpoints (each given a name and feedback), for grading a page against."""
    named = [{"name": f"check {i}", "feedback": "hint", **c} for i, c in enumerate(checkpoints)]
    return Exercise.model_validate(
        {
            "id": "synthetic",
            "title": "t",
            "topic": "html",
            "description_md": "d",
            "start_code": {},
            "answer": {},
            "checkpoints": named,
        }
    )


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def rss_mb(processes: list[psutil.Process]) -> float:
    """Their resident memory in MiB (those gone meanwhile count nothing)."""
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total / 2**20
