import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from course_lib.similarity import (AdditiveScore, additive_score, bilinear_score, cosine_score, dot_score,
                                   flops_per_pair, gaussian_kernel_score, nadaraya_watson, neg_sq_euclidean_score,
                                   plot_kernel_regression, plot_key_length, plot_query_scores,
                                   plot_score_landscapes, scaled_dot_score)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


Q, K = rand(3, 4, seed=1), rand(5, 4, seed=2)  # (m, d), (n, d)
SIMPLE = [dot_score, scaled_dot_score, cosine_score, neg_sq_euclidean_score,
          lambda q, k: gaussian_kernel_score(q, k, 0.7)]


# --------------------------------------------------------------------------- shapes and validation
@pytest.mark.parametrize("score", SIMPLE)
def test_shapes_and_single_query_is_a_row(score):
    many = score(Q, K)
    assert many.shape == (3, 5)
    one = score(Q[1], K)
    assert one.shape == (5,)
    assert torch.allclose(one, many[1])


@pytest.mark.parametrize("score", SIMPLE)
def test_mismatched_width_raises(score):
    with pytest.raises(ValueError, match="expected d=4, got d=3"):
        score(rand(2, 3), K)
    with pytest.raises(ValueError, match="expected d=4, got d=5"):
        score(rand(5), K)


@pytest.mark.parametrize("score", SIMPLE)
def test_bad_ranks_types_and_dtypes_raise(score):
    with pytest.raises(ValueError, match=r"expected shape \(d,\) for one query or \(m, d\)"):
        score(rand(2, 3, 4), K)
    with pytest.raises(ValueError, match="keys: expected 2 axes"):
        score(Q, rand(4))
    with pytest.raises(TypeError, match="queries: expected a float dtype"):
        score(torch.ones(3, 4, dtype=torch.int64), K)
    with pytest.raises(TypeError, match="torch tensor"):
        score(Q, K.numpy())
    with pytest.raises(TypeError, match="same dtype"):
        score(Q.double(), K)


def test_empty_keys_give_empty_scores():
    assert dot_score(Q, torch.empty(0, 4)).shape == (3, 0)
    assert neg_sq_euclidean_score(Q[0], torch.empty(0, 4)).shape == (0,)


# --------------------------------------------------------------------------- each score
def test_dot_score_matches_a_loop():
    expected = torch.tensor([[sum(float(a) * float(b) for a, b in zip(q, k)) for k in K] for q in Q])
    assert torch.allclose(dot_score(Q, K), expected, atol=1e-5)


def test_scaled_dot_divides_by_sqrt_d():
    assert torch.allclose(scaled_dot_score(Q, K), (Q @ K.T) / 2.0)  # d = 4


def test_cosine_matches_torch():
    builtin = F.cosine_similarity(Q[:, None, :], K[None, :, :], dim=-1)
    assert torch.allclose(cosine_score(Q, K), builtin, atol=1e-6)


def test_cosine_ignores_length_and_is_bounded():
    scores = cosine_score(Q, K)
    assert scores.abs().max() <= 1 + 1e-6
    for factor in (2.0, 10.0, 1e-3):
        assert torch.allclose(cosine_score(Q, factor * K), scores, atol=1e-6)


def test_cosine_of_zero_vectors_is_zero_not_nan():
    zero = torch.zeros(4)
    assert torch.equal(cosine_score(zero, K), torch.zeros(5))
    assert torch.equal(cosine_score(Q, torch.zeros(2, 4)), torch.zeros(3, 2))


def test_cosine_eps_follows_torch_below_eps():
    tiny = torch.tensor([[1e-10, 0.0]])
    key = torch.tensor([[1.0, 0.0]])
    # shorter than eps: divided by eps, so it scores |x| / eps, as F.cosine_similarity does
    assert torch.allclose(cosine_score(tiny, key), torch.tensor([[1e-2]]))
    assert torch.allclose(cosine_score(tiny, key), F.cosine_similarity(tiny, key)[:, None])
    with pytest.raises(ValueError, match="eps must be a positive number"):
        cosine_score(tiny, key, eps=0)


