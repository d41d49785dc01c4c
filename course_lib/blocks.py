"""The pieces of a transformer block: normalisation, the feed-forward network, the encoder block.

Shapes: every module maps (B, T, d_model) -> (B, T, d_model).

``norm_first=False`` is the original "post-LN" block of Vaswani et al. (2017),
``x = norm(x + sublayer(x))``; ``norm_first=True`` is "pre-LN", ``x = x + sublayer(norm(x))``,
which trains more stably in deep stacks (Xiong et al., 2020).
"""
from __future__ import annotations

import torch
from torch import nn

from course_lib.attention import check_module_input
from course_lib.kv_cache import AttentionCache
from course_lib.multihead import MultiHeadAttention
from course_lib.session import one_thread
from course_lib.shapes import check_int, check_shape

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich, 2019): x / rms(x) * gain, no centring, no bias."""

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_module_input(self, x=x)
        check_shape(x, "... d_model", name="x", d_model=self.weight.shape[0])
        rms = torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return x / rms * self.weight


class FeedForward(nn.Module):
    """Position-wise feed-forward network: Linear(d_model, d_ff) -> activation -> dropout -> Linear(d_ff, d_model)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.linear1 = nn.Linear(d_model, d_ff)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_model) -> (..., d_model), each position on its own."""
        check_module_input(self, x=x)
        check_shape(x, "... d_model", name="x", d_model=self.linear1.in_features)
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class EncoderBlock(nn.Module):
    """Self-attention and feed-forward, each with a residual connection and layer norm.

    ``forward(x (B, T, d_model), mask=None, cache=None) -> (B, T, d_model)``; the mask (bool, True =
    may attend) is typically a padding mask of shape (B, 1, 1, T). With a causal mask and an
    :class:`~course_lib.kv_cache.AttentionCache` the same block generates one position at a time,
    as the blocks of a decoder-only model do: ``x`` then holds the new positions only, and the mask
    covers every position cached so far, (T, t + T).
    """

    def __init__(self, d_model: int, h: int, d_ff: int, dropout: float = 0.1, activation: str = "relu",
                 norm_first: bool = False, eps: float = 1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, h, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.attention_weights: torch.Tensor | None = None  # (B, h, T, T) of the last call

    def _sa(self, x, mask, cache):
        out, self.attention_weights = self.self_attn(x, mask=mask, cache=cache)
        return self.dropout1(out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: AttentionCache | None = None) -> torch.Tensor:
        check_module_input(self, x=x)
        check_shape(x, "B T d_model", name="x", d_model=self.norm1.normalized_shape[0])
        if self.norm_first:
            x = x + self._sa(self.norm1(x), mask, cache)
            return x + self.dropout2(self.ff(self.norm2(x)))
        x = self.norm1(x + self._sa(x, mask, cache))
        return self.norm2(x + self.dropout2(self.ff(x)))

    @torch.no_grad()
    def load_from_torch(self, layer: nn.TransformerEncoderLayer) -> "EncoderBlock":
        """Copy the weights of a ``torch.nn.TransformerEncoderLayer`` with the same sizes."""
        self.self_attn.load_from_torch(layer.self_attn)
        _copy_linear_norms(self, layer, ("norm1", "norm2"))
        return self


def _copy_linear_norms(ours: nn.Module, theirs: nn.Module, norms: tuple[str, ...]) -> None:
    ours.ff.linear1.load_state_dict(theirs.linear1.state_dict())
    ours.ff.linear2.load_state_dict(theirs.linear2.state_dict())
    for name in norms:
        getattr(ours, name).load_state_dict(getattr(theirs, name).state_dict())


# --- Notebook 08: the pieces built by hand, measurements and figures ----------------------------------------------


def _positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Layer normalisation by hand: each token is normalised over its own d_model features.

    ``(x - mean) / sqrt(var + eps) * weight + bias``, with the mean and the **biased** variance
    (divide by d_model, not d_model - 1) taken over the last axis, as ``torch.nn.LayerNorm`` does.

    Args:
        x: (..., d_model), floating point; typically (B, T, d_model).
        weight: (d_model,), the gain; bias: (d_model,), the shift.
        eps: a small positive number added to the variance, inside the square root.

    Returns:
        (..., d_model), the same shape as ``x``.
    """
    sizes = check_shape(x, "... d_model", name="x", dtype="float")
    check_shape(weight, "d_model", name="weight", dtype="float", d_model=sizes["d_model"])
    check_shape(bias, "d_model", name="bias", dtype="float", d_model=sizes["d_model"])
    eps = _positive_float("eps", eps)
    mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
    var = (x - mean).pow(2).mean(dim=-1, keepdim=True)  # (..., 1), biased
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def batch_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Batch normalisation (training mode, no gain or bias): each **feature** over every token of the batch.

    The statistics of feature j are taken over all B × T values ``x[:, :, j]``, so a token's
    result depends on the other tokens of the batch. Equals ``nn.BatchNorm1d(d_model, affine=False)``
    in training mode applied to ``x.transpose(1, 2)``.

    Args:
        x: (B, T, d_model), floating point, with B × T > 1.
        eps: a small positive number added to the variance, inside the square root.

    Returns:
        (B, T, d_model).
    """
    sizes = check_shape(x, "B T d_model", name="x", dtype="float")
    eps = _positive_float("eps", eps)
    if sizes["B"] * sizes["T"] < 2:
        raise ValueError(f"batch norm needs more than one token per feature, got B={sizes['B']}, T={sizes['T']}")
    mean = x.mean(dim=(0, 1), keepdim=True)  # (1, 1, d_model)
    var = (x - mean).pow(2).mean(dim=(0, 1), keepdim=True)  # (1, 1, d_model), biased
    return (x - mean) / torch.sqrt(var + eps)


def parameters_per_component(block: EncoderBlock) -> dict[str, int]:
    """Count an :class:`EncoderBlock`'s parameters by component.

    Returns:
        ``{"self-attention": 4 d² + 4 d, "feed-forward": 2 d d_ff + d_ff + d, "layer norms": 4 d}``
        (with biases); the values add up to the block's total.
    """
    if not isinstance(block, EncoderBlock):
        raise TypeError(f"expected an EncoderBlock, got {type(block).__name__}")
    def count(*modules: nn.Module) -> int:
        return sum(p.numel() for module in modules for p in module.parameters())

    return {"self-attention": count(block.self_attn), "feed-forward": count(block.ff),
            "layer norms": count(block.norm1, block.norm2)}


def gradient_norms_per_layer(layers, x: torch.Tensor, loss_fn) -> torch.Tensor:
    """Run ``x`` through ``layers`` in order and measure the gradient of each layer's parameters.

    Args:
        layers: a sequence of modules, each (B, T, d_model) -> (B, T, d_model), e.g. EncoderBlocks.
        x: (B, T, d_model), the input of the first layer.
        loss_fn: maps the last layer's output to a scalar loss.

    Returns:
        (L,): for each layer, the L2 norm of the gradient of the loss with respect to all of
        that layer's parameters together. The parameters' ``.grad`` are left untouched.
    """
    layers = list(layers)
    if not layers:
        raise ValueError("expected at least one layer")
    check_shape(x, "B T d_model", name="x", dtype="float")
    params = [[p for p in layer.parameters() if p.requires_grad] for layer in layers]
    if any(not p for p in params):
        raise ValueError("every layer needs at least one trainable parameter")
    y = x
    for layer in layers:
        y = layer(y)
    loss = loss_fn(y)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r:.60}")
    flat = [p for group in params for p in group]
    grads = torch.autograd.grad(loss, flat)
    norms, start = [], 0
    for group in params:
        squares = sum(g.pow(2).sum() for g in grads[start:start + len(group)])
        norms.append(torch.sqrt(squares))
        start += len(group)
    return torch.stack(norms).detach()


def init_gradient_norms(depth: int, norm_first: bool, d_model: int = 64, h: int = 4, n_seeds: int = 4,
                        batch_size: int = 4, T: int = 16, n_classes: int = 10, seed: int = 0) -> torch.Tensor:
    """Per-layer gradient norms of a freshly initialised stack of EncoderBlocks, averaged over seeds.

    For each of ``n_seeds`` seeds: a stack of ``depth`` blocks (d_ff = 4 d_model, no dropout),
    a final LayerNorm (as every stack in course_lib ends with one), a random linear read-out
    to ``n_classes`` classes and a cross-entropy loss against random labels on random inputs
    (B, T, d_model) -- what a classifier sees before training. Uses its own random numbers
    and leaves the global generator alone; runs on one CPU thread (these models are tiny).

    Returns:
        (depth,): the root mean square over seeds of each layer's gradient norm.
    """
    depth, n_seeds = check_int(depth, "depth", 1), check_int(n_seeds, "n_seeds", 1)
    if not isinstance(norm_first, bool):
        raise TypeError(f"norm_first must be True or False, got {norm_first!r}")
    squares = torch.zeros(depth)
    with torch.random.fork_rng(devices=[]), one_thread():
        for s in range(n_seeds):
            torch.manual_seed(seed * 1000 + s)
            layers = [EncoderBlock(d_model, h, 4 * d_model, dropout=0.0, norm_first=norm_first)
                      for _ in range(depth)]
            final_norm = nn.LayerNorm(d_model)
            readout = torch.randn(d_model, n_classes) / d_model ** 0.5  # (d_model, n_classes)
            x = torch.randn(batch_size, T, d_model)
            labels = torch.randint(0, n_classes, (batch_size * T,))

            def loss_fn(y):
                logits = final_norm(y) @ readout  # (B, T, n_classes)
                return nn.functional.cross_entropy(logits.reshape(-1, n_classes), labels)

            squares += gradient_norms_per_layer(layers, x, loss_fn).pow(2)
    return (squares / n_seeds).sqrt()


def plot_gradient_norms(norms: dict[str, torch.Tensor], ax=None, title: str | None = None):
    """Line plot of per-layer gradient norms, one line per entry of ``norms`` (label -> (L,)).

    Layers are numbered from 1 (next to the input) to L (next to the output). Returns the Axes.
    """
    import matplotlib.pyplot as plt

    if not norms:
        raise ValueError("expected at least one series of gradient norms")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.8))
    for (label, values), marker in zip(norms.items(), "osd^v<>"):
        check_shape(values, "L", name=f"norms[{label!r}]")
        values = values.detach().float().cpu()
        ax.plot(range(1, len(values) + 1), values.numpy(), marker=marker, label=label)
    ax.set_xlabel("layer (1 = next to the input)")
    ax.set_ylabel("gradient norm of the layer's parameters")
    ax.set_ylim(bottom=0)
    longest = max(len(v) for v in norms.values())
    ax.set_xticks(range(1, longest + 1, max(1, longest // 12)))
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


def plot_normalised_slice(kind: str, B: int = 3, T: int = 4, d_model: int = 5, ax=None, token: tuple[int, int] = (0, 1),
                          feature: int = 2):
    """Draw a (B, T, d_model) batch as a block of cubes and highlight what one normalisation step averages over.

    ``kind="layer"`` (LayerNorm, RMSNorm): one token ``x[b, t, :]``, all its d_model features.
    ``kind="batch"`` (BatchNorm): one feature ``x[:, :, j]`` across every token of the batch.
    Needs an Axes with ``projection="3d"`` (made when ``ax`` is None). Returns the Axes.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if kind not in ("layer", "batch"):
        raise ValueError(f"kind must be 'layer' or 'batch', got {kind!r}")
    for name, value in (("B", B), ("T", T), ("d_model", d_model)):
        check_int(value, name, 1)
    b, t = token
    if not (0 <= b < B and 0 <= t < T and 0 <= feature < d_model):
        raise ValueError(f"token {token} or feature {feature} is outside (B={B}, T={T}, d_model={d_model})")
    if ax is None:
        ax = plt.figure(figsize=(4.5, 4.2)).add_subplot(projection="3d")
    highlight = np.zeros((d_model, B, T), dtype=bool)  # axes of the picture: x = feature, y = batch, z = time
    if kind == "layer":
        highlight[:, b, t] = True
        colour = "#E69F00"
        what = f"LayerNorm: one token x[{b}, {t}, :],\nover its d_model = {d_model} features"
    else:
        highlight[feature] = True
        colour = "#0072B2"
        what = f"BatchNorm: one feature x[:, :, {feature}],\nover all B·T = {B * T} tokens of the batch"
    ax.voxels(~highlight, facecolors="#cccccc22", edgecolor="#88888888", linewidth=0.4)
    ax.voxels(highlight, facecolors=colour + "dd", edgecolor="#333333", linewidth=0.6)
    ax.set_xlabel("d_model (feature)")
    ax.set_ylabel("B (sequence)")
    ax.set_zlabel("T (position)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_zticks([])
    ax.set_box_aspect((d_model, B, T))
    ax.view_init(elev=22, azim=-55)
    ax.set_title(what, fontsize=11)
    return ax
