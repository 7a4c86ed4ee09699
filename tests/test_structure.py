"""The package's shape: one package per step of the method, data flowing one way (no import cycle, no
module importing one further up the flow, imports inside functions and annotation-only imports
included), a small foundation at the top level, no module longer than 450 lines, and the light
modules light (no torch where none is needed)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nex_causal"
MAX_LINES = 450
MAX_TOP_LEVEL = 12  # foundation modules beside the step packages

# The flow of docs/architecture.md, bottom to top: a module may import only from its own
# layer or the layers below it.
LAYERS = [
    ["errors", "registry"],
    ["io", "versions", "settings", "stats"],
    ["resume", "cache"],
    ["nex"],
    ["models"],
    ["zoo"],
    ["capture"],
    ["selectors"],
    ["ranking", "intervene"],
    ["figures"],
    ["run"],
    ["cli", "__init__"],
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every nex_causal module ``path`` imports, at top level, inside functions or in ``if TYPE_CHECKING:``
    blocks (annotations are dependencies too: a type belongs below the modules that use it)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nex_causal")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nex_causal"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    known = modules()
    return {name for name in found if name in known} - {module_name(path)}


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYER[parts[1] if len(parts) > 1 else "__init__"]


def test_every_module_has_a_layer():
    assert all(module.split(".")[1] in LAYER for module in modules() if "." in module)


def test_no_module_imports_one_further_up_the_flow():
    upward = [f"{m} (layer {layer_of(m)}) imports {dep} (layer {layer_of(dep)})"
              for m, path in modules().items() for dep in imports(path) if layer_of(dep) > layer_of(m)]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    graph = {m: imports(p) for m, p in modules().items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_module_is_longer_than_450_lines():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_top_level_holds_the_foundation_only():
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert len(top) <= MAX_TOP_LEVEL, top
    assert set(packages) == {"cache", "models", "zoo", "capture", "nex", "selectors", "ranking", "intervene",
                             "figures", "run", "cli"}


@pytest.mark.parametrize("module", ["nex_causal", "nex_causal.nex", "nex_causal.cache", "nex_causal.models",
                                    "nex_causal.capture", "nex_causal.ranking", "nex_causal.cli"])
def test_light_modules_load_no_torch(module):
    code = f"import sys, {module}; sys.exit(int(any(m in sys.modules for m in ('torch', 'transformers', 'sklearn'))))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
