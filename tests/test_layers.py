"""The package's layers: every import points down, nothing closes a cycle (docs/architecture.md).

    errors, envs  <-  modules, data  <-  objectives  <-  trainers  <-  analysis, CLIs

A module may import its own layer or those below it. Function-local imports count too: one
that would close a cycle if it were at the top of its module is a cycle hidden, not avoided.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "torchrl_o3f"
LAYERS = {
    "_version": 0,
    "_atomic": 0,
    "errors": 0,
    "envs": 0,
    "modules": 1,
    "data": 1,
    "objectives": 2,
    "trainers": 3,
    "analysis": 4,
}
TOP = 5  # the package's own namespace and its command lines (__main__ modules)
ALLOWED_UP = {
    # the deprecated name torchrl_o3f.data.train_behavior, resolved on first use only
    ("torchrl_o3f.data", "torchrl_o3f.trainers.behavior"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports() -> list[tuple[str, str, bool, int]]:
    """``(module, imported module, at module level?, line)`` of every package import."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _module_name(path)
        tree = ast.parse(path.read_text())
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name == "torchrl_o3f" or name.startswith("torchrl_o3f."):
                    out.append((src, name, id(node) in top_level, node.lineno))
    return out


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[-1] == "__main__":
        return TOP
    return LAYERS[parts[1]]


def test_every_import_points_down_a_layer():
    up = [
        f"{src}:{line} imports {dst}"
        for src, dst, _, line in _imports()
        if _layer(dst) > _layer(src) and (src, dst) not in ALLOWED_UP
    ]
    assert up == [], "imports pointing up a layer:\n" + "\n".join(up)


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


def _graph(edges) -> dict[str, set[str]]:
    # module to module: a package's __init__ importing its submodules is how a package
    # exports them, not a cycle between two modules
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        graph.setdefault(src, set()).add(dst)
    return graph


def test_no_import_closes_a_cycle_not_even_inside_a_function():
    imports = _imports()
    top = _graph((s, d) for s, d, at_top, _ in imports if at_top)
    cycles = [
        f"{src}:{line} imports {dst}, which imports {src} back"
        for src, dst, at_top, line in imports
        if src != dst
        and not dst.startswith(src + ".")  # a package importing its own submodules
        and (src, dst) not in ALLOWED_UP
        and _reaches(top, dst, src)
    ]
    assert cycles == [], "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_importing_the_data_layer_loads_no_trainer():
    code = (
        "import sys, torchrl_o3f.data; "
        "print(sorted(m for m in sys.modules if m.startswith(('torchrl_o3f.trainers', "
        "'torchrl_o3f.objectives', 'torchrl_o3f.analysis'))))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def _public_defs() -> list[tuple[str, ast.AST]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                if node.name != "main":  # each command line's entry point
                    out.append((_module_name(path), node))
    return out


def test_no_two_public_names_mean_two_things():
    seen: dict[str, list[str]] = {}
    for module, node in _public_defs():
        seen.setdefault(node.name, []).append(module)
    twice = {name: where for name, where in seen.items() if len(where) > 1}
    assert twice == {}, f"one name, two definitions: {twice}"


def test_one_verb_for_factories_and_one_spelling():
    """``make_*`` builds from keywords; ``build_*`` from a typed config (its first argument,
    ``cfg``) or writes a dataset; "behavior" is spelt one way."""
    odd = [
        f"{module}.{node.name}"
        for module, node in _public_defs()
        if isinstance(node, ast.FunctionDef)
        and node.name.startswith("build_")
        and node.name not in ("build_dataset", "build_command")
        and (not node.args.args or node.args.args[0].arg != "cfg")
    ]
    assert odd == [], f"build_* factories that take no typed config: {odd}"
    british = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if "behaviour" in path.read_text().lower()
    ]
    assert british == [], f"'behaviour' in {british}: the package writes 'behavior'"


def test_renamed_public_names_still_work_with_a_warning():
    import torchrl_o3f.data as data
    import torchrl_o3f.modules as modules

    for module, old, new in (
        (data, "load_policy", "load_behavior_policy"),
        (data, "build_sac_actor", "make_behavior_actor"),
        (modules, "build_mlp", "make_mlp"),
    ):
        with pytest.warns(DeprecationWarning, match=new):
            assert getattr(module, old) is getattr(module, new)
