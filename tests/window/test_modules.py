"""How sbsopt.window's modules depend on one another."""

from __future__ import annotations

import ast
from pathlib import Path

import sbsopt.window

_ROOT = Path(sbsopt.window.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in _ROOT.rglob("*.py"):
        parts = ["sbsopt", "window", *path.relative_to(_ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The sbsopt.window modules ``name`` imports anywhere (inside functions too), without the
    package itself (its ``__init__`` imports every public module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m not in (name, "sbsopt.window")}


def test_no_module_imports_itself_through_others() -> None:
    """No import circle, not even through a function-level import (bounds and host_bound
    share their relaxations through ``relaxation``)."""
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "sbsopt.window.relaxation" in graph["sbsopt.window.host_bound"]
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, (*path, name))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())
