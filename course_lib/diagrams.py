"""Concept diagrams, drawn by code: how the data flows through each idea of the course.

Every function draws one picture with matplotlib in the course's style (its palette, its boxes
and arrows), so that the diagrams are tested like the rest of ``course_lib``, restyle together
and show in the slides. Each takes the sizes it writes on its arrows, checks them, and returns
the matplotlib Axes (or the array of Axes for the side-by-side pictures).

In the order of the arc:

=============================  =========  ==================================================
function                       notebook   the picture
=============================  =========  ==================================================
:func:`plot_broadcast`         00         two shapes that stretch to a common shape
:func:`plot_lookup_table`      01         a lookup as a table: hard (one key) against soft (all)
:func:`plot_attention_flow`    04         X → Q, K, V → scores → weights → output
:func:`plot_heads_split`       00, 07     which columns of ``(B, T, d_model)`` each head gets
:func:`plot_heads_flow`        07         splitting into heads and merging back, with shapes
:func:`plot_block_wiring`      08         post-LN beside pre-LN, the residual paths drawn
:func:`plot_data_flow`         09         the whole encoder–decoder, a shape on every arrow
:func:`plot_encoder_decoder`   09         the stacks unrolled: memory into every decoder layer
:func:`plot_training_loop`     11         batch → model → loss → gradients → update
:func:`plot_model_families`    13         encoder-only, decoder-only, encoder–decoder side by side
=============================  =========  ==================================================
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from course_lib.plotting import PALETTE
from course_lib.shapes import check_int

BLUE, ORANGE, GREEN, RED, PURPLE = PALETTE[:5]
GREY = "#777777"

__all__ = ["plot_broadcast", "plot_lookup_table", "plot_attention_flow", "plot_heads_split", "plot_heads_flow",
           "plot_block_wiring", "plot_data_flow", "plot_encoder_decoder", "plot_training_loop",
           "plot_model_families"]


# --- the pieces every diagram is made of ------------------------------------------------------------


def _check_sizes(**sizes) -> None:
    """Raise an error naming the first size that is not a positive int (``shapes.check_int``'s)."""
    for name, value in sizes.items():
        check_int(value, name, minimum=1)


def _axes(ax, figsize):
    """The Axes to draw on (a new figure when ax is None), with its frame and ticks hidden."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    ax.axis("off")
    return ax


def _box(ax, x, y, w, h, text, colour, fontsize=9.5, weight="normal", fill_alpha=0.18):
    """A rounded box centred at (x, y), filled lightly and outlined in colour, with centred text."""
    from matplotlib.patches import FancyBboxPatch

    style = "round,pad=0.02,rounding_size=0.12"
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle=style, facecolor=colour,
                                alpha=fill_alpha, edgecolor="none"))
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle=style, facecolor="none",
                                edgecolor=colour, linewidth=1.4))
    if text:
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, fontweight=weight)


def _arrow(ax, start, end, label=None, side="right", colour="#444444", rad=0.0, lw=1.3, fontsize=8.5):
    """An arrow from start to end; label (monospace) beside its middle, on the given side."""
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle="-|>", color=colour, lw=lw, shrinkA=0, shrinkB=0,
                                connectionstyle=f"arc3,rad={rad}"))
    if label:
        x, y = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        if side == "above":
            ax.text(x, y + 0.1, label, ha="center", va="bottom", fontsize=fontsize, color="#222222",
                    family="monospace")
        else:
            dx = 0.12 if side == "right" else -0.12
            ax.text(x + dx, y, label, ha="left" if side == "right" else "right", va="center",
                    fontsize=fontsize, color="#222222", family="monospace")


def _shape(names: Sequence[str], values: Sequence[int]) -> str:
    """'(B, T, d_model) = (2, 5, 8)': a shape with its names and its numbers."""
    return f"({', '.join(names)}) = ({', '.join(str(v) for v in values)})"


def _plus(ax, x, y, r=0.2, colour="#444444"):
    """The (+) node where a residual path joins the main path."""
    from matplotlib.patches import Circle

    ax.add_patch(Circle((x, y), r, facecolor="white", edgecolor=colour, linewidth=1.4, zorder=3))
    ax.text(x, y, "+", ha="center", va="center", fontsize=11, fontweight="bold", zorder=4)


# --- 00: broadcasting ---------------------------------------------------------------------------------


def _grid(ax, x0, y0, shape, values, own, colour, label):
    """Draw a (rows, cols) grid with its top-left corner at (x0, y0); own[i][j] False = a stretched copy."""
    from matplotlib.patches import Rectangle

    rows, cols = shape
    for i in range(rows):
        for j in range(cols):
            solid = own[i][j]
            ax.add_patch(Rectangle((x0 + j, y0 - i - 1), 1, 1, facecolor=colour, alpha=0.45 if solid else 0.12,
                                   edgecolor=colour if solid else "#bbbbbb", linewidth=1.2,
                                   linestyle="-" if solid else "--"))
            ax.text(x0 + j + 0.5, y0 - i - 0.5, f"{values[i][j]:g}", ha="center", va="center", fontsize=9,
                    color="#222222" if solid else "#999999")
    ax.text(x0 + cols / 2, y0 + 0.25, label, ha="center", va="bottom", fontsize=9, family="monospace")


def plot_broadcast(shape_a: Sequence[int], shape_b: Sequence[int], ax=None):
    """Picture ``a + b`` for tensors of shapes shape_a and shape_b (0, 1 or 2 axes, sizes 1 to 8).

    ``a`` holds 0, 1, 2, ... and ``b`` holds 0, 10, 20, ... in row-major order. Shapes are lined up
    from the right; a missing axis counts as size 1, and an axis of size 1 is stretched (repeated,
    without copying memory) to the other tensor's size. Stretched copies are drawn dashed and pale.
    The sums come from torch. Raises a ValueError when the shapes do not broadcast.
    """
    import torch

    shapes = {"shape_a": tuple(shape_a), "shape_b": tuple(shape_b)}
    for name, shape in shapes.items():
        if len(shape) > 2 or any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 8 for n in shape):
            raise ValueError(f"{name} must have at most 2 axes of sizes 1 to 8 to be drawn, got {shape}")
    a_shape, b_shape = shapes.values()
    try:
        out_shape = torch.broadcast_shapes(a_shape, b_shape)
    except RuntimeError:
        raise ValueError(f"shapes {a_shape} and {b_shape} do not broadcast: lined up from the right, each pair of "
                         "sizes must be equal or contain a 1") from None
    a = torch.arange(math.prod(a_shape), dtype=torch.float32).reshape(a_shape)
    b = 10 * torch.arange(math.prod(b_shape), dtype=torch.float32).reshape(b_shape)
    total = a + b
    grid_shape = (1,) * (2 - len(out_shape)) + tuple(out_shape)  # drawn as rows × columns
    rows, cols = grid_shape
    ax = _axes(ax, figsize=(max(7.0, 1.0 * (3 * cols + 5)), 1.1 + 0.55 * rows + 1.0))
    x = 0.0
    for name, t, colour in (("a", a, BLUE), ("b", b, ORANGE)):
        padded = (1,) * (2 - t.dim()) + tuple(t.shape)
        own = [[i < padded[0] and j < padded[1] for j in range(cols)] for i in range(rows)]
        stretched = t.reshape(padded).expand(grid_shape).tolist()
        note = "" if padded == grid_shape else f" → {tuple(out_shape)}"
        _grid(ax, x, 0, grid_shape, stretched, own, colour, f"{name}: {tuple(t.shape)}{note}")
        x += cols
        ax.text(x + 0.5, -rows / 2, "+" if name == "a" else "=", ha="center", va="center", fontsize=16)
        x += 1
    full = [[True] * cols for _ in range(rows)]
    _grid(ax, x, 0, grid_shape, total.reshape(grid_shape).tolist(), full, GREEN, f"a + b: {tuple(out_shape)}")
    ax.set_xlim(-0.3, x + cols + 0.3)
    ax.set_ylim(-rows - 0.9, 1.3)
    ax.set_aspect("equal")
    ax.text((x + cols) / 2, -rows - 0.35, "shapes lined up from the right; a size 1 (or a missing axis) is "
            "stretched, drawn dashed", ha="center", va="top", fontsize=8.5, color="#444444")
    return ax


# --- 01: a lookup as a table ------------------------------------------------------------------------------


def plot_lookup_table(table: Mapping[str, str], query: str, weights: Sequence[float] | None = None, axes=None):
    """A lookup as a table of keys and values: hard (a dict) on the left, soft (attention) on the right.

    Hard: the query is compared with every key for equality; the one equal key's value comes back,
    or a KeyError when no key equals the query. Soft: every key gets a weight w_i for how well it
    matches, and the answer is the blend sum_i w_i * value_i. Without ``weights`` the weights are
    written as symbols; with them (one per key, non-negative, summing to 1) as numbers, and the
    arrows are as thick as the weights. ``axes``: two Axes, or None for a new figure.
    Returns the two Axes.
    """
    import matplotlib.pyplot as plt

    keys, values = list(table), [str(v) for v in table.values()]
    n = len(keys)
    if not 1 <= n <= 10:
        raise ValueError(f"table must have 1 to 10 entries to be drawn, got {n}")
    if weights is not None:
        weights = [float(w) for w in weights]
        if len(weights) != n or min(weights) < 0 or abs(sum(weights) - 1) > 1e-3:
            raise ValueError(f"weights must be {n} non-negative numbers summing to 1 (one per key), got {weights}")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(13, 1.3 + 0.48 * n))
    ys = [n - 1 - i for i in range(n)]  # row i at height n - 1 - i
    mid = (n - 1) / 2
    for ax, soft in zip(axes, (False, True)):
        ax.axis("off")
        ax.set_xlim(-0.4, 9.6)
        ax.set_ylim(-0.9, n + 0.4)
        ax.text(3.0, n - 0.15, "key", ha="center", fontsize=9, fontweight="bold")
        ax.text(5.0, n - 0.15, "value", ha="center", fontsize=9, fontweight="bold")
        _box(ax, 0.7, mid, 1.3, 0.6, f'query\n"{query}"', BLUE, fontsize=9)
        hit = keys.index(query) if query in keys else None
        for i, (key, value, y) in enumerate(zip(keys, values, ys)):
            lit = soft or i == hit
            colour = GREEN if lit else GREY
            _box(ax, 3.0, y, 1.6, 0.38, key, colour, fontsize=8.5, fill_alpha=0.25 if lit else 0.05)
            _box(ax, 5.0, y, 1.6, 0.38, value, colour, fontsize=8.5, fill_alpha=0.25 if lit else 0.05)
            if soft:
                w = f"w{i + 1}" if weights is None else f"{weights[i]:.2f}"
                strength = weights[i] if weights is not None else 1.0 / n
                ax.plot([1.35, 2.2], [mid, y], color=GREEN, lw=0.5 + 5 * strength, alpha=0.7)
                ax.plot([5.8, 7.2], [y, mid], color=GREEN, lw=0.5 + 5 * strength, alpha=0.7)
                ax.text(6.2, y + 0.12 * (1 if y >= mid else -1), w, ha="center", va="center", fontsize=8,
                        color="#222222", family="monospace")
            else:
                if i != hit:
                    ax.plot([1.35, 2.2], [mid, y], color=GREY, lw=0.8, linestyle=":")
                ax.text(1.95, y + 0.18, "=" if i == hit else "≠", ha="center", va="center", fontsize=10,
                        color=GREEN if i == hit else GREY)
        if soft:
            _box(ax, 8.5, mid, 2.3, 0.8, "Σ w_i · value_i\n(every value,\nblended)", GREEN, fontsize=8.5)
            ax.set_title("soft lookup: every key scores, every value counts by its weight\n"
                         "(weights ≥ 0, summing to 1; attention is this one)", fontsize=10)
        else:
            if hit is None:
                _box(ax, 8.5, mid, 2.3, 0.8, f"KeyError:\nno key equals\n\"{query}\"", RED, fontsize=9)
            else:
                ax.annotate("", xy=(2.2, ys[hit]), xytext=(1.35, mid),
                            arrowprops=dict(arrowstyle="-|>", color=GREEN, lw=1.6))
                _arrow(ax, (5.8, ys[hit]), (7.3, mid), colour=GREEN)
                _box(ax, 8.5, mid, 2.3, 0.8, f"{values[hit]}\n(one value)", GREEN, fontsize=9)
            ax.set_title("hard lookup (a dict): the key that equals the query\nreturns its value, the others count for nothing",
                         fontsize=10)
    return axes


# --- 04: the data flow of attention ---------------------------------------------------------------------


def plot_attention_flow(T: int = 3, d_model: int = 4, d_k: int = 4, d_v: int | None = None, ax=None):
    """Single-head attention as boxes and arrows, each tensor with its shape in names and numbers.

    X (T, d_model) → Q = X W_Q and K = X W_K, both (T, d_k), and V = X W_V (T, d_v) →
    scores Q K^T / sqrt(d_k) (T, T) → softmax over the keys → weights (T, T) → output weights V (T, d_v).
    Returns the Axes.
    """
    d_v = d_k if d_v is None else d_v
    _check_sizes(T=T, d_model=d_model, d_k=d_k, d_v=d_v)
    ax = _axes(ax, figsize=(14, 4.8))
    w, h = 2.3, 0.95
    _box(ax, 0.9, 2.0, 1.7, 1.2, f"X\n(T, d_model)\n= ({T}, {d_model})", GREY, fontsize=8.5)
    x_qkv = 4.4  # leaves room for the projection's label on each arrow
    rows = (("Q", "W_Q", 3.6, d_k, "d_k", BLUE), ("K", "W_K", 2.0, d_k, "d_k", ORANGE),
            ("V", "W_V", 0.2, d_v, "d_v", GREEN))
    for name, weight, y, size, size_name, colour in rows:
        _arrow(ax, (1.75, 2.0), (x_qkv - w * 0.95 / 2, y))
        ax.text(1.95, y + (0.25 if y >= 2.0 else -0.25), f"@ {weight}: ({d_model}, {size})", ha="left",
                va="bottom" if y >= 2.0 else "top", fontsize=8, family="monospace", color="#222222")
        _box(ax, x_qkv, y, w * 0.95, h, f"{name} = X {weight}\n{_shape(['T', size_name], [T, size])}", colour,
             fontsize=8.5)
    right = x_qkv + w * 0.95 / 2  # the right edge of the Q, K and V boxes
    _box(ax, 7.8, 2.8, 2.6, 1.2, f"scores = Q Kᵀ / √d_k\n{_shape(['T', 'T'], [T, T])}\nrow i: query i · every key",
         PURPLE, fontsize=8.5)
    _arrow(ax, (right, 3.6), (6.5, 3.05))
    _arrow(ax, (right, 2.0), (6.5, 2.55))
    _arrow(ax, (9.1, 2.8), (10.0, 2.8), "softmax", side="above")
    _box(ax, 11.2, 2.8, 2.4, 1.2, f"weights\n{_shape(['T', 'T'], [T, T])}\neach row sums to 1", PURPLE,
         fontsize=8.5)
    _box(ax, 13.2, 1.1, 2.4, 1.2, f"output = weights V\n{_shape(['T', 'd_v'], [T, d_v])}\nrow i: a blend of V's rows",
         RED, fontsize=8.5)
    _arrow(ax, (11.9, 2.2), (12.8, 1.75))
    ax.plot([right, 9.6], [0.2, 0.2], color="#444444", lw=1.3)
    _arrow(ax, (9.6, 0.2), (11.95, 0.85))
    ax.text(7.6, 0.3, "V: what each key hands over", ha="center", va="bottom", fontsize=8.5, color="#444444")
    ax.text(7.8, 4.1, "how well each query matches each key", ha="center", fontsize=8.5, color="#444444")
    ax.set_xlim(-0.1, 14.6)
    ax.set_ylim(-0.6, 4.6)
    ax.set_title(f"Attention, one head: T={T} tokens, d_model={d_model}, d_k={d_k}, d_v={d_v}", fontsize=12)
    return ax


# --- 07: into heads and back ---------------------------------------------------------------------------


def _striped_box(ax, x, y, w, h, text, h_heads, fontsize=8.5):
    """A tensor box whose bottom strip shows its d_model columns in one colour per head."""
    from matplotlib.patches import Rectangle

    _box(ax, x, y, w, h, "", GREY, fill_alpha=0.08)
    for i in range(h_heads):
        ax.add_patch(Rectangle((x - w / 2 + 0.1 + i * (w - 0.2) / h_heads, y - h / 2 + 0.08), (w - 0.2) / h_heads,
                               0.16, facecolor=PALETTE[i % len(PALETTE)], alpha=0.8, edgecolor="white"))
    ax.text(x, y + 0.1, text, ha="center", va="center", fontsize=fontsize)


def plot_heads_flow(B: int = 1, T: int = 3, d_model: int = 4, h: int = 2, ax=None):
    """Multi-head attention's reshapes: split into h heads, attend in each, merge back, with shapes.

    Q, K and V (B, T, d_model) are cut into h blocks of d_k = d_model / h columns by
    ``.view(B, T, h, d_k)``, the head axis is moved forward by ``.transpose(1, 2)`` to
    (B, h, T, d_k), every head attends on its own (weights (B, h, T, T)), and the way back is
    ``.transpose(1, 2)`` then ``.reshape(B, T, d_model)`` and W_O. Colours mark the heads' columns.
    Returns the Axes.
    """
    _check_sizes(B=B, T=T, d_model=d_model, h=h)
    if d_model % h:
        raise ValueError(f"h={h} must divide d_model={d_model}: each head gets d_model / h columns")
    d_k = d_model // h
    ax = _axes(ax, figsize=(13, 7.4))
    full, split = (["B", "T", "d_model"], [B, T, d_model]), (["B", "T", "h", "d_k"], [B, T, h, d_k])
    heads_first = (["B", "h", "T", "d_k"], [B, h, T, d_k])
    xl, xr, w, bh = 1.8, 12.2, 3.0, 1.0
    ys = (7.7, 6.0, 4.3, 2.6)
    _box(ax, xl, ys[0], w, 0.8, f"x\n{_shape(*full)}", GREY, fontsize=8.5)
    _arrow(ax, (xl, ys[0] - 0.4), (xl, ys[1] + bh / 2), "@ W_Q (W_K, W_V alike)", fontsize=8)
    _arrow(ax, (xr, ys[1] + bh / 2), (xr, ys[0] - 0.4), "@ W_O: mixes the heads", side="left", fontsize=8)
    _box(ax, xr, ys[0], w, 0.8, f"output\n{_shape(*full)}", RED, fontsize=8.5)
    down = ((f"Q = x W_Q\n{_shape(*full)}", None), (f"cut into heads\n{_shape(*split)}", ".view(B, T, h, d_k)"),
            (f"heads in front\n{_shape(*heads_first)}", ".transpose(1, 2)"))
    up = ((f"merged\n{_shape(*full)}", ".reshape(B, T, d_model)"), (f"side by side again\n{_shape(*split)}",
          ".transpose(1, 2)"), (f"the heads' outputs\n{_shape(*heads_first)}", None))
    for (text, op), y, y_above in zip(down, ys[1:], ys):
        _striped_box(ax, xl, y, w, bh, text, h, fontsize=8)
        if op:
            _arrow(ax, (xl, y_above - bh / 2), (xl, y + bh / 2), op, fontsize=8)
    for (text, op), y, y_below in zip(up, ys[1:], ys[2:] + (None,)):
        _striped_box(ax, xr, y, w, bh, text, h, fontsize=8)
        if op:
            _arrow(ax, (xr, y_below + bh / 2), (xr, y - bh / 2), op, side="left", fontsize=8)
    n_shown = min(h, 4)  # at most four head boxes; the last stands for the rest
    x0, x1, y_heads = 3.4, 10.6, 0.7
    width = (x1 - x0) / n_shown
    for i in range(n_shown):
        head = i if i < n_shown - 1 else h - 1
        dots = "... " if head != i else ""
        _box(ax, x0 + (i + 0.5) * width, y_heads, width - 0.2, 1.0,
             f"{dots}head {head + 1}\nattention on\n(T, d_k) = ({T}, {d_k})", PALETTE[head % len(PALETTE)], fontsize=8)
    _arrow(ax, (xl, ys[3] - bh / 2), (x0 - 0.05, y_heads), rad=0.25)
    _arrow(ax, (x1 + 0.05, y_heads), (xr, ys[3] - bh / 2), rad=0.25)
    ax.text((x0 + x1) / 2, y_heads - 0.65, f"each head attends with its own columns, all heads at once; weights "
            f"{_shape(['B', 'h', 'T', 'T'], [B, h, T, T])}", ha="center", va="top", fontsize=8, family="monospace")
    ax.text((xl + xr) / 2, 5.2, "splitting and merging compute nothing:\nthe same numbers, read\nwith or without a head axis",
            ha="center", va="center", fontsize=9, color="#444444")
    ax.set_xlim(-0.2, 14.6)
    ax.set_ylim(-0.3, 8.5)
    ax.set_title(f"Into heads and back: B={B}, T={T}, d_model={d_model}, h={h}, d_k = d_model / h = {d_k}"
                 "  (colours: each head's columns)", fontsize=11)
    return ax


# --- 08: the block's wiring -----------------------------------------------------------------------------


def _wiring(ax, pre_ln: bool):
    """One encoder block, bottom to top: the residual stream on the left, each sublayer to its right."""
    trunk, branch = 0.0, 2.2
    _box(ax, trunk, 0.0, 1.9, 0.5, "x (B, T, d_model)", GREY, fontsize=8.5)
    y = 0.25
    for sub, colour in (("self-attention", BLUE), ("feed-forward", ORANGE)):
        fork = y + 0.4
        parts = ["LayerNorm", sub] if pre_ln else [sub]
        ax.plot([trunk, branch, branch], [fork, fork, fork + 0.3], color="#444444", lw=1.3)
        yy = fork + 0.55
        for k, part in enumerate(parts):
            _box(ax, branch, yy, 1.9, 0.5, part, PURPLE if part == "LayerNorm" else colour, fontsize=8.5)
            if k:
                _arrow(ax, (branch, yy - 0.5), (branch, yy - 0.25))
            yy += 0.75
        join = yy - 0.5 + 0.4
        ax.plot([trunk, trunk], [y, join - 0.2], color=GREEN, lw=2.6, zorder=1)  # the residual path
        ax.plot([branch, branch], [yy - 0.5, join], color="#444444", lw=1.3)
        _arrow(ax, (branch, join), (trunk + 0.2, join))
        _plus(ax, trunk, join)
        y = join + 0.2
        if not pre_ln:  # post-LN: the norm sits on the residual path itself
            _arrow(ax, (trunk, y), (trunk, y + 0.3))
            _box(ax, trunk, y + 0.55, 1.9, 0.5, "LayerNorm", PURPLE, fontsize=8.5)
            y += 0.8
    top = y + 0.7
    _arrow(ax, (trunk, y), (trunk, top - 0.25), colour=GREEN if pre_ln else "#444444")
    _box(ax, trunk, top, 1.9, 0.5, "out (B, T, d_model)", GREY, fontsize=8.5)
    if pre_ln:
        ax.text(trunk + 1.1, top, "(after the last block:\none final LayerNorm)", fontsize=7.5, color="#444444",
                va="center")
    ax.set_xlim(-1.3, 3.6)
    return top


def plot_block_wiring(axes=None):
    """The encoder block wired two ways, post-LN (2017) beside pre-LN (today), bottom to top.

    The thick green line is the residual path: the sum that carries x up through the block. In
    pre-LN it runs unbroken from input to output (every sublayer only adds to it); in post-LN a
    LayerNorm sits on it after every addition. ``axes``: two Axes, or None for a new figure.
    Returns the two Axes.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 6.4))
    tops = []
    for ax, pre_ln in zip(axes, (False, True)):
        ax.axis("off")
        tops.append(_wiring(ax, pre_ln))
    for ax in axes:
        ax.set_ylim(-0.5, max(tops) + 0.5)
    axes[0].set_title("post-LN (the original Transformer, 2017)\nx = norm(x + sublayer(x))", fontsize=10.5)
    axes[1].set_title("pre-LN (most models trained today)\nx = x + sublayer(norm(x))", fontsize=10.5)
    axes[0].figure.text(0.5, 0.02, "green: the residual path. Pre-LN leaves it untouched from input to output; "
                        "post-LN normalises it after every sublayer.", ha="center", fontsize=9, color="#444444")
    return axes


