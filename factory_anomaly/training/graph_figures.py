"""The seed's Figure 1 (the autoencoder) and Figure 2 (self-attention), drawn from the shipped ONNX graphs.

Drawn from `model.onnx` and `explainer.onnx` rather than by hand, so a picture in docs/ shows what is served:
every ONNX node is accounted for and every edge carries the shape `onnx.shape_inference` gives it (N: the
readings in a batch). `make figures` writes them to docs/figures (docs/figures.md says what each shows).

Why a dot emitter of our own: onnx dropped `onnx.tools.net_drawer` (onnx/onnx#8129; gone in 1.23), and the
drawers left on PyPI draw one box per ONNX op with no notion of the layer an op belongs to, so the
autoencoder's 1000 → 512 → 32 → 512 → 1000 drowns among the scorer's elementwise ops. The torch
exporter records each node's module scope (node metadata `pkg.torch.onnx.name_scopes`); grouping by it,
plus the scorer's own steps recognised by the buffers they apply (`STAGES`), gives one box per layer or
step. Writing dot text is a few lines; Graphviz's `dot` renders it (Debian's `graphviz`, `make
deploy-tools`). Training side only: nothing under app/ imports this.

Two views per graph:
  compact  one box per layer or step, edges labelled with the shape that flows between them
  ops      every ONNX node, framed by the same boxes, every edge labelled with its shape
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper, shape_inference

from factory_anomaly.artifact import (
    CURRENT_FILE,
    EXPLAINER_FILE,
    SCORER_FILE,
    ArtifactError,
    read_manifest,
    resolve_current,
)

# torch's exporter writes these on every node: ['', 'autoencoder.encoder', 'autoencoder.encoder.0', 'linear']
# and the module classes along the same path
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
CLASS_HIERARCHY_KEY = "pkg.torch.onnx.class_hierarchy"
STATE_KIND_KEY = "pkg.torch.export.graph_signature.InputSpec.kind"  # on a module's parameters and buffers
ACTIVATION_MODULE_PREFIX = "torch.nn.modules.activation."
SHOWN_VALUES_MAX = 4  # constants with at most this many elements are drawn with their values
FORMATS = ("svg", "png")  # what `dot` renders here; `make figures` commits svg (GitHub shows it)
DEFAULT_FORMATS = ("svg",)
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Stage:
    """A step of the scorer's own arithmetic (ops of the root module, outside any layer), recognised by the
    buffers it applies, the graph output it produces or consumes, or the layer it feeds
    (factory_anomaly/training/model.py AnomalyScorer, explainer.py SensorAttentionExplainer.tokens)."""

    title: str
    formula: str
    buffers: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()
    consumes: tuple[str, ...] = ()
    feeds: tuple[str, ...] = ()


STAGES = (
    Stage("standardise", "z = (x − mean) / scale", buffers=("mean", "scale")),
    Stage("residual scaling", "r = (x̂ − z) / residual_scale", buffers=("residual_scale",)),
    Stage("token features", "z, r, |r|, log(r² + ε) per sensor", feeds=("features",)),
    Stage(
        "tail shape",
        "e = r² · max(r² / c, 1)^(a − 1)",
        buffers=("tail_anchor", "tail_limit"),
        produces=("sensor_error",),
    ),
    Stage("aggregate", "score from e over the sensors", consumes=("sensor_error",)),
)


@dataclass(frozen=True)
class FigureSpec:
    """One figure: which graph, drawn how. `collapse`: module scopes drawn as one box; `outputs`: draw only
    what these graph outputs depend on (all outputs when empty)."""

    name: str
    graph_file: str
    caption: str
    compact: bool
    collapse: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


FIGURES = (
    FigureSpec("figure1_autoencoder", SCORER_FILE, "Figure 1 · the autoencoder scorer", compact=True),
    FigureSpec("figure1_autoencoder_ops", SCORER_FILE, "Figure 1, every ONNX node", compact=False),
    FigureSpec(
        "figure2_self_attention",
        EXPLAINER_FILE,
        "Figure 2 · self-attention: the attention path of the explainer",
        compact=True,
        collapse=("scorer.autoencoder",),
        outputs=("attention",),
    ),
    FigureSpec("figure2_self_attention_ops", EXPLAINER_FILE, "Figure 2, every ONNX node", compact=False),
)


class FigureError(RuntimeError):
    """The figures cannot be made: a graph that does not load or infer, or no Graphviz to render them."""


# --- the graph, with shapes -----------------------------------------------------------------------------


@dataclass
class Block:
    """One box of the compact view (a cluster of the ops view): a layer, a scorer step or a lone op."""

    key: str
    kind: str  # "layer" | "stage" | "op"
    title: str
    lines: list[str] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)  # indices into graph.node, in graph order
    parent: str = ""  # enclosing module scope of a layer, e.g. "autoencoder.encoder" (a compact frame)


@dataclass
class Graph:
    """A shape-inferred ONNX graph and the facts the drawing needs about it."""

    model: onnx.ModelProto
    shapes: dict[str, str]  # value name -> "N×1000"
    constants: dict[str, str]  # initializer name -> "[512×1000]", or "= 4" when it has only a few values
    state: set[str]  # initializers that are a module's parameter or buffer (the rest: exporter constants)
    producer: dict[str, int]  # value name -> index of the node that computes it
    consumers: dict[str, list[int]]  # value name -> indices of the nodes that read it
    scopes: list[tuple[str, ...]]  # per node: module scopes, outermost first, root excluded
    classes: list[tuple[str, ...]]  # per node: their module classes (full names), same length or empty

    @property
    def nodes(self) -> Sequence[onnx.NodeProto]:
        return self.model.graph.node

    def node_name(self, index: int) -> str:
        return self.nodes[index].name or f"node{index}"


def _dims_text(dims: Iterable[str]) -> str:
    text = "×".join(dims)
    return text or "scalar"


def _shape_text(value_type: onnx.TypeProto) -> str:
    if not value_type.HasField("tensor_type") or not value_type.tensor_type.HasField("shape"):
        return "?"
    return _dims_text(
        str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
        for d in value_type.tensor_type.shape.dim
    )


def _constant_text(tensor: onnx.TensorProto) -> str:
    """'[512×1000]' (its shape), or '= 4' / '= [6.635]' (its values, when it has only a few)."""
    count = 1
    for d in tensor.dims:
        count *= d
    if count > SHOWN_VALUES_MAX:
        return "[" + _dims_text(str(d) for d in tensor.dims) + "]"
    shown = ", ".join(f"{v:.4g}" for v in numpy_helper.to_array(tensor).reshape(-1).tolist())
    return f"= {shown}" if len(tensor.dims) == 0 else f"= [{shown}]"


def _metadata_list(node: onnx.NodeProto, key: str) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == key:
            try:
                value = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return []
            return [str(v) for v in value] if isinstance(value, list) else []
    return []


def load_graph(path: Path) -> Graph:
    """The ONNX graph at `path` after `onnx.shape_inference` (strict), indexed for drawing."""
    try:
        model = shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
    except (OSError, DecodeError, shape_inference.InferenceError) as exc:
        raise FigureError(f"{path}: not a graph whose shapes ONNX can infer: {exc}") from exc
    graph = model.graph
    shapes = {vi.name: _shape_text(vi.type) for vi in (*graph.input, *graph.value_info, *graph.output)}
    constants = {t.name: _constant_text(t) for t in graph.initializer}
    for t in graph.initializer:
        shapes.setdefault(t.name, _dims_text(str(d) for d in t.dims))
    state = {vi.name for vi in graph.value_info if any(p.key == STATE_KIND_KEY for p in vi.metadata_props)}
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    scopes: list[tuple[str, ...]] = []
    classes: list[tuple[str, ...]] = []
    for index, node in enumerate(graph.node):
        for name in node.output:
            producer[name] = index
        for name in dict.fromkeys(node.input):  # a value read twice by one node is one edge
            if name:
                consumers.setdefault(name, []).append(index)
        names = _metadata_list(node, NAME_SCOPES_KEY)[1:-1]  # drop the root '' and the op's own name
        hierarchy = _metadata_list(node, CLASS_HIERARCHY_KEY)[1:-1]
        scopes.append(tuple(names))
        classes.append(tuple(hierarchy) if len(hierarchy) == len(names) else ())
    return Graph(model, shapes, constants, state, producer, consumers, scopes, classes)


def _ancestors(graph: Graph, outputs: Sequence[str]) -> list[int]:
    """Indices of the nodes the named graph outputs depend on, in graph order."""
    wanted: set[int] = set()
    pending = [graph.producer[name] for name in outputs if name in graph.producer]
    while pending:
        index = pending.pop()
        if index in wanted:
            continue
        wanted.add(index)
        pending.extend(graph.producer[name] for name in graph.nodes[index].input if name in graph.producer)
    return sorted(wanted)


# --- boxes: layers by module scope, scorer steps by STAGES, the rest one box per op ----------------------


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _anchor(graph: Graph, index: int, drawn: set[int]) -> Stage | None:
    """The step a root op belongs to by what it touches itself (a buffer, an output, a layer it feeds)."""
    node = graph.nodes[index]
    for stage in STAGES:
        if any(name in graph.constants and _short(name) in stage.buffers for name in node.input):
            return stage
        if any(name in stage.produces for name in node.output) or any(
            name in stage.consumes for name in node.input
        ):
            return stage
        fed_scopes = {
            scope
            for name in node.output
            for consumer in graph.consumers.get(name, [])
            if consumer in drawn
            for scope in graph.scopes[consumer]
        }
        if fed_scopes & set(stage.feeds):
            return stage
    return None


def _nearest_anchor(
    graph: Graph, start: int, root_ops: set[int], anchors: dict[int, Stage], downstream: bool
) -> Stage | None:
    """The stage of the anchored root op fewest edges away in one direction, through root ops only; ties go
    to the earliest op downstream, the latest upstream. Downstream is asked first: the Sub of x̂ − z belongs
    to the residual scaling it feeds, not to the standardisation that made z."""
    seen = {start}
    frontier = [start]
    while frontier:
        following: list[int] = []
        for index in frontier:
            node = graph.nodes[index]
            if downstream:
                nearby = [c for name in node.output for c in graph.consumers.get(name, [])]
            else:
                nearby = [graph.producer[name] for name in node.input if name in graph.producer]
            following.extend(i for i in nearby if i in root_ops and i not in seen)
            seen.update(following)
        found = sorted({i for i in following if i in anchors}, reverse=not downstream)
        if found:
            return anchors[found[0]]
        frontier = following
    return None


def _layer_scope(graph: Graph, index: int, collapse: Sequence[str]) -> tuple[str, str]:
    """(the scope a node inside a torch module is drawn under, the scope enclosing that one)."""
    scopes = graph.scopes[index]
    for depth, scope in enumerate(scopes):
        if scope in collapse:
            return scope, scopes[depth - 1] if depth else ""
    return scopes[-1], scopes[-2] if len(scopes) > 1 else ""


def _module_class(graph: Graph, index: int, scope: str) -> str:
    classes = graph.classes[index]
    scopes = graph.scopes[index]
    if not classes or scope not in scopes:
        return ""
    return classes[scopes.index(scope)]


def assign_blocks(graph: Graph, drawn: Sequence[int], collapse: Sequence[str] = ()) -> list[Block]:
    """Every drawn node in exactly one box, boxes in graph order of their first node: a node inside a torch
    module goes to its module's box (an activation joins the layer before it; a `collapse` scope is one
    box); a root op to the step of STAGES it touches or, failing that, the nearest one; else its own box."""
    drawn_set = set(drawn)
    key_of: dict[int, str] = {}
    blocks: dict[str, Block] = {}

    def put(index: int, key: str, kind: str, title: str, parent: str = "") -> None:
        block = blocks.setdefault(key, Block(key=key, kind=kind, title=title, parent=parent))
        block.nodes.append(index)
        key_of[index] = key

    root_ops = {i for i in drawn if not graph.scopes[i]}
    anchors = {i: stage for i in root_ops if (stage := _anchor(graph, i, drawn_set)) is not None}
    for index in drawn:
        if index not in root_ops:
            title, parent = _layer_scope(graph, index, collapse)
            key = f"layer:{title}"
            scope = graph.scopes[index][-1]
            producer = graph.producer.get(graph.nodes[index].input[0]) if graph.nodes[index].input else None
            previous = blocks.get(key_of.get(producer, "")) if producer is not None else None
            activation = _module_class(graph, index, scope).startswith(ACTIVATION_MODULE_PREFIX)
            if (
                title == scope
                and activation
                and previous
                and previous.kind == "layer"
                and previous.parent == parent
            ):
                key, title = previous.key, previous.title  # Linear + ReLU: one layer
            put(index, key, "layer", title, parent)
            continue
        stage = anchors.get(index)
        if stage is None:
            stage = _nearest_anchor(graph, index, root_ops, anchors, downstream=True)
        if stage is None:
            stage = _nearest_anchor(graph, index, root_ops, anchors, downstream=False)
        if stage is None:
            put(index, f"op:{graph.node_name(index)}", "op", graph.nodes[index].op_type)
        else:
            put(index, f"stage:{stage.title}", "stage", stage.title)
    ordered = sorted(blocks.values(), key=lambda b: b.nodes[0])
    for block in ordered:
        block.lines = _block_lines(graph, block, collapse)
    return ordered


def _block_lines(graph: Graph, block: Block, collapse: Sequence[str]) -> list[str]:
    """The lines under a box's title: what it computes, its widths, its constants."""
    nodes = [graph.nodes[i] for i in block.nodes]
    lines: list[str] = []
    if block.kind == "stage":
        lines.append(next(s.formula for s in STAGES if s.title == block.title))
        lines.append(_op_sequence(nodes))
    elif block.kind == "layer":
        scope = block.title
        classes = list(
            dict.fromkeys(_short(_module_class(graph, i, graph.scopes[i][-1])) for i in block.nodes)
        )
        kind = (
            _short(_module_class(graph, block.nodes[0], scope)) if scope in collapse else " + ".join(classes)
        )
        lines.append(f"{kind}   {_widths(graph, block.nodes)}".strip())
    else:
        lines.extend(_attributes(nodes[0]))
    if block.kind != "layer" or block.title not in collapse:
        lines.extend(_constants(graph, nodes, _prefix(block)))
    return lines