def test_cosine_of_huge_vectors_does_not_overflow():
    x = torch.tensor([[3e30, 4e30]])
    keys = torch.tensor([[6e30, 8e30], [-4e30, 3e30]])
    assert torch.allclose(cosine_score(x, keys), torch.tensor([[1.0, 0.0]]), atol=1e-6)


def test_cosine_known_values():
    q = torch.tensor([1.0, 1.0])
    keys = torch.tensor([[2.0, 0.0], [-3.0, -3.0], [1.0, -1.0]])
    assert torch.allclose(cosine_score(q, keys), torch.tensor([1 / math.sqrt(2), -1.0, 0.0]), atol=1e-6)


def test_neg_sq_euclidean_matches_cdist_and_is_exactly_zero_on_the_query():
    assert torch.allclose(neg_sq_euclidean_score(Q, K), -torch.cdist(Q, K) ** 2, atol=1e-5)
    scores = neg_sq_euclidean_score(Q, Q)
    assert torch.equal(torch.diagonal(scores), torch.zeros(3))
    assert (scores <= 0).all()


def test_neg_sq_euclidean_extreme_values_stay_finite_or_are_minus_inf():
    far = torch.tensor([[1e20, 0.0]])
    score = neg_sq_euclidean_score(torch.zeros(2), far)
    assert score.item() == float("-inf")  # (1e20)² overflows float32: -inf, not NaN
    assert not torch.isnan(neg_sq_euclidean_score(far, far)).any()


def test_gaussian_kernel_values_and_bandwidth():
    expected = torch.exp(-torch.cdist(Q, K) ** 2 / (2 * 0.7 ** 2))
    scores = gaussian_kernel_score(Q, K, 0.7)
    assert torch.allclose(scores, expected, atol=1e-6)
    assert ((scores > 0) | (expected < 1e-30)).all() and (scores <= 1).all()
    assert torch.allclose(gaussian_kernel_score(Q, Q, 0.7).diagonal(), torch.ones(3))
    one = torch.tensor([[0.0]])
    assert math.isclose(gaussian_kernel_score(one, torch.tensor([[2.0]]), 2.0).item(), math.exp(-0.5), rel_tol=1e-6)
    assert torch.allclose(gaussian_kernel_score(Q, K, torch.tensor(0.7)), scores)


@pytest.mark.parametrize("bandwidth", [0, -1.0, float("nan"), float("inf")])
def test_gaussian_bandwidth_must_be_positive(bandwidth):
    with pytest.raises(ValueError, match="bandwidth must be a positive, finite number"):
        gaussian_kernel_score(Q, K, bandwidth)


@pytest.mark.parametrize("bandwidth", [True, "1", None])
def test_gaussian_bandwidth_must_be_a_number(bandwidth):
    with pytest.raises(TypeError, match="bandwidth must be a positive number"):
        gaussian_kernel_score(Q, K, bandwidth)


def test_bilinear_matches_torch_and_identity_gives_dot():
    W = rand(4, 6, seed=3)
    keys = rand(5, 6, seed=4)  # d_q = 4, d_k = 6
    m, n = 3, 5
    builtin = F.bilinear(Q.repeat_interleave(n, 0), keys.repeat(m, 1), W[None]).reshape(m, n)
    assert torch.allclose(bilinear_score(Q, keys, W), builtin, atol=1e-5)
    assert torch.allclose(bilinear_score(Q, K, torch.eye(4)), dot_score(Q, K))
    assert bilinear_score(Q[0], keys, W).shape == (5,)


def test_bilinear_shape_errors():
    with pytest.raises(ValueError, match="weight: expected d_k=4, got d_k=3"):
        bilinear_score(Q, K, rand(4, 3))
    with pytest.raises(ValueError, match="queries: expected d_q=5, got d_q=4"):
        bilinear_score(Q, K, rand(5, 4))
    with pytest.raises(TypeError, match="weight: expected a torch tensor"):
        bilinear_score(Q, K, np.eye(4))


