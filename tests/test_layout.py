"""The package's layout is its architecture: imports run one way, from the shared contracts up
through data, training, evaluation and the app to the command line, and no module imports
itself back through another. Checked on the source (every import, also those inside
functions), so a wrong-way import fails here before it becomes a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cifar100"

# Lower layers never import higher ones. Modules in one layer may import each other (no cycles).
LAYERS = [
    ("cifar100.errors", "cifar100.fileio", "cifar100.memory", "cifar100.devices"),
    ("cifar100.data",),
    ("cifar100.runs", "cifar100.checkpoint", "cifar100.weights", "cifar100.model_files", "cifar100.training"),
    ("cifar100.inference",),
    ("cifar100.evaluation",),
    ("cifar100.app",),
    ("cifar100.cli", "cifar100.__main__", "cifar100.api"),
]
# The package's __init__ is the front door: it hands out the API (lazily) and the version.
TOP = len(LAYERS) - 1


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    if module == "cifar100":
        return TOP
    best, level = -1, None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), i
    assert level is not None, f"{module} is in no layer: add it to LAYERS"
    return level


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "cifar100" and all(
                f"cifar100.{alias.name}" not in MODULES for alias in node.names):
            continue  # `from cifar100 import __version__`: a constant, not the API behind __init__
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cifar100"):
            # `from cifar100.evaluation import plots` imports the module cifar100.evaluation.plots.
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("cifar100")}
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_every_import_points_down_the_layers():
    wrong = []
    for name, path in MODULES.items():
        for imported in imports_of(path):
            if imported != "cifar100" and layer(imported) > layer(name):
                wrong.append(f"{name} (layer {layer(name)}) imports {imported} (layer {layer(imported)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = {name: {m for m in imports_of(path) if m in MODULES and m != name} for name, path in MODULES.items()}
    # Package __init__ files import nothing of ours but the version; edges into a package are
    # edges into its __init__, which is fine.
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_the_layout_groups_the_modules():
    """The packages the architecture names exist and hold their modules."""
    for package, members in {
        "data": {"types", "sources", "cifar_archives", "image_folder", "download", "images", "loader"},
        "training": {"presets", "models", "optim", "calibration", "runtime", "trainer"},
        "evaluation": {"metrics", "gradcam", "plots", "report", "compare", "evaluate"},
        "app": {"predict", "export", "serve"},
        "cli": {"main", "train", "data", "evaluate", "compare", "predict", "export", "serve", "presets"},
    }.items():
        present = {p.stem for p in (PACKAGE / package).glob("*.py")} - {"__init__"}
        assert members <= present, f"{package}/ lacks {members - present}"
