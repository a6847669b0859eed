"""Grading lanes walled off by the operating system (issue 25, finding 1, 4 and 6): the real Chromium.

Each test is a hostile page: it floods its browser beside another learner's correct page, sends
UDP with WebRTC, reaches for the host's loopback, holds more memory than its bound, or downloads
to the worker's disk. None may slow or fail the other learner, reach anything, or outlive its grading.
"""

import asyncio
import contextlib
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psutil
import pytest

from app.exercises.schemas import CodeFiles, Exercise
from app.submissions.isolation import detect_isolation
from app.submissions.sandbox import GradeReport, SandboxPool
from app.tasks.errors import PermanentError
from tests.support.grading import synthetic_exercise

HEADING = synthetic_exercise(
    [{"type": "assert_text_content", "selector": "h1", "operator": "equals", "value": "My First Page"}]
)
CORRECT = CodeFiles(html="<h1>My First Page</h1>")


def _waits(seconds: float) -> dict[str, Any]:
    """A check that holds the grading open this long (the page keeps running meanwhile), then passes."""
    return {"type": "custom_script", "script": f"return new Promise(r => setTimeout(() => r(true), {seconds * 1000}));"}


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[SandboxPool]:
    sandbox = SandboxPool(chromium_path="/usr/bin/chromium", max_concurrency=3, queue_timeout_s=60, timeout_s=5)
    yield sandbox
    await sandbox.close()


async def _grade(pool: SandboxPool, exercise: Exercise, code: CodeFiles, learner: str = "") -> GradeReport:
    return await pool.grade(exercise, code, lambda *step: None, learner=learner)


def test_lanes_run_in_namespaces_on_this_host() -> None:
    # Every other test here would pass on the weaker fallback too; CI's host must give the real thing.
    isolation = detect_isolation("auto")
    assert isolation.namespaces, isolation.reason


FLOODS = {
    "requests": "setInterval(() => { for (let i = 0; i < 2000; i++) fetch('/f' + Math.random()).catch(() => {}); }, 5);",
    "sockets": "setInterval(() => { for (let i = 0; i < 500; i++) { try { new WebSocket('ws://127.0.0.1:9/' + i); } catch (e) {} } }, 5);",
    "frames": "setInterval(() => { for (let i = 0; i < 200; i++) { const f = document.createElement('iframe'); document.body.append(f); f.remove(); } }, 1);",
    "errors": "setInterval(() => { for (let i = 0; i < 1000; i++) setTimeout(() => { throw new Error('x'); }, 0); }, 1);",
    "blobs": "const kept = []; setInterval(() => { kept.push(new Blob([new Uint8Array(50e6)])); }, 5);",
    "messages": "onmessage = () => { for (let i = 0; i < 100; i++) postMessage('again', '*'); }; postMessage('go', '*');",
}


def _renderers(pool: SandboxPool) -> set[int]:
    """PIDs of the renderers of every lane now grading."""
    found = set()
    for lane in list(pool._busy):
        with contextlib.suppress(psutil.Error):
            for process in psutil.Process(lane.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "--type=renderer" in process.cmdline():
                        found.add(process.pid)
    return found


@pytest.mark.parametrize("flood", sorted(FLOODS))
async def test_a_flooding_page_neither_slows_another_learners_grading_nor_outlives_its_own(
    pool: SandboxPool, flood: str
) -> None:
    await _grade(pool, HEADING, CORRECT)  # lanes are up
    loaded = asyncio.Event()
    hostile_code = CodeFiles(html="<h1>My First Page</h1>", js=FLOODS[flood])
    hostile = asyncio.ensure_future(
        pool.grade(synthetic_exercise([_waits(30)]), hostile_code, lambda *step: loaded.set(), learner="mallory")
    )
    await asyncio.wait_for(loaded.wait(), 30)
    await asyncio.sleep(1.0)  # the flood is running
    renderers = _renderers(pool)
    assert renderers, "the hostile page's renderer was found"
    # Graded within its own time limit (5 s) beside the flood; how long it took is make chaos's to tell.
    report = await _grade(pool, HEADING, CORRECT, learner="alice")
    # The flooding page never passes: it runs out its time, crashes, or (out of memory, its
    # check's own promise refused) is graded failing that check.
    try:
        outcome: object = (await hostile).passed
    except PermanentError as failure:
        outcome = failure.code
    ended = time.monotonic()
    assert outcome in ("timeout", "page_crashed", False), outcome
    assert report.passed, report.checkpoints
    while any(psutil.pid_exists(pid) for pid in renderers) and time.monotonic() - ended < 3:
        await asyncio.sleep(0.1)
    survivors = [pid for pid in renderers if psutil.pid_exists(pid)]
    assert not survivors, f"the flooding page's renderer outlived its grading: {survivors}"


@contextlib.contextmanager
def _udp_listener() -> Iterator[tuple[int, list[bytes]]]:
    heard: list[bytes] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                heard.append(sock.recv(2048))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], heard
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


