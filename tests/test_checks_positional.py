import math

import pytest
import torch

from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG
from course_lib.checks.positional import (check_rotation_for_offset, check_sinusoidal_table, rotation_for_offset,
                                          sinusoidal_table)


# Learner-style attempts, written independently of the mistake makers in course_lib.checks.positional.
def table(T, d_model, *, base=10000.0, exponent=lambda i, d: 2 * i / d, first=0, even=math.sin, odd=math.cos,
          layout="interleaved"):
    out = torch.zeros(T, d_model)
    half = d_model // 2
    for row, pos in enumerate(range(first, first + T)):
        for i in range(half):
            angle = pos / base ** exponent(i, d_model)
            if layout == "interleaved":
                out[row, 2 * i], out[row, 2 * i + 1] = even(angle), odd(angle)
            else:
                out[row, i], out[row, half + i] = even(angle), odd(angle)
    return out


def vectorised_float32(T, d_model):
    pos = torch.arange(T, dtype=torch.float32)[:, None]
    i = torch.arange(d_model // 2, dtype=torch.float32)
    angles = pos / 10000 ** (2 * i / d_model)
    pe = torch.empty(T, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angles), torch.cos(angles)
    return pe


def per_column(T, d_model):
    div = 10000 ** (torch.arange(d_model, dtype=torch.float32) / d_model)
    pos = torch.arange(T, dtype=torch.float32)[:, None]
    pe = torch.empty(T, d_model)
    pe[:, 0::2] = torch.sin(pos / div[0::2])
    pe[:, 1::2] = torch.cos(pos / div[1::2])
    return pe


def integer_division(T, d_model):
    return table(T, d_model, exponent=lambda i, d: (2 * i) // d)


def not_done(*args):
    raise NotImplementedError("Your turn")


@pytest.mark.parametrize("attempt, fragment", [
    (lambda T, d: table(T, d), "matches the reference"),
    (vectorised_float32, "matches the reference"),
    (lambda T, d: table(T, d).double(), "matches the reference"),
    (not_done, "replace `raise NotImplementedError`"),
    (lambda T, d: table(T, d, even=math.cos, odd=math.sin), "sin and cos are swapped"),
    (lambda T, d: table(T, d, layout="blocks"), "concatenated a block of sines"),
    (lambda T, d: table(T, d, first=1), "positions start at 1"),
    (lambda T, d: table(T, d).T, "returned the table transposed"),
    (per_column, "each column got its own frequency"),
    (lambda T, d: table(T, d, exponent=lambda i, dd: i / dd), "the factor 2 is missing"),
    (lambda T, d: table(T, d, exponent=lambda i, dd: 2 * (2 * i) / dd), "the 2 is counted twice"),
    (integer_division, "every pair has the same frequency"),
    (lambda T, d: table(T, d, exponent=lambda i, dd: -2 * i / dd), "multiplied the position"),
    (lambda T, d: table(T, d, base=1000.0), "the base is 1000"),
    (lambda T, d: table(T, d, odd=math.sin), "every column holds a sine"),
    (lambda T, d: table(T, d)[:, 0::2], "only the sines"),
    (lambda T, d: table(T, d).reshape(T, d // 2, 2), "did not flatten"),
    (lambda T, d: table(T, d).numpy(), "expected a torch tensor"),
    (lambda T, d: table(T, d) + 0.01, "the values differ"),
])
def test_check_sinusoidal_table_names_each_mistake(attempt, fragment):
    result = check_sinusoidal_table(attempt)
    assert fragment in result.message, result


def test_table_statuses_and_the_square_case_is_named():
    assert check_sinusoidal_table(sinusoidal_table).status == CORRECT
    assert check_sinusoidal_table(not_done).status == NOT_DONE
    assert check_sinusoidal_table(lambda T, d: 1 / 0).status == ERROR
    transposed = check_sinusoidal_table(lambda T, d: table(T, d).T)
    assert transposed.status == WRONG and "T=4, d_model=4" in transposed.message
    # positions starting at 1 are caught even by the T=1 case alone
    assert "start at 1" in check_sinusoidal_table(lambda T, d: table(T, d, first=1) if T == 1 else table(T, d)).message


# --- exercise 2 -----------------------------------------------------------------------------------------
def rotation(k, d_model, *, base=10000.0, exponent=lambda i, d: 2 * i / d, angle=None, sign=1.0, cos_only=False,
             layout="interleaved"):
    m = torch.zeros(d_model, d_model)
    half = d_model // 2
    for i in range(half):
        a = angle(k, i) if angle else k / base ** exponent(i, d_model)
        c, s = math.cos(a), (0.0 if cos_only else sign * math.sin(a))
        r0, r1 = (2 * i, 2 * i + 1) if layout == "interleaved" else (i, i + half)
        m[r0, r0], m[r0, r1], m[r1, r0], m[r1, r1] = c, -s, s, c
    return m


def block_diag_solution(k, d_model):
    omega = 10000 ** (-2 * torch.arange(d_model // 2) / d_model)
    c, s = torch.cos(k * omega), torch.sin(k * omega)
    return torch.block_diag(*[torch.stack([torch.stack([ci, -si]), torch.stack([si, ci])]) for ci, si in zip(c, s)])


def blocks_only(k, d_model):
    full = rotation(k, d_model)
    return torch.stack([full[2 * i:2 * i + 2, 2 * i:2 * i + 2] for i in range(d_model // 2)])


@pytest.mark.parametrize("attempt, fragment", [
    (rotation, "matches the reference"),
    (lambda k, d: rotation(k, d).double(), "matches the reference"),
    (block_diag_solution, "matches the reference"),
    (not_done, "replace `raise NotImplementedError`"),
    (lambda k, d: rotation(k, d, sign=-1.0), "the sin entries have the wrong signs"),
    (lambda k, d: rotation(k, d).T, "the sin entries have the wrong signs"),
    (lambda k, d: rotation(k, d, angle=lambda kk, i: kk), "every block rotates by the angle k"),
    (lambda k, d: rotation(1, d), "does not depend on k"),
    (lambda k, d: rotation(k, d, layout="split"), "pairs (i, i + d_model/2)"),
    (lambda k, d: rotation(k, d, exponent=lambda i, dd: i / dd), "the factor 2 is missing"),
    (lambda k, d: rotation(k, d, exponent=lambda i, dd: 4 * i / dd), "the 2 is counted twice"),
    (lambda k, d: rotation(k, d, exponent=lambda i, dd: -2 * i / dd), "multiplied k by 10000"),
    (lambda k, d: rotation(k, d, base=1000.0), "the base is 1000"),
    (lambda k, d: rotation(k, d, cos_only=True), "only the cos entries"),
    (lambda k, d: torch.eye(d), "the identity matrix"),
    (blocks_only, "(d_model/2, 2, 2)"),
    (lambda k, d: rotation(k, d)[:, :-1], "expected shape"),
])
def test_check_rotation_for_offset_names_each_mistake(attempt, fragment):
    result = check_rotation_for_offset(attempt)
    assert fragment in result.message, result


def test_rotation_reference_moves_the_table_and_statuses():
    pe = table(30, 8).double()
    m = rotation_for_offset(4, 8).double()
    assert torch.allclose(pe[:20] @ m, pe[4:24], atol=1e-6)
    assert check_rotation_for_offset(rotation_for_offset).status == CORRECT
    assert check_rotation_for_offset(not_done).status == NOT_DONE
    assert check_rotation_for_offset(42).status == ERROR
    wrong_sign = check_rotation_for_offset(lambda k, d: rotation(k, d, sign=-1.0))
    assert wrong_sign.status == WRONG and "k=3, d_model=4" in wrong_sign.message and "[[cos, -sin]" in wrong_sign.hint
