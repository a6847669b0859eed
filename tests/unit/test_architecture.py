"""Rules of the layout (CONVENTIONS.md) that are cheap to check mechanically."""

import ast
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