# --- 09: the stacks unrolled ---------------------------------------------------------------------------


def plot_encoder_decoder(num_layers: int = 2, ax=None):
    """The encoder and decoder stacks with every layer drawn: the memory feeds each decoder layer.

    The encoder's output (the memory, one vector per source position) enters the cross-attention
    of every one of the ``num_layers`` decoder layers (at most 6 drawn), not only the first.
    Returns the Axes.
    """
    _check_sizes(num_layers=num_layers)
    if num_layers > 6:
        raise ValueError(f"num_layers must be at most 6 to be drawn, got {num_layers}")
    ax = _axes(ax, figsize=(11, 2.2 + 1.45 * num_layers + 2.0))
    xe, xd, w = 1.5, 7.0, 2.8
    step, dec_h = 1.45, 1.15
    _box(ax, xe, 0, w, 0.55, "source ids → embedding\n+ positions", BLUE, fontsize=8.5)
    _box(ax, xd, 0, w, 0.55, "<bos> + target so far → embedding\n+ positions", ORANGE, fontsize=8.5)
    ys = [1.3 + step * i for i in range(num_layers)]
    for i, y in enumerate(ys):
        below = 0.275 if i == 0 else ys[i - 1] + 0.35
        _arrow(ax, (xe, below), (xe, y - 0.35))
        _box(ax, xe, y, w, 0.7, f"encoder layer {i + 1}\nself-attention (all positions), FFN", BLUE, fontsize=8.5)
        below_d = 0.275 if i == 0 else ys[i - 1] + dec_h / 2
        _arrow(ax, (xd, below_d), (xd, y - dec_h / 2))
        _box(ax, xd, y, w, dec_h, f"decoder layer {i + 1}\nmasked self-attention\ncross-attention\nFFN", ORANGE,
             fontsize=8.5)
    top = ys[-1] + step
    _arrow(ax, (xe, ys[-1] + 0.35), (xe, top - 0.3))
    _box(ax, xe, top, w, 0.6, "memory (B, S, d_model)\nthe encoded source", GREEN, fontsize=8.5, weight="bold")
    x_bus = (xe + xd) / 2 - 0.1
    ax.plot([xe + w / 2, x_bus, x_bus], [top, top, ys[0]], color=GREEN, lw=2.2)
    for y in ys:
        _arrow(ax, (x_bus, y), (xd - w / 2, y), colour=GREEN, lw=2.0)
        ax.text(x_bus + 0.12, y + 0.12, "keys, values", fontsize=7.5, color=GREEN, va="bottom")
    _arrow(ax, (xd, ys[-1] + dec_h / 2), (xd, top - 0.3))
    _box(ax, xd, top, w, 0.6, "unembedding → next-token\nprobabilities (B, T, n_vocab)", RED, fontsize=8.5)
    ax.set_xlim(-0.2, 8.7)
    ax.set_ylim(-0.6, top + 0.7)
    ax.set_title(f"{num_layers} encoder and {num_layers} decoder layers: the memory enters "
                 "every decoder layer's cross-attention", fontsize=11)
    return ax


