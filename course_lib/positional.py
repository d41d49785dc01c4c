"""Telling positions apart: sinusoidal, learned and rotary position information.

Self-attention treats its input as a *set*: permute the tokens and the outputs are
permuted the same way, nothing else changes. Notebook 05 builds three ways to give a
model the order of its tokens; this module holds the final, tested versions.

- :func:`sinusoidal_encoding`: the fixed table of Vaswani et al. (2017), one row per position,

      PE[pos, 2i]   = sin(pos · ω_i)
      PE[pos, 2i+1] = cos(pos · ω_i),     ω_i = base^(-2i / d_model),  i = 0 … d_model/2 − 1

  so columns 2i and 2i+1 form a *pair* that turns at angular frequency ω_i (wavelength
  2π / ω_i, see :func:`wavelengths`).
- :class:`SinusoidalPositionalEncoding`: a module that adds that table to ``(B, T, d_model)``
  token vectors. It does **not** multiply the embeddings by sqrt(d_model): the right factor
  depends on how the embeddings were initialised, so the model that owns them applies it.
- :class:`LearnedPositionalEmbedding`: a trainable table ``nn.Embedding(max_len, d_model)``,
  added the same way; it has no row for a position ≥ ``max_len`` and says so.
- :func:`relative_rotation`: the matrix ``M_k`` with ``PE[pos + k] = PE[pos] @ M_k`` for every
  ``pos`` (row-vector convention): a block-diagonal rotation that depends only on ``k``.
- :func:`apply_rope`: rotary position embedding (Su et al., 2021, "RoFormer"), applied to
  queries and keys so that ``q · k`` depends only on the *relative* position.
- :func:`plot_encoding`, :func:`plot_dot_against_position` and :func:`draw_position_explorer`:
  the notebook's figures.

Angles are computed in float64 and then cast to the requested dtype, so float32 tables are
accurate even at positions in the hundreds of thousands.
"""
from __future__ import annotations

import math
from numbers import Real

import torch
from torch import nn

from course_lib.shapes import check_int, check_shape

DEFAULT_BASE = 10000.0


# --------------------------------------------------------------------------- validation
def _check_d_model(d_model, name: str = "d_model") -> int:
    d_model = check_int(d_model, name, 2)
    if d_model % 2:
        raise ValueError(f"{name} must be even: the sinusoidal and rotary schemes use the {name} columns in "
                         f"pairs (2i, 2i+1), one (sin, cos) pair per frequency; got {name}={d_model}")
    return d_model


def _check_base(base) -> float:
    if isinstance(base, bool) or not isinstance(base, Real):
        raise TypeError(f"base must be a number > 1, got {base!r}")
    base = float(base)
    if not (math.isfinite(base) and base > 1):
        raise ValueError(f"base must be a finite number > 1 (the paper uses 10000), got {base!r}")
    return base


def _check_offset(k, name: str = "k") -> float:
    if isinstance(k, torch.Tensor) and k.numel() == 1:
        k = k.item()
    if isinstance(k, bool) or not isinstance(k, Real):
        raise TypeError(f"{name} must be a number (an offset in positions), got {k!r}")
    k = float(k)
    if not math.isfinite(k):
        raise ValueError(f"{name} must be finite, got {k!r}")
    return k


