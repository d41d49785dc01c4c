"""Similarity functions: score one or many queries against a set of keys (notebook 02).

Every score function here follows one convention:

* ``keys`` has shape ``(n, d)``: one key per row.
* ``queries`` has shape ``(m, d)`` (one query per row) or ``(d,)`` (a single query).
* The result has shape ``(m, n)``, one row per query and one column per key, or ``(n,)``
  for a single query. Entry ``[i, j]`` is the score of query ``i`` against key ``j``, so a
  softmax over the last axis turns each row into attention weights.

The bilinear and additive scores have learned parameters and allow queries and keys of
different widths ``d_q`` and ``d_k``; all the others need ``d_q == d_k``. Inputs are
validated with :func:`course_lib.shapes.check_shape`: a wrong shape, a dtype mismatch or a
non-positive bandwidth raises at once with a message saying what was expected.

The module also holds the figures of notebook 02 (score landscapes, key length, the
query explorer and kernel regression); matplotlib is imported inside those functions.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
from torch import nn

from course_lib.shapes import check_shape

__all__ = [
    "dot_score", "scaled_dot_score", "cosine_score", "neg_sq_euclidean_score", "bilinear_score",
    "additive_score", "AdditiveScore", "gaussian_kernel_score", "nadaraya_watson", "flops_per_pair",
    "plot_score_landscapes", "plot_key_length", "plot_query_scores", "plot_kernel_regression",
]

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- input handling
def _as_matrix(x: torch.Tensor, name: str, width: str, **sizes: int) -> tuple[torch.Tensor, bool, dict]:
    """Accept ``(width,)`` or ``(rows, width)``; return the 2-D view, whether it was 1-D, and the sizes."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch tensor of shape ({width},) or (m, {width}), "
                        f"got {type(x).__name__}")
    if x.dim() == 1:
        found = check_shape(x, width, name=name, dtype="float", **sizes)
        return x.unsqueeze(0), True, found
    if x.dim() == 2:
        found = check_shape(x, f"m {width}", name=name, dtype="float", **sizes)
        return x, False, found
    raise ValueError(f"{name}: expected shape ({width},) for one query or (m, {width}) for m queries, "
                     f"got shape {tuple(x.shape)}")


def _same_dtype(*named: tuple[str, torch.Tensor]) -> None:
    first_name, first = named[0]
    for name, tensor in named[1:]:
        if tensor.dtype != first.dtype:
            raise TypeError(f"{first_name} and {name} must have the same dtype, got {first.dtype} and "
                            f"{tensor.dtype}: convert one with .to({first_name}.dtype)")
        if tensor.device != first.device:
            raise ValueError(f"{first_name} and {name} must be on the same device, got {first.device} "
                             f"and {tensor.device}")


