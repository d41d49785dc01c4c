"""The recurrent encoder–decoders that attention replaced, small enough to train in seconds (notebook 09).

- :class:`GRUSeq2Seq` with ``attention=False``: a GRU reads the source and hands **one fixed-size
  vector**, its last state, to a GRU that writes the target (Sutskever, Vinyals & Le, 2014, with LSTMs;
  Cho et al., 2014, with the gated recurrent unit used here).
- :class:`GRUSeq2Seq` with ``attention=True``: the decoder keeps every encoder state and, before each
  step, takes a weighted average of them with weights from the **additive** score
  ``v · tanh(W_q s + W_k h_j)`` (Bahdanau, Cho & Bengio, 2015): the first cross-attention.

Both share the interface of :class:`~course_lib.transformer.Seq2SeqTransformer` (``encode``, ``decode``,
``forward``, ``pad_id``), so ``toy_tasks.train_reversal``, ``toy_tasks.evaluate_reversal`` and
``transformer.greedy_decode`` work on them unchanged.

The section's measurements live here too: :func:`exact_match_by_length` and the forward-pass timings of
a recurrent layer against a self-attention layer (:func:`time_forward_passes`).
"""
from __future__ import annotations

import time

import torch
from torch import nn

from course_lib.session import one_thread
from course_lib.shapes import check_int, check_shape
from course_lib.transformer import check_token_ids


