"""The package's shape (issue 10): imports go only downward through the layers, there is no
import cycle (counting imports inside functions and ``importlib.import_module`` names, not
``TYPE_CHECKING`` blocks), no module is over 500 lines and no class over 300."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent / "megafs"
# The layers, top to bottom; a module may import its own layer and the ones below it.
LAYERS = [["cli", "__main__"], ["mount"], ["fuse"], ["vfs"], ["writeback"], ["tree"], ["api"],
          ["errors", "retry", "config", "sealing", "crypto", "chunks", "osio", "__init__"]]
BESIDE = {"server"}          # the local server: may import only the ground floor


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of the megafs modules ``path`` imports at run time."""
    tree = ast.parse(path.read_text())
    me = module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            if not name.startswith("megafs"):
                continue
            for alias in node.names:
                candidate = name + "." + alias.name
                out.add(candidate if _exists(candidate) else name)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("megafs")}
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module"):
            if node.args and isinstance(node.args[0], ast.Constant):
                out.add(str(node.args[0].value))
    return {m for m in out if m != module_name(path)}


def _exists(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


def _layer(name: str) -> int | None:
    parts = name.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    return None


GRAPH = {module_name(p): imports_of(p) for p in ROOT.rglob("*.py")}


def test_imports_go_only_downward():
    wrong = []
    for mod, deps in GRAPH.items():
        top = mod.split(".")[1] if "." in mod else "__init__"
        for dep in deps:
            dep_top = dep.split(".")[1] if "." in dep else "__init__"
            if top in BESIDE:
                if dep_top not in BESIDE and _layer(dep) != len(LAYERS) - 1:
                    wrong.append((mod, dep))
                continue
            if dep_top in BESIDE:
                if top not in ("cli",):             # only the CLI starts the server
                    wrong.append((mod, dep))
                continue
            mine, theirs = _layer(mod), _layer(dep)
            if mine is not None and theirs is not None and theirs < mine:
                wrong.append((mod, dep))
    assert wrong == []


def test_no_import_cycles():
    state: dict[str, int] = {}
    cycles = []

    def visit(mod: str, stack: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(GRAPH.get(mod, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[mod] = 2
    for mod in sorted(GRAPH):
        if mod not in state:
            visit(mod, [mod])
    assert cycles == []


def test_module_and_class_sizes():
    too_big = []
    for path in ROOT.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 500:
            too_big.append((str(path.relative_to(ROOT)), len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 310:
                too_big.append((str(path.relative_to(ROOT)), node.name))
    assert too_big == []