# --------------------------------------------------------------------------- sinusoidal table
def frequencies(d_model: int, base: float = DEFAULT_BASE, *, dtype: torch.dtype = torch.float64,
                device=None) -> torch.Tensor:
    """The angular frequency of each column pair: ``ω_i = base^(-2i / d_model)``.

    Args:
        d_model: an even width.
        base: the paper's 10000.

    Returns:
        (d_model/2,): ω_0 = 1 (fastest), falling to nearly 1/base (slowest).
    """
    d_model, base = _check_d_model(d_model), _check_base(base)
    i = torch.arange(d_model // 2, dtype=torch.float64, device=device)  # the pair index
    return (base ** (-2.0 * i / d_model)).to(dtype)


def wavelengths(d_model: int, base: float = DEFAULT_BASE) -> torch.Tensor:
    """The wavelength of each pair, in positions: ``2π / ω_i = 2π · base^(2i / d_model)``.

    Returns:
        (d_model/2,) float64: from 2π ≈ 6.28 up to just under 2π · base.
    """
    return 2 * math.pi / frequencies(d_model, base)


def sinusoidal_encoding(T: int, d_model: int, base: float = DEFAULT_BASE, *, start: int = 0,
                        dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The sinusoidal position table of Vaswani et al. (2017).

    Args:
        T: number of positions (>= 1).
        d_model: width, even.
        base: the paper's 10000.
        start: the first position (0 by default; the table holds positions start … start+T-1).
        dtype: a floating-point dtype for the result.

    Returns:
        (T, d_model): row ``pos`` holds ``sin(pos ω_i)`` in column 2i and ``cos(pos ω_i)`` in
        column 2i+1. Every entry lies in [-1, 1] and every row has norm sqrt(d_model / 2).
    """
    T = check_int(T, "T", 1)
    d_model, base = _check_d_model(d_model), _check_base(base)
    start = check_int(start, "start", 0)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    positions = torch.arange(start, start + T, dtype=torch.float64, device=device)  # (T,)
    angles = positions[:, None] * frequencies(d_model, base, device=device)[None, :]  # (T, d_model/2)
    pe = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1)  # (T, d_model/2, 2): pairs side by side
    return pe.reshape(T, d_model).to(dtype)


class SinusoidalPositionalEncoding(nn.Module):
    """Add the sinusoidal table to a batch of token vectors; nothing to learn.

    ``forward(x)`` takes ``x`` of shape (..., T, d_model), e.g. (B, T, d_model), and returns
    ``dropout(x + PE[start : start + T])`` of the same shape. Any T works: the table is
    computed for the positions asked for, so there is no maximum length.

    The embeddings are **not** multiplied by sqrt(d_model) here. Vaswani et al. do multiply
    them, because their embedding matrix is shared with the output layer and so starts with
    small entries; with a different initialisation a different factor (or none) is right,
    so the model that owns the embeddings applies it (notebook 05 measures why).

    Args:
        d_model: width of the token vectors, even.
        base: the paper's 10000.
        dropout: dropout probability applied after the addition (the paper uses 0.1).
    """

    def __init__(self, d_model: int, base: float = DEFAULT_BASE, dropout: float = 0.0):
        super().__init__()
        self.d_model = _check_d_model(d_model)
        self.base = _check_base(base)
        if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        self.dropout = nn.Dropout(float(dropout))

    def encoding(self, T: int, start: int = 0, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """The rows that ``forward`` adds: (T, d_model)."""
        return sinusoidal_encoding(T, self.d_model, self.base, start=start, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        sizes = check_shape(x, "... T d_model", name="x", dtype="float", d_model=self.d_model)
        return self.dropout(x + self.encoding(sizes["T"], start, dtype=x.dtype, device=x.device))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, base={self.base:g}"


class LearnedPositionalEmbedding(nn.Module):
    """A trainable table with one row per position, added to the token vectors.

    ``forward(x)`` takes ``x`` of shape (..., T, d_model) and returns
    ``x + table[start : start + T]``. The rows start as ``nn.Embedding`` starts them, with
    independent N(0, 1) entries: no structure at all until training gives them some.

    Args:
        max_len: how many positions the table has rows for (0 … max_len-1).
        d_model: width of the token vectors (any positive int).

    Raises:
        ValueError: in ``forward``/``encoding``, when a position is >= ``max_len``: a learned
            table has nothing to say about a position it has never seen.
    """

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.max_len = check_int(max_len, "max_len", 1)
        self.d_model = check_int(d_model, "d_model", 1)
        self.table = nn.Embedding(self.max_len, self.d_model)

    def encoding(self, T: int, start: int = 0) -> torch.Tensor:
        """Rows ``start … start+T-1`` of the table: (T, d_model)."""
        T = check_int(T, "T", 1)
        start = check_int(start, "start", 0)
        last = start + T - 1
        if last >= self.max_len:
            raise ValueError(
                f"LearnedPositionalEmbedding has rows for positions 0..{self.max_len - 1} (max_len={self.max_len}), "
                f"but position {last} was asked for (T={T}, start={start}): a learned table has no row for a "
                "position it was not built with. Use a larger max_len (and train it), or an encoding that "
                "extends to any position, such as SinusoidalPositionalEncoding or apply_rope.")
        positions = torch.arange(start, start + T, device=self.table.weight.device)
        return self.table(positions)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        sizes = check_shape(x, "... T d_model", name="x", dtype="float", d_model=self.d_model)
        return x + self.encoding(sizes["T"], start).to(x.dtype)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}"


# --------------------------------------------------------------------------- relative positions
def relative_rotation(k: float, d_model: int, base: float = DEFAULT_BASE, *,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The matrix ``M_k`` that moves a sinusoidal row ``k`` positions on: ``PE[pos + k] = PE[pos] @ M_k``.

    Block-diagonal: pair i (columns 2i, 2i+1) gets the 2×2 block
    ``[[cos kω_i, -sin kω_i], [sin kω_i, cos kω_i]]``, from the angle-addition formulas
    ``sin(a + b) = sin a cos b + cos a sin b`` and ``cos(a + b) = cos a cos b − sin a sin b``.
    It depends only on ``k``, not on ``pos``; ``M_0`` is the identity, ``M_{-k} = M_kᵀ``, and
    ``M_a @ M_b = M_{a+b}``.

    Args:
        k: the offset in positions (any real number; negative moves backwards).
        d_model: even width.

    Returns:
        (d_model, d_model).
    """
    k = _check_offset(k)
    d_model = _check_d_model(d_model)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    angles = k * frequencies(d_model, base)  # (d_model/2,) float64
    cos, sin = torch.cos(angles), torch.sin(angles)
    m = torch.zeros(d_model, d_model, dtype=torch.float64)
    even = torch.arange(0, d_model, 2)
    m[even, even] = cos
    m[even, even + 1] = -sin
    m[even + 1, even] = sin
    m[even + 1, even + 1] = cos
    return m.to(dtype)


def apply_rope(x: torch.Tensor, positions: torch.Tensor | None = None, base: float = DEFAULT_BASE) -> torch.Tensor:
    """Rotary position embedding: rotate each coordinate pair of ``x`` by a position-dependent angle.

    Pair i (coordinates 2i and 2i+1, the interleaved layout of the RoFormer paper) of the
    vector at position m is rotated by the angle ``m · θ_i`` with ``θ_i = base^(-2i / d)``:

        out[2i]   = x[2i] cos(mθ_i) − x[2i+1] sin(mθ_i)
        out[2i+1] = x[2i] sin(mθ_i) + x[2i+1] cos(mθ_i)

    Applied to queries and keys (not values), the score ``rope(q, m) · rope(k, n)`` depends
    on m and n only through n − m.

    Args:
        x: (..., T, d) float, d even: e.g. queries (B, T, d_k) or (B, h, T, d_k).
        positions: None for 0 … T-1, or an int/float tensor of positions broadcastable to
            x.shape[:-1], e.g. (T,).
        base: the paper's 10000.

    Returns:
        (..., T, d), the same shape and dtype as ``x``; every pair keeps its length.
    """
    sizes = check_shape(x, "... T d", name="x", dtype="float")
    d = _check_d_model(sizes["d"], name="d")  # x's last axis
    if positions is None:
        positions = torch.arange(sizes["T"], device=x.device)
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"positions: expected None or a tensor of shape (T,) = ({sizes['T']},), "
                        f"got {type(positions).__name__}")
    if positions.dtype == torch.bool or positions.is_complex():
        raise TypeError(f"positions: expected an int or float tensor, got {positions.dtype}")
    try:
        torch.broadcast_shapes(positions.shape, x.shape[:-1])
    except RuntimeError:
        raise ValueError(f"positions of shape {tuple(positions.shape)} do not broadcast to x's (..., T) = "
                         f"{tuple(x.shape[:-1])}; pass one position per token, e.g. shape ({sizes['T']},)") from None
    if torch.broadcast_shapes(positions.shape, x.shape[:-1]) != x.shape[:-1]:
        raise ValueError(f"positions of shape {tuple(positions.shape)} would enlarge x's (..., T) = "
                         f"{tuple(x.shape[:-1])}")
    if positions.is_floating_point() and not torch.isfinite(positions).all():
        raise ValueError("positions contain NaN or inf")
    theta = frequencies(d, base, device=x.device)  # (d/2,) float64
    angles = positions.to(device=x.device, dtype=torch.float64)[..., None] * theta  # (..., T, d/2)
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]  # (..., T, d/2) each
    out = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)  # (..., T, d/2, 2)
    return out.flatten(-2)


