"""The package's shape, read from its source: no import circles, no private names across modules,
no class over 150 lines and no function over 60 (the developers' guide)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "livepuppet"
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 150


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


MODULES = _modules()


def _type_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only: no import at run time)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            found |= {id(n) for child in node.body for n in ast.walk(child)}
    return found


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module, names) of every ``from ... import`` and ``import`` run in the file, at any depth."""
    out = []
    skip = _type_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def _edges() -> dict[str, set[str]]:
    """Module -> the livepuppet modules it imports (a name that is a submodule counts as that module)."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, tree in MODULES.items():
        for target, names in _imports(tree):
            if not target.startswith("livepuppet"):
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            if target in MODULES and len(subs) < len(names):
                edges[module].add(target)
            edges[module].update(subs)
        edges[module].discard(module)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    cycles = _cycles(_edges())
    assert cycles == [], "\n".join(" <-> ".join(c) for c in cycles)


def test_no_private_names_across_modules() -> None:
    found = []
    for module, tree in MODULES.items():
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("livepuppet"):
                found += [f"{module}: from {node.module} import {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
                aliases |= {a.asname or a.name for a in node.names if f"{node.module}.{a.name}" in MODULES}
            elif isinstance(node, ast.Import):
                aliases |= {a.asname for a in node.names if a.asname and a.name.startswith("livepuppet")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{module}: {node.value.id}.{node.attr}")
    assert found == [], "\n".join(found)


def _sizes(kind: type) -> list[tuple[str, int]]:
    out = []
    for module, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, kind) or (kind is ast.FunctionDef and isinstance(node, ast.AsyncFunctionDef)):
                out.append((f"{module}.{node.name}", node.end_lineno - node.lineno + 1))
    return out


@pytest.mark.parametrize("kind,limit", [(ast.FunctionDef, MAX_FUNCTION_LINES), (ast.ClassDef, MAX_CLASS_LINES)],
                         ids=["functions", "classes"])
def test_no_function_or_class_too_long(kind: type, limit: int) -> None:
    long = sorted(((n, size) for n, size in _sizes(kind) if size > limit), key=lambda x: -x[1])
    assert long == [], "\n".join(f"{n}: {size} lines" for n, size in long)


def test_the_checks_can_fail() -> None:
    """The readers above see what they look for (a circle, a private import, a long function)."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert "livepuppet.cli" in MODULES and _edges()["livepuppet.cli"]
    assert max(size for _, size in _sizes(ast.FunctionDef)) > 10
