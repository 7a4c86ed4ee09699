"""The package's shape: data flows one way (no import cycle, no module importing one further up the
flow, imports inside functions included), and no module is longer than 450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nex_causal"
MAX_LINES = 450

# The flow of docs/architecture.md, bottom to top: a module may import only from its own
# layer or the layers below it.
LAYERS = [
    ["errors", "registry", "runlength"],
    ["io", "stack", "settings"],
    ["resume", "cache", "variants", "shards", "distributed"],
    ["nex"],
    ["models", "geometry", "tasks", "sparsify", "stats", "traces"],
    ["zoo", "sampling", "evaluate", "recording", "replay", "sample"],
    ["capture", "pool", "profile"],
    ["selectors", "ranking", "intervene", "rewindow", "sweep"],
    ["figures", "report", "annotate", "doctor"],
    ["stages", "experiment"],
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
    """Every nex_causal module ``path`` imports, at top level or inside functions, leaving out
    ``if TYPE_CHECKING:`` blocks (annotations only, never executed)."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and getattr(block.test, "id", getattr(block.test, "attr", "")) == "TYPE_CHECKING"
               for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
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
