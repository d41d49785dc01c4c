"""A mixture-of-experts feed-forward layer (notebook 08, section 9).

A dense feed-forward network (``blocks.FeedForward``) runs every token through the same weights.
A **mixture of experts** keeps ``E`` such networks, the *experts*, and a small linear *router* that
scores each token against each expert. Each token goes to its ``k`` best-scoring experts only, and
its output is their outputs weighted by the router's probabilities, renormalised over the ``k``
chosen (Shazeer et al., 2017; GShard, Lepikhin et al., 2020; Switch Transformer, Fedus et al.,
2021; Mixtral, Jiang et al., 2024). The layer holds ``E`` times the parameters of one expert but
computes, per token, only ``k`` of them: parameters and computation are no longer tied.

- :func:`top_k_routing`: router logits ``(N, E)`` -> weights ``(N, k)`` and experts ``(N, k)``.
- :func:`load_balancing_loss`: the auxiliary loss ``E * sum_i f_i * P_i`` that keeps the router
  from sending (nearly) every token to the same few experts.
- :func:`expert_capacity` and :func:`keep_within_capacity`: at most ``capacity`` tokens per expert.
- :class:`MixtureOfExperts`: the layer, a drop-in replacement for ``FeedForward``.
- :func:`feed_forward_cost`: parameters and multiply-adds per token, dense against sparse.
- :func:`make_cluster_task`, :func:`train_router_demo` and :func:`plot_router_runs`: a toy task on which to
  watch the router learn, collapse, or spread the tokens.

Shapes: ``N`` tokens (all positions of all sentences, flattened), ``E`` experts, ``k`` chosen per token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from course_lib.attention import check_module_input
from course_lib.blocks import ACTIVATIONS, FeedForward
from course_lib.session import one_thread
from course_lib.shapes import check_int, check_shape


def top_k_routing(router_logits: torch.Tensor, k: int,
                  renormalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Send each token to its ``k`` best experts.

    The softmax runs over the experts (the last axis) of each token; the ``k`` largest probabilities
    are kept and divided by their sum, so each token's weights add up to 1. The gradient flows from
    the weights back into the logits, which is how the router learns.

    With ``k = 1`` the renormalised weight is always exactly 1 and carries no gradient: the router
    would learn nothing from the task. ``renormalize=False`` keeps the raw probabilities instead, as
    the Switch Transformer does for its single expert.

    Args:
        router_logits: (..., E) float scores, one per expert, for each token.
        k: how many experts each token uses, 1 <= k <= E.
        renormalize: divide the k probabilities by their sum (True) or keep them as they are.

    Returns:
        ``(weights, experts)``: weights (..., k), float, positive, summing to 1 along the last axis,
        largest first; experts (..., k), int64, the chosen experts' indices in the same order.
    """
    sizes = check_shape(router_logits, "... E", name="router_logits", dtype="float")
    check_int(k, "k", 1)
    if k > sizes["E"]:
        raise ValueError(f"k={k} experts per token, but router_logits has only E={sizes['E']} experts "
                         f"(shape {tuple(router_logits.shape)}, experts on the last axis)")
    probs = torch.softmax(router_logits, dim=-1)  # (..., E): over the experts, per token
    top, experts = probs.topk(k, dim=-1)  # (..., k) each, largest first
    return (top / top.sum(dim=-1, keepdim=True) if renormalize else top), experts


