"""The package's architecture as a checked contract: every module sits in one layer of the
import-linter contract (`lint-imports`, in the README's test command, checks the direction and the
absence of cycles), a function-level import says why it is deferred, and no module imports another
module's private name."""

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "lorarepro"


def _contracts() -> dict:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["type"]: c for c in config["contracts"]}


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_of_the_package_sits_in_one_layer():
    layers = _contracts()["layers"]
    assert layers["containers"] == ["lorarepro"]
    named = [m.strip() for layer in layers["layers"] for m in layer.replace("|", ":").split(":")]
    top = sorted({p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _sources()} - {"__init__"})
    assert sorted(named) == top, "a module of src/lorarepro is missing from (or named twice in) the layers contract"


def test_cycles_are_checked_for_the_whole_package():
    assert _contracts()["acyclic_siblings"]["ancestors"] == ["lorarepro"]


def _function_imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from (sub for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom)))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_function_level_import_says_why_it_is_deferred(path):
    lines = path.read_text().splitlines()
    silent = []
    for node in _function_imports(ast.parse("\n".join(lines))):
        k = node.lineno - 1
        while k > 0 and "#" not in lines[k] and lines[k - 1].strip().startswith(("import ", "from ")):
            k -= 1  # one comment may cover a block of imports
        if "# deferred" not in lines[k] and not lines[k - 1].strip().startswith("# deferred"):
            silent.append(f"line {node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not silent, f"{path.name}: function-level imports without a '# deferred: why' comment: {silent}"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_is_imported_from_another_module(path):
    private = [f"line {node.lineno}: {node.module}.{alias.name}"
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lorarepro")
               for alias in node.names if alias.name.startswith("_")]
    assert not private, f"{path.name} imports private names: {private}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, counting every import statement: top level, inside
    functions (deferred), and a package's __init__ importing its own submodules and back."""
    modules = {_module_name(p): p for p in _sources()}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # a relative import
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                # `from pkg import sub` runs pkg's __init__ too: an edge to both
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_no_import_cycle_even_through_deferred_or_package_imports():
    """import-linter's acyclic contract sees siblings only; this counts every import statement."""
    graph = _import_graph()
    assert sum(map(len, graph.values())) > 100  # the graph was read, not empty
    assert _cycles(graph) == []