class GRUSeq2Seq(nn.Module):
    """A GRU encoder–decoder on token ids, with one fixed vector or with additive attention between them.

    Args:
        src_vocab, tgt_vocab: vocabulary sizes. d_model: width of the embeddings and of the GRU states.
        attention: False for the fixed-vector model, True for Bahdanau's additive attention, whose score
            ``v · tanh(W_q s + W_k h_j)`` has its three parts in ``score_query`` (W_q), ``score_key`` (W_k)
            and ``score_out`` (v).
        pad_id: the padding id of the sources (right padding) and of the decoder input.

    Shapes: ``src`` (B, S) ids, ``tgt_in`` (B, T) ids; logits (B, T, tgt_vocab). After each ``decode``
    with attention, ``attention_weights`` holds the weights (B, T, S).
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int = 64, attention: bool = False,
                 pad_id: int = 0):
        super().__init__()
        for name, value in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab), ("d_model", d_model)):
            check_int(value, name, 1)
        check_int(pad_id, "pad_id", 0)
        self.d_model, self.attention, self.pad_id = d_model, bool(attention), pad_id
        self.src_embed = nn.Embedding(src_vocab, d_model)
        self.tgt_embed = nn.Embedding(tgt_vocab, d_model)
        self.encoder = nn.GRU(d_model, d_model, batch_first=True)
        if self.attention:
            self.score_query = nn.Linear(d_model, d_model, bias=False)  # projects the decoder state
            self.score_key = nn.Linear(d_model, d_model, bias=False)  # projects each encoder state
            self.score_out = nn.Linear(d_model, 1, bias=False)  # reads one score out of tanh(...)
            self.decoder_cell = nn.GRUCell(2 * d_model, d_model)  # input: [embedding, context]
            self.out = nn.Linear(2 * d_model, tgt_vocab)  # from [state, context]
        else:
            self.decoder = nn.GRU(d_model, d_model, batch_first=True)
            self.out = nn.Linear(d_model, tgt_vocab)
        self.attention_weights: torch.Tensor | None = None

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) ids -> (states (B, S, d_model), src_mask (B, S), True at the real tokens).

        The GRU runs left to right, so the state at a row's last real token has read the whole row and
        nothing of the padding after it.
        """
        check_shape(src, "B S", name="src", dtype="int")
        check_token_ids(src, self.src_embed, "src")
        src_mask = src != self.pad_id  # (B, S)
        if not src_mask[:, 0].all():
            raise ValueError("src: every row needs at least one real token, and the padding on the right")
        states, _ = self.encoder(self.src_embed(src))  # (B, S, d_model)
        return states, src_mask

    @staticmethod
    def summary(states: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """The encoder state at each row's last real token: (B, S, d_model) -> (B, d_model)."""
        last = src_mask.sum(dim=1) - 1  # (B,)
        return states[torch.arange(states.shape[0], device=states.device), last]

    def decode(self, tgt_in: torch.Tensor, states: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """tgt_in (B, T) ids, the encoder's (states, src_mask) -> logits (B, T, tgt_vocab)."""
        sizes = check_shape(tgt_in, "B T", name="tgt_in", dtype="int")
        check_shape(states, "B S d_model", name="states", B=sizes["B"], d_model=self.d_model)
        check_token_ids(tgt_in, self.tgt_embed, "tgt_in")
        state = self.summary(states, src_mask)  # (B, d_model): the one vector the decoder starts from
        embedded = self.tgt_embed(tgt_in)  # (B, T, d_model)
        if not self.attention:
            outputs, _ = self.decoder(embedded, state[None])  # (B, T, d_model)
            return self.out(outputs)
        keys = self.score_key(states)  # (B, S, d_model): computed once, used at every step
        logits, weights = [], []
        for t in range(tgt_in.shape[1]):
            scores = self.score_out(torch.tanh(self.score_query(state)[:, None, :] + keys)).squeeze(-1)  # (B, S)
            alpha = torch.softmax(scores.masked_fill(~src_mask, float("-inf")), dim=-1)  # (B, S)
            context = (alpha[:, None, :] @ states).squeeze(1)  # (B, d_model)
            state = self.decoder_cell(torch.cat([embedded[:, t], context], dim=-1), state)  # (B, d_model)
            logits.append(self.out(torch.cat([state, context], dim=-1)))  # (B, tgt_vocab)
            weights.append(alpha)
        self.attention_weights = torch.stack(weights, dim=1).detach()  # (B, T, S)
        return torch.stack(logits, dim=1)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: src (B, S), tgt_in (B, T) -> logits (B, T, tgt_vocab)."""
        states, src_mask = self.encode(src)
        return self.decode(tgt_in, states, src_mask)


# --- the measurements of notebook 09, section 12 -----------------------------------------------------------------


@torch.no_grad()
def exact_match_by_length(model: nn.Module, lengths, n_per_length: int = 200, seed: int = 0) -> dict[int, float]:
    """The share of digit strings of each length that ``model`` reverses exactly (greedy decoding).

    For each length L a fresh batch of ``n_per_length`` strings of exactly L digits is drawn from a
    generator seeded with ``seed + L``, so every model meets the same strings.

    Returns:
        ``{L: exact match}`` in the order of ``lengths``.
    """
    from course_lib.toy_tasks import evaluate_reversal, make_reversal_batch

    check_int(n_per_length, "n_per_length", 1)
    lengths = [check_int(L, "each length", 1) for L in lengths]
    if not lengths:
        raise ValueError("lengths: expected at least one length")
    batches = {L: make_reversal_batch(n_per_length, L, L, torch.Generator().manual_seed(seed + L)) for L in lengths}
    return {L: evaluate_reversal(model, batch)["exact_match"] for L, batch in batches.items()}


def plot_exact_match_by_length(results: dict[str, dict[int, float]], ax=None, title: str | None = None):
    """One line per model: exact match (0 to 1) against the length of the input. Returns the Axes."""
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("expected at least one model's results")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.4))
    for (name, by_length), marker in zip(results.items(), "osd^v"):
        ax.plot(list(by_length), [100 * v for v in by_length.values()], marker=marker, label=name)
    ax.set(xlabel="digits in the input", ylabel="reversed exactly (%)", ylim=(-3, 103))
    ax.set_xticks(sorted({L for by_length in results.values() for L in by_length}))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=9)  # below the plot: lines fill it
    if title:
        ax.set_title(title)
    ax.figure.tight_layout()
    return ax


@torch.no_grad()
def time_forward_passes(lengths=(8, 32, 128, 512), d_model: int = 256, h: int = 4, repeats: int = 9,
                        seed: int = 0) -> dict[str, list[float]]:
    """Seconds for one forward pass over one sequence of T positions: a GRU layer against self-attention.

    The GRU (``nn.GRU``) must take T steps one after the other, each needing the state of the step
    before; self-attention (``MultiHeadAttention``) computes all T positions in a few large matrix
    products. Both run on one CPU thread, on an input (1, T, d_model), without gradients. The two layers
    take turns, ``repeats`` times each, and each time reported is the best of its runs, so that another
    program busy on the same machine slows both alike and hardly changes the best.

    Returns:
        ``{"recurrent (GRU)": [...], "self-attention": [...]}``, one time per length, in seconds.
    """
    from course_lib.multihead import MultiHeadAttention

    lengths = [check_int(T, "each length", 1) for T in lengths]
    check_int(repeats, "repeats", 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = {"recurrent (GRU)": nn.GRU(d_model, d_model, batch_first=True),
                  "self-attention": MultiHeadAttention(d_model, h).eval()}
        inputs = {T: torch.randn(1, T, d_model) for T in lengths}
    best = {name: [float("inf")] * len(lengths) for name in layers}
    with one_thread():
        for name, layer in layers.items():  # warm up: the first calls allocate
            layer(inputs[lengths[0]])
        for _ in range(repeats):
            for i, T in enumerate(lengths):
                for name, layer in layers.items():
                    start = time.perf_counter()
                    layer(inputs[T])
                    best[name][i] = min(best[name][i], time.perf_counter() - start)
    return best


def influence_by_distance(kind: str, T: int = 64, d_model: int = 64, seed: int = 0) -> torch.Tensor:
    """How strongly the output at the last position depends on the input at each position, at initialisation.

    ``kind`` is ``"gru"`` (a GRU layer: position s reaches position T - 1 through T - 1 - s steps) or
    ``"attention"`` (a self-attention layer: every position reaches every other in one step). The
    output at position T - 1 is projected on a fixed random direction and differentiated with
    respect to the input; the result is the gradient's norm at each input position.

    Returns:
        (T,) the norm of d(output[T - 1]) / d(input[s]) for s = 0 ... T - 1.
    """
    from course_lib.multihead import MultiHeadAttention

    if kind not in ("gru", "attention"):
        raise ValueError(f"kind must be 'gru' or 'attention', got {kind!r}")
    check_int(T, "T", 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = nn.GRU(d_model, d_model, batch_first=True) if kind == "gru" else MultiHeadAttention(d_model, 4)
        x = torch.randn(1, T, d_model, requires_grad=True)
        direction = torch.randn(d_model)
    (layer(x)[0][0, -1] @ direction).backward()
    return x.grad[0].norm(dim=-1)
