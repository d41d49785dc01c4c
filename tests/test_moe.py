"""course_lib.moe: top-k routing, the load-balancing loss, capacity, the MixtureOfExperts layer, costs, the toy task."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from course_lib.moe import (MixtureOfExperts, expert_capacity, feed_forward_cost, keep_within_capacity,
                            load_balancing_loss, make_cluster_task, plot_router_runs, top_k_routing,
                            train_router_demo)
from course_lib.transformer import count_parameters


# --- top_k_routing ---------------------------------------------------------------------------------------------

def test_top_k_routing_by_hand():
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3, 0.0 + 1e-9]]))  # probabilities 0.1, 0.6, 0.3, ~0
    weights, experts = top_k_routing(logits, 2)
    assert experts.tolist() == [[1, 2]]  # largest first
    assert torch.allclose(weights, torch.tensor([[0.6 / 0.9, 0.3 / 0.9]]), atol=1e-6)
    raw, _ = top_k_routing(logits, 2, renormalize=False)
    assert torch.allclose(raw, torch.tensor([[0.6, 0.3]]), atol=1e-6)
    assert experts.dtype == torch.int64


def test_top_k_routing_weights_sum_to_one_over_any_leading_axes():
    logits = torch.randn(2, 5, 6)  # (B, T, E)
    for k in range(1, 7):
        weights, experts = top_k_routing(logits, k)
        assert weights.shape == experts.shape == (2, 5, k)
        assert torch.allclose(weights.sum(-1), torch.ones(2, 5), atol=1e-6)
        assert (weights[..., :-1] >= weights[..., 1:]).all()  # sorted, largest first
        assert torch.equal(experts, logits.topk(k, dim=-1).indices)


def test_top_k_routing_with_k_equal_to_e_and_equal_logits_gives_equal_weights():
    weights, experts = top_k_routing(torch.zeros(3, 4), 4)
    assert torch.allclose(weights, torch.full((3, 4), 0.25))
    assert sorted(experts[0].tolist()) == [0, 1, 2, 3]


def test_top_k_routing_gradient_reaches_the_logits_except_renormalised_k1():
    logits = torch.randn(5, 4, requires_grad=True)
    weights, _ = top_k_routing(logits, 2)
    (weights * torch.randn(5, 2)).sum().backward()
    assert logits.grad.abs().sum() > 0
    logits.grad = None
    weights, _ = top_k_routing(logits, 1)  # renormalised, a single weight is always exactly 1
    assert torch.equal(weights.detach(), torch.ones(5, 1))
    (weights * 3.0).sum().backward()
    assert logits.grad.abs().max() < 1e-6
    logits.grad = None
    weights, _ = top_k_routing(logits, 1, renormalize=False)
    weights.sum().backward()
    assert logits.grad.abs().sum() > 0


def test_top_k_routing_errors():
    with pytest.raises(ValueError, match="k=5 experts per token, but router_logits has only E=4"):
        top_k_routing(torch.randn(3, 4), 5)
    with pytest.raises(ValueError, match="k must be a positive int"):
        top_k_routing(torch.randn(3, 4), 0)
    with pytest.raises(TypeError, match="router_logits"):
        top_k_routing(torch.ones(3, 4, dtype=torch.long), 1)
    with pytest.raises(TypeError, match="k must be an int"):
        top_k_routing(torch.randn(3, 4), 1.0)


# --- load_balancing_loss ---------------------------------------------------------------------------------------

def test_load_balancing_loss_is_one_when_even_and_e_when_collapsed():
    even_probs = torch.full((8, 4), 0.25)
    even_experts = torch.arange(8).remainder(4)[:, None]  # two tokens per expert
    assert load_balancing_loss(even_probs, even_experts).item() == pytest.approx(1.0)
    collapsed_probs = torch.tensor([[0.0, 0.0, 1.0, 0.0]]).repeat(8, 1)
    collapsed_experts = torch.full((8, 1), 2)
    assert load_balancing_loss(collapsed_probs, collapsed_experts).item() == pytest.approx(4.0)


def test_load_balancing_loss_by_hand_with_top_2():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.1, 0.3]])
    experts = torch.tensor([[0, 1], [0, 2]])  # f = (2/4, 1/4, 1/4); P = (0.55, 0.2, 0.25)
    expected = 3 * (0.5 * 0.55 + 0.25 * 0.2 + 0.25 * 0.25)
    assert load_balancing_loss(probs, experts).item() == pytest.approx(expected)


def test_load_balancing_loss_gradient_lowers_the_busiest_experts_probability():
    logits = torch.zeros(6, 3, requires_grad=True)
    experts = torch.zeros(6, 1, dtype=torch.long)  # every token chose expert 0
    load_balancing_loss(torch.softmax(logits, -1), experts).backward()
    assert (logits.grad[:, 0] > 0).all() and (logits.grad[:, 1:] < 0).all()  # descent lowers expert 0


def test_load_balancing_loss_errors():
    with pytest.raises(ValueError, match="indices must lie in 0..3, got 0..4"):
        load_balancing_loss(torch.full((2, 4), 0.25), torch.tensor([[0], [4]]))
    with pytest.raises(ValueError, match="expected N=2, got N=3"):
        load_balancing_loss(torch.full((2, 4), 0.25), torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="no tokens"):
        load_balancing_loss(torch.zeros(0, 4), torch.zeros(0, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="experts"):
        load_balancing_loss(torch.full((2, 4), 0.25), torch.zeros(2, 1))


# --- capacity --------------------------------------------------------------------------------------------------

def test_expert_capacity():
    assert expert_capacity(8, 4, 1, 1.0) == 2
    assert expert_capacity(8, 4, 2, 1.0) == 4
    assert expert_capacity(10, 4, 1, 1.25) == math.ceil(1.25 * 10 / 4) == 4
    assert expert_capacity(0, 4, 1, 1.0) == 0
    for bad in (0, -1.0, True, "1"):
        with pytest.raises(ValueError, match="capacity_factor must be a positive number"):
            expert_capacity(8, 4, 1, bad)


def test_keep_within_capacity_serves_first_choices_first_then_token_order():
    experts = torch.tensor([[0, 1], [0, 1], [1, 0], [0, 2]])  # (N=4, k=2)
    kept = keep_within_capacity(experts, 3, capacity=2)
    # expert 0: first choices of tokens 0, 1, 3 -> tokens 0 and 1 kept, 3 dropped; the second choice of token 2 dropped
    # expert 1: first choice of token 2, then the second choices of tokens 0 and 1 -> token 2 and token 0 kept
    assert kept.tolist() == [[True, True], [True, False], [True, False], [False, True]]
    assert keep_within_capacity(experts, 3, capacity=0).sum() == 0
    assert keep_within_capacity(experts, 3, capacity=8).all()


# --- MixtureOfExperts ------------------------------------------------------------------------------------------

def _by_loop(moe, x):
    """Each token alone through its chosen experts: the definition, without any batching."""
    tokens = x.reshape(-1, x.shape[-1])
    out = []
    for t in tokens:
        probs = torch.softmax(moe.router(t), dim=-1)
        top, chosen = probs.topk(moe.k)
        if moe.renormalize:
            top = top / top.sum()
        out.append(sum(w * moe.experts[e](t) for w, e in zip(top, chosen.tolist())))
    return torch.stack(out).reshape(x.shape)


@pytest.mark.parametrize("k, renormalize", [(1, True), (1, False), (2, True), (3, True)])
def test_mixture_matches_a_loop_over_tokens(k, renormalize):
    torch.manual_seed(0)
    moe = MixtureOfExperts(6, 10, n_experts=4, k=k, renormalize=renormalize)
    x = torch.randn(2, 5, 6)  # (B, T, d_model)
    out = moe(x)
    assert out.shape == (2, 5, 6)
    assert torch.allclose(out, _by_loop(moe, x), atol=1e-5)
    assert moe.routing.experts.shape == (10, k) and moe.routing.tokens_per_expert.sum() == 10 * k
    assert moe.aux_loss.ndim == 0 and 0.5 < moe.aux_loss.item() < 4


def test_all_experts_with_equal_router_weights_is_the_average_of_the_experts():
    torch.manual_seed(1)
    moe = MixtureOfExperts(8, 16, n_experts=4, k=4)
    with torch.no_grad():
        moe.router.weight.zero_()
    x = torch.randn(3, 7, 8)
    average = torch.stack([expert(x) for expert in moe.experts]).mean(dim=0)
    assert torch.allclose(moe(x), average, atol=1e-6)


def test_gradients_reach_the_router_and_every_chosen_expert():
    torch.manual_seed(2)
    moe = MixtureOfExperts(8, 16, n_experts=4, k=2)
    x = torch.randn(4, 6, 8)
    (moe(x).pow(2).sum() + moe.aux_loss).backward()
    assert moe.router.weight.grad.abs().sum() > 0
    for e, expert in enumerate(moe.experts):
        used = bool((moe.routing.experts == e).any())
        assert (expert.linear1.weight.grad is not None and expert.linear1.weight.grad.abs().sum() > 0) == used


def test_capacity_drops_the_overflow_and_a_dropped_token_gets_zero():
    torch.manual_seed(3)
    moe = MixtureOfExperts(4, 8, n_experts=2, k=1, capacity_factor=0.5)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0] = 1.0  # every token with a positive feature sum prefers expert 0
    x = torch.rand(8, 4) + 0.1  # 8 tokens, all prefer expert 0; capacity ceil(0.5 * 8 / 2) = 2
    out = moe(x)
    assert moe.routing.tokens_per_expert.tolist() == [2, 0]
    assert moe.routing.dropped_fraction == pytest.approx(6 / 8)
    assert torch.equal(out[2:], torch.zeros(6, 4))  # tokens 2..7 found expert 0 full
    assert torch.allclose(out[:2], _by_loop(moe, x[:2]), atol=1e-6)
    assert moe.routing.share_per_expert().tolist() == [1.0, 0.0]  # what the router chose, kept or not


def test_mixture_parameter_count_matches_feed_forward_cost():
    for E, k in ((4, 1), (4, 2), (8, 2)):
        moe = MixtureOfExperts(32, 128, n_experts=E, k=k)
        assert count_parameters(moe) == feed_forward_cost(32, 128, E, k)["parameters"]


def test_measured_flops_match_feed_forward_cost():
    torch.manual_seed(4)
    N, d_model, d_ff = 64, 32, 128
    x = torch.randn(N, d_model)
    for E, k in ((4, 1), (4, 2)):
        moe = MixtureOfExperts(d_model, d_ff, n_experts=E, k=k)
        with FlopCounterMode(display=False) as counter:
            moe(x)
        assert counter.get_total_flops() == 2 * N * feed_forward_cost(d_model, d_ff, E, k)["multiply_adds_per_token"]


def test_feed_forward_cost_dense_and_errors():
    dense = feed_forward_cost(512, 2048)
    assert dense == {"parameters": 2 * 512 * 2048 + 2048 + 512, "multiply_adds_per_token": 2 * 512 * 2048}
    sparse = feed_forward_cost(512, 2048, 4, 1)
    assert sparse["parameters"] == 4 * dense["parameters"] + 512 * 4
    assert sparse["multiply_adds_per_token"] == dense["multiply_adds_per_token"] + 512 * 4
    with pytest.raises(ValueError, match="k=3 experts per token, but there are only n_experts=2"):
        feed_forward_cost(8, 16, 2, 3)
    with pytest.raises(ValueError, match="dense layer"):
        feed_forward_cost(8, 16, None, 2)


def test_mixture_errors():
    with pytest.raises(ValueError, match="k=5 experts per token, but there are only n_experts=4"):
        MixtureOfExperts(8, 16, n_experts=4, k=5)
    with pytest.raises(ValueError, match="activation must be one of"):
        MixtureOfExperts(8, 16, activation="swish")
    with pytest.raises(ValueError, match="capacity_factor"):
        MixtureOfExperts(8, 16, capacity_factor=0)
    moe = MixtureOfExperts(8, 16)
    with pytest.raises(ValueError, match="expected d_model=8, got d_model=5"):
        moe(torch.randn(2, 5))
    with pytest.raises(TypeError, match="x: expected torch.float32"):
        moe(torch.ones(2, 8, dtype=torch.float64))


# --- the toy task ----------------------------------------------------------------------------------------------

def test_make_cluster_task_shapes_and_reproducibility():
    a = make_cluster_task(50, torch.Generator().manual_seed(0))
    b = make_cluster_task(50, torch.Generator().manual_seed(0))
    assert a.x.shape == a.y.shape == (50, 16) and a.kind.shape == (50,)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.kind, b.kind)
    assert set(a.kind.tolist()) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="n_tokens"):
        make_cluster_task(0)


def test_router_collapses_without_the_balancing_loss_and_specialises_with_it():
    plain = train_router_demo(0.0, seed=1)
    balanced = train_router_demo(0.05, seed=1)
    assert plain.shares.shape == (300, 4) and len(plain.losses) == len(plain.aux_losses) == 300
    assert plain.test_share.max() > 0.5 and plain.test_share.min() < 0.02
    assert balanced.test_share.min() > 0.2 and balanced.test_share.max() < 0.3
    assert balanced.test_loss < plain.test_loss
    favourite = balanced.kind_by_expert.argmax(dim=1)  # each kind's usual expert: all different
    assert len(set(favourite.tolist())) == 4
    assert (balanced.kind_by_expert.max(dim=1).values / balanced.kind_by_expert.sum(dim=1) > 0.9).all()
    with pytest.raises(ValueError, match="balance_weight"):
        train_router_demo(-1.0)


def test_plot_router_runs_draws_one_column_per_run():
    import matplotlib.pyplot as plt

    run = train_router_demo(0.0, steps=12)
    assert run.model.routing is not None
    fig = plot_router_runs({"a": run, "b": run}, window=5)
    assert len(fig.axes) == 4
    assert len(fig.axes[0].lines) == 5  # 4 experts and the even share
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one RouterRun"):
        plot_router_runs({})
