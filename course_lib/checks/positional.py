"""Notebook 05's exercises: the sinusoidal table, and the rotation that moves it k positions on."""
from __future__ import annotations

import math

import torch

from course_lib.checks.core import Case, CheckResult, Mistake, check_function
from course_lib.positional import relative_rotation, sinusoidal_encoding

BASE = 10000.0


def sinusoidal_table(T: int, d_model: int) -> torch.Tensor:
    """The sinusoidal position table, base 10000.

    Args:
        T: number of positions, 0 … T-1. d_model: even width.

    Returns:
        (T, d_model): ``PE[pos, 2i] = sin(pos / 10000^(2i/d_model))``, ``PE[pos, 2i+1] = cos(...)``.
    """
    return sinusoidal_encoding(T, d_model, BASE)


def rotation_for_offset(k: int, d_model: int) -> torch.Tensor:
    """The (d_model, d_model) matrix ``M_k`` with ``PE[pos + k] = PE[pos] @ M_k`` (row vectors).

    Args:
        k: the offset in positions. d_model: even width.

    Returns:
        (d_model, d_model): block-diagonal, block i = ``[[cos kω_i, -sin kω_i], [sin kω_i, cos kω_i]]``.
    """
    return relative_rotation(k, d_model, BASE)


# --- helpers that build the wrong answers ------------------------------------------------------------

