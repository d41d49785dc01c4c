import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import attention_scores, attention_weights, plot_attention, scaled_dot_product_attention


def _qkv(*batch, t_q=3, t_k=4, d_k=5, d_v=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*batch, t_q, d_k, generator=g), torch.randn(*batch, t_k, d_k, generator=g),
            torch.randn(*batch, t_k, d_v, generator=g))


@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_matches_pytorch_without_mask(batch):
    q, k, v = _qkv(*batch)
    out, w = scaled_dot_product_attention(q, k, v)
    assert out.shape == (*batch, 3, 2) and w.shape == (*batch, 3, 4)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-6)
    assert torch.allclose(w.sum(-1), torch.ones(*batch, 3))


def test_by_hand_on_tiny_numbers():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[10.0], [20.0]])
    out, w = scaled_dot_product_attention(q, k, v)
    a = math.exp(1 / math.sqrt(2))
    expected = torch.tensor([[a / (a + 1), 1 / (a + 1)]])
    assert torch.allclose(w, expected)
    assert torch.allclose(out, expected @ v)


def test_scale_argument():
    q, k, v = _qkv(2)
    assert torch.allclose(attention_scores(q, k, scale=1.0), q @ k.transpose(-2, -1))
    out, _ = scaled_dot_product_attention(q, k, v, scale=0.3)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, scale=0.3), atol=1e-6)


def test_bool_and_float_masks_match_pytorch():
    q, k, v = _qkv(2)
    mask = torch.tensor([[True, True, False, False], [True, False, True, False], [True, True, True, True]])
    out, w = scaled_dot_product_attention(q, k, v, mask=mask)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6)
    assert (w[..., ~mask] == 0).all()
    additive = torch.zeros(3, 4).masked_fill(~mask, float("-inf"))
    out_add, w_add = scaled_dot_product_attention(q, k, v, mask=additive)
    assert torch.allclose(out_add, out, atol=1e-6) and torch.allclose(w_add, w, atol=1e-6)


def test_causal_mask_matches_is_causal():
    q, k, v = _qkv(2, t_q=4, t_k=4)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    out, _ = scaled_dot_product_attention(q, k, v, mask=causal)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)


def test_fully_masked_row_gives_zeros_not_nan():
    q, k, v = _qkv(1)
    mask = torch.tensor([[True, True, True, True], [False, False, False, False], [True, False, False, False]])
    out, w = scaled_dot_product_attention(q, k, v, mask=mask)
    assert not torch.isnan(out).any() and not torch.isnan(w).any()
    assert (w[0, 1] == 0).all() and (out[0, 1] == 0).all()
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6)


def test_gradients_flow_and_stay_finite_with_masks():
    q, k, v = (t.requires_grad_() for t in _qkv(1))
    mask = torch.tensor([[True, False, False, False], [False, False, False, False], [True, True, True, True]])
    out, _ = scaled_dot_product_attention(q, k, v, mask=mask)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_bad_inputs_say_what_was_expected():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"k: expected d_k=5, got d_k=6"):
        attention_scores(q, torch.zeros(4, 6))
    with pytest.raises(ValueError, match=r"v: expected T_k=4, got T_k=3"):
        scaled_dot_product_attention(q, k, torch.zeros(3, 2))
    with pytest.raises(TypeError, match="q: expected a float dtype, got torch.int64"):
        attention_scores(torch.zeros(3, 5, dtype=torch.long), k)
    with pytest.raises(TypeError, match="mask: expected dtype bool"):
        attention_weights(q, k, mask=torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask of shape \(4, 3\) does not broadcast"):
        attention_weights(q, k, mask=torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="would enlarge"):
        attention_weights(q, k, mask=torch.ones(2, 3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask: expected a bool or float tensor"):
        attention_weights(q, k, mask=[[True] * 4] * 3)
    with pytest.raises(ValueError, match="batch axes"):
        scaled_dot_product_attention(*_qkv(2)[:2], torch.zeros(3, 4, 2))


def test_plot_attention_labels_and_annotations():
    w = torch.softmax(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    ax = plot_attention(w, ["I", "eat", "cat"], title="self")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["I", "eat", "cat"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["I", "eat", "cat"]
    assert len(ax.texts) == 9 and ax.get_title() == "self"
    ax = plot_attention(torch.full((20, 20), 0.05))
    assert len(ax.texts) == 0  # too big to annotate by default
    with pytest.raises(ValueError, match="expected 3 labels for T_q, got 2"):
        plot_attention(w, ["a", "b"], ["x", "y", "z"])
    plt.close("all")