def _prefix(block: Block) -> str:
    """What a layer's parameter names start with (its scope), left out where the box already says it."""
    return f"{block.title}." if block.kind == "layer" else ""


def _op_sequence(nodes: Sequence[onnx.NodeProto]) -> str:
    """'Abs · Mul · Unsqueeze ×4 · Concat': the op types in graph order, repeats counted."""
    runs = [(op, len(list(run))) for op, run in groupby(node.op_type for node in nodes)]
    return " · ".join(f"{op} ×{count}" if count > 1 else op for op, count in runs)


def _widths(graph: Graph, nodes: Sequence[int]) -> str:
    """The feature widths along the matrix products of these nodes: '1000 → 512' for one layer, '1000 → 512
    → 32 → 512 → 1000' for the autoencoder."""
    products = [i for i in nodes if graph.nodes[i].op_type in ("Gemm", "MatMul")]
    if not products:
        return ""
    first = graph.nodes[products[0]]
    widths = [graph.shapes.get(first.input[0], "?").rsplit("×", 1)[-1]]
    widths += [graph.shapes.get(graph.nodes[i].output[0], "?").rsplit("×", 1)[-1] for i in products]
    return " → ".join(widths)


def _attributes(node: onnx.NodeProto) -> list[str]:
    shown = []
    for attribute in node.attribute:
        if attribute.name in ("axis", "perm", "axes"):
            value = onnx.helper.get_attribute_value(attribute)
            shown.append(f"{attribute.name}={list(value) if isinstance(value, list) else value}")
    return shown


