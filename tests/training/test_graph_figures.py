"""The seed's Figures 1 and 2 drawn from a real published version (`trained_small`): every ONNX node is in the
picture, the layer widths from the manifest are on it, and Graphviz renders the dot text."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from xml.etree import ElementTree

import onnx
import pytest

from factory_anomaly.artifact import EXPLAINER_FILE, SCORER_FILE, Manifest
from factory_anomaly.training.graph_figures import FIGURES, main, render, write_figures

TOOLTIP = re.compile(r'tooltip="ONNX nodes: ([^"]*)"')
OP_NODE = re.compile(r'^\s*"node:([^"]+)" \[', re.MULTILINE)


@pytest.fixture(scope="module")
def figures(trained_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("figures")
    write_figures(trained_small, out, formats=())
    return out


def _node_names(path: Path) -> set[str]:
    return {node.name for node in onnx.load(str(path), load_external_data=False).graph.node}


def _ancestor_names(path: Path, output: str) -> set[str]:
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    producer = {value: node for node in nodes for value in node.output}
    names: set[str] = set()
    pending = [producer[output]]
    while pending:
        node = pending.pop()
        if node.name not in names:
            names.add(node.name)
            pending.extend(producer[value] for value in node.input if value in producer)
    return names


def _boxed(dot: str) -> list[str]:
    """The ONNX node names each compact box says it holds, in the order drawn (a name twice: drawn twice)."""
    return [name for names in TOOLTIP.findall(dot) for name in names.split(", ")]


def test_every_figure_is_written(figures: Path) -> None:
    assert sorted(p.name for p in figures.iterdir()) == sorted(f"{spec.name}.dot" for spec in FIGURES)


def test_figure1_shows_the_autoencoder_widths_and_every_node_once(
    figures: Path, trained_small: Path, manifest: Manifest
) -> None:
    dot = (figures / "figure1_autoencoder.dot").read_text()
    n = manifest.n_sensors
    first, bottleneck = manifest.training["architecture"]["hidden"]
    for width in (n, first, bottleneck):
        assert f'label=" N×{width}"' in dot  # an edge carries that shape
    assert f"Linear + ReLU   {n} → {first}" in dot and f"Linear + ReLU   {first} → {bottleneck}" in dot
    assert f"autoencoder.encoder   {n} → {first} → {bottleneck}" in dot  # the encoder's frame
    assert f"autoencoder.decoder   {bottleneck} → {first} → {n}" in dot
    for step in ("standardise", "residual scaling", "tail shape", "aggregate"):
        assert f'"stage:{step}" [' in dot
    boxed = _boxed(dot)
    assert len(boxed) == len(set(boxed)) and set(boxed) == _node_names(trained_small / SCORER_FILE)
    assert '"out:score"' in dot and '"out:sensor_error"' in dot
    assert "?" not in dot  # shape inference gave every value a shape


def test_figure2_shows_the_attention_path(figures: Path, trained_small: Path, manifest: Manifest) -> None:
    dot = (figures / "figure2_self_attention.dot").read_text()
    n = manifest.n_sensors
    for layer in ("w_q", "w_k", "w_v", "w_o", "features", "norm", "pool", "scorer.autoencoder"):
        assert f'"layer:{layer}" [' in dot
    assert f'label=" N×{n}×{n}"' in dot  # the sensor-by-sensor attention weights
    first, bottleneck = manifest.training["architecture"]["hidden"]
    assert f"Autoencoder   {n} → {first} → {bottleneck} → {first} → {n}" in dot  # Figure 1, one box
    boxed = _boxed(dot)
    explainer = trained_small / EXPLAINER_FILE
    assert len(boxed) == len(set(boxed)) and set(boxed) == _ancestor_names(explainer, "attention")
    assert '"out:attention"' in dot and '"out:score"' not in dot
    assert "?" not in dot


@pytest.mark.parametrize(
    ("figure", "graph_file"),
    [("figure1_autoencoder_ops", SCORER_FILE), ("figure2_self_attention_ops", EXPLAINER_FILE)],
)
def test_ops_view_draws_every_onnx_node(
    figures: Path, trained_small: Path, figure: str, graph_file: str
) -> None:
    dot = (figures / f"{figure}.dot").read_text()
    drawn = OP_NODE.findall(dot)
    assert len(drawn) == len(set(drawn)) and set(drawn) == _node_names(trained_small / graph_file)
    assert "?" not in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (make deploy-tools)")
def test_graphviz_renders_every_figure(figures: Path, tmp_path: Path) -> None:
    for spec in FIGURES:
        dot = shutil.copy(figures / f"{spec.name}.dot", tmp_path)
        svg = ElementTree.parse(render(Path(dot), "svg")).getroot()
        assert svg.tag == "{http://www.w3.org/2000/svg}svg" and len(list(svg.iter())) > 50


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (make deploy-tools)")
def test_cli_draws_the_version_current_names(trained_small: Path, tmp_path: Path) -> None:
    code = main(["--model-dir", str(trained_small.parent), "--out", str(tmp_path)])
    assert code == 0
    assert trained_small.name in (tmp_path / "figure1_autoencoder.dot").read_text()
    assert (tmp_path / "figure2_self_attention.svg").is_file()


def test_cli_refuses_a_folder_without_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model-dir", str(tmp_path), "--out", str(tmp_path / "out"), "--formats"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_a_version_without_explainer_leaves_no_figure2_behind(
    figures: Path, trained_jittery: Path, tmp_path: Path
) -> None:
    for dot in figures.iterdir():
        shutil.copy(dot, tmp_path)
    written = write_figures(trained_jittery, tmp_path, formats=())  # trained with explainer=False
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    assert {p.name for p in written} == {"figure1_autoencoder.dot", "figure1_autoencoder_ops.dot"}
    assert trained_jittery.name in (tmp_path / "figure1_autoencoder.dot").read_text()