# --- 11: the training loop --------------------------------------------------------------------------


def plot_training_loop(ax=None):
    """One training step as a cycle: batch → model → loss → gradients → update → the next batch.

    Each arrow names what travels along it; the centre says what a step and an epoch are.
    Returns the Axes.
    """
    ax = _axes(ax, figsize=(9.5, 6.4))
    stages = (("a batch of pairs\nsource ids (B, S)\ntarget ids (B, T + 1)", GREY),
              ("the model\nforward pass", BLUE),
              ("the loss\ncross-entropy with\nlabel smoothing", PURPLE),
              ("the gradients\nloss.backward(),\nclipped to a max norm", ORANGE),
              ("the update\noptimizer.step() with the\nlearning rate of the schedule", GREEN))
    travels = ("source, <bos> + target", "logits (B, T, n_vocab)\nagainst target + <eos>", "one number",
               "a gradient for\nevery parameter", "new weights:\nthe next batch")
    n = len(stages)
    centres = [(3.2 * math.cos(math.pi / 2 - 2 * math.pi * i / n), 2.4 * math.sin(math.pi / 2 - 2 * math.pi * i / n))
               for i in range(n)]
    for (x, y), (text, colour) in zip(centres, stages):
        _box(ax, x, y, 2.7, 1.0, text, colour, fontsize=8.5)
    for i, label in enumerate(travels):
        (x0, y0), (x1, y1) = centres[i], centres[(i + 1) % n]
        start = (x0 + 0.3 * (x1 - x0), y0 + 0.3 * (y1 - y0))
        end = (x0 + 0.7 * (x1 - x0), y0 + 0.7 * (y1 - y0))
        _arrow(ax, start, end, colour="#444444", rad=-0.15, lw=1.6)
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        out = 1.0 / max(math.hypot(mx, my), 1e-9)
        ha = "center" if abs(mx) < 0.5 else ("left" if mx > 0 else "right")  # clear of the boxes
        ax.text(mx * (1 + 0.85 * out), my * (1 + 0.85 * out), label, ha=ha, va="center", fontsize=8,
                family="monospace", color="#222222")
    ax.text(0, 0, "one step = one batch\nan epoch = every batch once", ha="center", va="center", fontsize=10,
            fontweight="bold", color="#444444")
    ax.set_xlim(-6.4, 6.4)
    ax.set_ylim(-3.6, 3.4)
    ax.set_aspect("equal")
    ax.set_title("The training loop: the same five stations for every batch", fontsize=12)
    return ax