def load_balancing_loss(router_probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """The auxiliary loss of the Switch Transformer, ``E * sum_i f_i * P_i``, for top-k routing.

    ``f_i`` is the fraction of the ``N * k`` assignments that went to expert ``i`` (a count: no
    gradient) and ``P_i`` the mean router probability of expert ``i`` over the tokens (differentiable).
    With a perfectly even spread, ``f_i = P_i = 1/E`` and the loss is 1; when every token goes to one
    expert with probability 1 it reaches ``E``. Minimising it lowers the probability of the experts
    that receive the most tokens.

    Args:
        router_probs: (N, E) the softmax of the router logits, rows summing to 1.
        experts: (N, k) int, the experts chosen for each token (``top_k_routing``'s second output).

    Returns:
        A 0-dimensional tensor: 1 for a perfectly even spread, ``E`` for a total collapse onto one
        expert (with the counts and the probabilities pulling apart it can dip a little below 1).
    """
    sizes = check_shape(router_probs, "N E", name="router_probs", dtype="float")
    check_shape(experts, "N k", name="experts", dtype="int", N=sizes["N"])
    E = sizes["E"]
    if experts.numel() and (int(experts.min()) < 0 or int(experts.max()) >= E):
        raise ValueError(f"experts: indices must lie in 0..{E - 1}, got {int(experts.min())}..{int(experts.max())}")
    if sizes["N"] == 0:
        raise ValueError("router_probs: no tokens (N = 0), so there is no load to balance")
    counts = torch.bincount(experts.reshape(-1), minlength=E).to(router_probs.dtype)  # (E,)
    fraction = counts / counts.sum()  # f_i, (E,)
    mean_prob = router_probs.mean(dim=0)  # P_i, (E,)
    return E * (fraction * mean_prob).sum()


def expert_capacity(n_tokens: int, n_experts: int, k: int, capacity_factor: float) -> int:
    """How many assignments one expert accepts: ``ceil(capacity_factor * n_tokens * k / n_experts)``.

    A factor of 1 is exactly the even share; above 1 leaves slack for an uneven router.
    """
    check_int(n_tokens, "n_tokens", 0)
    check_int(n_experts, "n_experts", 1)
    check_int(k, "k", 1)
    if isinstance(capacity_factor, bool) or not isinstance(capacity_factor, (int, float)) or not capacity_factor > 0:
        raise ValueError(f"capacity_factor must be a positive number, got {capacity_factor!r}")
    return math.ceil(capacity_factor * n_tokens * k / n_experts)


def keep_within_capacity(experts: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """Which assignments an expert with room for ``capacity`` of them accepts.

    Assignments are served first choices first (every token's best expert), then second choices,
    and within a choice in token order, as in GShard; an expert that is full drops the rest. A
    dropped assignment contributes nothing: in a block, the residual connection carries the token on.

    Args:
        experts: (N, k) int, the chosen experts. n_experts: E. capacity: assignments per expert, >= 0.

    Returns:
        (N, k) bool, True where the assignment is kept.
    """
    check_shape(experts, "N k", name="experts", dtype="int")
    check_int(n_experts, "n_experts", 1)
    check_int(capacity, "capacity", 0)
    order = experts.t().reshape(-1)  # (k * N,): all first choices, then all second choices, ...
    one_hot = nn.functional.one_hot(order, n_experts)  # (k * N, E)
    place = (one_hot.cumsum(dim=0) * one_hot).sum(dim=1) - 1  # (k * N,): 0 for an expert's first arrival
    return (place < capacity).reshape(experts.shape[1], experts.shape[0]).t()


@dataclass(frozen=True)
class Routing:
    """What the router did on the last call of a :class:`MixtureOfExperts`.

    Attributes:
        probs: (N, E) router probabilities (detached). experts: (N, k) chosen experts.
        weights: (N, k) their weights, 0 where an assignment was dropped. kept: (N, k) bool.
        tokens_per_expert: (E,) int64, the assignments each expert computed.
    """

    probs: torch.Tensor
    experts: torch.Tensor
    weights: torch.Tensor
    kept: torch.Tensor
    tokens_per_expert: torch.Tensor

    @property
    def dropped_fraction(self) -> float:
        """The share of assignments that found their expert full."""
        return 1.0 - self.kept.float().mean().item() if self.kept.numel() else 0.0

    def share_per_expert(self) -> torch.Tensor:
        """(E,) the fraction of all chosen assignments (kept or not) that went to each expert."""
        counts = torch.bincount(self.experts.reshape(-1), minlength=self.probs.shape[-1]).float()
        return counts / counts.sum().clamp(min=1)


class MixtureOfExperts(nn.Module):
    """A feed-forward sublayer made of ``n_experts`` FeedForward experts and a top-k router.

    ``forward(x (..., d_model)) -> (..., d_model)``, each token on its own, like ``FeedForward``.
    After each call, ``aux_loss`` holds the load-balancing loss of that call (add
    ``balance_weight * aux_loss`` to the training loss) and ``routing`` a :class:`Routing`.

    Args:
        d_model: token width. d_ff: hidden width of each expert.
        n_experts: E. k: experts per token (1 <= k <= E).
        capacity_factor: None for no limit; else each expert computes at most
            ``expert_capacity(N, E, k, capacity_factor)`` assignments per call and drops the rest.
        renormalize: as in :func:`top_k_routing` (set it to False for k = 1, or the router learns
            only from the balancing loss).
        dropout, activation: as in ``FeedForward``.
    """

    def __init__(self, d_model: int, d_ff: int, n_experts: int = 4, k: int = 2,
                 capacity_factor: float | None = None, renormalize: bool = True, dropout: float = 0.0,
                 activation: str = "relu"):
        super().__init__()
        for name, value in (("d_model", d_model), ("d_ff", d_ff), ("n_experts", n_experts), ("k", k)):
            check_int(value, name, 1)
        if k > n_experts:
            raise ValueError(f"k={k} experts per token, but there are only n_experts={n_experts}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if capacity_factor is not None:
            expert_capacity(1, n_experts, k, capacity_factor)  # validates the factor
        self.n_experts, self.k, self.capacity_factor, self.renormalize = n_experts, k, capacity_factor, renormalize
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(d_model, d_ff, dropout, activation) for _ in range(n_experts))
        self.aux_loss: torch.Tensor | None = None
        self.routing: Routing | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_module_input(self, x=x)
        check_shape(x, "... d_model", name="x", d_model=self.router.in_features)
        tokens = x.reshape(-1, x.shape[-1])  # (N, d_model)
        logits = self.router(tokens)  # (N, E)
        weights, experts = top_k_routing(logits, self.k, self.renormalize)  # (N, k), (N, k)
        if self.capacity_factor is None:
            kept = torch.ones_like(experts, dtype=torch.bool)
        else:
            capacity = expert_capacity(tokens.shape[0], self.n_experts, self.k, self.capacity_factor)
            kept = keep_within_capacity(experts, self.n_experts, capacity)
        weights = weights * kept  # a dropped assignment adds nothing
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            token, slot = torch.nonzero((experts == e) & kept, as_tuple=True)  # this expert's assignments
            if token.numel():
                out = out.index_add(0, token, weights[token, slot, None] * expert(tokens[token]))
        probs = torch.softmax(logits, dim=-1)
        self.aux_loss = load_balancing_loss(probs, experts) if tokens.shape[0] else logits.sum() * 0
        self.routing = Routing(probs.detach(), experts, weights.detach(), kept,
                               torch.bincount(experts[kept], minlength=self.n_experts))
        return out.reshape(x.shape)


def feed_forward_cost(d_model: int, d_ff: int, n_experts: int | None = None, k: int = 1) -> dict[str, int]:
    """Parameters and multiply-adds per token of a feed-forward sublayer, dense or mixture of experts.

    A dense layer (``n_experts=None``, a ``FeedForward``) has ``2 * d_model * d_ff`` weights plus
    ``d_ff + d_model`` biases, and one token costs ``2 * d_model * d_ff`` multiply-adds. A
    ``MixtureOfExperts`` stores ``n_experts`` such networks and a ``d_model x n_experts`` router, but
    one token costs only ``k`` experts' worth plus the router's ``d_model * n_experts``.

    Returns:
        ``{"parameters": ..., "multiply_adds_per_token": ...}`` (a FLOP count is twice the multiply-adds).
    """
    check_int(d_model, "d_model", 1)
    check_int(d_ff, "d_ff", 1)
    check_int(k, "k", 1)
    expert_parameters = 2 * d_model * d_ff + d_ff + d_model
    expert_macs = 2 * d_model * d_ff
    if n_experts is None:
        if k != 1:
            raise ValueError(f"a dense layer (n_experts=None) has no k to choose, got k={k}")
        return {"parameters": expert_parameters, "multiply_adds_per_token": expert_macs}
    check_int(n_experts, "n_experts", 1)
    if k > n_experts:
        raise ValueError(f"k={k} experts per token, but there are only n_experts={n_experts}")
    return {"parameters": n_experts * expert_parameters + d_model * n_experts,
            "multiply_adds_per_token": k * expert_macs + d_model * n_experts}


# --- a toy task on which to watch the router (notebook 08) --------------------------------------------------


@dataclass(frozen=True)
class ClusterTask:
    """Tokens of ``n_kinds`` kinds; each kind needs its own function, a natural job for one expert each.

    Attributes:
        x: (N, d_model) token vectors: the centre of the token's kind, noise, and a shared offset
            that every token carries (the hidden states of trained Transformers share such a common
            direction; it is what lets a router with one bias-free linear layer favour one expert for all).
        y: (N, d_model) targets, ``tanh(x_kind @ M_kind)`` with one random matrix per kind.
        kind: (N,) int64, each token's kind.
    """

    x: torch.Tensor
    y: torch.Tensor
    kind: torch.Tensor


def make_cluster_task(n_tokens: int, generator: torch.Generator | None = None, n_kinds: int = 4,
                      d_model: int = 16, offset: float = 3.0, task_seed: int = 0) -> ClusterTask:
    """Draw ``n_tokens`` tokens of the toy task; the centres, maps and offset come from ``task_seed``.

    Args:
        n_tokens: N. generator: draws the kinds and the noise (None: torch's global generator).
        n_kinds: how many kinds (and maps). d_model: token width. offset: length of the shared offset.
        task_seed: fixes the task itself (centres, maps, offset direction), the same for every batch.
    """
    check_int(n_tokens, "n_tokens", 1)
    check_int(n_kinds, "n_kinds", 1)
    check_int(d_model, "d_model", 1)
    fixed = torch.Generator().manual_seed(task_seed)
    centres = torch.randn(n_kinds, d_model, generator=fixed)  # (n_kinds, d_model)
    maps = torch.randn(n_kinds, d_model, d_model, generator=fixed) / d_model ** 0.5
    shared = torch.randn(d_model, generator=fixed)
    shared = offset * shared / shared.norm()  # (d_model,)
    kind = torch.randint(0, n_kinds, (n_tokens,), generator=generator)  # (N,)
    x = centres[kind] + 0.5 * torch.randn(n_tokens, d_model, generator=generator)  # (N, d_model)
    y = torch.tanh(torch.einsum("nd,nde->ne", x, maps[kind]))
    return ClusterTask(x=x + shared, y=y, kind=kind)


@dataclass(frozen=True)
class RouterRun:
    """The record of :func:`train_router_demo`.

    Attributes:
        losses: the task loss (mean squared error) of every step.
        aux_losses: the load-balancing loss of every step (whether or not it was trained on).
        shares: (steps, E) the share of each expert in every step's assignments.
        test_loss: mean squared error on held-out tokens.
        test_share: (E,) each expert's share of the held-out tokens' assignments.
        kind_by_expert: (n_kinds, E) int64, how many held-out tokens of each kind went to each expert.
        model: the trained layer.
    """

    losses: list[float]
    aux_losses: list[float]
    shares: torch.Tensor
    test_loss: float
    test_share: torch.Tensor
    kind_by_expert: torch.Tensor
    model: MixtureOfExperts


def train_router_demo(balance_weight: float, seed: int = 1, steps: int = 300, n_experts: int = 4, k: int = 1,
                      d_ff: int = 16, batch_size: int = 256, lr: float = 1e-2, n_test: int = 2000) -> RouterRun:
    """Train one :class:`MixtureOfExperts` on :func:`make_cluster_task` and record what its router does.

    The loss is ``mse + balance_weight * aux_loss`` (Adam, on one CPU thread). With ``k = 1`` the layer keeps the raw
    probability (``renormalize=False``, the Switch Transformer's choice), so the router learns from
    the task. Weights come from ``seed``, batches from ``seed + 100``, the held-out tokens from 999.
    """
    if isinstance(balance_weight, bool) or not isinstance(balance_weight, (int, float)) or balance_weight < 0:
        raise ValueError(f"balance_weight must be a number >= 0, got {balance_weight!r}")
    check_int(steps, "steps", 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        moe = MixtureOfExperts(16, d_ff, n_experts, k, renormalize=k > 1)
    optimizer = torch.optim.Adam(moe.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed + 100)
    losses, aux_losses, shares = [], [], []
    with one_thread():  # a layer this small trains faster on one thread
        for _ in range(steps):
            batch = make_cluster_task(batch_size, generator)
            loss = nn.functional.mse_loss(moe(batch.x), batch.y)
            optimizer.zero_grad()
            (loss + balance_weight * moe.aux_loss).backward()
            optimizer.step()
            losses.append(loss.item())
            aux_losses.append(moe.aux_loss.item())
            shares.append(moe.routing.share_per_expert())
    test = make_cluster_task(n_test, torch.Generator().manual_seed(999))
    with torch.no_grad():
        test_loss = nn.functional.mse_loss(moe(test.x), test.y).item()
    first = moe.routing.experts[:, 0]  # (N,): each token's best expert
    kind_by_expert = torch.zeros(int(test.kind.max()) + 1, n_experts, dtype=torch.long)
    kind_by_expert.index_put_((test.kind, first), torch.ones_like(first), accumulate=True)
    return RouterRun(losses, aux_losses, torch.stack(shares), test_loss, moe.routing.share_per_expert(),
                     kind_by_expert, moe)


def plot_router_runs(runs: dict[str, RouterRun], window: int = 10):
    """Two rows of panels, one column per run: each expert's share of the tokens during training
    (a moving average over ``window`` steps), and which expert each kind of held-out token went to.

    Returns the Figure.
    """
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("expected at least one RouterRun to plot")
    check_int(window, "window", 1)
    fig, axes = plt.subplots(2, len(runs), figsize=(4.6 * len(runs), 6.4), squeeze=False)
    for column, (name, run) in enumerate(runs.items()):
        top, bottom = axes[0, column], axes[1, column]
        kernel = torch.ones(1, 1, window) / window
        smooth = nn.functional.conv1d(run.shares.t()[:, None, :], kernel).squeeze(1)  # (E, steps - window + 1)
        for e, share in enumerate(smooth):
            top.plot(range(window, window + share.shape[0]), share.numpy(), label=f"expert {e}")
        top.axhline(1 / run.shares.shape[1], color="grey", linestyle=":", label="even share")
        top.set(ylim=(0, 1.02), xlabel="training step", ylabel="share of the tokens", title=name)
        top.legend(fontsize=8, loc="upper left")
        table = run.kind_by_expert.float()
        fractions = table / table.sum(dim=1, keepdim=True).clamp(min=1)  # (kinds, E), rows sum to 1
        bottom.imshow(fractions.numpy(), cmap="Blues", vmin=0, vmax=1)
        bottom.grid(False)
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                bottom.text(j, i, str(int(table[i, j])), ha="center", va="center", fontsize=8,
                            color="white" if fractions[i, j] > 0.5 else "#222222")
        bottom.set(xticks=range(table.shape[1]), yticks=range(table.shape[0]), xlabel="expert (first choice)",
                   ylabel="kind of token", title="held-out tokens: kind -> expert")
    fig.tight_layout()
    return fig
