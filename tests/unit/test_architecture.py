"""Rules of the layout (CONVENTIONS.md) that are cheap to check mechanically."""

import ast
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "backend" / "app"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules() -> list[Path]:
    return sorted(APP.rglob("*.py"))


def test_only_core_security_imports_python_jose() -> None:
    importers = [p.relative_to(APP) for p in _modules() if any(n.split(".")[0] == "jose" for n in _imports(p))]
    assert importers == [Path("core/security.py")]


def test_envelopes_module_has_no_web_or_celery_imports() -> None:
    roots = {name.split(".")[0] for name in _imports(APP / "realtime" / "envelopes.py")}
    assert not roots & {"fastapi", "starlette", "celery", "redis", "app"}


def test_only_settings_read_the_environment() -> None:
    readers = [p.relative_to(APP) for p in _modules() if "os.environ" in p.read_text() or "os.getenv" in p.read_text()]
    # processes.child_env copies the environment for child processes; it reads no setting.
    assert readers == [Path("core/processes.py")]


FEATURES = ("auth", "chat", "submissions", "exercises")


def _imports_under(folder: str) -> dict[Path, set[str]]:
    return {p.relative_to(APP): _imports(p) for p in sorted((APP / folder).rglob("*.py"))}


def _importers(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path} imports {name}"
        for path, names in _imports_under(folder).items()
        for name in sorted(names)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


def test_features_never_import_the_worker() -> None:
    for feature in FEATURES:
        assert _importers(feature, ("app.worker",)) == []


def test_the_task_lifecycle_knows_no_feature_and_no_worker_process() -> None:
    # The runner never calls back into a feature: handlers are reached through the registry.
    forbidden = (*(f"app.{f}" for f in FEATURES), "app.worker", "app.task_kinds", "app.main")
    assert _importers("tasks", forbidden) == []


def test_the_worker_reaches_features_only_through_the_registry() -> None:
    assert _importers("worker", tuple(f"app.{f}" for f in FEATURES)) == []


def test_realtime_knows_nothing_of_tasks_or_features() -> None:
    assert _importers("realtime", ("app.tasks", "app.worker", *(f"app.{f}" for f in FEATURES))) == []


def test_the_worker_process_imports_no_playwright() -> None:
    # Playwright, Node and Chromium live in the grading lanes (submissions/lane.py), each its own
    # process tree: a learner's page can flood them, never the worker's event loop.
    probe = (
        "import sys, app.worker.celery_app, app.submissions.handler, app.submissions.sandbox; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'playwright' "
        "or m in ('app.submissions.lane', 'app.submissions.grading')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"the worker imported what belongs in a lane: {out}"


def test_the_api_process_imports_no_worker_only_code() -> None:
    # In a fresh interpreter: what `taskwire api` loads, and which Celery worker signals it hooks.
    probe = (
        "import sys, app.main, celery.signals as s; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'playwright' or m.startswith("
        "('app.worker', 'app.tasks.runner', 'app.chat.handler', 'app.submissions.handler', "
        "'app.submissions.sandbox')))); "
        "print(sum(len(sig.receivers) for sig in (s.worker_process_init, s.worker_ready, s.worker_shutdown)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", f"the API process imported worker-only modules: {out[0]}"
    assert out[1] == "0", "the API process connected Celery worker signals"
