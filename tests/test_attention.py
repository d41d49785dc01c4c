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
    with pytest.raises(TypeError, match=r"q: expected a float dtype \(such as torch.float32\), got torch.int64"):
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


# --- SingleHeadAttention (notebook 04) -------------------------------------------------------------------

from course_lib.attention import SingleHeadAttention  # noqa: E402


def _head(*args, seed=0, **kwargs):
    torch.manual_seed(seed)
    return SingleHeadAttention(*args, **kwargs)


@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_single_head_matches_projections_then_pytorch(batch):
    head = _head(6, 4, 3)
    x = torch.randn(*batch, 5, 6, generator=torch.Generator().manual_seed(1))
    out, w = head(x)
    assert out.shape == (*batch, 5, 3) and w.shape == (*batch, 5, 5)
    q, k, v = x @ head.W_Q, x @ head.W_K, x @ head.W_V  # the course's x @ W convention
    assert head.W_Q.shape == (6, 4) and head.W_V.shape == (6, 3)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-6)
    assert torch.allclose(w, torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1), atol=1e-6)
    assert all(torch.allclose(a, b) for a, b in zip(head.project(x), (q, k, v)))


def test_single_head_defaults_and_parameter_count():
    head = _head(8, 4)
    assert head.d_v == 4 and not head.share_qk and head.w_q.bias is None
    assert sum(p.numel() for p in head.parameters()) == 3 * 8 * 4
    assert sum(p.numel() for p in _head(8, 4, share_qk=True).parameters()) == 2 * 8 * 4
    assert sum(p.numel() for p in _head(8, 4, 2, bias=True).parameters()) == 8 * 4 * 2 + 8 * 2 + 4 + 4 + 2
    assert "share_qk=False" in repr(head)


def test_cross_attention_shapes_and_self_attention_is_cross_attention_with_itself():
    head = _head(6, 4, 2)
    g = torch.Generator().manual_seed(2)
    x, context = torch.randn(2, 3, 6, generator=g), torch.randn(2, 7, 6, generator=g)
    out, w = head(x, context)
    assert out.shape == (2, 3, 2) and w.shape == (2, 3, 7)
    q, k, v = x @ head.W_Q, context @ head.W_K, context @ head.W_V
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-6)
    assert torch.allclose(head(x)[0], head(x, x)[0])
    # a query sees only the context: changing x's other rows does not change its output
    x2 = x.clone()
    x2[:, 1:] += 1.0
    assert torch.allclose(head(x2, context)[0][:, 0], out[:, 0], atol=1e-6)


def test_shared_projection_makes_symmetric_scores_and_a_separate_one_does_not():
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(3))
    shared = _head(5, 4, share_qk=True)
    assert shared.w_k is None and torch.equal(shared.W_K, shared.W_Q)
    q, k, _ = shared.project(x)
    assert torch.equal(q, k)
    scores = attention_scores(q, k)
    assert torch.allclose(scores, scores.T)
    q, k, _ = _head(5, 4).project(x)
    scores = attention_scores(q, k)
    assert not torch.allclose(scores, scores.T)


def test_single_head_mask_and_gradients():
    head = _head(4, 4)
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(4))
    causal = torch.ones(3, 3, dtype=torch.bool).tril()
    out, w = head(x, mask=causal)
    q, k, v = head.project(x)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)
    assert (w[..., ~causal] == 0).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def test_single_head_bad_inputs_say_what_was_expected():
    head = _head(6, 4)
    with pytest.raises(ValueError, match="x: expected d_model=6, got d_model=5"):
        head(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="context: expected d_model=6, got d_model=2"):
        head(torch.zeros(3, 6), torch.zeros(4, 2))
    with pytest.raises(TypeError, match="x: expected a float dtype"):
        head(torch.zeros(3, 6, dtype=torch.long))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="d_k must be a positive int"):
            SingleHeadAttention(6, bad)
    with pytest.raises(ValueError, match="d_v must be a positive int"):
        SingleHeadAttention(6, 4, 0)


def test_plot_attention_new_options():
    w = torch.softmax(torch.randn(2, 3, generator=torch.Generator().manual_seed(5)), dim=-1)
    ax = plot_attention(w, ["the", "cat"], ["die", "Katze", "schläft"], colorbar=False,
                        xlabel="German (key)", ylabel="English (query)")
    assert ax.get_xlabel() == "German (key)" and ax.get_ylabel() == "English (query)"
    assert len(ax.figure.axes) == 1  # no colour bar
    ax = plot_attention(w, ["the", "cat"], ["die", "Katze", "schläft"])
    assert len(ax.figure.axes) == 2 and ax.get_xlabel() == "key (attended to)"
    plt.close("all")


def test_resolve_labels():
    from course_lib.attention import resolve_labels

    assert resolve_labels({"T_q": 2, "T_k": 2}, ["a", "b"], None) == ["a", "b"]  # square: keys = queries
    assert resolve_labels({"T_q": 2, "T_k": 3}, ["a", "b"], None) is None  # not square: no key labels
    assert resolve_labels({"T_q": 1, "T_k": 2}, None, ["x", "y"]) == ["x", "y"]
    with pytest.raises(ValueError, match="expected 2 labels for T_k, got 1"):
        resolve_labels({"T_q": 1, "T_k": 2}, None, ["x"])