def test_additive_matches_a_loop_over_pairs():
    w_q, w_k, v = rand(4, 7, seed=5), rand(6, 7, seed=6), rand(7, seed=7)
    keys = rand(5, 6, seed=8)
    expected = torch.tensor([[float(torch.tanh(qi @ w_q + kj @ w_k) @ v) for kj in keys] for qi in Q])
    assert torch.allclose(additive_score(Q, keys, w_q, w_k, v), expected, atol=1e-5)
    assert torch.allclose(additive_score(Q[2], keys, w_q, w_k, v), expected[2], atol=1e-5)


def test_additive_is_bounded_by_the_sum_of_abs_v():
    w_q, w_k, v = rand(4, 7, seed=5), rand(4, 7, seed=6), rand(7, seed=7)
    scores = additive_score(1e6 * Q, 1e6 * K, w_q, w_k, v)
    assert torch.isfinite(scores).all() and (scores.abs() <= v.abs().sum() + 1e-4).all()


def test_additive_shape_errors():
    w_q, w_k, v = rand(4, 7), rand(4, 7), rand(7)
    with pytest.raises(ValueError, match="v: expected d_hidden=7, got d_hidden=6"):
        additive_score(Q, K, w_q, w_k, rand(6))
    with pytest.raises(ValueError, match="w_q: expected d_hidden=7, got d_hidden=5"):
        additive_score(Q, K, rand(4, 5), w_k, v)
    with pytest.raises(ValueError, match="queries: expected d_q=4, got d_q=3"):
        additive_score(rand(2, 3), K, w_q, w_k, v)
    with pytest.raises(ValueError, match="w_k: expected d_k=4, got d_k=3"):
        additive_score(Q, K, w_q, rand(3, 7), v)


def test_additive_module_is_seeded_learnable_and_agrees():
    a, b, c = AdditiveScore(4, 4, 8, seed=0), AdditiveScore(4, 4, 8, seed=0), AdditiveScore(4, 4, 8, seed=1)
    assert torch.equal(a.w_q, b.w_q) and torch.equal(a.v, b.v)
    assert not torch.equal(a.w_q, c.w_q)
    assert {name: tuple(p.shape) for name, p in a.named_parameters()} == {"w_q": (4, 8), "w_k": (4, 8), "v": (8,)}
    assert (a.w_q.abs() <= 0.5).all() and (a.v.abs() <= 1 / math.sqrt(8)).all()
    scores = a(Q, K)
    assert torch.allclose(scores, additive_score(Q, K, a.w_q, a.w_k, a.v))
    scores.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in a.parameters())
    assert "d_hidden=8" in repr(a)
    with pytest.raises(ValueError, match="d_hidden must be a positive int"):
        AdditiveScore(4, 4, 0)


