"""The layers hold: imports go down the floors only, never in a cycle (imports inside functions
count), the science never imports the service, and the formatter formats.

The floors, bottom up: ``pipeline`` (the science); the descriptions (registry, columns, limits,
fields, the Celery app); the data model; the selectors (reads); the services (writes); the
stages; the orchestration (the one start path, workflows, the reaper); and on top the API,
TAP, the pages, the admin, the commands and the tasks. Read from the source with :mod:`ast`,
so an import hidden in a function is seen too.
"""

from __future__ import annotations

import ast
import shutil
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("catalogue", "pipeline", "webui")
SERVICE = {"django", "catalogue", "webui", "rest_framework", "celery", "kombu", "django_filters", "drf_spectacular"}
MAX_FMT_SKIPS = 40
#: (module or package prefix, floor): the longest prefix that names a module decides its floor.
FLOORS = (
    ("pipeline", 0),
    ("catalogue", 1),  # the package's face: the Celery app
    ("catalogue.registry", 1),
    ("catalogue.columns", 1),
    ("catalogue.limits", 1),
    ("catalogue.fields", 1),
    ("catalogue.failure_reasons", 1),
    ("catalogue.celery", 1),
    ("catalogue.settings", 1),
    ("catalogue.models", 2),
    ("catalogue.selectors", 3),
    ("catalogue.services", 4),
    ("catalogue.stages", 5),
    ("catalogue.orchestration", 6),
    ("catalogue.api", 7),
    ("catalogue.tap", 7),
    ("catalogue.admin", 7),
    ("catalogue.management", 7),
    ("catalogue.tasks", 7),
    ("catalogue.console", 7),
    ("catalogue.apps", 7),
    ("catalogue.urls", 7),
    ("catalogue.middleware", 7),
    ("catalogue.serving", 7),
    ("catalogue.wsgi", 7),
    ("catalogue.asgi", 7),
    ("webui", 7),
)
FLOOR_NAMES = ("pipeline", "descriptions", "models", "selectors", "services", "stages", "orchestration", "interfaces")


def _modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
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


def _graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = _modules(root)
    graph = {}
    for name, path in modules.items():
        targets = {t for t in _imports(name, path) if t in modules and t != name}
        # a package importing its own submodules (and they it, for a name) is one unit, not a cycle
        graph[name] = {t for t in targets if not (t.startswith(name + ".") or name.startswith(t + "."))}
    return graph


def floor(module: str) -> int:
    """The floor of a module: that of the longest prefix of :data:`FLOORS` naming it.

    Raises
    ------
    LookupError
        for a module no floor names (a new top-level module must say where it stands).
    """
    matches = [(len(prefix), level) for prefix, level in FLOORS if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        raise LookupError(f"{module} is on no floor: add it to FLOORS in tests/test_layers.py")
    return max(matches)[1]


def climbing_imports(root: Path = ROOT) -> list[str]:
    """Every import from a lower floor to a higher one, as 'module (floor) -> target (floor)'."""
    found = []
    for name, targets in sorted(_graph(root).items()):
        for target in sorted(targets):
            if floor(target) > floor(name):
                found.append(f"{name} ({FLOOR_NAMES[floor(name)]}) -> {target} ({FLOOR_NAMES[floor(target)]})")
    return found


def test_the_graph_sees_imports_inside_functions():
    graph = _graph()
    assert "catalogue.tasks" in graph["catalogue.apps"]  # imported inside CatalogueConfig.ready
    assert "catalogue.selectors" in graph["catalogue.orchestration.stage"]


def test_no_import_cycle_among_the_services_modules():
    try:
        order = list(TopologicalSorter(_graph()).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
    assert order.index("catalogue.services.runs") < order.index("catalogue.orchestration.workflow")


def test_every_module_stands_on_a_floor_and_imports_only_what_is_below_or_beside_it():
    for name in _modules():
        floor(name)
    assert climbing_imports() == []


def test_an_import_that_climbs_is_caught(tmp_path):
    """A selector that imports a service, and a service that imports the orchestration, in a copy of the tree."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("migrations", "__pycache__"))
    (tmp_path / "catalogue" / "selectors" / "probe.py").write_text(
        "def reads():\n    from catalogue.services.model_sets import mark_current\n\n    return mark_current\n"
    )
    (tmp_path / "catalogue" / "services" / "probe.py").write_text("from catalogue.orchestration.start import start\n")
    assert climbing_imports(tmp_path) == [
        "catalogue.selectors.probe (selectors) -> catalogue.services.model_sets (services)",
        "catalogue.services.probe (services) -> catalogue.orchestration.start (orchestration)",
    ]


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
