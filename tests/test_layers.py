"""The shape of the code: every module imports only from its own layer or the layers below it, and no two modules
import each other, even through others (read from the source, every import statement, lazy ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

import invprop

ROOT = Path(invprop.__file__).parent
#: The layers, lowest first (README, "The shape of the code"); a module's layer is that of its first name under
#: ``invprop``. The package itself (its re-exports) and the command line are the top.
LAYERS = (
    ("errors", "registry", "settings", "files", "machine", "schedules", "optimizers", "optim_settings"),
    ("distributed", "trackers"),
    ("core",),
    ("models", "data"),
    ("methods",),
    ("config",),
    ("engine",),
    ("evaluation",),
    ("cli", "entry", "__main__", ""),
)
LAYER = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in ROOT.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """The invprop modules a file imports (``from invprop.a import b`` names ``invprop.a.b`` when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("invprop")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("invprop"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYER[parts[1] if len(parts) > 1 else ""]


GRAPH = {module: _imports(path) - {module} for module, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    assert all(isinstance(_layer(module), int) for module in MODULES)
    assert len(MODULES) > 100


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = sorted(
        f"{module} -> {target}" for module, targets in GRAPH.items() for target in targets
        if _layer(target) > _layer(module)
    )  # fmt: skip
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checks_see_an_upward_import_and_a_cycle() -> None:
    """The two checks above are not vacuous: an edge from core to engine is upward and closes a cycle."""
    GRAPH["invprop.core.bank"].add("invprop.engine.trainer")
    try:
        assert _layer("invprop.engine.trainer") > _layer("invprop.core.bank")
        failed = False
        try:
            test_the_import_graph_has_no_cycle()
        except AssertionError:
            failed = True
        assert failed
    finally:
        GRAPH["invprop.core.bank"].discard("invprop.engine.trainer")
