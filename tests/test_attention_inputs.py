"""Attention refuses what would otherwise come back silently wrong or as a raw torch error (issue 27)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import (SingleHeadAttention, attention_scores, attention_weights,
                                  scaled_dot_product_attention)
from course_lib.masking import masked_softmax
from course_lib.multihead import MultiHeadAttention


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_float16_survives_scores_whose_unscaled_product_overflows():
    # q . k = 64 * 40 * 40 = 102400 > 65504, the largest float16; scaled by 1/8 it is 12800
    q = torch.full((1, 2, 64), 40.0)
    k = q.clone()
    k[:, 1] = 39.0
    v = torch.randn(1, 2, 3, generator=_gen())
    out16, w16 = scaled_dot_product_attention(q.half(), k.half(), v.half())
    out32, w32 = scaled_dot_product_attention(q, k, v)
    assert torch.isfinite(w16).all() and torch.isfinite(out16).all(), "float16 attention overflowed to inf/NaN"
    assert torch.allclose(w16.float(), w32, atol=1e-3)
    assert torch.allclose(out16.float(), out32, atol=1e-2)
    assert torch.isfinite(attention_scores(q.half(), k.half())).all()


def test_float16_matches_pytorch_sdpa_in_float32():
    q, k, v = (torch.randn(2, 5, 16, generator=_gen(i)) * 30 for i in range(3))
    out16, _ = scaled_dot_product_attention(q.half(), k.half(), v.half())
    assert torch.allclose(out16.float(), F.scaled_dot_product_attention(q, k, v), atol=0.5)
    assert torch.isfinite(out16).all()


@pytest.mark.parametrize("fn", ["attention_weights", "scaled_dot_product_attention", "masked_softmax"])
def test_padding_mask_without_its_query_axis_is_refused_when_batch_equals_queries(fn):
    B = T_q = 3
    q, k, v = torch.randn(B, T_q, 4), torch.randn(B, 5, 4), torch.randn(B, 5, 2)
    padding = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)  # (B, T_k)
    calls = {"attention_weights": lambda m: attention_weights(q, k, mask=m),
             "scaled_dot_product_attention": lambda m: scaled_dot_product_attention(q, k, v, mask=m),
             "masked_softmax": lambda m: masked_softmax(torch.randn(B, T_q, 5), m)}
    with pytest.raises(ValueError, match=r"mask of shape \(3, 5\) is ambiguous.*mask\[:, None\] of shape \(3, 1, 5\)"):
        calls[fn](padding)
    calls[fn](padding[:, None, :])  # the shape it asks for works
    calls[fn](padding[None])  # and so does a mask the batch shares


def test_the_right_padding_shape_gives_each_sentence_its_own_padding():
    q, k = torch.randn(3, 3, 4, generator=_gen(1)), torch.randn(3, 5, 4, generator=_gen(2))
    lengths = torch.tensor([5, 3, 1])
    padding = torch.arange(5) < lengths[:, None]  # (B, T_k)
    w = attention_weights(q, k, mask=padding[:, None, :])
    for b, n in enumerate(lengths.tolist()):
        assert (w[b, :, n:] == 0).all() and torch.allclose(w[b, :, :n].sum(-1), torch.ones(3))


def test_a_batch_mask_lined_up_with_the_head_axis_is_refused():
    q, k = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 5, 4)  # B = h = 2
    with pytest.raises(ValueError, match=r"mask of shape \(2, 1, 5\) is ambiguous.*batch axis \(size 2\)"):
        attention_weights(q, k, mask=torch.ones(2, 1, 5, dtype=torch.bool))
    attention_weights(q, k, mask=torch.ones(2, 1, 1, 5, dtype=torch.bool))


def test_unambiguous_2d_masks_still_broadcast():
    q, k = torch.randn(2, 4, 8), torch.randn(2, 4, 8)  # B = 2, T_q = 4: a (T_q, T_k) mask is clear
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    w = attention_weights(q, k, mask=causal)
    assert (w[:, 0, 1:] == 0).all()
    attention_weights(q[0], k[0], mask=causal)  # no batch axis at all


def test_numpy_input_names_the_argument_and_the_conversion():
    q = np.zeros((2, 3, 4), dtype=np.float32)
    k = torch.zeros(2, 3, 4)
    with pytest.raises(TypeError, match=r"q: expected a torch.Tensor, got a NumPy array of shape \(2, 3, 4\).*"
                                        r"torch.from_numpy\(q\)"):
        scaled_dot_product_attention(q, k, k)
    with pytest.raises(TypeError, match=r"v: expected a torch.Tensor, got a NumPy array"):
        scaled_dot_product_attention(k, k, q)
    with pytest.raises(TypeError, match=r"k: expected a torch.Tensor"):
        attention_weights(k, q)
    with pytest.raises(TypeError, match="q: expected a float torch.Tensor, got list"):
        attention_scores([[1.0]], k)


def test_mixed_float_dtypes_are_named():
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    with pytest.raises(TypeError, match=r"q has dtype torch.float16 but k has torch.float32.*k.to\(q.dtype\)"):
        scaled_dot_product_attention(q.half(), k, v)
    with pytest.raises(TypeError, match=r"q has dtype torch.float32 but v has torch.float64"):
        scaled_dot_product_attention(q, k, v.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts mixed inputs itself: allowed
        out, _ = scaled_dot_product_attention(q.bfloat16(), k, v)
    assert torch.isfinite(out).all()


def test_inputs_on_different_devices_are_named():
    q = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"q is on cpu but k is on meta"):
        attention_scores(q, torch.empty(2, 3, 4, device="meta"))
    with pytest.raises(ValueError, match=r"mask is on meta but q and k are on cpu"):
        attention_weights(q, q, mask=torch.empty(3, 3, dtype=torch.bool, device="meta"))


def test_check_attention_inputs_accepts_good_input():
    from course_lib.attention import check_attention_inputs

    x = torch.zeros(2, 3)
    assert check_attention_inputs(q=x, k=x, v=x) is None
    with pytest.raises(TypeError, match="mask: expected a float dtype"):
        check_attention_inputs(mask=torch.zeros(2, dtype=torch.bool))


def test_multihead_attention_names_wrong_input_dtypes():
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(TypeError, match=r"query: expected a float dtype.*got torch.int64.*nn.Embedding"):
        mha(torch.randint(0, 5, (2, 3, 8)))
    with pytest.raises(TypeError, match=r"query: expected torch.float32, the dtype of MultiHeadAttention's weights, "
                                        r"got torch.float16"):
        mha(torch.randn(2, 3, 8).half())
    with pytest.raises(TypeError, match=r"query has dtype torch.float32 but key has torch.float64"):
        mha(torch.randn(2, 3, 8), torch.randn(2, 3, 8).double())
    with pytest.raises(TypeError, match=r"value: expected a torch.Tensor, got a NumPy array"):
        mha(torch.randn(2, 3, 8), torch.randn(2, 3, 8), np.zeros((2, 3, 8), dtype=np.float32))
    half = MultiHeadAttention(8, 2).half()
    out, _ = half(torch.randn(2, 3, 8).half())  # a float16 module takes float16 input
    assert out.dtype == torch.float16


def test_multihead_attention_refuses_an_ambiguous_padding_mask():
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(3, 3, 8)  # B = T = 3
    with pytest.raises(ValueError, match=r"mask of shape \(3, 3\) is ambiguous"):
        mha(x, mask=torch.ones(3, 3, dtype=torch.bool))
    mha(x, mask=torch.ones(3, 1, 3, dtype=torch.bool))


def test_single_head_attention_names_wrong_input():
    head = SingleHeadAttention(6, 4)
    with pytest.raises(TypeError, match=r"x: expected torch.float32, the dtype of SingleHeadAttention's weights"):
        head(torch.randn(3, 6).double())
    with pytest.raises(TypeError, match=r"context: expected a torch.Tensor, got a NumPy array"):
        head(torch.randn(3, 6), np.zeros((4, 6)))
