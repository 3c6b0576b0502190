"""The package's imports, read from its source: no module imports itself through a
circle of others, and no function imports from the package (a local import that
dodges such a circle)."""

import ast
import pathlib

import pytest


ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hamux_lagr"
NAME = PACKAGE.name


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


SOURCES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules of the package that `node`, in `module`, imports."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            is_package = SOURCES[module].name == "__init__.py"
            parts = module.split(".")
            parts = parts[: len(parts) - node.level + is_package]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        # `from package import module` imports the module.
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in SOURCES else base
            for alias in node.names
        ]
    return sorted(
        {n for n in names if n == NAME or n.startswith(NAME + ".")} & set(SOURCES)
    )


def imports(module: str) -> tuple[set[str], list[str]]:
    """The package's modules that `module` imports, and the imports of the package
    that its functions make (as `line: module`)."""
    tree = ast.parse(SOURCES[module].read_text(encoding="utf-8"))
    edges, local = set(), []
    functions = [
        n
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    in_function = {
        id(n)
        for f in functions
        for n in ast.walk(f)
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found = targets(module, node)
            edges.update(found)
            is_ours = found or (isinstance(node, ast.ImportFrom) and node.level)
            if id(node) in in_function and is_ours:
                local.append(f"{SOURCES[module].name}:{node.lineno}: {found}")
    return edges, local


GRAPH = {m: imports(m) for m in SOURCES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports in `graph`, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_the_graph_is_read():
    # The graph holds the package's modules and the imports between them.
    assert {NAME, f"{NAME}._export.export", f"{NAME}.demo.__main__"} <= set(GRAPH)
    assert f"{NAME}._export.export" in GRAPH[NAME][0]
    assert f"{NAME}._export.jaxpr" in GRAPH[f"{NAME}._export.export"][0]
    assert NAME in GRAPH[f"{NAME}.demo.memories"][0]


def test_no_import_cycle():
    cycle = find_cycle({m: edges for m, (edges, _) in GRAPH.items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_no_local_import_of_the_package(module):
    _, local = GRAPH[module]
    assert not local, f"imports of the package inside functions: {local}"
