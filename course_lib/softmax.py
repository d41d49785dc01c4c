"""Softmax and its relatives: scores in, weights (or log-weights) out.

Notebook 03 builds each of these step by step; this module holds the final, tested versions:

- :func:`naive_softmax`: ``exp(x) / sum(exp(x))`` exactly as written, for demonstrations only (it
  overflows to NaN for scores around 100 and above in float32);
- :func:`softmax`: the stable version (subtract the maximum first), with a temperature;
- :func:`logsumexp` and :func:`log_softmax`: the same trick on a log scale;
- :func:`softmax_jacobian`: ``J = diag(p) - p pᵀ``, how the weights respond to the scores;
- :func:`entropy`: how spread out a weight vector is, in nats;
- :func:`plot_weights`: weights as a bar chart (the notebook's explorer uses it).

Every function works along one axis ``dim`` (the last by default) of a float tensor of any
shape. Like ``torch.softmax``, a row whose scores are all ``-inf`` (every position masked) has no
defined softmax and comes out as NaN; so does any row that contains ``+inf`` or NaN. The
functions do not raise for such rows because notebook 06 (masking) needs to see where they come
from; they do raise for inputs that are always a mistake (a non-float dtype, an empty axis, a
temperature that is not a positive number, probabilities that do not sum to 1).
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

import torch

from course_lib.shapes import check_shape


def _check_scores(x, dim: int, name: str) -> int:
    """Validate a float tensor with a non-empty axis ``dim``; return ``dim`` as a positive index."""
    if not isinstance(x, torch.Tensor):
        hint = " (convert it with torch.from_numpy)" if type(x).__module__ == "numpy" else ""
        raise TypeError(f"{name}: expected a torch tensor, got {type(x).__name__}{hint}")
    if x.dim() == 0:
        raise ValueError(f"{name}: expected at least 1 axis to take the softmax over, got a 0-d tensor")
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"dim must be an int, got {dim!r}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim={dim} is out of range for {name} of shape {tuple(x.shape)} "
                         f"({x.dim()} axes: dim must be in [{-x.dim()}, {x.dim() - 1}])")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype} "
                        "(exp and division need fractions: use x.float())")
    dim = dim % x.dim()
    if x.shape[dim] == 0:
        raise ValueError(f"{name}: cannot normalise over an empty axis (dim={dim} of shape {tuple(x.shape)})")
    return dim


def check_temperature(temperature) -> float:
    """Return ``temperature`` as a float; TypeError for a non-number, ValueError unless positive and finite."""
    if isinstance(temperature, torch.Tensor) and temperature.numel() == 1:
        temperature = temperature.item()
    if isinstance(temperature, bool) or not isinstance(temperature, Real):
        raise TypeError(f"temperature must be a positive number, got {temperature!r}")
    temperature = float(temperature)
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r} "
                         "(τ -> 0 approaches argmax, τ -> infinity approaches uniform weights)")
    return temperature


def _check_probabilities(p, name: str = "p", dim: int = -1) -> int:
    """Validate that ``p`` holds probability vectors along ``dim``; return ``dim`` as a positive index."""
    dim = _check_scores(p, dim, name)
    if torch.isnan(p).any():
        raise ValueError(f"{name} contains NaN: expected probabilities (did a softmax get an all -inf row?)")
    if (p < 0).any():
        raise ValueError(f"{name} has negative entries (smallest {p.min().item():.4g}): expected probabilities, "
                         "the output of a softmax, not scores")
    sums = p.sum(dim=dim)
    tolerance = 1e-3 if torch.finfo(p.dtype).bits >= 32 else 1e-2
    worst = (sums - 1).abs().max().item()
    if worst > tolerance:
        raise ValueError(f"{name} does not sum to 1 along dim={dim} (a sum is off by {worst:.4g}): expected "
                         "probabilities, the output of a softmax, not scores")
    return dim


def naive_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``exp(x) / exp(x).sum()``, exactly as the formula reads: for demonstrations only.

    In float32, ``exp`` overflows to ``inf`` above about 88.7 and underflows to 0 below about
    -103, so scores such as ``[1000, 1001, 1002]`` give ``inf / inf = nan`` and
    ``[-1000, -1001, -1002]`` give ``0 / 0 = nan``, silently. Use :func:`softmax` instead.

    Args:
        x: scores, any shape (..., n, ...), floating point.
        dim: the axis to normalise over.

    Returns:
        The same shape as ``x``.
    """
    dim = _check_scores(x, dim, "x")
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def softmax(x: torch.Tensor, dim: int = -1, temperature: float = 1.0) -> torch.Tensor:
    """Stable softmax of ``x / temperature`` along ``dim``: positive weights that sum to 1.

    The largest score is subtracted before exponentiating. That changes nothing mathematically
    (``softmax(x) == softmax(x - c)`` for any constant ``c``) but keeps every exponent at most 0,
    so ``exp`` cannot overflow and the denominator is at least 1.

    Args:
        x: scores, any shape, floating point; ``-inf`` entries get weight 0.
        dim: the axis to normalise over (default the last).
        temperature: positive; below 1 sharpens the weights towards argmax, above 1 flattens
            them towards uniform.

    Returns:
        Weights, the same shape as ``x``. A row whose scores are all ``-inf``, or that contains
        ``+inf`` or NaN, comes out as NaN, as with ``torch.softmax``.

    Raises:
        TypeError: ``x`` is not a float tensor, or ``temperature`` is not a number.
        ValueError: ``temperature`` is not positive and finite, ``dim`` is out of range, or the
            axis is empty.
    """
    dim = _check_scores(x, dim, "x")
    temperature = check_temperature(temperature)
    z = x / temperature if temperature != 1.0 else x
    shift = z.amax(dim=dim, keepdim=True).detach()  # a constant: the gradient does not depend on it
    e = torch.exp(z - shift)
    return e / e.sum(dim=dim, keepdim=True)


