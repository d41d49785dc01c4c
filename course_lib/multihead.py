"""Multi-head attention: h scaled dot-product attentions side by side, then mixed by W_O.

Shapes, with d_k = d_model / h:

    x: (B, T, d_model)  --W_Q-->  (B, T, d_model)  --split_heads-->  (B, h, T, d_k)
    attention per head: (B, h, T_q, d_k) x (B, h, T_k, d_k) -> (B, h, T_q, d_k)
    merge_heads: (B, h, T_q, d_k) -> (B, T_q, d_model)  --W_O-->  (B, T_q, d_model)

Masks follow course_lib.attention: bool True = may attend (or float, added to the
scores), broadcastable to (B, h, T_q, T_k); a padding mask (B, 1, 1, T_k) or a causal mask
(T_q, T_k) both broadcast.

Notebook 07 also uses: :func:`plot_split_merge_steps` and :func:`plot_wrong_split` (pictures of
the reshapes), and a small task on which two heads specialise, the *look-back* task
(:func:`make_lookback_batch`, :class:`LookbackModel`, :func:`train_lookback`,
:func:`evaluate_lookback`, :func:`head_focus`, :func:`plot_lookback_attention`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from course_lib.attention import attention_weights, check_module_input
from course_lib.kv_cache import AttentionCache
from course_lib.masking import causal_mask
from course_lib.session import one_thread
from course_lib.shapes import check_int, check_shape

#: Names of the letters on the cards of the look-back task, and of tokens in the pictures.
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def split_heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, T, d_model) -> (B, h, T, d_k): head i gets columns i*d_k ... (i+1)*d_k - 1."""
    sizes = check_shape(x, "B T d_model", name="x")
    if not isinstance(h, int) or h < 1 or sizes["d_model"] % h:
        raise ValueError(f"h must be a positive int that divides d_model={sizes['d_model']}, got h={h!r}")
    B, T, d_model = x.shape
    return x.reshape(B, T, h, d_model // h).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, T, d_k) -> (B, T, h * d_k): the inverse of :func:`split_heads`."""
    check_shape(x, "B h T d_k", name="x")
    B, h, T, d_k = x.shape
    return x.transpose(1, 2).reshape(B, T, h * d_k)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with projections W_Q, W_K, W_V, W_O (each d_model x d_model, with bias).

    Same parameters and FLOPs as one full-width head: the heads split d_model, they do
    not multiply it. ``forward(query, key=None, value=None, mask=None, cache=None)`` returns
    ``(output (B, T_q, d_model), weights (B, h, T_q, T_k))``; ``key``/``value`` default to
    ``query`` (self-attention); pass the encoder output as both for cross-attention.

    With a :class:`~course_lib.kv_cache.AttentionCache` (decoding one token at a time, notebook 12)
    the keys and values are kept between calls: a self-attention cache appends the new positions'
    keys and values and attends over all of them (T_k = the positions cached so far); a
    cross-attention cache (``fixed=True``) projects ``key``/``value`` at its first call only and
    reuses them after.
    """

    def __init__(self, d_model: int, h: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if not isinstance(d_model, int) or not isinstance(h, int) or d_model < 1 or h < 1 or d_model % h:
            raise ValueError(f"d_model must be divisible by h (both positive ints), got d_model={d_model!r}, h={h!r}")
        self.d_model, self.h, self.d_k = d_model, h, d_model // h
        self.w_q = nn.Linear(d_model, d_model, bias=bias)
        self.w_k = nn.Linear(d_model, d_model, bias=bias)
        self.w_v = nn.Linear(d_model, d_model, bias=bias)
        self.w_o = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, cache: AttentionCache | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        key = query if key is None else key
        value = key if value is None else value
        check_module_input(self, query=query, key=key, value=value)
        sizes = check_shape(query, "B T_q d_model", name="query", d_model=self.d_model)
        check_shape(key, "B T_k d_model", name="key", B=sizes["B"], d_model=self.d_model)
        check_shape(value, "B T_k d_model", name="value", B=sizes["B"], d_model=self.d_model, T_k=key.shape[1])
        if cache is not None:
            self._check_cache(cache, sizes["B"])
        q = split_heads(self.w_q(query), self.h)  # (B, h, T_q, d_k)
        if cache is not None and cache.fixed and not cache.is_empty:
            k, v = cache.k, cache.v  # cross-attention: the memory's keys and values, projected at the first call
        else:
            k = split_heads(self.w_k(key), self.h)  # (B, h, T_k, d_k)
            v = split_heads(self.w_v(value), self.h)  # (B, h, T_k, d_k)
            if cache is not None:
                k, v = cache.add(k, v)  # self-attention: the earlier positions' keys and values, then these
        if mask is not None and mask.dim() == 3:  # (B, T_q or 1, T_k): add the head axis
            mask = mask.unsqueeze(1)
        weights = attention_weights(q, k, mask=mask)  # (B, h, T_q, T_k)
        out = self.dropout(weights) @ v  # (B, h, T_q, d_k)
        return self.w_o(merge_heads(out)), weights

    def _check_cache(self, cache, B: int) -> None:
        """Refuse anything but an AttentionCache whose keys fit this module and this batch."""
        if not isinstance(cache, AttentionCache):
            raise TypeError(f"cache: expected an AttentionCache (course_lib.kv_cache), got {type(cache).__name__}")
        if cache.k is not None and (cache.k.shape[0], cache.k.shape[1], cache.k.shape[3]) != (B, self.h, self.d_k):
            raise ValueError(f"cache holds keys of shape {tuple(cache.k.shape)}, expected (B, h, t, d_k) with "
                             f"B={B}, h={self.h}, d_k={self.d_k}: was it made for another batch or model? "
                             "(after choosing rows of the batch, reorder the cache with them)")

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> "MultiHeadAttention":
        """Copy the weights of a ``torch.nn.MultiheadAttention`` (same d_model and heads)."""
        if mha.embed_dim != self.d_model or mha.num_heads != self.h:
            raise ValueError(f"expected nn.MultiheadAttention({self.d_model}, {self.h}), "
                             f"got ({mha.embed_dim}, {mha.num_heads})")
        if not mha._qkv_same_embed_dim:
            raise ValueError("only nn.MultiheadAttention with kdim = vdim = embed_dim is supported")
        for i, linear in enumerate((self.w_q, self.w_k, self.w_v)):
            linear.weight.copy_(mha.in_proj_weight[i * self.d_model:(i + 1) * self.d_model])
            if linear.bias is not None:
                linear.bias.copy_(mha.in_proj_bias[i * self.d_model:(i + 1) * self.d_model])
        self.w_o.weight.copy_(mha.out_proj.weight)
        if self.w_o.bias is not None:
            self.w_o.bias.copy_(mha.out_proj.bias)
        return self


# --- pictures of the head split (notebook 07) -------------------------------------------------------

def _token_names(tokens, T: int) -> list[str]:
    if tokens is None:
        if T > 26:
            raise ValueError(f"name at most 26 tokens by default, got T={T}; pass tokens=[...]")
        return list(LETTERS[:T])
    tokens = [str(t) for t in tokens]
    if len(tokens) != T:
        raise ValueError(f"expected {T} token names, got {len(tokens)}")
    return tokens


def _check_sizes(T, d_model, h) -> int:
    T, d_model, h = check_int(T, "T", 1), check_int(d_model, "d_model", 1), check_int(h, "h", 1)
    if d_model % h:
        raise ValueError(f"h must divide d_model, got d_model={d_model}, h={h}")
    return d_model // h


def _draw_blocks(ax, codes, T: int, d_model: int, d_k: int, tokens, block_names, row_names, title: str,
                 prime: bool = False, total_height: int | None = None) -> None:
    """Draw ``codes`` (n_blocks, rows, cols) of element ids ``t * d_model + j`` as labelled grids.

    Blocks are stacked from top to bottom with a gap; each cell says which token ``t`` and which
    feature ``j`` of ``x`` it holds, coloured by the head that owns feature ``j``.
    """
    import numpy as np
    from matplotlib.colors import ListedColormap

    from course_lib.plotting import PALETTE

    n_blocks, rows, cols = codes.shape
    height = n_blocks * rows + (n_blocks - 1)
    grid = np.full((height, cols), np.nan)
    colours = [c for c in PALETTE[:-1] if c != "#F0E442"]  # no black, no pale yellow: white text must read
    for b in range(n_blocks):
        top = b * (rows + 1)
        for r in range(rows):
            for c in range(cols):
                code = int(codes[b, r, c])
                t, j = divmod(code, d_model)
                head = j // d_k
                grid[top + r, c] = head % len(colours)
                label = f"{tokens[t]}{j}" + ("′" if prime else "")
                ax.text(c, top + r, label, ha="center", va="center", fontsize=8,
                        color="white", fontweight="bold")
    cmap = ListedColormap(colours).with_extremes(bad="white")
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=len(colours) - 1, aspect="equal", interpolation="nearest")
    pad = (max(total_height or height, height) - height) / 2  # centre the grid in a common height
    ax.set_ylim(height - 0.5 + pad, -0.5 - pad)
    ax.set_xticks(np.arange(-0.5, cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, height, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.grid(which="major", visible=False)
    ax.tick_params(which="both", length=0)
    ax.set_xticks([])
    ticks, labels = [], []
    for b in range(n_blocks):
        for r in range(rows):
            ticks.append(b * (rows + 1) + r)
            labels.append(f"{block_names[b]}  {row_names[r]}" if r == 0 and block_names[b] else row_names[r])
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, fontsize=9)


def plot_split_merge_steps(T: int = 3, d_model: int = 4, h: int = 2, tokens=None):
    """Draw every step of multi-head attention's reshapes for one sequence (B = 1), with shapes.

    ``x (B, T, d_model)`` → ``view (B, T, h, d_k)`` → ``transpose(1, 2)`` → ``(B, h, T, d_k)`` →
    attention in each head (same shape) → ``transpose(1, 2)`` → ``(B, T, h, d_k)`` →
    ``reshape (B, T, d_model)``. Each cell is labelled with the token and the feature of ``x`` it
    holds (``b3``: token b, feature 3), computed by applying these very operations to element ids,
    and coloured by the head that owns the feature. Returns the Figure.

    Args:
        T, d_model, h: sizes (``h`` must divide ``d_model``); small ones read best (3, 4, 2).
        tokens: T short names for the tokens (default ``a, b, c, ...``).
    """
    import matplotlib.pyplot as plt

    d_k = _check_sizes(T, d_model, h)
    tokens = _token_names(tokens, T)
    x = torch.arange(T * d_model).reshape(1, T, d_model)  # element ids
    viewed = x.view(1, T, h, d_k)  # (B, T, h, d_k)
    heads = viewed.transpose(1, 2)  # (B, h, T, d_k)
    back = heads.transpose(1, 2)  # (B, T, h, d_k)
    merged = back.reshape(1, T, d_model)  # (B, T, d_model)
    head_names = [f"head {i}" for i in range(h)]
    token_rows = [f"{t}" for t in tokens]
    steps = [
        (x, [""], token_rows, f"1. x\n(B, T, d_model) = (1, {T}, {d_model})", False, d_model),
        (viewed[0], tokens, head_names, f"2. .view(B, T, h, d_k)\n(1, {T}, {h}, {d_k})", False, d_k),
        (heads[0], head_names, token_rows, f"3. .transpose(1, 2)\n(B, h, T, d_k) = (1, {h}, {T}, {d_k})",
         False, d_k),
        (heads[0], head_names, token_rows, f"4. attention in each head\n(1, {h}, {T}, {d_k}): same shape",
         True, d_k),
        (back[0], tokens, head_names, f"5. .transpose(1, 2)\n(B, T, h, d_k) = (1, {T}, {h}, {d_k})", True, d_k),
        (merged, [""], token_rows, f"6. .reshape(B, T, d_model)\n(1, {T}, {d_model}), then W_O", True, d_model),
    ]
    widths = [cols + 1.6 for *_, cols in steps]
    fig, axes = plt.subplots(1, len(steps), figsize=(0.62 * sum(widths) + 1, 0.42 * (T * h + T) + 2.2),
                             gridspec_kw={"width_ratios": widths})
    total = T * h + T - 1  # the tallest panel: T blocks of h rows
    for ax, (codes, blocks, rows, title, prime, _) in zip(axes, steps):
        _draw_blocks(ax, codes, T, d_model, d_k, tokens, blocks, rows, title, prime=prime, total_height=total)
    fig.suptitle(f"Splitting into h={h} heads and merging back (T={T}, d_model={d_model}, d_k={d_k}); "
                 "a cell 'b3' holds feature 3 of token b, ′ = after attention; colour = head", fontsize=10)
    fig.tight_layout()
    return fig


def plot_wrong_split(T: int = 3, d_model: int = 4, h: int = 2, tokens=None):
    """Compare the right split with ``x.reshape(B, h, T, d_k)`` without the transpose (B = 1).

    Three panels: ``x``; ``x.view(B, T, h, d_k).transpose(1, 2)`` (each head holds every token's
    own block of features); ``x.reshape(B, h, T, d_k)`` (same shape, but a head's "rows" are
    consecutive chunks of the flattened tensor, which mixes tokens and features). Returns the Figure.
    """
    import matplotlib.pyplot as plt

    d_k = _check_sizes(T, d_model, h)
    tokens = _token_names(tokens, T)
    x = torch.arange(T * d_model).reshape(1, T, d_model)
    right = x.view(1, T, h, d_k).transpose(1, 2)[0]  # (h, T, d_k)
    wrong = x.reshape(1, h, T, d_k)[0]  # (h, T, d_k): WRONG
    head_names = [f"head {i}" for i in range(h)]
    widths = [d_model + 1.6, d_k + 2.4, d_k + 2.4]
    fig, axes = plt.subplots(1, 3, figsize=(0.7 * sum(widths) + 2, 0.42 * (T * h + h) + 2.2),
                             gridspec_kw={"width_ratios": widths})
    total = T * h + h - 1  # h blocks of T rows
    _draw_blocks(axes[0], x, T, d_model, d_k, tokens, [""], tokens,
                 f"x\n(B, T, d_model) = (1, {T}, {d_model})", total_height=total)
    _draw_blocks(axes[1], right, T, d_model, d_k, tokens, head_names, tokens,
                 f"right: .view(B, T, h, d_k).transpose(1, 2)\n(1, {h}, {T}, {d_k})", total_height=total)
    _draw_blocks(axes[2], wrong, T, d_model, d_k, tokens, head_names, [f"row {t}" for t in range(T)],
                 f"wrong: .reshape(B, h, T, d_k)\n(1, {h}, {T}, {d_k}): same shape, mixed tokens",
                 total_height=total)
    fig.suptitle(f"Two ways to get shape (B, h, T, d_k) = (1, {h}, {T}, {d_k}); colour = the head "
                 "that should own the feature", fontsize=10)
    fig.tight_layout()
    return fig


# --- a task that needs two heads (notebook 07) ----------------------------------------------------------
#
# A sequence of 2 * n_pairs cards, each a letter and a digit, e.g. ``c7 a2 f5 b0 e9 b3 f1 c4 e8 a6``:
# the first n_pairs cards have different letters, the last n_pairs bring the same letters back in
# another order, with new digits. Every card of the second half must answer two questions:
#   - previous: the digit of the card just before it (b3 -> 9, from e9);
#   - match: the digit its letter had the first time (b3 -> 0, from b0).
# One attention head can look at one place at a time; two heads can look at both.


@dataclass(frozen=True)
class LookbackBatch:
    """A batch of look-back sequences; every tensor holds integer ids (``torch.long``).

    Attributes:
        letters, digits: (B, T) with T = 2 * n_pairs: the cards.
        previous: (B, n_pairs), the answer to "the digit of the card before me" for each card of
            the second half (positions n_pairs ... T - 1).
        match: (B, n_pairs), the answer to "the digit my letter had the first time".
        match_position: (B, n_pairs), where that first card is (0 ... n_pairs - 1).
    """

    letters: torch.Tensor
    digits: torch.Tensor
    previous: torch.Tensor
    match: torch.Tensor
    match_position: torch.Tensor

    @property
    def n_pairs(self) -> int:
        return self.previous.shape[1]

    @property
    def T(self) -> int:
        return self.letters.shape[1]

    def __len__(self) -> int:
        return self.letters.shape[0]

    def labels(self, i: int) -> list[str]:
        """The cards of sequence ``i`` as text: ``["c7", "a2", ...]``."""
        if not 0 <= i < len(self):
            raise IndexError(f"sequence {i} out of range for a batch of {len(self)}")
        return [f"{LETTERS[a]}{d}" for a, d in zip(self.letters[i].tolist(), self.digits[i].tolist())]


def make_lookback_batch(batch_size: int, n_pairs: int = 5, n_letters: int = 8, n_digits: int = 10,
                        generator: torch.Generator | None = None) -> LookbackBatch:
    """Draw ``batch_size`` look-back sequences of T = 2 * n_pairs cards.

    The first half has ``n_pairs`` different letters (out of ``n_letters``) with random digits;
    the second half has the same letters in a random order, with new random digits.
    """
    batch_size = check_int(batch_size, "batch_size", 1)
    n_pairs, n_digits = check_int(n_pairs, "n_pairs", 1), check_int(n_digits, "n_digits", 2)
    n_letters = check_int(n_letters, "n_letters", 1)
    if not n_pairs <= n_letters <= len(LETTERS):
        raise ValueError(f"need n_pairs <= n_letters <= {len(LETTERS)}, got n_pairs={n_pairs}, n_letters={n_letters}")
    first = torch.rand(batch_size, n_letters, generator=generator).argsort(dim=-1)[:, :n_pairs]  # distinct
    order = torch.rand(batch_size, n_pairs, generator=generator).argsort(dim=-1)  # (B, n_pairs)
    letters = torch.cat([first, first.gather(1, order)], dim=1)  # (B, T)
    digits = torch.randint(n_digits, (batch_size, 2 * n_pairs), generator=generator)  # (B, T)
    previous = digits[:, n_pairs - 1:-1]  # card t's previous card is t - 1
    match = digits.gather(1, order)  # second-half card k has the letter of first-half card order[k]
    return LookbackBatch(letters, digits, previous, match, order)


class LookbackModel(nn.Module):
    """Embeddings, one :class:`MultiHeadAttention` with a causal mask, and two linear read-outs.

    Each card is ``letter_embedding + digit_embedding + position_embedding`` (width ``d_model``).
    The read-outs see only what the attention read (no residual connection): ``read_previous``
    and ``read_match`` turn it into scores for the two answers.

    Args:
        n_letters, n_digits, n_pairs: the task's sizes. d_model: width. h: number of heads.
    """

    def __init__(self, n_letters: int = 8, n_digits: int = 10, n_pairs: int = 5, d_model: int = 32, h: int = 2):
        super().__init__()
        self.n_letters, self.n_digits = check_int(n_letters, "n_letters", 1), check_int(n_digits, "n_digits", 2)
        self.n_pairs = check_int(n_pairs, "n_pairs", 1)
        self.letter_embedding = nn.Embedding(n_letters, d_model)
        self.digit_embedding = nn.Embedding(n_digits, d_model)
        self.position_embedding = nn.Embedding(2 * n_pairs, d_model)
        self.attention = MultiHeadAttention(d_model, h)
        self.read_previous = nn.Linear(d_model, n_digits)
        self.read_match = nn.Linear(d_model, n_digits)

    def forward(self, letters: torch.Tensor, digits: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores for both answers, and the attention weights.

        Args:
            letters, digits: (B, T) integer ids, T = 2 * n_pairs.

        Returns:
            ``(previous_logits, match_logits, weights)``: (B, n_pairs, n_digits) twice, for the cards
            of the second half, and weights (B, h, T, T).
        """
        T = 2 * self.n_pairs
        check_shape(letters, "B T", name="letters", dtype="int", T=T)
        check_shape(digits, "B T", name="digits", dtype="int", B=letters.shape[0], T=T)
        for name, ids, limit in (("letters", letters, self.n_letters), ("digits", digits, self.n_digits)):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= limit):
                raise ValueError(f"{name}: ids must lie in 0..{limit - 1}, got {int(ids.min())}..{int(ids.max())}")
        positions = torch.arange(T, device=letters.device)
        x = self.letter_embedding(letters) + self.digit_embedding(digits) + self.position_embedding(positions)
        read, weights = self.attention(x, mask=causal_mask(T, device=letters.device))  # (B, T, d_model)
        second_half = read[:, self.n_pairs:]  # (B, n_pairs, d_model)
        return self.read_previous(second_half), self.read_match(second_half), weights

    def answer(self, batch: LookbackBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward`` on a :class:`LookbackBatch`."""
        return self(batch.letters, batch.digits)


def lookback_loss(previous_logits: torch.Tensor, match_logits: torch.Tensor, batch: LookbackBatch) -> torch.Tensor:
    """Cross-entropy of the "previous" answers plus that of the "match" answers (2 log 10 ≈ 4.61 when guessing).

    Args:
        previous_logits, match_logits: (B, n_pairs, n_digits).
    """
    sizes = check_shape(previous_logits, "B n_pairs n_digits", name="previous_logits", dtype="float",
                        B=len(batch), n_pairs=batch.n_pairs)
    check_shape(match_logits, "B n_pairs n_digits", name="match_logits", dtype="float", **sizes)
    ce = torch.nn.functional.cross_entropy
    n = sizes["n_digits"]
    return ce(previous_logits.reshape(-1, n), batch.previous.reshape(-1)) + \
        ce(match_logits.reshape(-1, n), batch.match.reshape(-1))


def train_lookback(model: LookbackModel, steps: int = 200, batch_size: int = 128, lr: float = 1e-2,
                   seed: int = 0) -> list[float]:
    """Train ``model`` with Adam on fresh batches from a generator seeded with ``seed``; returns every loss.

    The model's initial weights come from torch's global generator (seed it before building it).
    Training runs on one CPU thread, restored afterwards: its tensors are so small that handing
    them between threads costs more than it saves, most of all on a busy machine.
    """
    steps, batch_size = check_int(steps, "steps", 1), check_int(batch_size, "batch_size", 1)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    try:
        with one_thread():
            for _ in range(steps):
                batch = make_lookback_batch(batch_size, model.n_pairs, model.n_letters, model.n_digits, generator)
                previous_logits, match_logits, _ = model.answer(batch)
                loss = lookback_loss(previous_logits, match_logits, batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
    finally:
        model.eval()
    return losses


@torch.no_grad()
def evaluate_lookback(model: LookbackModel, batch: LookbackBatch) -> dict[str, float]:
    """Fractions answered right: ``previous``, ``match``, ``both`` (both answers of a card right); and ``loss``."""
    previous_logits, match_logits, _ = model.answer(batch)
    right_previous = previous_logits.argmax(dim=-1) == batch.previous
    right_match = match_logits.argmax(dim=-1) == batch.match
    return {"previous": right_previous.float().mean().item(), "match": right_match.float().mean().item(),
            "both": (right_previous & right_match).float().mean().item(),
            "loss": lookback_loss(previous_logits, match_logits, batch).item()}


def head_focus(weights: torch.Tensor, batch: LookbackBatch) -> torch.Tensor:
    """Mean weight that each head's second-half queries put on the previous card and on the same-letter card.

    Cards whose previous card *is* their same-letter card are left out, so the two numbers do not
    overlap.

    Args:
        weights: (B, h, T, T), as returned by :class:`LookbackModel`.

    Returns:
        (h, 2): column 0 the weight on the previous card, column 1 on the same-letter card.
    """
    sizes = check_shape(weights, "B h T T", name="weights", B=len(batch), T=batch.T)
    n = batch.n_pairs
    rows = weights[:, :, n:, :]  # (B, h, n_pairs, T): the queries of the second half
    previous_position = torch.arange(n - 1, 2 * n - 1).expand(len(batch), n)  # (B, n_pairs)
    index = lambda pos: pos[:, None, :, None].expand(-1, sizes["h"], -1, 1)  # noqa: E731
    on_previous = rows.gather(-1, index(previous_position))[..., 0]  # (B, h, n_pairs)
    on_match = rows.gather(-1, index(batch.match_position))[..., 0]
    distinct = (previous_position != batch.match_position)[:, None, :].expand_as(on_previous)
    return torch.stack([_masked_mean(on_previous, distinct), _masked_mean(on_match, distinct)], dim=-1)


def _masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the batch and query axes of (B, h, n) ``values`` where ``keep``: -> (h,)."""
    keep = keep.to(values.dtype)
    return (values * keep).sum(dim=(0, 2)) / keep.sum(dim=(0, 2)).clamp(min=1)


def plot_lookback_attention(weights: torch.Tensor, batch: LookbackBatch, i: int, ax=None, title: str | None = None,
                            colorbar: bool = True):
    """One head's attention map for sequence ``i``: the second-half cards (rows) reading every card (columns).

    The previous card of each row is outlined with a dashed orange box, the card with the same
    letter with a green box, so one can see which of the two a head looks at.

    Args:
        weights: (T, T), e.g. ``weights[i, head]`` from :class:`LookbackModel`.

    Returns:
        The matplotlib Axes.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from course_lib.attention import plot_attention

    check_shape(weights, "T T", name="weights", T=batch.T)
    labels = batch.labels(i)
    n = batch.n_pairs
    ax = plot_attention(weights[n:], labels[n:], labels, ax=ax, title=title, colorbar=colorbar,
                        xlabel="card (key)", ylabel="second-half card (query)")
    for row in range(n):
        ax.add_patch(Rectangle((n - 1 + row - 0.45, row - 0.45), 0.9, 0.9, fill=False, edgecolor="#E69F00",
                               linewidth=2.2, linestyle="--"))
        ax.add_patch(Rectangle((int(batch.match_position[i, row]) - 0.38, row - 0.38), 0.76, 0.76, fill=False,
                               edgecolor="#009E73", linewidth=2.2))
    ax.legend(handles=[Line2D([], [], color="#E69F00", linestyle="--", linewidth=2, label="previous card"),
                       Line2D([], [], color="#009E73", linewidth=2, label="same letter, first time")],
              loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8)
    return ax
