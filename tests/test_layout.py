"""The project's own files: the cluster config, the console script, and the import layering."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(60)
def test_cluster_yaml_passes_rays_launcher_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises on an unknown or missing field
    assert config["provider"]["type"] == "local"
    assert "/opt/facewatch" in config["file_mounts"]


@pytest.mark.timeout(120)
@pytest.mark.integration  # the CLI in a subprocess
def test_console_script_lists_the_command_groups():
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    for command in ("search", "watchlist", "evaluate", "audit", "models"):
        assert command in done.stdout


# --- Layering: pipelines/ <- serve/ <- jobs/ <- benchmarks/, checked on the source ---------

LAYERS = ("pipelines", "serve", "jobs", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


def _imported_names(path: Path) -> list[str]:
    """Every module an import statement names, top level or inside a function."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the project imports from root)"
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name lives in (``pipelines.config.Settings`` ->
    ``pipelines.config``), or None for a third-party name."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for name in _imported_names(path):
            target = _resolve(name, modules)
            if target and target != module:
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_itself_and_the_layers_below(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    graph = _import_graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.split(".")[0] == layer
        for target in targets
        if target.split(".")[0] not in allowed
    )
    assert not wrong, f"{layer}/ may import only {sorted(allowed)}:\n" + "\n".join(wrong)


@pytest.mark.timeout(60)
def test_the_core_does_not_import_ray():
    wrong = sorted(
        f"{_module_name(path)} imports {name}"
        for path in sorted((ROOT / "pipelines").rglob("*.py"))
        for name in _imported_names(path)
        if name == "ray" or name.startswith("ray.")
    )
    assert not wrong, "pipelines/ is the Ray-free core:\n" + "\n".join(wrong)


@pytest.mark.timeout(60)
def test_no_import_cycles_between_modules():
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.timeout(60)
def test_the_cycle_finder_finds_a_cycle():
    """The checker itself: a made-up graph with one three-module cycle and a tail."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# --- Privacy of helpers and the length of functions -------------------------------------------

CHECKED = (*LAYERS, "tests", "docs")  # the source the two checks below read
MAX_FUNCTION_LINES = 60


def _checked_files() -> list[Path]:
    return [p for top in CHECKED for p in sorted((ROOT / top).rglob("*.py"))]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_uses(source: str, own: str, modules: dict[str, Path]) -> list[str]:
    """``from X import _name`` and ``X._name`` in ``source`` (module ``own``), where X is
    another project module."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> the project module it stands for
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in modules:
                    bound[alias.asname or alias.name] = full
                elif _private(alias.name) and _resolve(full, modules) not in (None, own):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in modules:
                    bound[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            target = _dotted(node.value)
            target = bound.get(target, target)
            if target in modules and target != own:
                found.append(f"line {node.lineno}: {target}.{node.attr}")
    return found


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a chain of names, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else ""
    return ""


@pytest.mark.timeout(60)
def test_no_module_uses_another_modules_private_names():
    modules = {**_modules(), **{_module_name(p): p for p in _checked_files()}}
    wrong = [
        f"{path.relative_to(ROOT)} {use}"
        for path in _checked_files()
        for use in _private_uses(path.read_text(encoding="utf-8"), _module_name(path), modules)
    ]
    assert not wrong, "a _private name is its module's own; make it public:\n" + "\n".join(wrong)


@pytest.mark.timeout(60)
def test_the_private_check_finds_both_forms():
    """The checker itself, on made-up source that uses another module's helper both ways."""
    modules = {"pipelines.text": ROOT / "pipelines" / "text.py", "tests.probe": ROOT / "x.py"}
    source = (
        "from pipelines.text import _x, shown\nfrom pipelines import text\n"
        "text._y()\ntext.__doc__\nself._z\n"
    )
    assert _private_uses(source, "tests.probe", modules) == [
        "line 1: from pipelines.text import _x",
        "line 3: pipelines.text._y",
    ]
    assert _private_uses("from pipelines.text import _x\n", "pipelines.text", modules) == []


def _long_functions(tree: ast.AST) -> list[tuple[int, str, int]]:
    return [
        (node.lineno, node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


@pytest.mark.timeout(60)
def test_no_function_is_longer_than_60_lines_outside_the_benchmarks():
    wrong = [
        f"{path.relative_to(ROOT)}:{line} {name} ({n} lines)"
        for path in _checked_files()
        if path.relative_to(ROOT).parts[0] != "benchmarks"
        for line, name, n in _long_functions(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not wrong, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(wrong)


@pytest.mark.timeout(60)
def test_the_length_check_counts_a_functions_lines():
    short = "def f():\n" + "    x = 1\n" * 59
    assert _long_functions(ast.parse(short)) == []
    assert _long_functions(ast.parse(short + "    x = 2\n")) == [(1, "f", 61)]


@pytest.mark.timeout(60)
def test_the_archive_services_do_not_import_the_cli():
    """jobs/archive/ is called by the CLI and by other callers (benchmarks, a notebook):
    it prints nothing of its own and never needs the command line."""
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in _import_graph().items()
        if module.startswith("jobs.archive")
        for target in targets
        if target.startswith("jobs.cli")
    )
    assert not wrong, "\n".join(wrong)
