import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from course_lib.attention import scaled_dot_product_attention  # noqa: E402
from course_lib.masking import (causal_mask, combine_masks, lengths_to_mask, masked_softmax,  # noqa: E402
                                pad_sequences, padding_mask, plot_mask, to_additive, to_bool)

INF = float("inf")


# --- pad_sequences -------------------------------------------------------------------------------------

def test_pad_sequences_right_and_left():
    seqs = [[5, 6, 7], [8], []]
    assert pad_sequences(seqs).tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert pad_sequences(seqs, pad_id=1, side="left").tolist() == [[5, 6, 7], [1, 1, 8], [1, 1, 1]]
    assert pad_sequences(seqs, length=5).shape == (3, 5)
    assert pad_sequences([torch.tensor([3, 4])]).dtype == torch.long


@pytest.mark.parametrize("call, error, fragment", [
    (lambda: pad_sequences([[1, 2, 3]], length=2), ValueError, "sequences[0] has 3 tokens, more than length = 2"),
    (lambda: pad_sequences([[1]], side="middle"), ValueError, "'right' or 'left'"),
    (lambda: pad_sequences([]), TypeError, "non-empty list"),
    (lambda: pad_sequences([[1.5, 2.0]]), TypeError, "int token ids, got torch.float32"),
    (lambda: pad_sequences([[True]]), TypeError, "int token ids, got torch.bool"),
    (lambda: pad_sequences([[[1, 2]]]), TypeError, "flat list"),
    (lambda: pad_sequences([[1]], length=-1), ValueError, "non-negative"),
])
def test_pad_sequences_errors(call, error, fragment):
    with pytest.raises(error, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        call()


# --- padding_mask / lengths_to_mask ----------------------------------------------------------------------

def test_padding_mask_marks_real_tokens():
    ids = torch.tensor([[4, 5, 0, 0], [7, 0, 0, 0], [0, 0, 0, 0]])
    expected = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(padding_mask(ids), expected)
    assert torch.equal(padding_mask(ids + 1, pad_id=1), expected)
    assert padding_mask(torch.tensor([3])).tolist() == [True]  # T = 1
    assert padding_mask(torch.zeros(2, 3, 4, dtype=torch.long)).shape == (2, 3, 4)  # leading axes allowed


def test_padding_mask_errors():
    with pytest.raises(TypeError, match="expected an int dtype, got torch.float32"):
        padding_mask(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="pad_id must be an int"):
        padding_mask(torch.zeros(2, 3, dtype=torch.long), pad_id=0.5)
    with pytest.raises(ValueError, match="expected 1\\+ axes"):
        padding_mask(torch.tensor(3))


def test_lengths_to_mask_agrees_with_padding_mask_and_handles_edges():
    lengths = torch.tensor([3, 1, 0])
    ids = pad_sequences([[9, 9, 9], [9], []], length=4)
    assert torch.equal(lengths_to_mask(lengths, 4), padding_mask(ids))
    assert lengths_to_mask([1, 0]).tolist() == [[True], [False]]  # T defaults to max
    assert lengths_to_mask([0, 0]).shape == (2, 0)  # every sentence empty
    assert lengths_to_mask([1], T=1).tolist() == [[True]]
    assert lengths_to_mask(torch.tensor([2]), T=torch.tensor(3)).shape == (1, 3)


@pytest.mark.parametrize("lengths, T, error, fragment", [
    ([2, 6, 3], 5, ValueError, r"lengths\[1\] = 6 is longer than T = 5"),
    ([2, -1], 5, ValueError, r"non-negative, got lengths\[1\] = -1"),
    (torch.tensor([1.0, 2.0]), 3, TypeError, "expected an int dtype"),
    (torch.tensor([[1, 2]]), 3, ValueError, "expected 1 axes"),
    ([1, 2], -3, ValueError, "T must be a non-negative int"),
    ([1, 2], 2.5, TypeError, "T must be an int"),
    ("12", 3, TypeError, "a list of ints"),
])
def test_lengths_to_mask_errors(lengths, T, error, fragment):
    with pytest.raises(error, match=fragment):
        lengths_to_mask(lengths, T)


# --- causal_mask -----------------------------------------------------------------------------------------

def test_causal_mask_against_an_independent_definition():
    for T in (1, 2, 5):
        i, j = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
        mask = causal_mask(T)
        assert mask.dtype == torch.bool and mask.shape == (T, T)
        assert torch.equal(mask, j <= i)  # key j allowed for query i only when j <= i
    assert causal_mask(1).tolist() == [[True]]
    assert causal_mask(3, device="cpu").device.type == "cpu"


@pytest.mark.parametrize("T, error", [(0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)])
def test_causal_mask_errors(T, error):
    with pytest.raises(error, match="T must be"):
        causal_mask(T)


def test_causal_mask_matches_is_causal_with_heads():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g) for _ in range(3))  # (B, h, T, d_k)
    out, _ = scaled_dot_product_attention(q, k, v, mask=causal_mask(5))
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)