def _constants(graph: Graph, nodes: Sequence[onnx.NodeProto], prefix: str) -> list[str]:
    """'weight [512×1000] · bias [512]': the initializers the nodes read, named without the layer prefix.
    What the exporter folded has no name: a MatMul's right operand is a transposed weight (weightᵀ), the
    rest is 'const' (√d_k, reduction axes, the aggregate's scales, ...)."""
    parts: dict[str, str] = {}
    for node in nodes:
        for position, name in enumerate(node.input):
            if name not in graph.constants or name in parts:
                continue
            if name in graph.state:
                label = name.removeprefix(prefix)
            elif node.op_type == "MatMul" and position == 1:
                label = "weightᵀ"
            else:
                label = "const"
            parts[name] = f"{label} {graph.constants[name]}"
    return [" · ".join(parts.values())] if parts else []


# --- dot ---------------------------------------------------------------------------------------------------

_FILL = {"layer": "#d7e8f7", "stage": "#fbefcf", "op": "#eeeeee"}
_IO_FILL = "#dcefd6"


class LeftAligned(str):
    """Label text whose lines dot should left-align (`\\l` line ends)."""


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    if isinstance(text, LeftAligned):
        return '"' + escaped.replace("\n", "\\l") + '\\l"'
    return '"' + escaped.replace("\n", "\\n") + '"'


