"""The layout's promises (docs/architecture.md): pure modules load no Dagster, package ``__init__`` files are
empty, the project's imports form no cycle, and no domain reaches into another domain's assets or private
names.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from tis_pipeline.settings import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "tis_pipeline"
DOMAINS = ("pg", "quality", "market_data", "dsi", "trading_day", "ops")
# the modules that wire logic into Dagster; every other module of the package must import without it
DAGSTER_WIRING = {
    "assets",
    "definitions",
    "checks",
    "jobs",
    "sensors",
    "scale_out",
    "run_health",
    "resources",
    "partitions",
    "sources",
    "ge",
    "instance_storage",
}
TOP_LEVEL_WIRING = {"tis_pipeline.definitions", "tis_pipeline.resources"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _pure_modules() -> list[str]:
    names = []
    for path in _modules():
        name = _module_name(path)
        if (
            path.stem in DAGSTER_WIRING
            or name in TOP_LEVEL_WIRING
            or path.name in ("__init__.py", "__main__.py")
        ):
            continue
        names.append(name)
    return names


def _top_level_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of the imports a module runs when it loads (not those inside functions)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports never run
            continue
    return found


def _all_imports(path: Path) -> list[tuple[str, list[str]]]:
    """Every import of a module, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
    return found


def test_every_package_init_is_empty():
    inits = [p for p in _modules() if p.name == "__init__.py"]
    assert len(inits) >= len(DOMAINS) + 1
    assert [str(p.relative_to(PROJECT_ROOT)) for p in inits if p.read_text().strip()] == []


@pytest.mark.slow
def test_pure_modules_do_not_load_dagster():
    """Each pure module, imported alone in a fresh interpreter, leaves ``dagster`` out of ``sys.modules``."""
    modules = _pure_modules()
    assert {"tis_pipeline.cli.main", "tis_pipeline.market_data.validate"} <= set(modules)
    script = (
        "import importlib, sys\n"
        "bad = []\n"
        "for name in sys.argv[1:]:\n"
        "    for m in [k for k in sys.modules if k == 'dagster' or "
        "k.startswith(('dagster.', 'tis_pipeline'))]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
        "    if 'dagster' in sys.modules:\n"
        "        bad.append(name)\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *modules],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=600,
        check=True,
    )
    assert proc.stdout.strip() == ""


def test_project_imports_form_no_cycle():
    graph = nx.DiGraph()
    for path in _modules():
        name = _module_name(path)
        graph.add_node(name)
        for module, names in _top_level_imports(path):
            if not module.startswith("tis_pipeline"):
                continue
            targets = [
                f"{module}.{n}"
                for n in names
                if (PACKAGE.parent / f"{module}.{n}".replace(".", "/")).with_suffix(".py").exists()
            ]
            for target in targets or [module]:
                if target != name:
                    graph.add_edge(name, target)
    assert list(nx.simple_cycles(graph)) == []


def test_no_domain_reaches_into_another_domains_assets_or_private_names():
    offences = []
    for path in _modules():
        rel = path.relative_to(PACKAGE).parts
        own = rel[0] if len(rel) > 1 else None
        for module, names in _all_imports(path):
            parts = module.split(".")
            if parts[0] != "tis_pipeline" or len(parts) < 2 or parts[1] == own or parts[1] not in DOMAINS:
                continue
            if parts[-1] == "assets" or "assets" in names:
                offences.append(f"{path.relative_to(PROJECT_ROOT)} imports {module} assets")
            offences += [
                f"{path.relative_to(PROJECT_ROOT)} imports {module}.{n}" for n in names if n.startswith("_")
            ]
    assert offences == []


def test_domains_depend_in_one_direction():
    """pg <- quality <- market_data <- dsi <- trading_day <- ops: a domain imports only domains before it."""
    order = {d: i for i, d in enumerate(DOMAINS)}
    backwards = []
    for path in _modules():
        rel = path.relative_to(PACKAGE).parts
        if len(rel) < 2 or rel[0] not in order:
            continue
        for module, _names in _all_imports(path):
            parts = module.split(".")
            if (
                parts[0] == "tis_pipeline"
                and len(parts) > 1
                and parts[1] in order
                and order[parts[1]] > order[rel[0]]
            ):
                backwards.append(f"{path.relative_to(PROJECT_ROOT)} -> {module}")
    assert backwards == []
