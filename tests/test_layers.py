"""The layers hold: no import cycle among the service's modules (imports inside functions
count), the science never imports the service, and the formatter formats.

Read from the source with :mod:`ast`, so an import hidden in a function is seen too."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("catalogue", "pipeline", "webui")
SERVICE = {"django", "catalogue", "webui", "rest_framework", "celery", "kombu", "django_filters", "drf_spectacular"}
MAX_FMT_SKIPS = 40


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (absolute names)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = {t for t in _imports(name, path) if t in modules and t != name}
        # a package importing its own submodules (and they it, for a name) is one unit, not a cycle
        graph[name] = {t for t in targets if not (t.startswith(name + ".") or name.startswith(t + "."))}
    return graph


def test_the_graph_sees_imports_inside_functions():
    graph = _graph()
    assert "catalogue.tasks" in graph["catalogue.apps"]  # imported inside CatalogueConfig.ready
    assert "catalogue.selectors" in graph["catalogue.services.start"]


def test_no_import_cycle_among_the_services_modules():
    try:
        order = list(TopologicalSorter(_graph()).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
    assert order.index("catalogue.services.runs") < order.index("catalogue.services.workflow")


def test_the_science_never_imports_the_service():
    breaches = {
        name: sorted(t for t in _imports(name, path) if t.split(".")[0] in SERVICE)
        for name, path in _modules().items()
        if name.startswith("pipeline")
    }
    assert {name: found for name, found in breaches.items() if found} == {}


def test_the_formatter_formats():
    skips = sum(p.read_text().count("# fmt: skip") for package in (*PACKAGES, "tests") for p in (ROOT / package).rglob("*.py"))
    assert skips <= MAX_FMT_SKIPS
