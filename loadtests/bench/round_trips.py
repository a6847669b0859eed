"""Round trips per no-delay chat, by process, for this runtime and the previous one.

Every process of a stack counts its Redis round trips (a command or a whole pipeline; those
Celery/kombu make apart from Taskwire's own), SQL statements and commits (counting/
sitecustomize.py). A learner sends CHATS chats one after another, each after the last one's
result; a second stack runs as long with no chat, and its counts (Celery polling its queues,
heartbeats) are taken away.
"""

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from loadtests.bench.classroom import previous_runtime_code
from loadtests.bench.latency import new_account
from loadtests.bench.stack import bench_stack

COUNTING = Path(__file__).resolve().parent / "counting"
CHATS = 100
KEYS = ("redis:taskwire", "redis:celery", "db:statements", "db:commits")


def _role(argv: list[str]) -> str | None:
    """ "api", "worker" (the previous runtime's one process, or this one's chat process), or None."""
    command = argv[1] if len(argv) > 1 else ""
    if command == "worker" and "--queues" in argv:
        return "worker" if "chat" in argv[argv.index("--queues") + 1].split(",") else None
    return command if command in ("api", "worker") else None


async def _chats(base_url: str, ws_url: str, count: int) -> float:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        account = await new_account(http)
        headers = {"Authorization": f"Bearer {account['access_token']}"}
        async with connect(f"{ws_url}/ws/user/{account['participant_id']}") as ws:
            await ws.send(json.dumps({"type": "auth", "token": account["access_token"]}))
            await ws.recv()  # hello
            started = time.monotonic()
            for _ in range(count):
                task_id = (await http.post("/ai/chat2", json={"message": "count"}, headers=headers)).json()["task_id"]
                while True:
                    frame = json.loads(await ws.recv())
                    if frame.get("type") == "chat_result" and frame["task_id"] == task_id:
                        break
            return time.monotonic() - started


def _counts(folder: Path) -> dict[str, dict[str, int]]:
    by_role: dict[str, dict[str, int]] = {}
    for path in folder.glob("*.json"):
        record = json.loads(path.read_text())
        role = _role(record["argv"])
        if role is not None:
            totals = by_role.setdefault(role, dict.fromkeys(KEYS, 0))
            for key in KEYS:
                totals[key] += record["counts"].get(key, 0)
    return by_role


async def _count(code: Path | None, chats: int, duration_s: float | None) -> tuple[dict[str, dict[str, int]], float]:
    with tempfile.TemporaryDirectory() as out:
        path = f"{COUNTING}:{code / 'backend'}" if code is not None else str(COUNTING)
        settings = {"LLM_OFFLINE_DELAY_MS": "0", "TASKWIRE_COUNT_DIR": out, "PYTHONPATH": path}
        with bench_stack(code=code, **settings) as stack:
            if chats:
                duration_s = await _chats(stack.base_url, stack.ws_url, chats)
            else:
                # The control run: the same stack and account set-up, and as long, with no chat.
                await _chats(stack.base_url, stack.ws_url, 0)
                await asyncio.sleep(duration_s or 0)
        return _counts(Path(out)), duration_s or 0.0


async def per_chat(code: Path | None) -> dict[str, dict[str, float]]:
    """Round trips per chat by process role ("api", "worker") and kind of count."""
    busy, duration = await _count(code, CHATS, None)
    idle, _ = await _count(code, 0, duration)
    return {role: {key: (busy[role][key] - idle.get(role, {}).get(key, 0)) / CHATS for key in KEYS} for role in busy}


async def run() -> dict[str, Any]:
    """This runtime and the previous one, side by side."""
    results = {"taskwire": await per_chat(None)}
    with previous_runtime_code() as code:
        results["previous runtime"] = await per_chat(code)
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), indent=1))
