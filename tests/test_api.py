"""The public API for plugin authors: the bundled plugins import nothing of avnbench beyond it."""

import ast
from pathlib import Path

import avnbench.api as api

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
ALLOWED = {"avnbench", "avnbench.api", "avnbench.training", "avnbench.testing"}


def _avnbench_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "avnbench":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "avnbench"}
    return found


def test_bundled_plugins_import_only_the_public_api():
    files = sorted(PLUGINS.glob("*/**/*.py"))
    assert files, "no plugin sources found"
    offending = {str(f.relative_to(PLUGINS)): sorted(_avnbench_imports(f) - ALLOWED) for f in files}
    assert not {f: m for f, m in offending.items() if m}


def test_everything_in_all_is_exported():
    missing = [name for name in api.__all__ if not hasattr(api, name)]
    assert not missing
