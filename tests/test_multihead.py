import math

import matplotlib
import pytest
import torch
from torch import nn

from course_lib.multihead import (LookbackModel, MultiHeadAttention, evaluate_lookback, head_focus, lookback_loss,
                                  make_lookback_batch, merge_heads, plot_lookback_attention, plot_split_merge_steps,
                                  plot_wrong_split, split_heads, train_lookback)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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


# --- notebook 07: pictures of the split, and the look-back task ------------------------------------------

def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_plot_split_merge_steps_labels_follow_the_real_reshapes():
    fig = plot_split_merge_steps(T=3, d_model=4, h=2)
    axes = fig.axes
    assert len(axes) == 6
    assert _texts(axes[0]) == ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3", "c0", "c1", "c2", "c3"]
    # after view + transpose, head 0 holds every token's first d_k features, head 1 the rest
    assert _texts(axes[2]) == ["a0", "a1", "b0", "b1", "c0", "c1", "a2", "a3", "b2", "b3", "c2", "c3"]
    assert _texts(axes[3])[0] == "a0′"
    assert _texts(axes[5]) == [t + "′" for t in _texts(axes[0])]  # merged back in the original order
    assert "(B, h, T, d_k) = (1, 2, 3, 2)" in axes[2].get_title()
    plt.close(fig)


def test_plot_wrong_split_shows_mixed_tokens():
    fig = plot_wrong_split(T=3, d_model=4, h=2, tokens=["x", "y", "z"])
    right, wrong = _texts(fig.axes[1]), _texts(fig.axes[2])
    assert right[:6] == ["x0", "x1", "y0", "y1", "z0", "z1"]
    assert wrong[:6] == ["x0", "x1", "x2", "x3", "y0", "y1"]  # head 0's "rows": token x twice, then y
    plt.close(fig)


@pytest.mark.parametrize("call, error, match", [
    (lambda: plot_split_merge_steps(T=3, d_model=5, h=2), ValueError, "h must divide d_model"),
    (lambda: plot_wrong_split(T=3, d_model=4, h=2, tokens=["a"]), ValueError, "expected 3 token names"),
    (lambda: plot_split_merge_steps(T=0), ValueError, "T must be a positive int"),
    (lambda: plot_split_merge_steps(T=27, d_model=2, h=1), ValueError, "at most 26 tokens"),
    (lambda: plot_wrong_split(h=2.0), TypeError, "h must be an int"),
])
def test_split_pictures_refuse_bad_sizes(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_make_lookback_batch_builds_what_it_says():
    batch = make_lookback_batch(200, n_pairs=4, n_letters=6, generator=torch.Generator().manual_seed(3))
    assert batch.letters.shape == batch.digits.shape == (200, 8) and len(batch) == 200 and batch.T == 8
    assert batch.previous.shape == batch.match.shape == batch.match_position.shape == (200, 4)
    assert batch.letters.dtype == torch.long and int(batch.letters.max()) < 6 and int(batch.digits.max()) < 10
    for b in range(200):
        letters, digits = batch.letters[b].tolist(), batch.digits[b].tolist()
        assert len(set(letters[:4])) == 4 and sorted(letters[:4]) == sorted(letters[4:])
        for k in range(4):
            t = 4 + k
            first = letters.index(letters[t])  # the first card with this letter
            assert batch.match_position[b, k] == first < 4
            assert batch.match[b, k] == digits[first]
            assert batch.previous[b, k] == digits[t - 1]
    assert batch.labels(0) == [f"{'abcdefgh'[a]}{d}" for a, d in zip(batch.letters[0].tolist(),
                                                                      batch.digits[0].tolist())]
    with pytest.raises(IndexError):
        batch.labels(200)
    again = make_lookback_batch(200, n_pairs=4, n_letters=6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.digits, batch.digits)  # same seed, same batch
    with pytest.raises(ValueError, match="n_pairs <= n_letters"):
        make_lookback_batch(4, n_pairs=5, n_letters=4)


def test_lookback_model_shapes_mask_and_bad_inputs():
    torch.manual_seed(0)
    model = LookbackModel(n_pairs=5, d_model=16, h=4)
    batch = make_lookback_batch(3, generator=torch.Generator().manual_seed(0))
    previous, match, weights = model.answer(batch)
    assert previous.shape == match.shape == (3, 5, 10) and weights.shape == (3, 4, 10, 10)
    assert (weights.triu(1) == 0).all()  # causal: no card reads a later one
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4, 10))
    uniform = torch.zeros(3, 5, 10)
    assert math.isclose(lookback_loss(uniform, uniform, batch).item(), 2 * math.log(10), rel_tol=1e-6)
    with pytest.raises(ValueError, match="letters: expected T=10"):
        model(batch.letters[:, :6], batch.digits[:, :6])
    with pytest.raises(ValueError, match="digits: ids must lie in 0..9"):
        model(batch.letters, batch.digits + 10)
    with pytest.raises(TypeError, match="int dtype"):
        model(batch.letters.float(), batch.digits)
    with pytest.raises(ValueError, match="divisible by h"):
        LookbackModel(d_model=10, h=4)


