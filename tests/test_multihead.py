import pytest
import torch
from torch import nn

from course_lib.multihead import MultiHeadAttention, merge_heads, split_heads


def _pair(d_model=8, h=2, seed=0):
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(d_model, h, batch_first=True).eval()
    ours = MultiHeadAttention(d_model, h).load_from_torch(theirs).eval()
    return ours, theirs


def test_split_and_merge_are_inverse_and_slice_columns():
    x = torch.arange(2 * 3 * 8.0).reshape(2, 3, 8)
    heads = split_heads(x, 4)
    assert heads.shape == (2, 4, 3, 2)
    assert torch.equal(heads[1, 2], x[1, :, 4:6])  # head 2 holds columns 4..5
    assert torch.equal(merge_heads(heads), x)
    with pytest.raises(ValueError, match="divides d_model=8, got h=3"):
        split_heads(x, 3)
    with pytest.raises(ValueError, match="expected 4 axes"):
        merge_heads(x)


def test_self_attention_matches_pytorch_with_weights_per_head():
    ours, theirs = _pair()
    x = torch.randn(2, 5, 8)
    out, w = ours(x)
    ref, ref_w = theirs(x, x, x, average_attn_weights=False)
    assert torch.allclose(out, ref, atol=1e-6) and torch.allclose(w, ref_w, atol=1e-6)
    assert w.shape == (2, 2, 5, 5)


def test_masks_match_pytorch_conventions():
    ours, theirs = _pair(seed=1)
    x = torch.randn(2, 4, 8)
    lengths = torch.tensor([4, 2])
    ignore = torch.arange(4)[None, :] >= lengths[:, None]  # PyTorch: True = ignore this key
    causal_blocked = torch.ones(4, 4, dtype=torch.bool).triu(1)  # PyTorch: True = not allowed
    ref, _ = theirs(x, x, x, key_padding_mask=ignore, attn_mask=causal_blocked)
    ours_mask = (~ignore)[:, None, None, :] & ~causal_blocked  # ours: True = may attend
    out, w = ours(x, mask=ours_mask)
    assert torch.allclose(out, ref, atol=1e-6)
    assert (w[1, :, :, 2:] == 0).all()
    out3, _ = ours(x, mask=(~ignore)[:, None, :])  # a (B, 1, T_k) mask gets its head axis added
    ref3, _ = theirs(x, x, x, key_padding_mask=ignore)
    assert torch.allclose(out3, ref3, atol=1e-6)


def test_cross_attention_matches_pytorch():
    ours, theirs = _pair(seed=2)
    q, memory = torch.randn(2, 3, 8), torch.randn(2, 6, 8)
    out, w = ours(q, memory)
    ref, _ = theirs(q, memory, memory)
    assert out.shape == (2, 3, 8) and w.shape == (2, 2, 3, 6)
    assert torch.allclose(out, ref, atol=1e-6)


def test_same_parameter_count_as_one_full_width_head():
    assert sum(p.numel() for p in MultiHeadAttention(16, 4).parameters()) == 4 * (16 * 16 + 16)
    assert sum(p.numel() for p in MultiHeadAttention(16, 1).parameters()) == 4 * (16 * 16 + 16)


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible by h"):
        MultiHeadAttention(10, 3)
    ours, theirs = _pair()
    with pytest.raises(ValueError, match="query: expected d_model=8, got d_model=6"):
        ours(torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="key: expected B=2, got B=3"):
        ours(torch.randn(2, 3, 8), torch.randn(3, 3, 8))
    with pytest.raises(ValueError, match=r"expected nn.MultiheadAttention\(8, 2\), got \(8, 4\)"):
        ours.load_from_torch(nn.MultiheadAttention(8, 4))