def _attrs(**values: str) -> str:
    return "[" + ", ".join(f"{k}={_quote(v)}" for k, v in values.items()) + "]"


def _header(title: str) -> list[str]:
    font = "Helvetica"
    graph = _attrs(label=title, labelloc="t", fontname=font, fontsize="13", rankdir="TB", ordering="out")
    node = _attrs(shape="box", style="rounded,filled", fontname=font, fontsize="11")
    edge = _attrs(fontname=font, fontsize="9", color="#555555")
    return ["digraph G {", f"  graph {graph};", f"  node {node};", f"  edge {edge};"]


def _io_nodes(graph: Graph, outputs: Sequence[str]) -> list[str]:
    lines = []
    for value in graph.model.graph.input:
        if value.name not in graph.constants:
            label = f"{value.name}\n{graph.shapes[value.name]}"
            lines.append(
                f"  {_quote('in:' + value.name)} {_attrs(label=label, shape='ellipse', fillcolor=_IO_FILL)};"
            )
    for name in outputs:
        label = f"{name}\n{graph.shapes.get(name, '?')}"
        lines.append(f"  {_quote('out:' + name)} {_attrs(label=label, shape='ellipse', fillcolor=_IO_FILL)};")
    return lines


def _edges(graph: Graph, drawn: Sequence[int], box_of: dict[int, str], outputs: Sequence[str]) -> list[str]:
    """One edge per value and pair of boxes it passes between, labelled with the value's shape."""
    inputs = {v.name for v in graph.model.graph.input}
    seen: set[tuple[str, str, str]] = set()
    lines = []

    def edge(tail: str, head: str, value: str) -> None:
        if tail != head and (tail, head, value) not in seen:
            seen.add((tail, head, value))
            lines.append(
                f"  {_quote(tail)} -> {_quote(head)} {_attrs(label=' ' + graph.shapes.get(value, '?'))};"
            )

    for index in drawn:
        for value in dict.fromkeys(graph.nodes[index].input):
            if value in graph.producer and graph.producer[value] in box_of:
                edge(box_of[graph.producer[value]], box_of[index], value)
            elif value in inputs and value not in graph.constants:
                edge("in:" + value, box_of[index], value)
    for name in outputs:
        edge(box_of[graph.producer[name]], "out:" + name, name)
    return lines


