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
from course_lib.shapes import check_shape

#: Names of the keys: ``a``, ``b``, ... (at most 26 keys).
KEY_NAMES: str = string.ascii_lowercase


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


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
        _positive_int(name, value)
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
            _positive_int(name, value)
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
    _positive_int("steps", steps)
    _positive_int("batch_size", batch_size)
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
