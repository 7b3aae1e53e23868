"""The house rules on imports, read from the source: the golden models are the specification
and import nothing above them, and the project's modules import each other without a loop."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hw", "gen", "sim", "fpga")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Project modules imported by ``path`` (``top_level_only``: at import time, not inside
    functions, which run later)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import name` imports the module pkg.name when there is one, else pkg
            names = [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def test_golden_models_import_nothing_above_them():
    for name, path in _modules().items():
        if not name.startswith("sim.golden"):
            continue
        bad = sorted(i for i in _imports(path, top_level_only=False)
                     if not i.startswith("sim.golden"))
        assert not bad, f"{name} imports {bad}: sim/golden may import only sim/golden"


def test_gateware_imports_no_generator_simulation_or_flow():
    for name, path in _modules().items():
        if not name.startswith("hw"):
            continue
        bad = sorted(i for i in _imports(path, top_level_only=False)
                     if i.split(".")[0] in ("gen", "fpga")
                     or (i.startswith("sim") and not i.startswith("sim.golden")))
        assert not bad, f"{name} imports {bad}: hw may import only hw and sim/golden"


def test_import_graph_has_no_cycle():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path, top_level_only=True):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
