"""Layering rules read from the source: only hal/ names host paths, hal never imports backends, and
the packages import each other without cycles."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from .helpers import REPO

PACKAGE = REPO / "edgerun"
HOST_PREFIXES = ("/sys", "/proc", "/dev", "/etc")


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        yield name, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _leading_text(node: ast.AST) -> str | None:
    """The text a string literal (or an f-string's first literal part) starts with."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        return _leading_text(node.values[0])
    return None


def _docstrings(tree: ast.Module) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef
                                                              | ast.AsyncFunctionDef))]
    return {id(n.body[0].value) for n in nodes
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def host_path_literals(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, text) of each string literal that is a host path under /sys, /proc, /dev or /etc."""
    skip = _docstrings(tree) | {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                                for part in node.values}
    found = []
    for node in ast.walk(tree):
        text = _leading_text(node)
        if text is None or id(node) in skip:
            continue
        if any(text == p or text.startswith(p + "/") for p in HOST_PREFIXES):
            found.append((node.lineno, text))
    return found


def imported_modules(module: str, tree: ast.Module) -> set[str]:
    """Absolute names of every edgerun module ``module`` imports (top level or inside functions)."""
    package = module if (PACKAGE / Path(*module.split(".")[1:]) / "__init__.py").is_file() else \
        module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {n for n in names if n == "edgerun" or n.startswith("edgerun.")}


def _layer(module: str) -> str:
    """edgerun.hal.power -> hal; edgerun.predictor -> predictor (top-level modules are layers too)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "edgerun"


def test_only_hal_names_host_paths() -> None:
    offenders = [f"{module}:{line}: {text!r}" for module, tree in _modules()
                 if not module.startswith("edgerun.hal") for line, text in host_path_literals(tree)]
    assert offenders == [], "host paths belong in edgerun/hal (read through HostFS):\n" + "\n".join(offenders)


def test_the_rule_sees_paths_in_plain_and_f_strings() -> None:
    tree = ast.parse('A = "/sys/class/thermal"\nB = f"/dev/video{n}"\nC = "see /dev/apex_0"\n')
    assert [text for _, text in host_path_literals(tree)] == ["/sys/class/thermal", "/dev/video"]


def test_hal_never_imports_backends() -> None:
    offenders = [f"{module} imports {target}" for module, tree in _modules()
                 if module.startswith("edgerun.hal")
                 for target in imported_modules(module, tree) if _layer(target) == "backends"]
    assert offenders == []


def _layer_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, tree in _modules():
        layer = _layer(module)
        graph.setdefault(layer, set())
        graph[layer] |= {_layer(t) for t in imported_modules(module, tree)} - {layer, "edgerun"}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in ``graph`` as a path of layers, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    return next((c for n in sorted(graph) if n not in state and (c := visit(n))), None)


def test_packages_import_each_other_without_cycles() -> None:
    cycle = _cycle(_layer_graph())
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
