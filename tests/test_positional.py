import math

import matplotlib.pyplot as plt
import pytest
import torch

from course_lib.positional import (LearnedPositionalEmbedding, SinusoidalPositionalEncoding, apply_rope,
                                   draw_position_explorer, frequencies, plot_dot_against_position, plot_encoding,
                                   relative_rotation, sinusoidal_encoding, wavelengths)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def loop_table(T, d_model, base=10000.0, start=0):
    """The formula of the paper, entry by entry, with Python's math module (independent of the vectorised code)."""
    rows = []
    for pos in range(start, start + T):
        row = []
        for i in range(d_model // 2):
            angle = pos / base ** (2 * i / d_model)
            row += [math.sin(angle), math.cos(angle)]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def complex_rope(x, positions, base=10000.0):
    """RoPE as a complex multiplication: pair (a, b) is a + ib, times e^{i m θ_j}."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    rotated = z * torch.polar(torch.ones_like(theta), positions.double()[..., None] * theta)
    return torch.view_as_real(rotated).reshape(x.shape).to(x.dtype)


# --------------------------------------------------------------------------- sinusoidal_encoding
@pytest.mark.parametrize("T, d_model", [(1, 2), (5, 6), (4, 4), (50, 16), (7, 64)])
def test_sinusoidal_matches_the_formula_entry_by_entry(T, d_model):
    pe = sinusoidal_encoding(T, d_model)
    assert pe.shape == (T, d_model) and pe.dtype == torch.float32
    assert torch.allclose(pe.double(), loop_table(T, d_model), atol=1e-6)


def test_known_values_and_row_zero():
    pe = sinusoidal_encoding(3, 4)
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert torch.allclose(pe[1], torch.tensor([math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)]))
    assert torch.equal(sinusoidal_encoding(1, 6), torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0, 1.0]]))


def test_bounded_and_constant_row_norm():
    pe = sinusoidal_encoding(200, 32)
    assert pe.abs().max() <= 1.0
    assert torch.allclose(pe.norm(dim=-1), torch.full((200,), math.sqrt(16.0)))


def test_large_positions_are_finite_and_accurate_in_float32_and_float64():
    start = 10 ** 5
    pe32 = sinusoidal_encoding(3, 8, start=start)
    pe64 = sinusoidal_encoding(3, 8, start=start, dtype=torch.float64)
    assert pe64.dtype == torch.float64 and torch.isfinite(pe32).all()
    expected = loop_table(3, 8, start=start)
    assert torch.allclose(pe64, expected, atol=1e-9)
    assert torch.allclose(pe32.double(), expected, atol=1e-6)  # angles in float64, then rounded once


def test_start_is_a_slice_of_the_longer_table_and_base_changes_frequencies():
    assert torch.allclose(sinusoidal_encoding(4, 6, start=10), sinusoidal_encoding(14, 6)[10:])
    assert torch.allclose(sinusoidal_encoding(5, 4, base=100.0).double(), loop_table(5, 4, base=100.0), atol=1e-6)


def test_frequencies_and_wavelengths():
    assert torch.allclose(frequencies(4), torch.tensor([1.0, 0.01], dtype=torch.float64))
    lam = wavelengths(512)
    assert lam.shape == (256,)
    assert lam[0].item() == pytest.approx(2 * math.pi)
    assert lam[-1].item() == pytest.approx(2 * math.pi * 10000 ** (510 / 512))
    assert (lam[1:] > lam[:-1]).all()


@pytest.mark.parametrize("call, error, fragment", [
    (lambda: sinusoidal_encoding(4, 5), ValueError, "d_model must be even"),
    (lambda: sinusoidal_encoding(0, 4), ValueError, "T must be a positive int"),
    (lambda: sinusoidal_encoding(-3, 4), ValueError, "T must be a positive int"),
    (lambda: sinusoidal_encoding(2.5, 4), TypeError, "T must be an int"),
    (lambda: sinusoidal_encoding(3, 0), ValueError, "d_model must be an int >= 2"),
    (lambda: sinusoidal_encoding(3, 4, base=1.0), ValueError, "base must be a finite number > 1"),
    (lambda: sinusoidal_encoding(3, 4, base="10000"), TypeError, "base must be a number"),
    (lambda: sinusoidal_encoding(3, 4, start=-1), ValueError, "start must be a non-negative int"),
    (lambda: sinusoidal_encoding(3, 4, dtype=torch.int64), TypeError, "floating-point"),
    (lambda: sinusoidal_encoding(True, 4), TypeError, "T must be an int"),
])
def test_sinusoidal_errors(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


# --------------------------------------------------------------------------- SinusoidalPositionalEncoding
def test_module_adds_the_table_to_a_batch_and_has_no_parameters():
    module = SinusoidalPositionalEncoding(8)
    x = torch.randn(2, 5, 8)
    out = module(x)
    assert out.shape == x.shape
    assert torch.allclose(out - x, loop_table(5, 8).float().expand(2, 5, 8), atol=1e-6)
    assert list(module.parameters()) == []
    assert "d_model=8" in repr(module)


def test_module_keeps_dtype_accepts_start_and_any_length():
    module = SinusoidalPositionalEncoding(4)
    x = torch.zeros(3, 4, dtype=torch.float64)
    assert module(x).dtype == torch.float64
    assert torch.allclose(module(x, start=7), loop_table(3, 4, start=7))
    long = module(torch.zeros(1, 5000, 4))
    assert long.shape == (1, 5000, 4) and torch.isfinite(long).all()


def test_module_dropout_is_applied_in_training_only():
    module = SinusoidalPositionalEncoding(4, dropout=0.5)
    x = torch.ones(1, 50, 4)
    module.eval()
    assert torch.allclose(module(x), x + sinusoidal_encoding(50, 4))
    module.train()
    torch.manual_seed(0)
    assert (module(x) == 0).any()


@pytest.mark.parametrize("call, error, fragment", [
    (lambda: SinusoidalPositionalEncoding(7), ValueError, "d_model must be even"),
    (lambda: SinusoidalPositionalEncoding(8)(torch.zeros(2, 5, 6)), ValueError, "expected d_model=8, got d_model=6"),
    (lambda: SinusoidalPositionalEncoding(8)(torch.zeros(2, 5, 8, dtype=torch.long)), TypeError, "float"),
    (lambda: SinusoidalPositionalEncoding(8)(torch.zeros(8)), ValueError, "expected 2\\+ axes"),
    (lambda: SinusoidalPositionalEncoding(8, dropout=1.0), ValueError, "dropout"),
])
def test_module_errors(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


# --------------------------------------------------------------------------- LearnedPositionalEmbedding
def test_learned_adds_its_table_rows_and_learns():
    torch.manual_seed(0)
    module = LearnedPositionalEmbedding(10, 3)
    x = torch.randn(2, 4, 3)
    assert torch.allclose(module(x), x + module.table.weight[:4])
    assert torch.allclose(module(x, start=6), x + module.table.weight[6:10])
    assert sum(p.numel() for p in module.parameters()) == 30
    module(x).sum().backward()
    grad = module.table.weight.grad
    assert grad[:4].abs().sum() > 0 and grad[4:].abs().sum() == 0  # only the rows used get gradient
    assert "max_len=10" in repr(module)


def test_learned_refuses_positions_beyond_max_len_clearly():
    module = LearnedPositionalEmbedding(50, 4)
    assert module.encoding(50).shape == (50, 4)  # exactly max_len is fine
    with pytest.raises(ValueError, match=r"positions 0..49 \(max_len=50\), but position 59 was asked for"):
        module(torch.zeros(1, 60, 4))
    with pytest.raises(ValueError, match="position 50 was asked for"):
        module.encoding(1, start=50)
    with pytest.raises(ValueError, match="T must be a positive int"):
        module.encoding(0)
    with pytest.raises(ValueError, match="expected d_model=4"):
        module(torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        LearnedPositionalEmbedding(0, 4)


# --------------------------------------------------------------------------- relative_rotation
@pytest.mark.parametrize("k", [0, 1, 3, -7, 25])
@pytest.mark.parametrize("d_model", [2, 6, 16])
def test_rotation_moves_every_row_k_positions(k, d_model):
    pe = loop_table(120, d_model)
    m = relative_rotation(k, d_model, dtype=torch.float64)
    for pos in (0, 10, 30, 60, 90):
        assert torch.allclose(pe[pos] @ m, loop_table(1, d_model, start=pos + k)[0] if pos + k >= 0
                              else torch.tensor([v for i in range(d_model // 2)
                                                 for v in (math.sin((pos + k) / 10000 ** (2 * i / d_model)),
                                                           math.cos((pos + k) / 10000 ** (2 * i / d_model)))],
                                                dtype=torch.float64), atol=1e-10)


def test_rotation_structure_and_group_properties():
    m3, m5, m8 = (relative_rotation(k, 8, dtype=torch.float64) for k in (3, 5, 8))
    assert torch.allclose(relative_rotation(0, 8), torch.eye(8))
    assert torch.allclose(m3 @ m5, m8)
    assert torch.allclose(relative_rotation(-3, 8, dtype=torch.float64), m3.T)
    assert torch.allclose(m3 @ m3.T, torch.eye(8, dtype=torch.float64))
    block_mask = torch.block_diag(*[torch.ones(2, 2)] * 4).bool()
    assert (m3[~block_mask] == 0).all()
    assert relative_rotation(1, 4).dtype == torch.float32
    assert torch.allclose(relative_rotation(1.5, 2), torch.tensor([[math.cos(1.5), -math.sin(1.5)],
                                                                     [math.sin(1.5), math.cos(1.5)]]))


@pytest.mark.parametrize("call, error, fragment", [
    (lambda: relative_rotation(1, 5), ValueError, "d_model must be even"),
    (lambda: relative_rotation("1", 4), TypeError, "k must be a number"),
    (lambda: relative_rotation(float("inf"), 4), ValueError, "k must be finite"),
    (lambda: relative_rotation(1, 4, dtype=torch.int32), TypeError, "floating-point"),
])
def test_rotation_errors(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


# --------------------------------------------------------------------------- apply_rope
def test_rope_matches_complex_multiplication_and_keeps_norms():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 8, generator=gen)  # (B, h, T, d)
    out = apply_rope(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.allclose(out, complex_rope(x, torch.arange(5)), atol=1e-6)
    pairs = lambda t: t.reshape(*t.shape[:-1], 4, 2).norm(dim=-1)  # noqa: E731
    assert torch.allclose(pairs(out), pairs(x), atol=1e-6)
    assert torch.equal(out[..., 0, :], x[..., 0, :])  # position 0: no rotation


def test_rope_scores_depend_only_on_the_offset():
    gen = torch.Generator().manual_seed(2)
    q, k = torch.randn(1, 16, generator=gen, dtype=torch.float64), torch.randn(1, 16, generator=gen, dtype=torch.float64)

    def score(m, n):
        return (apply_rope(q, torch.tensor([m])) @ apply_rope(k, torch.tensor([n])).T).item()

    reference = score(3, 8)
    for shift in (1, 17, 1000, 10 ** 5):
        assert score(3 + shift, 8 + shift) == pytest.approx(reference, abs=1e-9)
    assert score(3, 9) != pytest.approx(reference, abs=1e-3)


def test_rope_explicit_positions_float64_and_large_positions():
    x = torch.randn(4, 6, dtype=torch.float64)
    positions = torch.tensor([0, 5, 100, 10 ** 5])
    out = apply_rope(x, positions)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()
    assert torch.allclose(out, complex_rope(x, positions), atol=1e-10)
    assert torch.allclose(apply_rope(x, positions.double() + 0.0), out)
    one = torch.randn(1, 4)
    assert torch.equal(apply_rope(one), one)  # T = 1: position 0, no rotation
    per_batch = torch.tensor([[0, 1, 2, 3], [10, 11, 12, 13]])  # (B, T)
    xb = torch.randn(2, 4, 6)
    assert torch.allclose(apply_rope(xb, per_batch)[1], apply_rope(xb[1], per_batch[1]))


@pytest.mark.parametrize("call, error, fragment", [
    (lambda: apply_rope(torch.zeros(3, 5)), ValueError, "must be even"),
    (lambda: apply_rope(torch.zeros(4)), ValueError, "expected 2\\+ axes"),
    (lambda: apply_rope(torch.zeros(3, 4, dtype=torch.long)), TypeError, "float"),
    (lambda: apply_rope(torch.zeros(3, 4), torch.arange(4)), ValueError, "do not broadcast"),
    (lambda: apply_rope(torch.zeros(3, 4), [0, 1, 2]), TypeError, "expected None or a tensor"),
    (lambda: apply_rope(torch.zeros(3, 4), torch.ones(3, dtype=torch.bool)), TypeError, "int or float"),
    (lambda: apply_rope(torch.zeros(3, 4), torch.tensor([0.0, float("nan"), 1.0])), ValueError, "NaN or inf"),
    (lambda: apply_rope(torch.zeros(3, 4), torch.zeros(2, 3)), ValueError, "would enlarge"),
])
def test_rope_errors(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


# --------------------------------------------------------------------------- figures
def test_plots_draw_and_validate():
    pe = sinusoidal_encoding(20, 8)
    ax = plot_encoding(pe, highlight={3: "pos", 7: "pos+k"}, title="t")
    assert ax.get_title() == "t" and len(ax.patches) == 2
    ax = plot_dot_against_position(pe, 3, mark=7)
    assert ax.get_ylabel() == "PE[3] · PE[second]"
    with pytest.raises(ValueError, match="outside"):
        plot_encoding(pe, highlight={20: "x"})
    with pytest.raises(ValueError, match="outside"):
        plot_dot_against_position(pe, 25)


def test_explorer_figure_states_its_settings():
    fig = draw_position_explorer(16, 10, 5, T=40)
    title = fig._suptitle.get_text()
    assert "d_model = 16, pos = 10, k = 5" in title
    expected = (sinusoidal_encoding(40, 16)[10] @ sinusoidal_encoding(40, 16)[15]).item()
    assert f"{expected:.2f}" in title
    assert "outside" in draw_position_explorer(8, 30, 20, T=40)._suptitle.get_text()
    assert "pos = pos+k" in [t.get_text() for t in draw_position_explorer(8, 3, 0, T=10).axes[0].texts]