def logsumexp(x: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """``log(sum(exp(x)))`` along ``dim``, computed without overflow as ``m + log(sum(exp(x - m)))``.

    ``m`` is the maximum of ``x`` along ``dim``. The result lies between ``max(x)`` and
    ``max(x) + log(n)``: a smooth version of the maximum.

    Args:
        x: any shape, floating point.
        dim: the axis to reduce.
        keepdim: keep that axis with size 1 (handy for broadcasting back against ``x``).

    Returns:
        ``x``'s shape without ``dim`` (or with size 1 there when ``keepdim``). An all ``-inf``
        row gives ``-inf`` and a row containing ``+inf`` gives ``inf``, as with ``torch.logsumexp``.
    """
    dim = _check_scores(x, dim, "x")
    m = x.amax(dim=dim, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all -inf (or +inf): shift by 0
    out = m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))
    return out if keepdim else out.squeeze(dim)


def log_softmax(x: torch.Tensor, dim: int = -1, temperature: float = 1.0) -> torch.Tensor:
    """``log(softmax(x / temperature))``, computed as ``z - logsumexp(z)`` with ``z = x / temperature``.

    Taking the log of a softmax loses everything below about ``exp(-103)`` in float32: those
    weights underflow to 0 and their log is ``-inf``. This form stays exact: for scores
    ``[0, -200]`` it returns ``[0, -200]``, where ``log(softmax(x))`` returns ``[0, -inf]``.

    Args:
        x: scores, any shape, floating point.
        dim: the axis to normalise over (default the last).
        temperature: positive, as in :func:`softmax`.

    Returns:
        Log-weights (all at most 0), the same shape as ``x``; ``-inf`` where a score is ``-inf``.
        A row whose scores are all ``-inf``, or that contains ``+inf`` or NaN, comes out as NaN,
        as with ``torch.log_softmax``.
    """
    dim = _check_scores(x, dim, "x")
    temperature = check_temperature(temperature)
    z = x / temperature if temperature != 1.0 else x
    shifted = z - z.amax(dim=dim, keepdim=True).detach()
    return shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))


def softmax_jacobian(p: torch.Tensor) -> torch.Tensor:
    """The Jacobian of the softmax at weights ``p``: ``J[i, j] = d p_i / d x_j = p_i (δ_ij - p_j)``.

    In matrix form ``J = diag(p) - p pᵀ``. It is symmetric, each row sums to 0 (adding the same
    number to every score changes nothing), and it tends to 0 as ``p`` becomes one-hot: a
    saturated softmax passes almost no gradient back to its scores.

    Args:
        p: weights (the *output* of a softmax), shape (n,) or batched (..., n); each vector
            along the last axis must be non-negative and sum to 1.

    Returns:
        (n, n), or (..., n, n) for a batch.

    Raises:
        ValueError: ``p`` is 0-d, empty, or not probabilities (e.g. scores passed by mistake).
    """
    if isinstance(p, torch.Tensor) and p.dim() == 0:
        raise ValueError("p: expected weights of shape (n,) or (..., n), got a 0-d tensor")
    _check_probabilities(p, "p", dim=-1)
    check_shape(p, "... n", name="p")
    return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Entropy ``H(p) = -sum_i p_i log p_i`` in nats, with ``0 log 0 = 0``.

    0 for a one-hot vector (all weight on one position), ``log(n)`` for uniform weights over n
    positions, in between otherwise.

    Args:
        p: weights, any shape, non-negative and summing to 1 along ``dim``.
        dim: the axis that holds each probability vector.

    Returns:
        ``p``'s shape without ``dim``.

    Raises:
        ValueError: ``p`` is not probabilities along ``dim`` (negative, NaN, or sums not 1).
    """
    dim = _check_probabilities(p, "p", dim=dim)
    return 0.0 - torch.xlogy(p, p).sum(dim=dim)  # 0.0 - ... turns -0.0 into 0.0


def plot_weights(weights: torch.Tensor, labels: Sequence[str] | None = None, ax=None, title: str | None = None,
                 color: str | None = None):
    """Draw one weight vector (n,) as bars with their values written on top; returns the Axes.

    Args:
        weights: (n,) probabilities.
        labels: n names for the positions (default "0", "1", ...).
        ax: the Axes to draw on (default: a new figure).
        title: the Axes title.
        color: bar colour (default: the course's first colour).
    """
    import matplotlib.pyplot as plt

    from course_lib.plotting import PALETTE

    check_shape(weights, "n", name="weights")
    n = weights.shape[0]
    labels = [str(i) for i in range(n)] if labels is None else list(labels)
    if len(labels) != n:
        raise ValueError(f"labels: expected {n} names, one per weight, got {len(labels)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6))
    values = [float(v) for v in weights.detach().cpu()]
    bars = ax.bar(range(n), values, color=color or PALETTE[0])
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, value + 0.02, f"{value:.2f}", ha="center", va="bottom",
                fontsize=9)
    ax.set_xticks(range(n))
    ax.set_xticklabels(labels)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("weight")
    if title is not None:
        ax.set_title(title)
    return ax
