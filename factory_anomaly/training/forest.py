"""The seed's task-5 ensemble partner: an IsolationForest, as a torch module inside the scorer.

Why in torch and not a second graph: `AnomalyScorer` is the one definition of the score that the ONNX
export, the threshold, the held-out metrics and the explainer's graph all share. A forest inside it is
exported, parity-checked and calibrated with everything else, and serving runs the same single
`model.onnx` it always has.

scikit-learn fits the forest (`fit_forest`); `TorchIsolationForest` holds its trees as padded tensors
[trees, nodes] and walks all of them at once, one level per step, for `depth` steps (a leaf points at
itself, so walking past it stays there). Its output is scikit-learn's anomaly score, −score_samples:
2^(−E[h(x)] / c(ψ)), where h is the depth of the leaf a row reaches plus c(samples in that leaf), and
c(n) the average path length of an unsuccessful search in a binary search tree of n items.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import IsolationForest
from torch import nn

FOREST_TREES = 200
EULER_GAMMA = 0.5772156649015329


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n) of the IsolationForest paper (Liu et al. 2008): 0 for n <= 1, 1 for n = 2."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    two = n == 2
    many = n > 2
    out[two] = 1.0
    m = n[many]
    out[many] = 2.0 * (np.log(m - 1.0) + EULER_GAMMA) - 2.0 * (m - 1.0) / m
    return out


def fit_forest(z: np.ndarray, seed: int, trees: int = FOREST_TREES) -> IsolationForest:
    """An IsolationForest on standardised normal rows (scikit-learn's defaults: 256 rows per tree)."""
    return IsolationForest(n_estimators=trees, random_state=seed, n_jobs=1).fit(z)


class TorchIsolationForest(nn.Module):
    """A fitted IsolationForest's anomaly score (−score_samples) on standardised rows z [N, n] → [N]."""

    feature: torch.Tensor
    threshold: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    path: torch.Tensor
    norm: torch.Tensor

    def __init__(self, trees: int, nodes: int, depth: int) -> None:
        super().__init__()
        self.depth = depth
        self.register_buffer("feature", torch.zeros(trees, nodes, dtype=torch.int64))
        self.register_buffer("threshold", torch.zeros(trees, nodes))
        self.register_buffer("left", torch.zeros(trees, nodes, dtype=torch.int64))
        self.register_buffer("right", torch.zeros(trees, nodes, dtype=torch.int64))
        self.register_buffer("path", torch.zeros(trees, nodes))  # h at a leaf; unused elsewhere
        self.register_buffer("norm", torch.ones(1))  # c(ψ)

    @property
    def shape(self) -> dict[str, int]:
        """What a checkpoint records to rebuild the module before loading its buffers."""
        trees, nodes = self.feature.shape
        return {"trees": int(trees), "nodes": int(nodes), "depth": self.depth}

    @classmethod
    def from_sklearn(cls, forest: IsolationForest) -> TorchIsolationForest:
        estimators = forest.estimators_
        nodes = max(e.tree_.node_count for e in estimators)
        depth = max(e.tree_.max_depth for e in estimators)
        module = cls(len(estimators), nodes, depth)
        feature = np.zeros((len(estimators), nodes), dtype=np.int64)
        threshold = np.zeros((len(estimators), nodes), dtype=np.float32)
        left = np.tile(np.arange(nodes, dtype=np.int64), (len(estimators), 1))  # padding: self-loops
        right = left.copy()
        path = np.zeros((len(estimators), nodes), dtype=np.float32)
        # scikit-learn trains each tree on its own column subset only when it subsamples features
        subsample = forest._max_features != forest.n_features_in_
        for t, (estimator, subset) in enumerate(zip(estimators, forest.estimators_features_, strict=True)):
            columns = np.asarray(subset) if subsample else np.arange(forest.n_features_in_)
            tree = estimator.tree_
            count = tree.node_count
            leaf = tree.children_left[:count] == -1
            inner = ~leaf
            feature[t, :count][inner] = columns[tree.feature[:count][inner]]
            threshold[t, :count] = _float32_at_most(tree.threshold[:count])
            own = np.arange(count)
            left[t, :count] = np.where(leaf, own, tree.children_left[:count])
            right[t, :count] = np.where(leaf, own, tree.children_right[:count])
            node_depth = _node_depths(tree.children_left[:count], tree.children_right[:count])
            path[t, :count] = node_depth + average_path_length(tree.n_node_samples[:count])
        with torch.no_grad():
            module.feature.copy_(torch.from_numpy(feature))
            module.threshold.copy_(torch.from_numpy(threshold))
            module.left.copy_(torch.from_numpy(left))
            module.right.copy_(torch.from_numpy(right))
            module.path.copy_(torch.from_numpy(path))
            module.norm.fill_(float(average_path_length(np.array([forest.max_samples_]))[0]))
        return module

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        trees = self.feature.shape[0]
        node = torch.zeros(z.shape[0], trees, dtype=torch.int64, device=z.device)
        tree_index = torch.arange(trees, device=z.device).expand_as(node)
        for _ in range(self.depth):
            column = self.feature[tree_index, node]
            value = torch.gather(z, 1, column)
            go_left = value <= self.threshold[tree_index, node]
            node = torch.where(go_left, self.left[tree_index, node], self.right[tree_index, node])
        mean_path = self.path[tree_index, node].mean(dim=1)
        return torch.pow(2.0, -mean_path / self.norm)


def _float32_at_most(threshold: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64 threshold: for float32 readings x, x <= it exactly when
    x <= the threshold, as scikit-learn decides (a rounded-up threshold would send ties the other way)."""
    rounded = threshold.astype(np.float32)
    above = rounded.astype(np.float64) > threshold
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    return rounded


def _node_depths(children_left: np.ndarray, children_right: np.ndarray) -> np.ndarray:
    """Depth of every node of one tree (root 0); children always follow their parent in the arrays."""
    depth = np.zeros(children_left.size, dtype=np.float64)
    for node in range(children_left.size):
        for child in (children_left[node], children_right[node]):
            if child != -1:
                depth[child] = depth[node] + 1.0
    return depth