async def test_webrtc_sends_no_udp_packet_anywhere(pool: SandboxPool) -> None:
    with _udp_listener() as (port, heard):
        code = CodeFiles(
            html="<h1>My First Page</h1>",
            js=f"""
const pc = new RTCPeerConnection({{ iceServers: [{{ urls: 'stun:127.0.0.1:{port}' }}, {{ urls: 'turn:127.0.0.1:{port}', username: 'secret-words', credential: 'x' }}] }});
pc.createDataChannel('leak');
pc.createOffer().then(offer => pc.setLocalDescription(offer));""",
        )
        report = await _grade(pool, synthetic_exercise([_waits(2)]), code)
        await asyncio.sleep(1.0)
    assert report.passed
    assert heard == [], f"the page sent {len(heard)} UDP packets to the host, e.g. {heard[:1]}"


@contextlib.contextmanager
def _tcp_listener() -> Iterator[tuple[int, list[bytes]]]:
    heard: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                connection, _ = server.accept()
                with connection:
                    connection.settimeout(1)
                    with contextlib.suppress(TimeoutError, OSError):
                        heard.append(connection.recv(2048))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], heard
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.mark.parametrize("isolation", ["auto", "process"])
async def test_the_page_reaches_no_service_on_the_hosts_loopback(isolation: str) -> None:
    # Redis, PostgreSQL and the API listen on the worker's loopback; in namespaces there is no
    # route to it, and the fallback sends every request to a proxy that is not there.
    sandbox = SandboxPool(
        chromium_path="/usr/bin/chromium", max_concurrency=1, queue_timeout_s=30, timeout_s=8, isolation=isolation
    )
    try:
        with _tcp_listener() as (port, heard):
            code = CodeFiles(
                html=f'<h1>My First Page</h1><img src="http://127.0.0.1:{port}/img">',
                js=f"""fetch('http://127.0.0.1:{port}/fetch', {{ method: 'POST', body: 'secret-words' }}).catch(() => {{}});
new WebSocket('ws://127.0.0.1:{port}/ws'); new WebSocket('ws://localhost:{port}/ws');
navigator.sendBeacon('http://127.0.0.1:{port}/beacon', 'secret-words');""",
            )
            report = await _grade(sandbox, synthetic_exercise([_waits(1.5)]), code)
            await asyncio.sleep(0.5)
        assert sandbox.isolation.namespaces == (isolation == "auto")
    finally:
        await sandbox.close()
    assert report.passed
    assert heard == [], f"the page reached the host: {heard[:2]}"
    assert any(str(port) in url for url in report.details["blocked_requests"]), report.details