# --------------------------------------------------------------------------- figures
def plot_encoding(pe: torch.Tensor, ax=None, title: str | None = None, highlight: dict[int, str] | None = None):
    """Heatmap of a position table: a row per position, a column per dimension, red +1 to blue −1.

    Args:
        pe: (T, d_model).
        highlight: ``{row: label}``: rows to outline and label, e.g. ``{10: "pos"}``.

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from course_lib.plotting import PALETTE

    sizes = check_shape(pe, "T d_model", name="pe")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.0))
    image = ax.imshow(pe.detach().cpu().float().numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto",
                      interpolation="nearest")
    ax.grid(False)
    ax.set_xlabel("dimension (column) j")
    ax.set_ylabel("position pos")
    for n, (row, label) in enumerate((highlight or {}).items()):
        if not 0 <= row < sizes["T"]:
            raise ValueError(f"highlight: row {row} is outside the table's {sizes['T']} rows")
        colour = (PALETTE[2], PALETTE[1], PALETTE[4])[n % 3]
        ax.add_patch(Rectangle((-0.5, row - 0.5), sizes["d_model"], 1, fill=False, edgecolor=colour, linewidth=2))
        ax.annotate(label, xy=(sizes["d_model"] - 0.5, row), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=9, color=colour, fontweight="bold", annotation_clip=False)
    if title:
        ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.12 if highlight else 0.04, label="value")
    return ax


def plot_dot_against_position(pe: torch.Tensor, pos: int, ax=None, mark: int | None = None,
                              title: str | None = None):
    """The dot product of row ``pos`` with every row of a position table, against the second position.

    Args:
        pe: (T, d_model). pos: the row compared with every other. mark: a second row to mark.

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    from course_lib.plotting import PALETTE

    sizes = check_shape(pe, "T d_model", name="pe")
    for name, row in (("pos", pos), ("mark", mark)):
        if row is not None and not 0 <= row < sizes["T"]:
            raise ValueError(f"{name}={row} is outside the table's {sizes['T']} rows")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6))
    dots = (pe @ pe[pos]).detach().cpu().float()  # (T,)
    ax.plot(range(sizes["T"]), dots.numpy(), color=PALETTE[0], linewidth=1.8)
    ax.axvline(pos, color=PALETTE[2], linestyle=":", linewidth=1.5, label=f"pos = {pos}")
    if mark is not None:
        ax.plot([mark], [dots[mark].item()], "o", color=PALETTE[1], markersize=8,
                label=f"pos + k = {mark}: {dots[mark].item():.2f}")
    ax.set_xlabel("second position")
    ax.set_ylabel(f"PE[{pos}] · PE[second]")
    ax.legend(fontsize=9, loc="best")
    if title:
        ax.set_title(title)
    return ax