def _tooltip(graph: Graph, block: Block) -> str:
    return "ONNX nodes: " + ", ".join(graph.node_name(i) for i in block.nodes)


def _compact_boxes(graph: Graph, blocks: Sequence[Block], box_of: dict[int, str]) -> list[str]:
    """One box per block; the layers of one module (the encoder, the decoder) in a dashed frame that says
    their widths."""
    frames: dict[str, list[Block]] = {}
    for block in blocks:
        frames.setdefault(block.parent if block.kind == "layer" else "", []).append(block)
    lines = []
    for parent, members in frames.items():
        framed = bool(parent) and len(members) > 1
        indent = "    " if framed else "  "
        if framed:
            label = f"{parent}   {_widths(graph, [i for member in members for i in member.nodes])}".strip()
            lines.append(f"  subgraph {_quote('cluster:' + parent)} {{")
            lines.append(f"    graph {_attrs(label=label, style='dashed', color='#888888', labeljust='l')};")
        for block in members:
            label = "\n".join([block.title, *block.lines])
            attrs = _attrs(label=label, fillcolor=_FILL[block.kind], tooltip=_tooltip(graph, block))
            lines.append(f"{indent}{_quote(block.key)} {attrs};")
            box_of.update(dict.fromkeys(block.nodes, block.key))
        if framed:
            lines.append("  }")
    return lines