# --------------------------------------------------------------------------- Nadaraya–Watson
def test_nadaraya_watson_weights_are_normalised_kernels():
    x = torch.linspace(0, 1, 7)[:, None]
    xs, ys = rand(10, 1, seed=1), rand(10, seed=2)
    pred, weights = nadaraya_watson(x, xs, ys, 0.3)
    kernel = gaussian_kernel_score(x, xs, 0.3)
    assert torch.allclose(weights, kernel / kernel.sum(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(weights.sum(dim=1), torch.ones(7))
    manual = torch.stack([(kernel[i] * ys).sum() / kernel[i].sum() for i in range(7)])
    assert torch.allclose(pred, manual, atol=1e-5)


def test_nadaraya_watson_limits_of_the_bandwidth():
    xs = torch.tensor([[0.0], [1.0], [2.0]])
    ys = torch.tensor([5.0, -1.0, 2.0])
    near, _ = nadaraya_watson(torch.tensor([[0.9], [2.2]]), xs, ys, 1e-3)
    assert torch.allclose(near, torch.tensor([-1.0, 2.0]))  # nearest neighbour
    flat, _ = nadaraya_watson(torch.tensor([[0.9], [2.2]]), xs, ys, 1e4)
    assert torch.allclose(flat, torch.full((2,), 2.0), atol=1e-4)  # the mean of the values


def test_nadaraya_watson_far_queries_do_not_give_nan():
    xs, ys = torch.tensor([[0.0], [1.0]]), torch.tensor([3.0, 4.0])
    assert gaussian_kernel_score(torch.tensor([[50.0]]), xs, 0.1).sum() == 0  # naive 0/0 territory
    pred, weights = nadaraya_watson(torch.tensor([[50.0]]), xs, ys, 0.1)
    assert torch.allclose(pred, torch.tensor([4.0])) and not torch.isnan(weights).any()


def test_nadaraya_watson_shapes_and_errors():
    xs, ys = rand(6, 2, seed=1), rand(6, 3, seed=2)
    pred, weights = nadaraya_watson(rand(4, 2), xs, ys, 1.0)
    assert pred.shape == (4, 3) and weights.shape == (4, 6)
    pred, weights = nadaraya_watson(rand(2), xs, ys[:, 0], 1.0)
    assert pred.shape == () and weights.shape == (6,)
    with pytest.raises(ValueError, match="values: expected n=6, got n=5"):
        nadaraya_watson(rand(4, 2), xs, ys[:5], 1.0)
    with pytest.raises(ValueError, match="bandwidth must be a positive"):
        nadaraya_watson(rand(4, 2), xs, ys, -0.5)
    with pytest.raises(TypeError, match="values: expected a torch tensor"):
        nadaraya_watson(rand(4, 2), xs, [1.0] * 6, 1.0)


# --------------------------------------------------------------------------- cost
def test_flops_per_pair_matches_torch_counter_for_matrix_products():
    m, n, d = 3, 5, 4
    with FlopCounterMode(display=False) as counter:
        dot_score(Q, K)
    assert counter.get_total_flops() == m * n * flops_per_pair("dot", d)
    W = rand(4, 6)
    keys = rand(5, 6)
    with FlopCounterMode(display=False) as counter:
        bilinear_score(Q, keys, W)
    per_query = 2 * 4 * 6  # q @ W, once per query
    assert counter.get_total_flops() == m * per_query + m * n * flops_per_pair("bilinear", 6)


def test_flops_per_pair_values_and_errors():
    assert flops_per_pair("cosine", 64) == flops_per_pair("dot", 64) == 128
    assert flops_per_pair("additive", 64, d_hidden=32) == 128
    assert flops_per_pair("gaussian", 10) == 32
    with pytest.raises(KeyError, match="unknown score"):
        flops_per_pair("manhattan", 4)
    with pytest.raises(ValueError, match="needs d_hidden"):
        flops_per_pair("additive", 4)
    with pytest.raises(ValueError, match="only used by the additive"):
        flops_per_pair("dot", 4, d_hidden=3)
    with pytest.raises(ValueError, match="d must be a positive int"):
        flops_per_pair("dot", 0)


# --------------------------------------------------------------------------- figures
SCORERS = {"dot": dot_score, "cosine": cosine_score,
           "additive": AdditiveScore(2, 2, 4, seed=0),
           "gaussian": lambda q, k: gaussian_kernel_score(q, k, 1.0)}


def test_landscapes_and_key_length_figures():
    q = torch.tensor([1.0, 0.5])
    fig = plot_score_landscapes(SCORERS, q, keys=torch.eye(2), resolution=11, ncols=3)
    titles = [ax.get_title() for ax in fig.axes]
    assert {"dot", "cosine", "additive", "gaussian"} <= set(titles)
    assert "q = [1.0, 0.5]" in fig._suptitle.get_text()
    fig = plot_key_length(SCORERS, q, direction=torch.tensor([0.0, 3.0]))
    assert "63° from the query" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="query"):
        plot_score_landscapes(SCORERS, torch.ones(3))


def test_query_scores_and_kernel_regression_figures():
    fig = plot_query_scores(SCORERS, torch.tensor([1.0, 1.0]), torch.eye(2), title="angle 45")
    assert fig._suptitle.get_text() == "angle 45"
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert "1.00\n(0.50)" in texts  # dot product of [1, 1] with each unit key, equal weights
    x = torch.linspace(0, 1, 5)
    pred, weights = nadaraya_watson(x[:, None], x[:, None], x, 0.2)
    fig = plot_kernel_regression(x, x, x, pred, weights, bandwidth=0.2, truth=x)
    assert "σ = 0.20" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="weights"):
        plot_kernel_regression(x, x, x, pred, weights[:, :3], bandwidth=0.2)
