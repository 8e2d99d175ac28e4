"""The rooms' import rules, checked on the sources (every import, local and TYPE_CHECKING ones included) and
at import time, plus a walk of the whole project's import graph that fails on any cycle.

  app       never torch, onnx, training or plant (the serving image has none of them)
  artifact  standard library and pydantic only (both sides import it)
  alarms    numpy and the standard library (both sides apply its episode rule)
  explain   numpy and the standard library (both sides order sensors by it)
  training  never app (the artifact is the only contract)
  plant     never app or training (the simulator image has no training stack)
  client    nothing of the project (its own distribution)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "factory_anomaly"
CLIENT = ROOT / "client" / "factory_anomaly_client"
SOURCES = {"factory_anomaly": PACKAGE, "factory_anomaly_client": CLIENT}

FORBIDDEN = {
    "app": ("torch", "onnx", "factory_anomaly.training", "factory_anomaly.plant"),
    "artifact": (
        "torch", "onnx", "onnxruntime", "numpy", "fastapi", "starlette",
        "factory_anomaly.app", "factory_anomaly.training", "factory_anomaly.plant",
    ),
    "alarms": (
        "torch", "onnx", "onnxruntime", "fastapi", "starlette", "pydantic",
        "factory_anomaly.app", "factory_anomaly.training", "factory_anomaly.plant",
    ),
    "explain": (
        "torch", "onnx", "onnxruntime", "fastapi", "starlette", "pydantic",
        "factory_anomaly.app", "factory_anomaly.training", "factory_anomaly.plant", "factory_anomaly.alarms",
    ),
    "training": ("factory_anomaly.app",),
    "plant": ("torch", "factory_anomaly.app", "factory_anomaly.training"),
}  # fmt: skip
CLIENT_FORBIDDEN = ("factory_anomaly", "fastapi", "starlette", "onnxruntime", "torch", "pydantic")


def _imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, wherever it stands."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            yield node.lineno, source
            for alias in node.names:  # `from pkg import submodule`
                yield node.lineno, f"{source}.{alias.name}"


def _module_name(path: Path, top: str, root: Path) -> str:
    parts = [top, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _matches(name: str, banned: str) -> bool:
    return name == banned or name.startswith(banned + ".")


def forbidden_imports(directory: Path, module: str, banned: tuple[str, ...]) -> list[str]:
    """`file:line module` for each import statement under `directory` (the package `module`) that brings
    in a banned module (the first banned name the statement imports)."""
    hits: dict[tuple[str, int], str] = {}
    for path in sorted(directory.rglob("*.py")):
        name = _module_name(path, module, directory)
        for line, imported in _imports(path, name):
            where = (str(path.relative_to(directory)), line)
            if where not in hits and any(_matches(imported, b) for b in banned):
                hits[where] = imported
    return [f"{file}:{line} {imported}" for (file, line), imported in sorted(hits.items())]


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_each_room_imports_only_what_it_may(room: str) -> None:
    assert forbidden_imports(PACKAGE / room, f"factory_anomaly.{room}", FORBIDDEN[room]) == []


def test_the_client_imports_nothing_of_the_server() -> None:
    assert forbidden_imports(CLIENT, "factory_anomaly_client", CLIENT_FORBIDDEN) == []


def test_checker_finds_each_forbidden_form(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "import torch.nn\nfrom factory_anomaly.training.model import Autoencoder\nimport onnx as o\n"
        "import onnxruntime\ndef f():\n    from factory_anomaly import training\n"
    )
    assert forbidden_imports(tmp_path, "factory_anomaly.app", FORBIDDEN["app"]) == [
        "bad.py:1 torch.nn",
        "bad.py:2 factory_anomaly.training.model",
        "bad.py:3 onnx",
        "bad.py:6 factory_anomaly.training",
    ]


# --- no import cycles --------------------------------------------------------------------------------------


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (anywhere in the file)."""
    modules: dict[str, Path] = {}
    for top, root in SOURCES.items():
        for path in root.rglob("*.py"):
            modules[_module_name(path, top, root)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {imported for _, imported in _imports(path, name) if imported in modules}
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_project_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 40  # the walk found the project
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_cycle_finder_finds_a_cycle_hidden_in_a_function() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# --- at import time ---------------------------------------------------------------------------------------


def test_importing_app_loads_no_training_stack() -> None:
    code = (
        "import sys, pkgutil, importlib, factory_anomaly.app as app\n"
        "for m in pkgutil.walk_packages(app.__path__, 'factory_anomaly.app.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx')\n"
        "             or m.startswith(('factory_anomaly.training', 'factory_anomaly.plant'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("room", ["app", "artifact", "alarms", "explain", "training", "plant"])
def test_ruff_bans_the_same_imports(room: str) -> None:
    probe = PACKAGE / room / "_boundary_probe.py"
    banned = FORBIDDEN[room]
    probe.write_text("".join(f"import {module}\n" for module in banned))
    try:
        out = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "TID251", str(probe)],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
    finally:
        probe.unlink()
    assert out.returncode == 1, out.stdout + out.stderr
    for module in banned:
        assert f"`{module}` is banned" in out.stdout, module
