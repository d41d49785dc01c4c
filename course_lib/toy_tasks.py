"""Tiny tasks that a single attention head can learn in seconds on a CPU (notebook 04).

The task here is a **learned dictionary**: a sequence holds ``n_pairs`` (key, value) pairs,
for example ``c=7 a=2 f=7 ...``, and then come ``n_queries`` query keys, for example ``f? c?``.
For each query the model must answer the value stored under that key somewhere in the
sequence (``7``, ``7``). The keys of a sequence are all different, values may repeat, and the
pairs are shuffled, so the only way to answer is to *find the right position*: exactly what
attention does.

- :func:`make_retrieval_batch` draws a batch of such sequences (a :class:`RetrievalBatch`).
- :class:`KeyValueRetriever` is the model: embeddings, one cross-attention head whose queries
  come from the query keys and whose keys and values come from the pairs, and a linear read-out.
- :func:`train_retriever` and :func:`evaluate_retriever` train it and measure it.

Each pair sits in **one** position (its key's vector plus its value's vector): with no notion of
position yet (notebook 05), a model could not tell which value token belongs to which key token.
"""
from __future__ import annotations

import string
from dataclasses import dataclass

import torch

from course_lib.attention import SingleHeadAttention
from course_lib.shapes import check_int, check_shape

#: Names of the keys: ``a``, ``b``, ... (at most 26 keys).
KEY_NAMES: str = string.ascii_lowercase


@dataclass(frozen=True)
class RetrievalBatch:
    """A batch of key-value retrieval problems; every tensor holds integer ids (``torch.long``).

    Attributes:
        keys: (B, n_pairs), the key of each pair; all different within a sequence.
        values: (B, n_pairs), the value of each pair.
        queries: (B, n_queries), the keys asked for; each occurs once among the pairs.
        positions: (B, n_queries), where each queried key sits among the pairs.
        targets: (B, n_queries), the right answers: ``values[b, positions[b, i]]``.
    """

    keys: torch.Tensor
    values: torch.Tensor
    queries: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return self.keys.shape[0]

    def pair_labels(self, b: int = 0) -> list[str]:
        """The pairs of sequence ``b`` as text: ``["c=7", "a=2", ...]``."""
        return [f"{KEY_NAMES[k]}={v}" for k, v in zip(self.keys[b].tolist(), self.values[b].tolist())]

    def query_labels(self, b: int = 0) -> list[str]:
        """The queries of sequence ``b`` as text: ``["f?", "c?", ...]``."""
        return [f"{KEY_NAMES[k]}?" for k in self.queries[b].tolist()]


def make_retrieval_batch(batch_size: int, n_pairs: int = 8, n_queries: int = 4, n_keys: int = 16,
                         n_values: int = 10, generator: torch.Generator | None = None) -> RetrievalBatch:
    """Draw ``batch_size`` random retrieval problems.

    Args:
        batch_size: B, the number of sequences.
        n_pairs: pairs per sequence (at most ``n_keys``, since the keys of a sequence differ).
        n_queries: queries per sequence (at most ``n_pairs``; the queried keys differ too).
        n_keys: size of the key vocabulary (at most 26: keys are named ``a`` to ``z``).
        n_values: size of the value vocabulary (values are the numbers ``0`` to ``n_values - 1``).
        generator: a seeded ``torch.Generator`` for reproducible batches (None: torch's global one).

    Returns:
        A :class:`RetrievalBatch` with tensors of shape (B, n_pairs) and (B, n_queries).
    """
    for name, value in (("batch_size", batch_size), ("n_pairs", n_pairs), ("n_queries", n_queries),
                        ("n_keys", n_keys), ("n_values", n_values)):
        check_int(value, name, 1)
    if n_keys > len(KEY_NAMES):
        raise ValueError(f"n_keys must be at most {len(KEY_NAMES)} (keys are named a to z), got {n_keys}")
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs={n_pairs} pairs need {n_pairs} different keys, but n_keys={n_keys}")
    if n_queries > n_pairs:
        raise ValueError(f"n_queries={n_queries} different queries need at least as many pairs, got n_pairs={n_pairs}")
    keys = torch.rand(batch_size, n_keys, generator=generator).argsort(dim=-1)[:, :n_pairs]  # distinct keys
    values = torch.randint(0, n_values, (batch_size, n_pairs), generator=generator)
    positions = torch.rand(batch_size, n_pairs, generator=generator).argsort(dim=-1)[:, :n_queries]
    return RetrievalBatch(keys=keys, values=values, queries=keys.gather(1, positions), positions=positions,
                          targets=values.gather(1, positions))