def test_head_focus_against_hand_made_weights():
    batch = make_lookback_batch(50, generator=torch.Generator().manual_seed(1))
    B, n, T = 50, batch.n_pairs, batch.T
    weights = torch.zeros(B, 3, T, T)
    for b in range(B):
        for k in range(n):
            weights[b, 0, n + k, n + k - 1] = 1.0  # head 0: the previous card
            weights[b, 1, n + k, int(batch.match_position[b, k])] = 1.0  # head 1: the same letter
            weights[b, 2, n + k, :] = 1.0 / T  # head 2: uniform
    focus = head_focus(weights, batch)
    assert focus.shape == (3, 2)
    assert torch.allclose(focus, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1 / T, 1 / T]]), atol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        head_focus(weights[:, :, :5], batch)


def test_two_heads_learn_the_look_back_task_and_one_head_cannot():
    test = make_lookback_batch(500, generator=torch.Generator().manual_seed(1))
    results = {}
    for h in (1, 2):
        torch.manual_seed(0)
        model = LookbackModel(h=h)
        losses = train_lookback(model, steps=300, batch_size=64, lr=1e-2, seed=0)
        assert len(losses) == 300 and losses[0] > 4.0  # about 2 log 10 at the start
        results[h] = evaluate_lookback(model, test)
        if h == 2:
            _, _, weights = model.answer(test)
            focus = head_focus(weights.detach(), test)
            # one head on the previous card, the other on the same letter
            assert sorted(focus.argmax(dim=1).tolist()) == [0, 1] and (focus.max(dim=1).values > 0.9).all()
    assert results[2]["both"] > 0.95 and results[2]["loss"] < 0.1
    assert results[1]["both"] < 0.6
    assert set(results[1]) == {"previous", "match", "both", "loss"}
    with pytest.raises(ValueError, match="lr must be positive"):
        train_lookback(LookbackModel(), steps=1, lr=0.0)


def test_train_lookback_restores_the_thread_count():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = LookbackModel(h=2)
        train_lookback(model, steps=2, batch_size=4)
        assert torch.get_num_threads() == 2 and not model.training
    finally:
        torch.set_num_threads(threads)


def test_plot_lookback_attention_marks_both_targets():
    batch = make_lookback_batch(2, generator=torch.Generator().manual_seed(2))
    weights = torch.softmax(torch.randn(batch.T, batch.T), dim=-1)
    fig, ax = plt.subplots()
    plot_lookback_attention(weights, batch, 1, ax=ax, title="t")
    assert len(ax.patches) == 2 * batch.n_pairs
    assert [t.get_text() for t in ax.get_yticklabels()] == batch.labels(1)[batch.n_pairs:]
    assert ax.get_title() == "t"
    with pytest.raises(ValueError, match="weights"):
        plot_lookback_attention(weights[:4, :4], batch, 0, ax=ax)
    plt.close(fig)
