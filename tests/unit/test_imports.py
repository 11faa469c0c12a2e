"""The package's import structure: no cycles, no private names across stages, a light root.

Read from the source (the AST of every module), so that an import inside a function counts as
much as one at the top: a cycle through a lazy import is still a cycle in the design. Imports
under `if TYPE_CHECKING:` are left out: they name types for the checker and never run.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import caloforge

SOURCE = Path(caloforge.__file__).resolve().parent
ROOT = SOURCE.parent


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by __init__)."""
    out = {}
    for path in SOURCE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


@functools.cache  # each module parsed once for the tests below (the source does not change)
def _imports(name: str) -> tuple[tuple[str, list[str]], ...]:
    """(imported module, names taken from it) for every import statement of module `name`,
    relative imports resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for statement in node.body
        for inner in ast.walk(statement)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [alias.name for alias in node.names]
            # `from package import module` imports the module
            found += [(f"{base}.{n}", []) for n in names if f"{base}.{n}" in MODULES]
            others = [n for n in names if f"{base}.{n}" not in MODULES]
            if others or base not in MODULES:
                found.append((base, others))
    return tuple(found)


def _own_module(dotted: str) -> str | None:
    """The package module `dotted` is or lies in (None outside caloforge)."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for target, _ in _imports(name):
            module = _own_module(target)
            if module is not None and module != name:
                graph[name].add(module)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _stage(module: str) -> str:
    """The stage a module belongs to: its subpackage (`caloforge.generation`), or the module
    itself at the top level (`caloforge.cli`)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_the_analysis_sees_a_cycle_and_the_package():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    # `from package import module` depends on the module, not on the package's __init__
    assert ("caloforge.training.losses", []) in _imports("caloforge.training.steps")
    assert all(target != "caloforge.training" for target, _ in _imports("caloforge.training.steps"))
    assert "caloforge.generation.pipeline" in MODULES and "caloforge.cli" in MODULES
    graph = _graph()
    assert "caloforge.models.base" in graph["caloforge.generation.pipeline"] | {
        m for d in graph["caloforge.generation.pipeline"] for m in graph[d]
    }


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (modules that import each other, directly or not): " + (
        "; ".join(" <-> ".join(c) for c in cycles)
    )


def test_no_private_name_is_imported_from_another_stage():
    found = []
    for name in MODULES:
        for target, names in _imports(name):
            module = _own_module(target)
            if module is None or _stage(module) == _stage(name):
                continue
            inside = module.split(".")[2:]  # a private module inside another stage
            private = [n for n in names if _private(n)] + [p for p in inside if _private(p)]
            found += [f"{name} imports {p} from {module}" for p in private]
    assert not found, "\n".join(found)


def test_import_caloforge_is_light():
    code = "import sys, caloforge; print(sorted({'torch', 'numpy', 'h5py'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# The stages each stage may import besides the foundation (the README's architecture table).
FOUNDATION = {
    "caloforge",
    "geometry",
    "config",
    "devices",
    "errors",
    "_arguments",
    "_files",
    "_processes",
    "_optional",
}
ALLOWED = {
    "data": {"validation"},
    "simulation": {"data", "validation"},
    "models": {"data"},
    "training": {"models", "data", "validation"},
    "validation": {"data"},
    "generation": {"models", "data", "simulation", "validation"},
    "export": {"generation", "models", "simulation"},
    "bench": {"generation", "models", "simulation"},
    "tune": {"training", "generation", "validation", "models", "data", "bench"},
}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "caloforge"


def test_each_stage_imports_only_what_the_architecture_allows():
    graph = _graph()
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        for target in targets
        if _stage(name) in ALLOWED
        and _stage(target) != _stage(name)
        and _stage(target) not in FOUNDATION | ALLOWED[_stage(name)]
    )
    assert wrong == []