def draw_position_explorer(d_model: int, pos: int, k: int, T: int = 100, base: float = DEFAULT_BASE):
    """The notebook's explorer: the table with rows ``pos`` and ``pos + k`` outlined, and the dot-product curve.

    Returns:
        A matplotlib Figure whose title states the settings and ``PE[pos] · PE[pos + k]``.
    """
    import matplotlib.pyplot as plt

    pe = sinusoidal_encoding(T, d_model, base)
    other = pos + k
    fig, (ax_map, ax_dot) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.1, 1]})
    if 0 <= other < T:
        highlight = {pos: "pos", other: "pos+k"} if k else {pos: "pos = pos+k"}
        summary = f"PE[{pos}] · PE[{other}] = {(pe[pos] @ pe[other]).item():.2f} (max d_model/2 = {d_model // 2})"
        mark = other
    else:
        highlight, mark = {pos: "pos"}, None
        summary = f"pos + k = {other} is outside the {T} rows drawn"
    plot_encoding(pe, ax=ax_map, highlight=highlight, title=f"sinusoidal table, {T} positions")
    plot_dot_against_position(pe, pos, ax=ax_dot, mark=mark, title="dot product with every position")
    fig.suptitle(f"d_model = {d_model}, pos = {pos}, k = {k}:  {summary}")
    fig.tight_layout()
    return fig
