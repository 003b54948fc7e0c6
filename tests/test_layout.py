"""The package's layout: every module imports, the import graph has no cycle, and compute never
imports presentation, dataset or the command line."""

import ast
import importlib
from pathlib import Path

import pytest

import convscope

PACKAGE = Path(convscope.__file__).parent
MODULES = sorted(
    ".".join(("convscope", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py"))


def imports_of(module: str) -> set[str]:
    """The convscope modules ``module`` imports anywhere in its code (functions included): for
    ``from X import name`` the submodule ``X.name`` where it is one, else ``X``."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    is_package = path.is_dir()
    source = path / "__init__.py" if is_package else path.with_suffix(".py")
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("convscope")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("convscope"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    found.discard(module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


@pytest.mark.parametrize("module", [m for m in MODULES if m != "convscope.__main__"])  # that one runs the CLI
def test_every_module_imports(module):
    importlib.import_module(module)


def test_the_import_graph_has_no_cycle():
    """Explicit imports only; the package's lazy ``__getattr__`` (``convscope/__init__.py``) is left
    out: it is the public front door and nothing inside imports it."""
    graph = {m: {t for t in targets if t != "convscope"} for m, targets in GRAPH.items() if m != "convscope"}
    assert not any("convscope" in targets for m, targets in GRAPH.items() if m != "convscope")
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("package, forbidden", [
    ("convscope.techniques", ("convscope.presentation", "convscope.dataset", "convscope.cli")),
    ("convscope.models", ("convscope.presentation", "convscope.dataset", "convscope.cli", "convscope.techniques")),
    ("convscope.presentation", ("convscope.cli", "convscope.dataset")),
    ("convscope.dataset", ("convscope.cli",)),
])
def test_imports_point_one_way(package, forbidden):
    wrong = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() if m.startswith(package + ".") or m == package
                   for t in targets if any(t == f or t.startswith(f + ".") for f in forbidden))
    assert not wrong, wrong


def test_the_graph_sees_imports():
    """The test above can fail: the graph finds a known edge of each kind."""
    assert "convscope.techniques.capture" in GRAPH["convscope.techniques.cams"]
    assert "convscope.presentation.drawing" in GRAPH["convscope.dataset.channel_examples"]
    assert "convscope.techniques.metrics" in GRAPH["convscope.dataset.shards"]  # `from ..techniques import metrics`
