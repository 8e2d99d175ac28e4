"""The serving package must never import torch, onnx or the training package (the image lacks them)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "training", "onnx")


def forbidden_imports(package_dir: Path) -> list[str]:
    """`file:line module` for every import of a forbidden top-level module under `package_dir`."""
    hits = []
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            hits += [f"{path.name}:{node.lineno} {m}" for m in modules if m.split(".")[0] in FORBIDDEN]
    return hits


def test_app_sources_import_no_training_stack() -> None:
    assert forbidden_imports(ROOT / "app") == []


def test_checker_finds_each_forbidden_form(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "import torch.nn\nfrom training.model import Autoencoder\nimport onnx as o\nimport onnxruntime\n"
        "from . import training\n"
    )
    assert forbidden_imports(tmp_path) == ["bad.py:1 torch.nn", "bad.py:2 training.model", "bad.py:3 onnx"]


def test_importing_app_loads_no_training_stack() -> None:
    code = (
        "import sys, pkgutil, importlib, app\n"
        "for m in pkgutil.walk_packages(app.__path__, 'app.'): importlib.import_module(m.name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ruff_bans_the_same_imports_in_app(tmp_path: Path) -> None:
    probe = ROOT / "app" / "_boundary_probe.py"
    probe.write_text("import torch\nfrom training import model\n")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "TID251", str(probe)],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
    finally:
        probe.unlink()
    assert out.returncode == 1, out.stdout + out.stderr
    assert "app/ must not import torch" in out.stdout
    assert "app/ must not import the training package" in out.stdout