async def test_a_page_cannot_hold_more_memory_than_its_bound() -> None:
    # ArrayBuffers live outside the JavaScript heap (its cap does not count them): the kernel's
    # limit on each process of the lane (1 GiB) does. The page keeps what it gets and says how much.
    sandbox = SandboxPool(chromium_path="/usr/bin/chromium", max_concurrency=1, queue_timeout_s=30, timeout_s=15)
    code = CodeFiles(
        html="<h1>My First Page</h1>",
        js="""const kept = []; let held = 0;
try { while (held < 1536) { kept.push(new Uint8Array(64 * 1024 * 1024).fill(1)); held += 64; } } catch (e) {}
document.body.dataset.held = held;""",
    )
    exercise = synthetic_exercise(
        [
            {
                "type": "assert_attribute",
                "selector": "body",
                "attribute": "data-held",
                "operator": "less_than",
                "value": 1024,
            }
        ]
    )
    try:
        try:
            report = await _grade(sandbox, exercise, code)
        except PermanentError as failure:  # killed at its bound: as good
            assert failure.code == "page_crashed", failure
        else:
            assert report.passed, "the page held 1 GiB or more of ArrayBuffers"
        assert (await _grade(sandbox, HEADING, CORRECT)).passed
    finally:
        await sandbox.close()


async def test_a_download_writes_nothing_to_the_workers_disk() -> None:
    code = CodeFiles(
        html="<h1>My First Page</h1><a id='get' download='big.bin'>get</a>",
        js="""const blob = new Blob([new Uint8Array(300 * 1024 * 1024)]);
const link = document.getElementById('get'); link.href = URL.createObjectURL(blob); link.click();""",
    )
    sandbox = SandboxPool(chromium_path="/usr/bin/chromium", max_concurrency=1, queue_timeout_s=30, timeout_s=15)
    temp = tempfile.gettempdir()
    try:
        assert (await _grade(sandbox, HEADING, CORRECT)).passed  # the lane is up before measuring
        before = shutil.disk_usage(temp).used
        peak = 0
        grading = asyncio.ensure_future(_grade(sandbox, synthetic_exercise([_waits(4)]), code))
        while not grading.done():
            peak = max(peak, shutil.disk_usage(temp).used - before)
            await asyncio.sleep(0.05)
        assert (await grading).passed
    finally:
        await sandbox.close()
    assert peak < 100 * 2**20, f"the worker's temporary disk grew {peak / 2**20:.0f} MiB during the grading"


async def test_nothing_of_any_lane_is_left_when_the_pool_closes() -> None:
    sandbox = SandboxPool(chromium_path="/usr/bin/chromium", max_concurrency=2, queue_timeout_s=30, timeout_s=5)
    try:
        with contextlib.suppress(PermanentError):
            await _grade(sandbox, HEADING, CodeFiles(html="<h1>x</h1>", js="while (true) {}"))
        assert (await _grade(sandbox, HEADING, CORRECT)).passed
        family = [p.pid for lane in sandbox._idle for p in psutil.Process(lane.pid).children(recursive=True)]
        assert len(family) > 3, "a lane: its Python, Node and browser processes"
    finally:
        await sandbox.close()
    deadline = time.monotonic() + 5
    while any(psutil.pid_exists(pid) for pid in family) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not [pid for pid in family if psutil.pid_exists(pid)]


async def test_grading_is_refused_where_required_walls_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    # SANDBOX_ISOLATION=namespaces (compose's setting) on a host that cannot make them: say why,
    # and grade nothing rather than grade without them.
    monkeypatch.setattr("app.submissions.isolation.shutil.which", lambda _name: None)
    sandbox = SandboxPool(
        chromium_path="/usr/bin/chromium", max_concurrency=1, queue_timeout_s=5, timeout_s=5, isolation="namespaces"
    )
    try:
        assert sandbox.unavailable() == "SANDBOX_ISOLATION=namespaces, but no unshare command (util-linux)"
        with pytest.raises(PermanentError) as refused:
            await _grade(sandbox, HEADING, CORRECT)
        assert refused.value.code == "sandbox_unavailable"
        assert sandbox.launches == 0
    finally:
        await sandbox.close()