def _prepare(queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate queries (m, d) or (d,) and keys (n, d) of the same width d."""
    if not isinstance(keys, torch.Tensor):
        raise TypeError(f"keys: expected a torch tensor of shape (n, d), got {type(keys).__name__}")
    sizes = check_shape(keys, "n d", name="keys", dtype="float")
    q, single, _ = _as_matrix(queries, "queries", "d", d=sizes["d"])
    _same_dtype(("queries", q), ("keys", keys))
    return q, keys, single


def _finish(scores: torch.Tensor, single: bool) -> torch.Tensor:
    return scores.squeeze(0) if single else scores


def _check_bandwidth(bandwidth: float) -> float:
    if isinstance(bandwidth, torch.Tensor):
        if bandwidth.numel() != 1:
            raise ValueError(f"bandwidth must be one number, got a tensor of shape {tuple(bandwidth.shape)}")
        bandwidth = bandwidth.item()
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)):
        raise TypeError(f"bandwidth must be a positive number, got {bandwidth!r}")
    if not math.isfinite(bandwidth) or bandwidth <= 0:
        raise ValueError(f"bandwidth must be a positive, finite number, got {bandwidth!r}")
    return float(bandwidth)


# --------------------------------------------------------------------------- scores without parameters
def dot_score(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Dot product ``q · k``.

    Args:
        queries: (m, d) or (d,).
        keys: (n, d).

    Returns:
        (m, n), or (n,) for a single query.
    """
    q, k, single = _prepare(queries, keys)
    return _finish(q @ k.T, single)


def scaled_dot_score(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Scaled dot product ``q · k / sqrt(d)`` (Vaswani et al., 2017).

    Args:
        queries: (m, d) or (d,).
        keys: (n, d).

    Returns:
        (m, n), or (n,) for a single query.
    """
    q, k, single = _prepare(queries, keys)
    return _finish(q @ k.T / math.sqrt(k.shape[1]), single)


def _robust_norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each row, (r, d) -> (r, 1), without overflow for huge entries."""
    scale = x.abs().amax(dim=-1, keepdim=True)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return safe * torch.linalg.vector_norm(x / safe, dim=-1, keepdim=True)


def cosine_score(queries: torch.Tensor, keys: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity ``q · k / (max(|q|, eps) · max(|k|, eps))``, in [-1, 1].

    The same formula as ``torch.nn.functional.cosine_similarity``: a vector shorter than
    ``eps`` (a zero vector in particular) is divided by ``eps`` instead of its length, so it
    scores (close to) 0 against every vector instead of giving NaN. The lengths are computed
    so that vectors with huge entries (1e30 in float32) do not overflow.

    Args:
        queries: (m, d) or (d,).
        keys: (n, d).
        eps: a positive number, the smallest length a vector is divided by.

    Returns:
        (m, n), or (n,) for a single query.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    q, k, single = _prepare(queries, keys)
    q_unit = q / _robust_norm(q).clamp_min(eps)
    k_unit = k / _robust_norm(k).clamp_min(eps)
    return _finish(q_unit @ k_unit.T, single)


def neg_sq_euclidean_score(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Negative squared Euclidean distance ``-|q - k|²``: 0 for k = q, more negative farther away.

    Computed from the differences (an (m, n, d) intermediate), so a key equal to the query
    scores exactly 0.

    Args:
        queries: (m, d) or (d,).
        keys: (n, d).

    Returns:
        (m, n), or (n,) for a single query.
    """
    q, k, single = _prepare(queries, keys)
    diff = q[:, None, :] - k[None, :, :]  # (m, n, d)
    return _finish(-(diff * diff).sum(dim=-1), single)


def gaussian_kernel_score(queries: torch.Tensor, keys: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Gaussian (RBF) kernel ``exp(-|q - k|² / (2 σ²))`` with bandwidth ``σ``, in (0, 1].

    Its logarithm is the negative squared distance divided by ``2 σ²``; softmax of that
    logarithm gives the Nadaraya–Watson weights (see :func:`nadaraya_watson`).

    Args:
        queries: (m, d) or (d,).
        keys: (n, d).
        bandwidth: σ > 0, the distance over which the kernel falls to exp(-1/2) ≈ 0.61.

    Returns:
        (m, n), or (n,) for a single query.

    Raises:
        ValueError: bandwidth is not positive and finite.
    """
    sigma = _check_bandwidth(bandwidth)
    return torch.exp(neg_sq_euclidean_score(queries, keys) / (2 * sigma * sigma))


# --------------------------------------------------------------------------- scores with parameters
def bilinear_score(queries: torch.Tensor, keys: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Bilinear ("general") score ``q^T W k`` (Luong et al., 2015).

    With ``W`` the identity it is the dot product. Queries and keys may have different widths.

    Args:
        queries: (m, d_q) or (d_q,).
        keys: (n, d_k).
        weight: W, (d_q, d_k).

    Returns:
        (m, n), or (n,) for a single query.
    """
    if not isinstance(keys, torch.Tensor):
        raise TypeError(f"keys: expected a torch tensor of shape (n, d_k), got {type(keys).__name__}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a torch tensor of shape (d_q, d_k), got {type(weight).__name__}")
    sizes = check_shape(keys, "n d_k", name="keys", dtype="float")
    sizes = check_shape(weight, "d_q d_k", name="weight", dtype="float", d_k=sizes["d_k"])
    q, single, _ = _as_matrix(queries, "queries", "d_q", d_q=sizes["d_q"])
    _same_dtype(("queries", q), ("keys", keys), ("weight", weight))
    return _finish(q @ weight @ keys.T, single)


def additive_score(queries: torch.Tensor, keys: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor,
                   v: torch.Tensor) -> torch.Tensor:
    """Additive score ``v^T tanh(W_q q + W_k k)`` (Bahdanau, Cho and Bengio, 2015).

    In the course's row-vector convention this is ``tanh(q @ w_q + k @ w_k) @ v``. The tanh
    sits between the two halves, so the (m, n, d_hidden) hidden tensor must be formed: the cost per
    query–key pair grows with the hidden size d_hidden.

    Args:
        queries: (m, d_q) or (d_q,).
        keys: (n, d_k).
        w_q: (d_q, d_hidden), projects a query into the hidden space.
        w_k: (d_k, d_hidden), projects a key into the hidden space.
        v: (d_hidden,), reads one number out of the hidden vector.

    Returns:
        (m, n), or (n,) for a single query.
    """
    for name, tensor, pattern in (("keys", keys, "(n, d_k)"), ("w_q", w_q, "(d_q, d_hidden)"),
                                  ("w_k", w_k, "(d_k, d_hidden)"), ("v", v, "(d_hidden,)")):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name}: expected a torch tensor of shape {pattern}, got {type(tensor).__name__}")
    sizes = check_shape(keys, "n d_k", name="keys", dtype="float")
    sizes = check_shape(w_k, "d_k d_hidden", name="w_k", dtype="float", **sizes)
    sizes = check_shape(v, "d_hidden", name="v", dtype="float", **sizes)
    sizes = check_shape(w_q, "d_q d_hidden", name="w_q", dtype="float", **sizes)
    q, single, _ = _as_matrix(queries, "queries", "d_q", d_q=sizes["d_q"])
    _same_dtype(("queries", q), ("keys", keys), ("w_q", w_q), ("w_k", w_k), ("v", v))
    hidden = torch.tanh((q @ w_q)[:, None, :] + (keys @ w_k)[None, :, :])  # (m, n, d_hidden)
    return _finish(hidden @ v, single)


class AdditiveScore(nn.Module):
    """The additive score as a module with learnable ``w_q (d_q, d_hidden)``, ``w_k (d_k, d_hidden)``, ``v (d_hidden,)``.

    The parameters start uniform in ±1/sqrt(fan-in), like ``nn.Linear``, drawn from a
    ``torch.Generator`` seeded with ``seed`` so the same seed gives the same module.

    Call it as ``score(queries, keys)``: queries (m, d_q) or (d_q,), keys (n, d_k) ->
    (m, n) or (n,).
    """

    def __init__(self, d_q: int, d_k: int, d_hidden: int, *, seed: int = 0):
        super().__init__()
        for name, value in (("d_q", d_q), ("d_k", d_k), ("d_hidden", d_hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        gen = torch.Generator().manual_seed(seed)

        def uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
            bound = 1 / math.sqrt(fan_in)
            return nn.Parameter((torch.rand(shape, generator=gen) * 2 - 1) * bound)

        self.w_q = uniform((d_q, d_hidden), d_q)
        self.w_k = uniform((d_k, d_hidden), d_k)
        self.v = uniform((d_hidden,), d_hidden)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return additive_score(queries, keys, self.w_q, self.w_k, self.v)

    def extra_repr(self) -> str:
        d_q, d_hidden = self.w_q.shape
        return f"d_q={d_q}, d_k={self.w_k.shape[0]}, d_hidden={d_hidden}"


# --------------------------------------------------------------------------- attention pooling
def nadaraya_watson(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                    bandwidth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Nadaraya–Watson kernel regression: attention pooling with a Gaussian kernel, nothing learned.

    ``weights = softmax(-|q - k|² / (2 σ²))`` over the keys (the Gaussian kernel values,
    normalised to sum to 1, computed in the log domain so that they never underflow to
    0/0), and each prediction is the weighted average of the values.

    Args:
        queries: (m, d) or (d,): where to predict (test inputs x).
        keys: (n, d): the training inputs x_i.
        values: (n,) or (n, d_v): the training targets y_i.
        bandwidth: σ > 0.

    Returns:
        ``(predictions, weights)``: predictions (m,) or (m, d_v) (no m axis for a single
        query), weights (m, n) or (n,), each row summing to 1.
    """
    sigma = _check_bandwidth(bandwidth)
    q, k, single = _prepare(queries, keys)
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values: expected a torch tensor of shape (n,) or (n, d_v), got {type(values).__name__}")
    n = k.shape[0]
    if values.dim() == 1:
        check_shape(values, "n", name="values", dtype="float", n=n)
    else:
        check_shape(values, "n d_v", name="values", dtype="float", n=n)
    _same_dtype(("queries", q), ("values", values))
    scores = neg_sq_euclidean_score(q, k) / (2 * sigma * sigma)  # (m, n)
    weights = torch.softmax(scores, dim=-1)  # (m, n)
    predictions = weights @ values  # (m,) or (m, d_v)
    return _finish(predictions, single), _finish(weights, single)


# --------------------------------------------------------------------------- cost
def flops_per_pair(name: str, d: int, d_hidden: int | None = None) -> int:
    """Floating-point operations to score one query–key pair, counting a multiply-add as 2.

    The count is the work done *per pair* once every per-vector quantity has been computed
    (the unit vectors for cosine, ``q @ W`` for bilinear, the projections ``q @ w_q`` and
    ``k @ w_k`` for additive): that work is done once per query or key and shared by all
    the pairs it takes part in. ``exp`` and ``tanh`` count as 1 each. With this convention
    scoring m queries against n keys with a dot product costs ``2 m n d``, which is what
    ``torch.utils.flop_counter.FlopCounterMode`` reports for ``queries @ keys.T``.

    Args:
        name: "dot", "scaled dot", "cosine", "neg sq euclidean", "bilinear", "additive" or
            "gaussian".
        d: the width of queries and keys (of the keys, for bilinear).
        d_hidden: the hidden size; needed for (and only for) "additive".

    Returns:
        The number of operations, an int.
    """
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int, got {d!r}")
    costs = {
        "dot": 2 * d,  # d multiply-adds
        "scaled dot": 2 * d + 1,  # and one division (free if 1/sqrt(d) is folded into q once)
        "cosine": 2 * d,  # a dot product of the precomputed unit vectors
        "neg sq euclidean": 3 * d,  # d subtractions, d multiply-adds of the squares
        "bilinear": 2 * d,  # (q @ W) is computed once per query, then a dot product with k
        "gaussian": 3 * d + 2,  # the squared distance, times -1/(2 σ²), exp
    }
    if name == "additive":
        if isinstance(d_hidden, bool) or not isinstance(d_hidden, int) or d_hidden < 1:
            raise ValueError(f"the additive score needs d_hidden, a positive int; got {d_hidden!r}")
        return 4 * d_hidden  # add the two projections (d_hidden), tanh (d_hidden), dot product with v (2 d_hidden)
    if name not in costs:
        raise KeyError(f"unknown score {name!r}; known: {', '.join([*costs, 'additive'])}")
    if d_hidden is not None:
        raise ValueError(f"d_hidden is only used by the additive score, not by {name!r}")
    return costs[name]


# --------------------------------------------------------------------------- figures
def _grid(lim: float, resolution: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    axis = torch.linspace(-lim, lim, resolution)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    keys = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)  # (resolution², 2)
    return axis, keys, xs


def _label_position(x: float, y: float, gap: float = 0.35) -> tuple[float, float]:
    """Where to write an arrow's label: just beyond its tip, along the arrow."""
    length = math.hypot(x, y)
    if length == 0:
        return gap, gap
    return x + gap * x / length, y + gap * y / length


def plot_score_landscapes(scorers: Mapping[str, Scorer], query: torch.Tensor, *, lim: float = 3.0,
                          resolution: int = 81, ncols: int = 4, keys: torch.Tensor | None = None):
    """A small heatmap per score function: score(query, k) for every key k of a 2-D plane.

    Same conventions in every panel: yellow is that function's highest score on the plane,
    dark blue its lowest (each panel has its own colour bar), thin lines are contours of
    equal score, the orange arrow is the query, and black dots are ``keys`` when given.

    Args:
        scorers: name -> function(queries (d,), keys (n, 2)) -> (n,).
        query: (2,).
        lim: the plane spans [-lim, lim]².
        keys: optional (n, 2) keys to mark.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    check_shape(query, "2", name="query", dtype="float")
    axis, plane, _ = _grid(lim, resolution)
    n = len(scorers)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.0 * nrows), squeeze=False)
    extent = (-lim, lim, -lim, lim)
    for ax, (name, score) in zip(axes.flat, scorers.items()):
        with torch.no_grad():
            values = score(query, plane).reshape(resolution, resolution)
        image = ax.imshow(values.numpy(), origin="lower", extent=extent, cmap="viridis", aspect="equal")
        ax.contour(axis.numpy(), axis.numpy(), values.numpy(), levels=8, colors="white", linewidths=0.5,
                   alpha=0.6)
        ax.annotate("", xy=(float(query[0]), float(query[1])), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="-|>", color="#D55E00", lw=2))
        if keys is not None:
            ax.scatter(keys[:, 0].numpy(), keys[:, 1].numpy(), s=14, color="black", zorder=3)
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("key[0]", fontsize=9)
        ax.set_ylabel("key[1]", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(False)
        bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    q = [round(float(x), 2) for x in query]
    fig.suptitle(f"score(q, k) for every key k in the plane, q = {q} (orange arrow); yellow = highest score",
                 fontsize=12)
    fig.tight_layout()
    return fig


def plot_key_length(scorers: Mapping[str, Scorer], query: torch.Tensor, direction: torch.Tensor, *,
                    max_length: float = 10.0, ncols: int = 4):
    """How each score changes as a key ``s · direction`` gets longer (s from 0 to ``max_length``).

    Args:
        scorers: name -> function(queries (d,), keys (n, d)) -> (n,).
        query: (d,).
        direction: (d,), the key's direction (normalised here to length 1).

    Returns:
        The matplotlib Figure: one small panel per function, score against key length.
    """
    import matplotlib.pyplot as plt

    sizes = check_shape(query, "d", name="query", dtype="float")
    check_shape(direction, "d", name="direction", dtype="float", **sizes)
    unit = direction / direction.norm()
    lengths = torch.linspace(0, max_length, 201)[1:]  # from just above 0: a zero key has no direction
    keys = lengths[:, None] * unit[None, :]  # (201, d)
    n = len(scorers)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False)
    for i, (ax, (name, score)) in enumerate(zip(axes.flat, scorers.items())):
        with torch.no_grad():
            values = score(query, keys)
        ax.plot(lengths.numpy(), values.numpy(), color=f"C{i % 8}", lw=2)
        ax.axvline(float(query.norm()), color="grey", lw=0.8, ls="--")
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("key length |k|", fontsize=9)
        ax.set_ylabel("score", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    angle = math.degrees(math.acos(max(-1.0, min(1.0, float(unit @ query / query.norm())))))
    fig.suptitle(f"score of a key k = s·u as it gets longer; u is {angle:.0f}° from the query "
                 f"(dashed line: |q| = {float(query.norm()):.2f})", fontsize=12)
    fig.tight_layout()
    return fig


def plot_query_scores(scorers: Mapping[str, Scorer], query: torch.Tensor, keys: torch.Tensor, *,
                      title: str = ""):
    """Left: the 2-D query and keys as arrows. Right: each function's scores of the query against
    every key, as a table coloured by the softmax weight of each score within its row.

    Args:
        scorers: name -> function(query (2,), keys (n, 2)) -> (n,).
        query: (2,).
        keys: (n, 2).
        title: the figure title.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    check_shape(query, "2", name="query", dtype="float")
    n = check_shape(keys, "n 2", name="keys", dtype="float")["n"]
    with torch.no_grad():
        scores = torch.stack([score(query, keys) for score in scorers.values()])  # (functions, n)
    weights = torch.softmax(scores, dim=-1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1, 1.5]})
    lim = max(3.0, float(keys.abs().max()) + 0.5, float(query.abs().max()) + 0.5)
    for j in range(n):
        kx, ky = float(keys[j, 0]), float(keys[j, 1])
        left.annotate("", xy=(kx, ky), xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color=f"C{j}", lw=2))
        lx, ly = _label_position(kx, ky)
        left.text(lx, ly, f"k{j}", color=f"C{j}", fontsize=11, ha="center", va="center")
    qx, qy = float(query[0]), float(query[1])
    left.annotate("", xy=(qx, qy), xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color="black", lw=2.5))
    lx, ly = _label_position(qx, qy)
    left.text(lx, ly, "q", fontsize=12, fontweight="bold", ha="center", va="center")
    left.set_xlim(-lim, lim)
    left.set_ylim(-lim, lim)
    left.set_aspect("equal")
    left.set_xlabel("dimension 0")
    left.set_ylabel("dimension 1")
    left.set_title("query (black) and keys")
    right.imshow(weights.numpy(), cmap="Greens", vmin=0, vmax=1, aspect="auto")
    for i in range(scores.shape[0]):
        for j in range(n):
            w = float(weights[i, j])
            right.text(j, i, f"{float(scores[i, j]):.2f}\n({w:.2f})", ha="center", va="center", fontsize=9,
                       color="white" if w > 0.6 else "black")
    right.set_xticks(range(n))
    right.set_xticklabels([f"k{j}" for j in range(n)])
    for label, j in zip(right.get_xticklabels(), range(n)):
        label.set_color(f"C{j}")
    right.set_yticks(range(scores.shape[0]))
    right.set_yticklabels(list(scorers))
    right.set_xlabel("key")
    right.grid(False)
    right.set_title("score (softmax weight over the row); shade = weight")
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig


def plot_kernel_regression(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                           predictions: torch.Tensor, weights: torch.Tensor, *, bandwidth: float,
                           truth: torch.Tensor | None = None):
    """Left: training points, the Nadaraya–Watson fit (and the true function). Right: the weights.

    Args:
        x_train: (n,), y_train: (n,): the training points (keys and values).
        x_test: (m,), predictions: (m,): where the fit was evaluated and its values (queries, outputs).
        weights: (m, n): attention weights, a row per test point.
        bandwidth: the σ used (for the title).
        truth: optional (m,), the noise-free function at x_test.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    n = check_shape(x_train, "n", name="x_train")["n"]
    check_shape(y_train, "n", name="y_train", n=n)
    m = check_shape(x_test, "m", name="x_test")["m"]
    check_shape(predictions, "m", name="predictions", m=m)
    check_shape(weights, "m n", name="weights", m=m, n=n)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.3, 1]})
    if truth is not None:
        left.plot(x_test.numpy(), truth.numpy(), color="grey", ls="--", lw=1.5, label="true function")
    left.scatter(x_train.numpy(), y_train.numpy(), s=18, color="C0", label="training points (keys, values)")
    left.plot(x_test.numpy(), predictions.numpy(), color="C3", lw=2.2, label="prediction (attention output)")
    left.set_xlabel("x")
    left.set_ylabel("y")
    left.set_title("the fit")
    left.legend(fontsize=9, loc="lower left")
    order = torch.argsort(x_train)
    image = right.imshow(weights[:, order].numpy(), aspect="auto", cmap="viridis", origin="lower",
                         extent=(-0.5, n - 0.5, float(x_test.min()), float(x_test.max())))
    right.set_xlabel("training point (sorted by x): the keys")
    right.set_ylabel("test x: the queries")
    right.set_title("attention weights (each row sums to 1)")
    right.grid(False)
    fig.colorbar(image, ax=right, fraction=0.046, pad=0.03)
    fig.suptitle(f"Nadaraya–Watson kernel regression, bandwidth σ = {bandwidth:.2f}", fontsize=13)
    fig.tight_layout()
    return fig