class KeyValueRetriever(torch.nn.Module):
    """Answer each query with the value stored under it: one cross-attention head.

    Each pair becomes one vector, ``key_embedding[key] + value_embedding[value]`` (the memory);
    each query key becomes ``key_embedding[query]`` (the same table: a key is a key, wherever it
    stands). A :class:`~course_lib.attention.SingleHeadAttention` lets every query read the
    memory, and a linear layer turns what it read into one score per possible value.

    Args:
        n_keys, n_values: vocabulary sizes. d_model: width of the embeddings.
        d_k: width of the head's queries and keys (its values have width ``d_model``).
        share_qk: one projection for queries and keys (see SingleHeadAttention).
    """

    def __init__(self, n_keys: int = 16, n_values: int = 10, d_model: int = 32, d_k: int = 16,
                 share_qk: bool = False):
        super().__init__()
        for name, value in (("n_keys", n_keys), ("n_values", n_values), ("d_model", d_model), ("d_k", d_k)):
            check_int(value, name, 1)
        self.n_keys, self.n_values = n_keys, n_values
        self.key_embedding = torch.nn.Embedding(n_keys, d_model)
        self.value_embedding = torch.nn.Embedding(n_values, d_model)
        self.attention = SingleHeadAttention(d_model, d_k, d_v=d_model, share_qk=share_qk)
        self.readout = torch.nn.Linear(d_model, n_values)

    def forward(self, keys: torch.Tensor, values: torch.Tensor,
                queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores for every possible answer, and the attention weights.

        Args:
            keys, values: (B, n_pairs) integer ids. queries: (B, n_queries) integer key ids.

        Returns:
            ``(logits, weights)``: logits (B, n_queries, n_values), one score per possible value;
            weights (B, n_queries, n_pairs), where each query looked.
        """
        sizes = check_shape(keys, "B n_pairs", name="keys", dtype="int")
        check_shape(values, "B n_pairs", name="values", dtype="int", **sizes)
        check_shape(queries, "B n_queries", name="queries", dtype="int", B=sizes["B"])
        for name, ids, limit in (("keys", keys, self.n_keys), ("values", values, self.n_values),
                                 ("queries", queries, self.n_keys)):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= limit):
                raise ValueError(f"{name}: ids must lie in 0..{limit - 1}, got {int(ids.min())}..{int(ids.max())}")
        memory = self.key_embedding(keys) + self.value_embedding(values)  # (B, n_pairs, d_model)
        asking = self.key_embedding(queries)  # (B, n_queries, d_model)
        read, weights = self.attention(asking, context=memory)  # (B, n_queries, d_model), (B, n_queries, n_pairs)
        return self.readout(read), weights

    def answer(self, batch: RetrievalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` on a :class:`RetrievalBatch`."""
        return self(batch.keys, batch.values, batch.queries)


def retrieval_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the answers: the mean of ``-log softmax(logits)[target]`` over every query.

    Args:
        logits: (B, n_queries, n_values). targets: (B, n_queries) integer ids.

    Returns:
        A 0-dimensional tensor; ``log(n_values)`` for a model that guesses uniformly.
    """
    sizes = check_shape(logits, "B n_queries n_values", name="logits", dtype="float")
    check_shape(targets, "B n_queries", name="targets", dtype="int", B=sizes["B"], n_queries=sizes["n_queries"])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, sizes["n_values"]), targets.reshape(-1))


def train_retriever(model: KeyValueRetriever, steps: int = 400, batch_size: int = 64, lr: float = 3e-3,
                    n_pairs: int = 8, n_queries: int = 4, seed: int = 0) -> list[float]:
    """Train ``model`` with Adam on fresh random batches; returns the loss of every step.

    Batches come from a ``torch.Generator`` seeded with ``seed``, so a run is reproducible
    (the model's initial weights come from torch's global generator, seeded by ``setup()``).
    """
    check_int(steps, "steps", 1)
    check_int(batch_size, "batch_size", 1)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        batch = make_retrieval_batch(batch_size, n_pairs, n_queries, model.n_keys, model.n_values, generator)
        logits, _ = model.answer(batch)
        loss = retrieval_loss(logits, batch.targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def evaluate_retriever(model: KeyValueRetriever, batch: RetrievalBatch) -> dict[str, float]:
    """How well ``model`` answers ``batch``.

    Returns:
        ``{"accuracy": ..., "attention_accuracy": ..., "weight_on_target": ..., "loss": ...}``:
        the fraction of queries answered right, the fraction whose largest attention weight
        is on the right pair, the mean weight on the right pair, and the mean cross-entropy.
    """
    model.eval()
    logits, weights = model.answer(batch)
    on_target = weights.gather(-1, batch.positions.unsqueeze(-1)).squeeze(-1)  # (B, n_queries)
    return {
        "accuracy": (logits.argmax(dim=-1) == batch.targets).float().mean().item(),
        "attention_accuracy": (weights.argmax(dim=-1) == batch.positions).float().mean().item(),
        "weight_on_target": on_target.mean().item(),
        "loss": retrieval_loss(logits, batch.targets).item(),
    }


# --- digit reversal: a sequence-to-sequence task for the whole Transformer (notebook 09) ---------------
#
# The source is a string of digits, e.g. ``3 1 4 1 5``; the target is the same digits backwards
# followed by an end-of-sequence token, ``5 1 4 1 3 <eos>``. Every output token must come from one
# particular source position (output t copies source L-1-t), so a trained model's cross-attention
# shows an anti-diagonal: the picture of what cross-attention does in translation, in miniature.

#: Token ids of the reversal task: 0 pads, 1 begins the decoder input, 2 ends a sequence; digit d is d + 3.
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
DIGIT_OFFSET = 3
#: The reversal task's vocabulary: id -> token text (n_vocab = 13).
REVERSAL_VOCAB: tuple[str, ...] = ("<pad>", "<bos>", "<eos>") + tuple(str(d) for d in range(10))


def digits_to_ids(digits) -> list[int]:
    """``"3141"`` or ``[3, 1, 4, 1]`` -> token ids ``[6, 4, 7, 4]`` (digit d is id d + 3).

    Spaces, commas and dashes in a string are skipped, so ``"3 1 4"`` and ``"3,1,4"`` work too.
    """
    if isinstance(digits, str):
        text = digits.replace(" ", "").replace(",", "").replace("-", "")
        bad = [c for c in text if c not in "0123456789"]
        if bad:
            raise ValueError(f"digits: expected only the digits 0-9, got {bad[0]!r} in {digits!r}")
        values = [int(c) for c in text]
    else:
        values = list(digits)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 9:
                raise ValueError(f"digits: expected ints 0-9, got {v!r}")
    return [v + DIGIT_OFFSET for v in values]


def ids_to_tokens(ids) -> list[str]:
    """Token ids (a list or a 1-d tensor) -> their texts, e.g. ``[1, 6, 2]`` -> ``["<bos>", "3", "<eos>"]``."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    for i in ids:
        if not 0 <= i < len(REVERSAL_VOCAB):
            raise ValueError(f"ids must lie in 0..{len(REVERSAL_VOCAB) - 1}, got {i}")
    return [REVERSAL_VOCAB[i] for i in ids]


def ids_to_digits(ids) -> str:
    """The digits of a sequence of ids as a string, up to (not including) its first ``<eos>``.

    ``<pad>`` and ``<bos>`` are skipped: ``[1, 8, 6, 2, 0]`` -> ``"53"``.
    """
    out = []
    for token in ids_to_tokens(ids):
        if token == "<eos>":
            break
        if token.isdigit():
            out.append(token)
    return "".join(out)


def reverse_with_eos(src: torch.Tensor, pad_id: int = PAD_ID, eos_id: int = EOS_ID) -> torch.Tensor:
    """The reversal targets of right-padded sources: each row's tokens backwards, then EOS, then padding.

    Args:
        src: (B, S) token ids, each row its tokens followed by ``pad_id`` only.

    Returns:
        (B, S + 1) token ids: ``[x_{L-1}, ..., x_0, EOS, PAD, ...]`` for a row of length L.
    """
    sizes = check_shape(src, "B S", name="src", dtype="int")
    S = sizes["S"]
    real = src != pad_id  # (B, S)
    lengths = real.sum(dim=1)  # (B,)
    if not torch.equal(real, torch.arange(S, device=src.device) < lengths[:, None]):
        raise ValueError("src: expected right padding (tokens first, then only pad_id)")
    t = torch.arange(S + 1, device=src.device)  # target positions 0 ... S
    source_index = (lengths[:, None] - 1 - t).clamp(min=0, max=max(S - 1, 0))  # (B, S + 1): L-1-t
    padded = torch.cat([src, torch.full_like(src[:, :1], pad_id)], dim=1)  # (B, S + 1), so gather fits
    copied = padded.gather(1, source_index)
    out = torch.where(t < lengths[:, None], copied, torch.full_like(copied, pad_id))
    return out.masked_fill(t == lengths[:, None], eos_id)


@dataclass(frozen=True)
class ReversalBatch:
    """A batch of the reversal task (every tensor ``torch.long``).

    Attributes:
        src: (B, S) digit ids, right-padded with ``PAD_ID`` to S = the longest allowed length.
        tgt: (B, S + 1) the same digits backwards, then ``EOS_ID``, then ``PAD_ID``.
        lengths: (B,) the number of digits of each row.
    """

    src: torch.Tensor
    tgt: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return self.src.shape[0]

    def digits(self, b: int = 0) -> str:
        """Row ``b``'s source digits as a string, e.g. ``"31415"``."""
        return ids_to_digits(self.src[b])

    def sequences(self) -> set[tuple[int, ...]]:
        """Every row's source ids without padding, as tuples (pass to ``exclude=`` to hold them out)."""
        return {tuple(row[:n].tolist()) for row, n in zip(self.src, self.lengths.tolist())}


def _draw_rows(n: int, min_len: int, max_len: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=generator)
    digits = torch.randint(0, 10, (n, max_len), generator=generator)
    real = torch.arange(max_len) < lengths[:, None]
    return torch.where(real, digits + DIGIT_OFFSET, torch.full_like(digits, PAD_ID)), lengths


def make_reversal_batch(batch_size: int, min_len: int = 3, max_len: int = 8,
                        generator: torch.Generator | None = None,
                        exclude: set[tuple[int, ...]] | None = None) -> ReversalBatch:
    """Draw ``batch_size`` random digit strings (lengths ``min_len`` to ``max_len``) and their reversals.

    Args:
        batch_size: B.
        min_len, max_len: the range of lengths, both included (1 <= min_len <= max_len).
        generator: a seeded ``torch.Generator`` for reproducible batches (None: torch's global one).
        exclude: source id tuples that must not occur (e.g. ``test.sequences()`` of a held-out set):
            a row that draws one is drawn again.

    Returns:
        A :class:`ReversalBatch` with ``src`` (B, max_len) and ``tgt`` (B, max_len + 1).
    """
    check_int(batch_size, "batch_size", 1)
    check_int(min_len, "min_len", 1)
    check_int(max_len, "max_len", 1)
    if min_len > max_len:
        raise ValueError(f"min_len={min_len} must not exceed max_len={max_len}")
    src, lengths = _draw_rows(batch_size, min_len, max_len, generator)
    if exclude:
        for _ in range(100):
            bad = [b for b in range(batch_size) if tuple(src[b, :lengths[b]].tolist()) in exclude]
            if not bad:
                break
            src[bad], lengths[bad] = _draw_rows(len(bad), min_len, max_len, generator)
        else:
            raise ValueError("exclude holds (nearly) every sequence of these lengths: nothing left to draw")
    return ReversalBatch(src=src, tgt=reverse_with_eos(src), lengths=lengths)


def build_reversal_model(seed: int = 0, d_model: int = 64, h: int = 4, num_layers: int = 2, d_ff: int = 256,
                         dropout: float = 0.0, **kwargs):
    """A :class:`~course_lib.transformer.Seq2SeqTransformer` for the reversal task, the same on every run.

    ``num_layers`` encoder blocks and as many decoder blocks; the vocabulary is ``REVERSAL_VOCAB``
    (n_vocab = 13) on both sides; further keyword arguments go to ``Seq2SeqTransformer``. The weights are
    drawn from torch's generator seeded with ``seed``; the two embedding tables are then drawn once
    more, source first, from their own generator (std d_model^-0.5, as the model draws them), so that
    which table gets which numbers never depends on anything but ``seed``.
    """
    from course_lib.transformer import Seq2SeqTransformer

    n_vocab = len(REVERSAL_VOCAB)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Seq2SeqTransformer(n_vocab, n_vocab, d_model=d_model, h=h, num_encoder_layers=num_layers,
                                   num_decoder_layers=num_layers, d_ff=d_ff, dropout=dropout, pad_id=PAD_ID,
                                   **kwargs)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for embedding in dict.fromkeys([model.src_embed, model.tgt_embed]):  # in this order, each table once
            embedding.weight.normal_(0.0, d_model ** -0.5, generator=generator)
    return model


def seq2seq_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = PAD_ID,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the target positions that are not padding.

    Args:
        logits: (B, T, n_vocab). targets: (B, T) token ids; positions equal to ``pad_id`` are ignored.
        label_smoothing: 0 for plain cross-entropy (see ``torch.nn.functional.cross_entropy``).

    Returns:
        A 0-dimensional tensor; ``log(n_vocab)`` for a model that guesses uniformly.
    """
    sizes = check_shape(logits, "B T n_vocab", name="logits", dtype="float")
    check_shape(targets, "B T", name="targets", dtype="int", B=sizes["B"], T=sizes["T"])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, sizes["n_vocab"]), targets.reshape(-1),
                                             ignore_index=pad_id, label_smoothing=label_smoothing)


def warmup_then_linear_decay(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor at ``step`` (0-based): rises linearly to 1 over ``warmup`` steps, then
    falls linearly to 0 at ``total``. Multiply the peak learning rate by it (``LambdaLR`` does).
    """
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def train_reversal(model, steps: int = 600, batch_size: int = 64, lr: float = 1e-3, warmup: int = 100,
                   min_len: int = 3, max_len: int = 8, seed: int = 0,
                   exclude: set[tuple[int, ...]] | None = None, label_smoothing: float = 0.0,
                   weight_decay: float = 0.01) -> list[float]:
    """Train a :class:`~course_lib.transformer.Seq2SeqTransformer` to reverse digit strings.

    Each step draws a fresh batch, feeds the decoder the shifted targets (teacher forcing,
    ``shift_right(tgt, BOS_ID)``) and takes one AdamW step on :func:`seq2seq_loss`; the learning
    rate follows :func:`warmup_then_linear_decay`. Batches come from a generator seeded with
    ``seed``, so a run is reproducible (initial weights come from torch's global generator).

    Returns:
        The loss of every step (``steps`` floats).
    """
    from course_lib.transformer import shift_right

    check_int(steps, "steps", 1)
    check_int(batch_size, "batch_size", 1)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup <= steps:
        raise ValueError(f"warmup must be an int in 0..steps={steps}, got {warmup!r}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_then_linear_decay(s, warmup, steps))
    model.train()
    losses = []
    for _ in range(steps):
        batch = make_reversal_batch(batch_size, min_len, max_len, generator, exclude)
        logits = model(batch.src, shift_right(batch.tgt, BOS_ID))  # (B, T, n_vocab)
        loss = seq2seq_loss(logits, batch.tgt, label_smoothing=label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def evaluate_reversal(model, batch: ReversalBatch) -> dict[str, float]:
    """How well ``model`` reverses ``batch`` when it generates on its own (greedy decoding).

    Returns:
        ``{"exact_match": ..., "token_accuracy": ..., "loss": ...}``: the fraction of rows whose
        whole output (digits and EOS) is right, the fraction of target tokens (EOS included, padding
        not) that are right, and the teacher-forced loss.
    """
    from course_lib.transformer import greedy_decode, shift_right

    model.eval()
    T = batch.tgt.shape[1]
    out = greedy_decode(model, batch.src, BOS_ID, EOS_ID, max_len=T)  # (B, L), L <= T
    out = torch.nn.functional.pad(out, (0, T - out.shape[1]), value=PAD_ID)  # (B, T)
    real = batch.tgt != PAD_ID
    right = (out == batch.tgt) | ~real
    loss = seq2seq_loss(model(batch.src, shift_right(batch.tgt, BOS_ID)), batch.tgt)
    return {"exact_match": right.all(dim=1).float().mean().item(),
            "token_accuracy": ((out == batch.tgt) & real).sum().item() / real.sum().item(),
            "loss": loss.item()}