# --- moved here: the head split (00, 07) and the whole model (09) -----------------------------------


def plot_heads_split(B: int, T: int, d_model: int, h: int, ax=None):
    """Picture a batch x of shape (B, T, d_model) and how h heads share its d_model columns.

    Each sequence of the batch is a T × d_model grid (one row per position); the columns
    are coloured by the head that receives them: head i gets columns i*d_k ... (i+1)*d_k - 1,
    with d_k = d_model // h. Returns the Axes.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    _check_sizes(B=B, T=T, d_model=d_model, h=h)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.6))
    divisible = d_model % h == 0
    d_k = d_model // h if divisible else None
    grid = np.full((T, B * (d_model + 1) - 1), np.nan)
    for b in range(B):
        start = b * (d_model + 1)
        columns = np.arange(d_model)
        grid[:, start:start + d_model] = (columns // d_k) % len(PALETTE) if divisible else 0
    cmap = ListedColormap(PALETTE if divisible else ["#bbbbbb"]).with_extremes(bad="white")
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=max(len(cmap.colors) - 1, 1), aspect="equal",
              interpolation="nearest")
    ax.set_xticks(np.arange(-0.5, grid.shape[1], 1), minor=True)
    ax.set_yticks(np.arange(-0.5, T, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.2)
    ax.grid(which="major", visible=False)
    ax.tick_params(which="both", length=0)
    ax.set_xticks([b * (d_model + 1) + (d_model - 1) / 2 for b in range(B)])
    ax.set_xticklabels([f"sequence {b}" for b in range(B)])
    ax.set_yticks(range(T))
    ax.set_yticklabels([f"t={t}" for t in range(T)], fontsize=8)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    if divisible:
        ax.set_title(f"x: (B={B}, T={T}, d_model={d_model});  h={h} heads, d_k = d_model/h = {d_k}\n"
                     f"split into heads: (B, h, T, d_k) = ({B}, {h}, {T}, {d_k}), one colour per head")
    else:
        ax.set_title(f"x: (B={B}, T={T}, d_model={d_model});  h={h} does not divide d_model={d_model}:\n"
                     "no equal split into heads (pick h that divides d_model)", color="#D55E00")
    return ax


def plot_data_flow(B: int = 2, S: int = 8, T: int = 9, d_model: int = 64, n_vocab: int = 13, h: int = 4,
                   num_encoder_layers: int = 2, num_decoder_layers: int = 2, ax=None):
    """The encoder–decoder Transformer as boxes and arrows, with the tensor shape on every arrow.

    Source ids (B, S) go up the encoder on the left, the shifted target ids (B, T) up the decoder on
    the right; the encoder's output (the memory, (B, S, d_model)) enters every decoder block's
    cross-attention; the decoder ends in logits (B, T, n_vocab). Each shape is written with its names
    and with the numbers given here.

    Returns:
        The matplotlib Axes.
    """
    _check_sizes(B=B, S=S, T=T, d_model=d_model, n_vocab=n_vocab, h=h, num_encoder_layers=num_encoder_layers,
                 num_decoder_layers=num_decoder_layers)
    ax = _axes(ax, figsize=(12, 11))

    def shape(names, values):
        return f"({', '.join(names)}) = ({', '.join(str(v) for v in values)})"

    ids_s, ids_t = shape(["B", "S"], [B, S]), shape(["B", "T"], [B, T])
    vec_s, vec_t = shape(["B", "S", "d_model"], [B, S, d_model]), shape(["B", "T", "d_model"], [B, T, d_model])
    logits = shape(["B", "T", "n_vocab"], [B, T, n_vocab])
    w, bh = 3.9, 0.75  # box width and height
    xe, xd = 2.6, 10.0  # centres of the encoder and decoder columns
    y_ids, y_emb, y_pos, y_out = 0.4, 2.2, 4.0, 12.4
    # the block stacks: encoder 2 sublayers, decoder 3
    enc_sub = (7.0, 9.0)
    dec_sub = (6.5, 8.2, 9.9)
    y_blk_lo, y_blk_hi = 5.55, 10.85
    for x, ids, vec, kind, colour in ((xe, ids_s, vec_s, "source", BLUE), (xd, ids_t, vec_t, "target", ORANGE)):
        first = "source token ids\n(digits, then <pad>)" if kind == "source" else "decoder input ids\n(<bos> + target shifted right)"
        _box(ax, x, y_ids, w, bh, first, "#777777")
        _arrow(ax, (x, y_ids + bh / 2), (x, y_emb - bh / 2), ids)
        _box(ax, x, y_emb, w, bh, "token embedding × √d_model\n(n_vocab rows of d_model numbers)", colour)
        _arrow(ax, (x, y_emb + bh / 2), (x, y_pos - bh / 2), vec)
        _box(ax, x, y_pos, w, bh, "+ sinusoidal positional encoding", colour)
        _arrow(ax, (x, y_pos + bh / 2), (x, y_blk_lo), vec)
    # encoder block
    from matplotlib.patches import FancyBboxPatch

    for x, colour, n, label_side in ((xe, BLUE, num_encoder_layers, -1), (xd, ORANGE, num_decoder_layers, 1)):
        ax.add_patch(FancyBboxPatch((x - w / 2 - 0.25, y_blk_lo), w + 0.5, y_blk_hi - y_blk_lo,
                                    boxstyle="round,pad=0.02,rounding_size=0.2", facecolor="none",
                                    edgecolor=colour, linewidth=1.8, linestyle="--"))
        kind = "encoder" if x == xe else "decoder"
        ax.text(x + label_side * (w / 2 + 0.45), (y_blk_lo + y_blk_hi) / 2, f"{kind}\nblock\n× {n}",
                ha="right" if label_side < 0 else "left", va="center", fontsize=10, fontweight="bold", color=colour)
    sub_h = 0.95
    _box(ax, xe, enc_sub[0], w, sub_h, f"self-attention, {h} heads\n(mask: source padding)\n+ residual, LayerNorm", BLUE,
         fontsize=8.5)
    _box(ax, xe, enc_sub[1], w, sub_h, "feed-forward\n+ residual, LayerNorm", BLUE, fontsize=8.5)
    inner_s, inner_t = "(B, S, d_model)", "(B, T, d_model)"  # names only: no room inside the blocks
    _arrow(ax, (xe, enc_sub[0] + sub_h / 2), (xe, enc_sub[1] - sub_h / 2), inner_s)
    _box(ax, xd, dec_sub[0], w, 0.85, "masked self-attention\n(mask: causal + target padding)\n+ residual, LayerNorm",
         ORANGE, fontsize=8.5)
    _box(ax, xd, dec_sub[1], w, 0.85, "cross-attention: queries from here,\nkeys/values = memory\n+ residual, LayerNorm",
         GREEN, fontsize=8.5)
    _box(ax, xd, dec_sub[2], w, 0.85, "feed-forward\n+ residual, LayerNorm", ORANGE, fontsize=8.5)
    _arrow(ax, (xd, dec_sub[0] + 0.425), (xd, dec_sub[1] - 0.425), inner_t)
    _arrow(ax, (xd, dec_sub[1] + 0.425), (xd, dec_sub[2] - 0.425), inner_t)
    # stack outputs and final norms
    _arrow(ax, (xe, y_blk_hi), (xe, y_out - bh / 2), vec_s)
    _box(ax, xe, y_out, w, bh, "final LayerNorm\n→ memory", BLUE)
    _arrow(ax, (xd, y_blk_hi), (xd, y_out - bh / 2), vec_t)
    _box(ax, xd, y_out, w, bh, "final LayerNorm", ORANGE)
    # memory into cross-attention: right from the encoder's output, down, right into the cross-attention box
    x_turn = xe + w / 2 + 1.35
    ax.plot([xe + w / 2, x_turn, x_turn], [y_out, y_out, dec_sub[1]], color=GREEN, lw=1.8)
    ax.annotate("", xy=(xd - w / 2, dec_sub[1]), xytext=(x_turn, dec_sub[1]),
                arrowprops=dict(arrowstyle="-|>", color=GREEN, lw=1.8, shrinkA=0, shrinkB=0))
    ax.text(x_turn + 0.12, dec_sub[1] + 1.5, f"memory\n(B, S, d_model)\n= ({B}, {S}, {d_model})\nto every\ndecoder block",
            ha="left", va="center", fontsize=8.5, color="#222222", family="monospace")
    # unembedding
    y_lin, y_soft, y_top = 14.2, 16.0, 17.5
    _arrow(ax, (xd, y_out + bh / 2), (xd, y_lin - bh / 2), vec_t)
    _box(ax, xd, y_lin, w, bh, "unembedding: linear d_model → n_vocab\n(optionally tied to the embedding)", RED,
         fontsize=8.5)
    _arrow(ax, (xd, y_lin + bh / 2), (xd, y_soft - bh / 2), logits + "  logits")
    _box(ax, xd, y_soft, w, bh, "softmax over the n_vocab tokens", RED)
    _arrow(ax, (xd, y_soft + bh / 2), (xd, y_top), logits + "  probabilities")
    ax.text(xd, y_top + 0.3, "next-token probabilities at every target position", ha="center", va="bottom",
            fontsize=9.5, fontweight="bold")
    ax.text(xe, y_out + 1.4, "ENCODER\nreads the whole source\nat once (no causal mask)", ha="center", va="bottom",
            fontsize=10, color=BLUE, fontweight="bold")
    ax.set_xlim(-0.6, 15.2)
    ax.set_ylim(-0.3, 18.4)
    ax.axis("off")
    ax.set_title(f"The encoder–decoder Transformer: B={B}, S={S}, T={T}, d_model={d_model}, n_vocab={n_vocab}, h={h}",
                 fontsize=12)
    return ax


# --- 13: the three families ---------------------------------------------------------------------------


def plot_model_families(ax=None):
    """Encoder-only (BERT), decoder-only (GPT) and encoder–decoder (the translator) built from one block.

    Each column is a stack of the same block; what differs is the self-attention mask (all positions,
    or only the earlier ones), whether a second stack feeds cross-attention, and what the output
    layer is trained to predict. Returns the Axes.
    """
    ax = _axes(ax, figsize=(13, 5.8))
    w, ys = 3.0, (0.0, 1.35, 2.9, 4.45)
    columns = [
        (1.7, BLUE, "encoder-only (BERT-style)", "tokens, some hidden:\nA [MASK] is barking",
         "N × block\nself-attention sees\nALL positions (no causal mask)", "the hidden tokens\n(B, T, n_vocab) at [MASK]"),
        (5.3, ORANGE, "decoder-only (GPT-style)", "the text so far:\nA dog is",
         "N × block\nself-attention sees\nEARLIER positions (causal mask)", "the next token\n(B, T, n_vocab) at every position"),
    ]
    for x, colour, title, data, stack, output in columns:
        ax.text(x, ys[3] + 0.75, title, ha="center", va="bottom", fontsize=10.5, fontweight="bold", color=colour)
        _box(ax, x, ys[0], w, 0.75, data, GREY, fontsize=8.5)
        _box(ax, x, ys[1], w, 0.6, "token embedding\n+ positions", colour, fontsize=8.5)
        _box(ax, x, ys[2], w, 1.1, stack, colour, fontsize=8, weight="bold")
        _box(ax, x, ys[3], w, 0.75, "output layer → " + output, RED, fontsize=8)
        for lower, upper, h_low, h_up in ((ys[0], ys[1], 0.75, 0.6), (ys[1], ys[2], 0.6, 1.1), (ys[2], ys[3], 1.1, 0.75)):
            _arrow(ax, (x, lower + h_low / 2), (x, upper - h_up / 2))
    xe, xd = 8.75, 12.15
    ax.text((xe + xd) / 2, ys[3] + 0.75, "encoder–decoder (the translator)", ha="center", va="bottom",
            fontsize=10.5, fontweight="bold", color=GREEN)
    _box(ax, xe, ys[0], 2.3, 0.75, "source:\nEin Hund bellt", GREY, fontsize=8.5)
    _box(ax, xd, ys[0], 2.3, 0.75, "target so far:\n<bos> A dog", GREY, fontsize=8.5)
    _box(ax, xe, ys[2], 2.3, 1.1, "N × block\nself-attention sees\nall positions", BLUE, fontsize=8, weight="bold")
    _box(ax, xd, ys[2], 2.3, 1.1, "N × block\ncausal self-attention\n+ cross-attention", ORANGE, fontsize=8,
         weight="bold")
    _box(ax, xd, ys[3], 2.3, 0.75, "output layer →\nthe next target token", RED, fontsize=8)
    for x in (xe, xd):
        _arrow(ax, (x, ys[0] + 0.375), (x, ys[2] - 0.55), label="embed +\npositions", side="right" if x == xd else "left",
               fontsize=7.5)
    _arrow(ax, (xd, ys[2] + 0.55), (xd, ys[3] - 0.375))
    _arrow(ax, (xe + 1.15, ys[2]), (xd - 1.15, ys[2]), colour=GREEN, lw=2.0)
    ax.text((xe + xd) / 2, ys[2] + 0.1, "memory", ha="center", va="bottom", fontsize=8, color=GREEN)
    ax.set_xlim(0, 13.6)
    ax.set_ylim(-0.6, ys[3] + 1.3)
    ax.set_title("One block, three families: the mask and the training target make the difference", fontsize=11.5)
    return ax