# --- combine_masks, to_additive, to_bool -------------------------------------------------------------------

def test_combine_bool_masks_is_logical_and_with_broadcasting():
    pad = lengths_to_mask([3, 2], 3)[:, None, :]  # (B, 1, T)
    combined = combine_masks(causal_mask(3), pad)
    assert combined.shape == (2, 3, 3)
    expected = torch.tensor([[[1, 0, 0], [1, 1, 0], [1, 1, 1]],
                             [[1, 0, 0], [1, 1, 0], [1, 1, 0]]], dtype=torch.bool)
    assert torch.equal(combined, expected)
    assert torch.equal(combine_masks(None, causal_mask(3), None), causal_mask(3))
    heads = combine_masks(causal_mask(3), lengths_to_mask([3, 2], 3)[:, None, None, :])
    assert heads.shape == (2, 1, 3, 3) and torch.equal(heads[:, 0], expected)


def test_combine_additive_masks_is_a_sum_and_agrees_with_bool():
    a, b = causal_mask(4), lengths_to_mask([4, 2], 4)[:, None, :]
    added = combine_masks(to_additive(a), to_additive(b))
    assert torch.equal(added, to_additive(a & b))
    assert torch.equal(to_bool(added), a & b)


def test_combine_masks_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"masks\[0\] of shape \(3, 3\) and masks\[1\] of shape \(2, 1, 4\)"):
        combine_masks(causal_mask(3), torch.ones(2, 1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"masks\[0..1\] combined of shape \(3, 3\) and masks\[2\]"):
        combine_masks(causal_mask(3), causal_mask(3), torch.ones(2, dtype=torch.bool))
    with pytest.raises(TypeError, match="cannot combine bool and additive"):
        combine_masks(causal_mask(3), to_additive(causal_mask(3)))
    with pytest.raises(TypeError, match="torch.int64"):
        combine_masks(torch.ones(3, dtype=torch.long))
    with pytest.raises(TypeError, match="expected a tensor"):
        combine_masks([True, False])
    with pytest.raises(ValueError, match="at least one mask"):
        combine_masks(None)


def test_to_additive_and_to_bool():
    mask = torch.tensor([[True, False], [False, False]])
    additive = to_additive(mask)
    assert additive.dtype == torch.float32 and additive.tolist() == [[0.0, -INF], [-INF, -INF]]
    assert to_additive(mask, torch.float16).dtype == torch.float16
    assert torch.equal(to_bool(additive), mask)
    assert to_bool(torch.tensor([0.0, -1e9, 0.5])).tolist() == [True, True, True]  # only -inf blocks
    with pytest.raises(TypeError, match="expected dtype torch.bool.*to_bool"):
        to_additive(torch.zeros(2))
    with pytest.raises(TypeError, match=r"mask.bool\(\)"):
        to_additive(torch.ones(2, dtype=torch.long))
    with pytest.raises(TypeError, match="floating torch dtype"):
        to_additive(mask, torch.long)
    with pytest.raises(TypeError, match="float additive mask"):
        to_bool(mask)
    with pytest.raises(ValueError, match="NaN"):
        to_bool(torch.tensor([0.0, float("nan")]))


# --- masked_softmax --------------------------------------------------------------------------------------

def _by_hand(scores, mask):
    """Independent reference: exp of the allowed scores over their sum, row by row, in float64."""
    s = scores.double()
    m = mask.expand(scores.shape)
    out = torch.zeros_like(s)
    for idx in itertools.product(*(range(n) for n in s.shape[:-1])):
        row, keep = s[idx], m[idx]
        if keep.any():
            e = torch.exp(row[keep] - row[keep].max())
            out[idx][keep] = e / e.sum()
    return out.to(scores.dtype)


@pytest.mark.parametrize("mask_shape", ["(T_q, T_k)", "(B, 1, T_k)", "(B, T_q, T_k)", "(B, 1, 1, T_k) heads"])
def test_masked_softmax_against_a_row_by_row_computation(mask_shape):
    g = torch.Generator().manual_seed(1)
    if mask_shape.endswith("heads"):
        scores = 3 * torch.randn(2, 3, 4, 5, generator=g)  # (B, h, T_q, T_k)
        mask = lengths_to_mask([5, 2], 5)[:, None, None, :]
    else:
        scores = 3 * torch.randn(2, 4, 5, generator=g)
        mask = {"(T_q, T_k)": torch.rand(4, 5, generator=g) > 0.4,
                "(B, 1, T_k)": lengths_to_mask([5, 3], 5)[:, None, :],
                "(B, T_q, T_k)": torch.rand(2, 4, 5, generator=g) > 0.5}[mask_shape]
    w = masked_softmax(scores, mask)
    assert w.shape == scores.shape
    assert torch.allclose(w, _by_hand(scores, mask), atol=1e-6)
    assert (w.masked_select(~mask.expand(scores.shape)) == 0).all()  # exactly zero, not tiny


def test_masked_softmax_fully_masked_rows_are_zero_with_finite_gradients():
    scores = torch.randn(2, 3, 3, requires_grad=True)
    mask = lengths_to_mask([2, 0], 3)[:, None, :]  # sentence 1 has length 0
    w = masked_softmax(scores, mask)
    assert torch.equal(w[1], torch.zeros(3, 3))
    assert torch.allclose(w[0].sum(-1), torch.ones(3))
    (w * torch.randn(2, 3, 3)).sum().backward()
    assert torch.isfinite(scores.grad).all()
    # all padding, T = 1
    assert masked_softmax(torch.randn(1, 1, 1), torch.tensor([[[False]]])).tolist() == [[[0.0]]]
    assert masked_softmax(torch.randn(1, 1, 1), torch.tensor([[[True]]])).tolist() == [[[1.0]]]


def test_masked_softmax_without_mask_and_with_inf_scores_matches_torch():
    x = torch.tensor([[[1000.0, 1001.0, -INF], [0.0, 0.0, 0.0]]])
    assert torch.allclose(masked_softmax(x), torch.softmax(x, -1))
    assert torch.equal(masked_softmax(torch.full((1, 2, 2), -INF)), torch.zeros(1, 2, 2))


def test_masked_softmax_agrees_with_attention_and_sdpa():
    g = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    mask = combine_masks(causal_mask(4), lengths_to_mask([4, 3], 4)[:, None, :])
    w = masked_softmax(q @ k.transpose(-2, -1) / 3 ** 0.5, mask)
    _, w_ref = scaled_dot_product_attention(q, k, v, mask=mask)
    assert torch.allclose(w, w_ref, atol=1e-6)
    assert torch.allclose(w @ v, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6)


def test_masked_softmax_errors():
    scores = torch.zeros(2, 3, 4)
    with pytest.raises(TypeError, match="expected dtype torch.bool.*got torch.float32"):
        masked_softmax(scores, torch.ones(3, 4))
    with pytest.raises(TypeError, match="got torch.int64"):
        masked_softmax(scores, torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 3\) and scores \(..., T_q, T_k\) of shape \(2, 3, 4\)"):
        masked_softmax(scores, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"would enlarge scores of shape \(2, 3, 4\) to \(5, 2, 3, 4\)"):
        masked_softmax(scores, torch.ones(5, 1, 1, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="float"):
        masked_softmax(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="expected 2\\+ axes"):
        masked_softmax(torch.zeros(3))


# --- plot_mask -------------------------------------------------------------------------------------------

def test_plot_mask_draws_a_grid_with_labels():
    ax = plot_mask(causal_mask(3), ["a", "b", "c"], title="causal")
    assert ax.get_title() == "causal"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert sum(t.get_text() == "✓" for t in ax.texts) == 6
    plt.close(ax.figure)
    ax = plot_mask(torch.tensor([True, False]), key_labels=["x", "<pad>"], legend=False)  # (T_k,) row
    assert ax.get_legend() is None and len(ax.texts) == 2
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="expected 3 labels for T_k"):
        plot_mask(causal_mask(3), key_labels=["a"])
    with pytest.raises(TypeError, match="torch.bool"):
        plot_mask(torch.ones(2, 2))