def _op_nodes(graph: Graph, blocks: Sequence[Block], box_of: dict[int, str]) -> list[str]:
    """Every ONNX node, those of a layer or scorer step inside a frame; the frame's caption is a text beside
    its first node (a frame's own label sits where the entering edge runs)."""
    lines = []
    for block in blocks:
        framed = block.kind != "op"
        indent = "    " if framed else "  "
        if framed:
            lines.append(f"  subgraph {_quote('cluster:' + block.key)} {{")
            lines.append(
                f"    graph {_attrs(label='', style='rounded,filled', fillcolor=_FILL[block.kind])};"
            )
            caption = _quote("caption:" + block.key)
            text = LeftAligned("\n".join([block.title, *block.lines[:1]]))
            lines.append(f"    {caption} {_attrs(label=text, shape='plaintext', style='solid')};")
            lines.append(
                f"    {{ rank=same; {caption}; {_quote('node:' + graph.node_name(block.nodes[0]))}; }}"
            )
        for index in block.nodes:
            node = graph.nodes[index]
            label = "\n".join([node.op_type, *_attributes(node), *_constants(graph, [node], _prefix(block))])
            key = "node:" + graph.node_name(index)
            lines.append(f"{indent}{_quote(key)} {_attrs(label=label, fillcolor='white', tooltip=key[5:])};")
            box_of[index] = key
        if framed:
            lines.append("  }")
    return lines


def to_dot(
    graph: Graph, title: str, compact: bool, collapse: Sequence[str] = (), outputs: Sequence[str] = ()
) -> str:
    """Graphviz dot text of the graph: one box per block (`compact`), or every node framed by its block.
    `outputs`: draw only what these graph outputs depend on (default: all of them)."""
    shown_outputs = list(outputs) or [v.name for v in graph.model.graph.output]
    drawn = _ancestors(graph, shown_outputs)
    blocks = assign_blocks(graph, drawn, collapse)
    box_of: dict[int, str] = {}
    lines = _header(title) + _io_nodes(graph, shown_outputs)
    lines += (_compact_boxes if compact else _op_nodes)(graph, blocks, box_of)
    lines += _edges(graph, drawn, box_of, shown_outputs)
    return "\n".join([*lines, "}"]) + "\n"


# --- files ----------------------------------------------------------------------------------------------


def render(dot_path: Path, fmt: str) -> Path:
    """`dot -T<fmt>` beside the dot file; FigureError without Graphviz."""
    dot = shutil.which("dot")
    if dot is None:
        raise FigureError("Graphviz's `dot` is not on PATH: install Debian's graphviz (`make deploy-tools`)")
    out = dot_path.with_suffix(f".{fmt}")
    done = subprocess.run([dot, f"-T{fmt}", str(dot_path), "-o", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise FigureError(f"dot -T{fmt} {dot_path} failed: {done.stderr.strip()}")
    return out


def version_dir(model_dir: Path) -> Path:
    """A version directory as given, or the one a model directory's CURRENT names (read now, so a version
    published meanwhile is the one drawn)."""
    return resolve_current(model_dir) if (model_dir / CURRENT_FILE).exists() else model_dir


def write_figures(version: Path, out_dir: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    """Every figure of FIGURES as .dot and each of `formats`. A figure of a graph the version lacks (a model
    trained with --no-explainer) is removed from `out_dir`, so no figure there shows another model."""
    manifest = read_manifest(version)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    graphs: dict[str, Graph] = {}
    for spec in FIGURES:
        path = version / spec.graph_file
        if not path.exists():
            for suffix in ("dot", *FORMATS):
                (out_dir / f"{spec.name}.{suffix}").unlink(missing_ok=True)
            continue
        if spec.graph_file not in graphs:
            graphs[spec.graph_file] = load_graph(path)
        graph = graphs[spec.graph_file]
        title = (
            f"{spec.caption}\n{spec.graph_file} of {manifest.name} {manifest.version} · "
            f"shapes from onnx.shape_inference, N = readings in a batch"
        )
        dot_path = out_dir / f"{spec.name}.dot"
        dot_path.write_text(to_dot(graph, title, spec.compact, spec.collapse, spec.outputs), encoding="utf-8")
        written.append(dot_path)
        written.extend(render(dot_path, fmt) for fmt in formats)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m factory_anomaly.training.graph_figures", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--model-dir", type=Path, required=True, help="a model directory (its CURRENT) or a version"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the .dot files and their renderings"
    )
    parser.add_argument(
        "--formats",
        nargs="*",
        default=list(DEFAULT_FORMATS),
        choices=FORMATS,
        help="renderings (none: dot text only)",
    )
    args = parser.parse_args(argv)
    try:
        written = write_figures(version_dir(args.model_dir), args.out, args.formats)
    except (ArtifactError, FigureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