def _pair_index(d_model: int) -> torch.Tensor:
    return torch.arange(d_model // 2, dtype=torch.float64)


def _omega(d_model: int, exponent=lambda i, d: 2 * i / d, base: float = BASE) -> torch.Tensor:
    """(d_model/2,) frequencies 1 / base^exponent(i, d_model) for the pair index i."""
    return base ** (-exponent(_pair_index(d_model), d_model))


def _interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(T, n), (T, n) -> (T, 2n) with a in the even columns and b in the odd ones."""
    return torch.stack((a, b), dim=-1).flatten(-2)


def _table(T: int, d_model: int, omega: torch.Tensor | None = None, *, first: int = 0,
           even=torch.sin, odd=torch.cos) -> torch.Tensor:
    omega = _omega(d_model) if omega is None else omega
    angles = torch.arange(first, first + T, dtype=torch.float64)[:, None] * omega  # (T, d_model/2)
    return _interleave(even(angles), odd(angles)).float()


def _per_column_table(T: int, d_model: int) -> torch.Tensor:
    """Column j uses its own frequency base^(-j/d_model): right for sin columns, wrong for cos columns."""
    columns = torch.arange(d_model, dtype=torch.float64)
    angles = torch.arange(T, dtype=torch.float64)[:, None] * BASE ** (-columns / d_model)  # (T, d_model)
    pe = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, 1::2])
    return pe.float()


def _angles(T: int, d_model: int) -> torch.Tensor:
    return torch.arange(T, dtype=torch.float64)[:, None] * _omega(d_model)


def _rotation(k: float, d_model: int, omega: torch.Tensor | None = None, *, sign: float = 1.0,
              sin_scale: float = 1.0) -> torch.Tensor:
    """Block-diagonal rotation; sign=-1 transposes every block, sin_scale=0 drops the sin entries."""
    omega = _omega(d_model) if omega is None else omega
    blocks = []
    for a in (k * omega).tolist():
        c, s = math.cos(a), sign * sin_scale * math.sin(a)
        blocks.append(torch.tensor([[c, -s], [s, c]], dtype=torch.float64))
    return torch.block_diag(*blocks).float()


def _split_pairs_rotation(k: float, d_model: int) -> torch.Tensor:
    """The right blocks, but pairing column i with column i + d_model/2 (a [sin | cos] layout)."""
    half = d_model // 2
    a = k * _omega(d_model)
    m = torch.zeros(d_model, d_model, dtype=torch.float64)
    i = torch.arange(half)
    m[i, i] = torch.cos(a)
    m[i, i + half] = -torch.sin(a)
    m[i + half, i] = torch.sin(a)
    m[i + half, i + half] = torch.cos(a)
    return m.float()


def _block_stack(k: float, d_model: int) -> torch.Tensor:
    r = _rotation(k, d_model)
    return torch.stack([r[2 * i:2 * i + 2, 2 * i:2 * i + 2] for i in range(d_model // 2)])


# --- exercise 1: sinusoidal_table ----------------------------------------------------------------------

def _table_cases() -> list[Case]:
    return [
        # T = d_model: a transposed table still has the right shape, only the values can tell.
        Case((4, 4), "T=4, d_model=4 (square: a transposed table has the right shape too)"),
        Case((6, 8), "T=6, d_model=8"),
        Case((3, 2), "T=3, d_model=2 (a single pair of columns)"),
        Case((1, 6), "T=1, d_model=6 (only position 0)"),
        Case((100, 16), "T=100, d_model=16 (positions up to 99)"),
    ]


_TABLE_MISTAKES = [
    Mistake("sin and cos are swapped: the even columns 2i should hold sin, the odd columns 2i+1 cos "
            "(so that row 0 is [0, 1, 0, 1, ...])",
            lambda T, d: _table(T, d, even=torch.cos, odd=torch.sin), "pe[:, 0::2] = sin(...), pe[:, 1::2] = cos(...)"),
    Mistake("you concatenated a block of sines and then a block of cosines ([sin | cos]); the formula "
            "interleaves them: column 2i is sin, column 2i+1 is cos of the same angle",
            lambda T, d: torch.cat((torch.sin(_angles(T, d)), torch.cos(_angles(T, d))), dim=-1).float(),
            "assign pe[:, 0::2] = sin(angles) and pe[:, 1::2] = cos(angles)"),
    Mistake("the positions start at 1; they start at 0, so row 0 must be sin(0), cos(0), ... = [0, 1, 0, 1, ...]",
            lambda T, d: _table(T, d, first=1), "positions = torch.arange(T)"),
    Mistake("you returned the table transposed, with shape (d_model, T): one row per position is expected",
            lambda T, d: _table(T, d).T, "rows are positions, columns are dimensions: shape (T, d_model)"),
    Mistake("each column got its own frequency 10000^(-j/d_model), from the column index j: the sin "
            "columns are right, but column 2i+1 must use the same angle as column 2i",
            _per_column_table, "compute one angle per pair i, pos / 10000^(2i/d_model), and take its sin and its cos"),
    Mistake("the exponent is i/d_model with the pair index i: the factor 2 is missing (it should be 2i/d_model)",
            lambda T, d: _table(T, d, _omega(d, lambda i, dd: i / dd)),
            "with i = 0, 1, ..., d_model/2 - 1 the exponent is 2*i/d_model"),
    Mistake("the exponent is 2j/d_model with the column index j = 2i (0, 2, 4, ...): the 2 is counted twice, "
            "so the frequencies fall too fast",
            lambda T, d: _table(T, d, _omega(d, lambda i, dd: 4 * i / dd)),
            "either use j = 0, 2, 4, ... with exponent j/d_model, or i = 0, 1, 2, ... with 2*i/d_model"),
    Mistake("every pair has the same frequency 1 (the exponent came out as 0: integer division 2*i // d_model?)",
            lambda T, d: _table(T, d, torch.ones(d // 2, dtype=torch.float64)),
            "use true division: 2 * i / d_model"),
    Mistake("you multiplied the position by 10000^(2i/d_model) instead of dividing (the exponent has the wrong sign)",
            lambda T, d: _table(T, d, _omega(d, lambda i, dd: -2 * i / dd)),
            "angle = pos / 10000 ** (2 * i / d_model)"),
    Mistake("the base is 1000; the formula uses 10000",
            lambda T, d: _table(T, d, _omega(d, base=1000.0)), "angle = pos / 10000 ** (2 * i / d_model)"),
    Mistake("every column holds a sine: the odd columns 2i+1 should hold the cosine of the same angle",
            lambda T, d: _table(T, d, odd=torch.sin), "pe[:, 1::2] = torch.cos(angles)"),
    Mistake("you returned only the sines, shape (T, d_model/2): each angle fills two columns, its sin and its cos",
            lambda T, d: torch.sin(_angles(T, d)).float(), "the result has d_model columns"),
    Mistake("you stacked sin and cos into shape (T, d_model/2, 2) but did not flatten the last two axes",
            lambda T, d: torch.stack((torch.sin(_angles(T, d)), torch.cos(_angles(T, d))), dim=-1).float(),
            "finish with .reshape(T, d_model) (or .flatten(-2))"),
]


def check_sinusoidal_table(fn) -> CheckResult:
    """Check a learner's ``sinusoidal_table(T, d_model)`` -> (T, d_model)."""
    # atol 1e-4: a correct float32 computation at position 99 differs from the float64 reference by ~1e-5.
    return check_function(fn, exercise="sinusoidal_table", reference=sinusoidal_table, cases=_table_cases(),
                          mistakes=_TABLE_MISTAKES, shape_names="(T, d_model)", atol=1e-4)


# --- exercise 2: rotation_for_offset --------------------------------------------------------------------

def _rotation_cases() -> list[Case]:
    return [
        Case((3, 4), "k=3, d_model=4"),
        Case((2, 8), "k=2, d_model=8"),
        Case((-5, 6), "k=-5, d_model=6 (a step backwards)"),
        Case((0, 4), "k=0, d_model=4 (no move: the identity)"),
        Case((40, 16), "k=40, d_model=16"),
    ]


_ROTATION_MISTAKES = [
    Mistake("the sin entries have the wrong signs: you built the transpose of M_k (the rotation for column "
            "vectors), which moves the table k positions back: PE[pos] @ M_k.T = PE[pos - k]",
            lambda k, d: _rotation(k, d, sign=-1.0),
            "with PE[pos] as a row [s, c], the new sin is s·cos(kω) + c·sin(kω): the block is [[cos, -sin], [sin, cos]]"),
    Mistake("every block rotates by the angle k; block i must rotate by k·ω_i with ω_i = 1/10000^(2i/d_model)",
            lambda k, d: _rotation(k, d, torch.ones(d // 2, dtype=torch.float64)),
            "angle_i = k / 10000 ** (2 * i / d_model)"),
    Mistake("your matrix does not depend on k: it is M_1, the move by one position, whatever k is",
            lambda k, d: _rotation(1, d), "multiply every angle by k"),
    Mistake("the blocks sit on pairs (i, i + d_model/2), the layout of a [sin | cos] table; the interleaved "
            "table pairs columns 2i and 2i+1, so M_k is block diagonal with 2×2 blocks",
            _split_pairs_rotation, "place block i at rows and columns 2i, 2i+1 (torch.block_diag(*blocks))"),
    Mistake("the exponent is i/d_model with the pair index i: the factor 2 is missing",
            lambda k, d: _rotation(k, d, _omega(d, lambda i, dd: i / dd)), "ω_i = 1 / 10000 ** (2 * i / d_model)"),
    Mistake("the exponent is 2j/d_model with the column index j = 2i: the 2 is counted twice",
            lambda k, d: _rotation(k, d, _omega(d, lambda i, dd: 4 * i / dd)), "ω_i = 1 / 10000 ** (2 * i / d_model)"),
    Mistake("you multiplied k by 10000^(2i/d_model) instead of dividing (the exponent has the wrong sign)",
            lambda k, d: _rotation(k, d, _omega(d, lambda i, dd: -2 * i / dd)), "angle_i = k / 10000 ** (2 * i / d_model)"),
    Mistake("the base is 1000; the formula uses 10000",
            lambda k, d: _rotation(k, d, _omega(d, base=1000.0)), "ω_i = 1 / 10000 ** (2 * i / d_model)"),
    Mistake("only the cos entries are there: each 2×2 block also needs -sin(kω_i) and sin(kω_i) off its diagonal",
            lambda k, d: _rotation(k, d, sin_scale=0.0), "block = [[cos, -sin], [sin, cos]]"),
    Mistake("you returned the identity matrix: that moves nothing (it is M_0)",
            lambda k, d: torch.eye(d), "block i rotates by the angle k·ω_i"),
    Mistake("you returned the d_model/2 blocks as a stack of shape (d_model/2, 2, 2); put them on the diagonal of "
            "one (d_model, d_model) matrix",
            _block_stack, "torch.block_diag(*blocks)"),
]


def check_rotation_for_offset(fn) -> CheckResult:
    """Check a learner's ``rotation_for_offset(k, d_model)`` -> (d_model, d_model)."""
    return check_function(fn, exercise="rotation_for_offset", reference=rotation_for_offset, cases=_rotation_cases(),
                          mistakes=_ROTATION_MISTAKES, shape_names="(d_model, d_model)", atol=1e-5)
