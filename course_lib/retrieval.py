"""Key–value retrieval: a lookup by exact match, by best match and by a weighted average.

Notebook 01 builds these step by step; this module holds the final, tested versions.

- :data:`WORD_VECTORS`: a small hand-made table of word vectors whose five features
  (:data:`FEATURES`) a person can read: how much a word has to do with animals, food,
  money, water and learning.
- :func:`one_hot`: a query that matches exactly one of ``n`` keys.
- :func:`similarity_scores`, :func:`soft_weights`: how well a query matches each key,
  and those scores turned into weights that are positive and sum to 1.
- :func:`hard_lookup` (the value of the best-matching key) and :func:`soft_lookup` (every
  value, weighted by how well its key matches).
- :func:`contextualize`: every word of a sentence does a soft lookup among the words of
  that sentence, so the same word gets a different vector in a different sentence.

Shapes: a query is ``(d,)`` or a batch ``(m, d)``, keys ``(n, d)``, values ``(n, d_v)``.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import torch

from course_lib.shapes import check_shape
from course_lib.softmax import check_temperature

#: What each of the five numbers of a word vector measures.
FEATURES: tuple[str, ...] = ("animal", "food", "money", "water", "learning")

_TABLE: dict[str, tuple[float, ...]] = {
    #          animal food  money water learning
    "cat":     (1.0,   0.0,  0.0,  0.0,  0.0),
    "dog":     (1.0,   0.0,  0.0,  0.0,  0.0),
    "fish":    (0.8,   0.6,  0.0,  0.8,  0.0),
    "bread":   (0.0,   1.0,  0.0,  0.0,  0.0),
    "soup":    (0.0,   0.9,  0.0,  0.4,  0.0),
    "cash":    (0.0,   0.0,  1.0,  0.0,  0.0),
    "loan":    (0.0,   0.0,  0.9,  0.0,  0.0),
    "bank":    (0.0,   0.0,  0.7,  0.6,  0.0),
    "river":   (0.0,   0.0,  0.0,  1.0,  0.0),
    "boat":    (0.0,   0.0,  0.0,  0.9,  0.0),
    "school":  (0.5,   0.0,  0.0,  0.3,  0.8),
    "teacher": (0.0,   0.0,  0.0,  0.0,  1.0),
    "book":    (0.0,   0.0,  0.0,  0.0,  0.9),
}

#: The hand-made word table: word -> its 5 features, in the order of :data:`FEATURES`.
#: Read-only; :func:`word_table` and :func:`embed` give tensors. "bank" and "school" each
#: mix two meanings (a river bank and a money bank; a school of fish and a school building).
WORD_VECTORS: Mapping[str, tuple[float, ...]] = MappingProxyType(_TABLE)

#: The words of :data:`WORD_VECTORS`, in table order.
WORDS: tuple[str, ...] = tuple(_TABLE)


def word_table(words: Iterable[str] | None = None) -> tuple[list[str], torch.Tensor]:
    """The word table as a matrix, one row per word.

    Args:
        words: which words, in which order; None for every word of :data:`WORDS`.

    Returns:
        ``(words, table)``: the list of words and a new float32 tensor of shape ``(n, 5)``
        whose row ``i`` is the vector of ``words[i]``.
    """
    chosen = list(WORDS if words is None else words)
    return chosen, embed(chosen)


def embed(words: Sequence[str]) -> torch.Tensor:
    """Look up the static vector of each word: a list of T words -> shape ``(T, 5)``.

    "Static" means that a word gets the same vector wherever it stands.

    Raises:
        TypeError: ``words`` is a single string rather than a list of words.
        KeyError: a word is not in the table (the message lists the words that are).
    """
    if isinstance(words, str):
        raise TypeError(f"embed expects a list of words, got the string {words!r}; "
                        f"use embed({words.split()!r}) to split it into words")
    rows = []
    for word in words:
        if word not in _TABLE:
            raise KeyError(f"no vector for {word!r}: the table holds only {', '.join(WORDS)}")
        rows.append(_TABLE[word])
    if not rows:
        return torch.zeros(0, len(FEATURES))
    return torch.tensor(rows, dtype=torch.float32)


def one_hot(index: Any, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A vector of ``n`` zeros with a single 1 at ``index``: shape ``(n,)``.

    ``one_hot(i, n) @ values`` is row ``i`` of ``values``: a lookup written as a matrix product.

    Args:
        index: an int (or a 0-dimensional integer tensor) with ``0 <= index < n``.
        n: the number of keys, at least 1.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (the number of keys), got {n!r}")
    if isinstance(index, torch.Tensor):
        if index.ndim != 0 or index.is_floating_point() or index.dtype == torch.bool:
            raise TypeError(f"index must be a single integer, got a tensor of shape {tuple(index.shape)} "
                            f"and dtype {index.dtype}")
        index = int(index)
    if isinstance(index, bool) or not hasattr(index, "__index__"):
        raise TypeError(f"index must be an int, got {type(index).__name__} ({index!r})")
    index = int(index)
    if not 0 <= index < n:
        raise IndexError(f"index {index} is out of range for n={n} keys (valid: 0 to {n - 1})")
    vector = torch.zeros(n, dtype=dtype)
    vector[index] = 1
    return vector


def _check_query_keys(query: torch.Tensor, keys: torch.Tensor) -> dict[str, int]:
    if not isinstance(query, torch.Tensor) or not isinstance(keys, torch.Tensor):
        bad = "query" if not isinstance(query, torch.Tensor) else "keys"
        value = query if bad == "query" else keys
        raise TypeError(f"{bad}: expected a torch tensor, got {type(value).__name__}")
    sizes = check_shape(keys, "n d", name="keys", dtype="float")
    if sizes["n"] == 0:
        raise ValueError(f"keys is empty (shape {tuple(keys.shape)}): there is nothing to retrieve")
    if query.ndim not in (1, 2):
        raise ValueError(f"query: expected shape (d,) or a batch (m, d), got shape {tuple(query.shape)}")
    if query.shape[-1] != sizes["d"]:
        raise ValueError(f"query has {query.shape[-1]} features but each key has d={sizes['d']} "
                         f"(query shape {tuple(query.shape)}, keys shape {tuple(keys.shape)}): "
                         "a query is compared with every key, so they need the same length")
    check_shape(query, "... d", name="query", dtype="float", d=sizes["d"])
    if query.dtype != keys.dtype:
        raise TypeError(f"query has dtype {query.dtype} but keys have {keys.dtype}; convert one with .to()")
    return sizes


def _check_values(values: torch.Tensor, keys: torch.Tensor) -> None:
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values: expected a torch tensor, got {type(values).__name__}")
    if values.ndim != 2 or values.shape[0] != keys.shape[0]:
        raise ValueError(f"values: expected shape (n, d_v) with one row per key, n={keys.shape[0]}; "
                         f"got shape {tuple(values.shape)}")
    check_shape(values, "n d_v", name="values", dtype="float")
    if values.dtype != keys.dtype:
        raise TypeError(f"values have dtype {values.dtype} but keys have {keys.dtype}; convert one with .to()")


def similarity_scores(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """How well the query matches each key: the dot product of the query with every key.

    Args:
        query: ``(d,)``, or ``(m, d)`` for m queries at once.
        keys: ``(n, d)``, n >= 1.

    Returns:
        ``(n,)`` scores, or ``(m, n)``: row j holds the scores of query j.
    """
    _check_query_keys(query, keys)
    return query @ keys.T


def soft_weights(query: torch.Tensor, keys: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The scores turned into weights: ``softmax(scores / temperature)`` over the keys.

    Each weight is positive and the weights of one query sum to 1. ``torch.softmax``
    subtracts the largest score before exponentiating, so huge scores do not overflow.

    Args:
        query: ``(d,)`` or ``(m, d)``.
        keys: ``(n, d)``, n >= 1.
        temperature: > 0; below 1 sharpens the weights towards the best key, above 1
            flattens them towards a plain average.

    Returns:
        ``(n,)``, or ``(m, n)`` with each row summing to 1.
    """
    temperature = check_temperature(temperature)
    scores = similarity_scores(query, keys)
    return torch.softmax(scores / temperature, dim=-1)


def hard_lookup(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The value of the best-matching key (largest dot product); the first one on a tie.

    Args:
        query: ``(d,)`` or ``(m, d)``.
        keys: ``(n, d)``, n >= 1.
        values: ``(n, d_v)``, one row per key.

    Returns:
        ``(d_v,)``, or ``(m, d_v)``: one value row per query, copied from ``values``.
    """
    _check_query_keys(query, keys)
    _check_values(values, keys)
    best = torch.argmax(query @ keys.T, dim=-1)  # (,) or (m,); argmax returns the first maximum
    return values[best].clone()


def soft_lookup(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                temperature: float = 1.0) -> torch.Tensor:
    """Every value, weighted by how well its key matches the query: ``soft_weights(...) @ values``.

    Args:
        query: ``(d,)`` or ``(m, d)``.
        keys: ``(n, d)``, n >= 1.
        values: ``(n, d_v)``, one row per key.
        temperature: > 0, see :func:`soft_weights`.

    Returns:
        ``(d_v,)``, or ``(m, d_v)``: a weighted average of the rows of ``values``.
    """
    weights = soft_weights(query, keys, temperature)
    _check_values(values, keys)
    return weights @ values


def contextualize(x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mix every word of a sentence with the words around it, weighted by similarity.

    Each row of ``x`` is at once a query, a key and a value: row t of the result is
    ``soft_lookup(x[t], x, x)``. It is self-attention with no learned parameters.

    Args:
        x: ``(T, d)``, the static vectors of a sentence of T >= 1 words.
        temperature: > 0, see :func:`soft_weights`.

    Returns:
        ``(T, d)``: a new vector for every word, which depends on the other words.
    """
    check_shape(x, "T d", name="x (a sentence, one row per word)", dtype="float")
    if x.shape[0] == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}): a sentence needs at least one word")
    return soft_lookup(x, x, x, temperature)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The cosine of the angle between two vectors of shape ``(d,)``: 1 when they point the same way.

    Raises ValueError for a zero vector, whose direction is undefined.
    """
    sizes = check_shape(a, "d", name="a", dtype="float")
    check_shape(b, "d", name="b", dtype="float", **sizes)
    norm_a, norm_b = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    if norm_a == 0 or norm_b == 0:
        raise ValueError("cosine of a zero vector is undefined: it has no direction")
    return float((a @ b) / (norm_a * norm_b))


# --- figures ----------------------------------------------------------------------------------------

def plot_word_table(words: Sequence[str], table: torch.Tensor, features: Sequence[str] = FEATURES,
                    ax=None, title: str = "The word table: one row per word, one column per feature"):
    """Draw a ``(n, d)`` table as a heat map with every number written in its cell. Returns the Axes."""
    import matplotlib.pyplot as plt

    check_shape(table, "n d", name="table", n=len(words), d=len(features))
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 0.36 * len(words) + 1.4))
    data = table.detach().cpu().numpy()
    ax.imshow(data, cmap="Blues", vmin=0, vmax=max(1.0, float(data.max())), aspect="auto")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            value = data[i, j]
            ax.text(j, i, f"{value:.1f}" if value else "·", ha="center", va="center", fontsize=9,
                    color="white" if value > 0.6 else "#333333")
    ax.set_xticks(range(len(features)), list(features))
    ax.set_yticks(range(len(words)), list(words))
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.grid(False)
    ax.set_xlabel("feature")
    ax.set_ylabel("word (key)")
    ax.set_title(title, pad=14)
    return ax


def plot_lookup(query: torch.Tensor, words: Sequence[str], keys: torch.Tensor, values: torch.Tensor,
                features: Sequence[str] = FEATURES, temperature: float = 1.0, title: str = ""):
    """Scores, weights, and the hard and the soft result of one query, side by side.

    Args:
        query: ``(d,)``; words: n labels; keys: ``(n, d)``; values: ``(n, d_v)`` with
        ``d_v == len(features)``.

    Returns:
        The matplotlib Figure (three panels).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from course_lib.plotting import PALETTE

    check_shape(query, "d", name="query")
    check_shape(values, "n d_v", name="values", n=len(words), d_v=len(features))
    scores = similarity_scores(query, keys)
    weights = soft_weights(query, keys, temperature)
    hard = hard_lookup(query, keys, values)
    soft = weights @ values
    best = int(torch.argmax(scores))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    positions = np.arange(len(words))
    colours = [PALETTE[1] if i == best else PALETTE[0] for i in range(len(words))]
    axes[0].bar(positions, scores.numpy(), color=colours)
    axes[0].set_title("1. scores: key · query\n(orange = argmax, the hard choice)")
    axes[0].set_ylabel("score")
    axes[1].bar(positions, weights.numpy(), color=PALETTE[2])
    axes[1].set_ylim(0, 1)
    axes[1].set_title(f"2. weights: softmax(scores / {temperature:g})\n(they sum to 1)")
    axes[1].set_ylabel("weight")
    for ax in axes[:2]:
        ax.set_xticks(positions, list(words), rotation=60, ha="right")
        ax.set_xlabel("key")
        ax.axhline(0, color="#444444", lw=0.8)
    columns = np.arange(len(features))
    axes[2].bar(columns - 0.2, hard.numpy(), width=0.4, color=PALETTE[1], label=f"hard: {words[best]}")
    axes[2].bar(columns + 0.2, soft.numpy(), width=0.4, color=PALETTE[2], label="soft: weighted average")
    axes[2].set_xticks(columns, list(features), rotation=30, ha="right")
    axes[2].set_xlabel("feature")
    axes[2].set_ylabel("value")
    axes[2].set_ylim(0, 1.45 * max(1.0, float(max(hard.max(), soft.max()))))
    axes[2].set_title("3. the result: one row, or a blend of rows")
    axes[2].legend(loc="upper right", fontsize=9)
    if title:
        fig.suptitle(title, y=1.02)
    fig.tight_layout()
    return fig


def plot_lookup_2d(query: torch.Tensor, words: Sequence[str], keys: torch.Tensor,
                   temperature: float = 1.0, axis_names: Sequence[str] = ("x", "y")):
    """A query among 2-D keys (which are also the values), with scores and weights.

    Left: the keys as points (drawn larger the more weight they get), the query as an
    arrow, the hard result circled, the soft result as a cross. Middle and right: the
    scores and the weights. The title states the query, the temperature and both results.

    Args:
        query: ``(2,)``; words: n labels; keys: ``(n, 2)``.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from course_lib.plotting import PALETTE

    check_shape(query, "2", name="query")
    check_shape(keys, "n 2", name="keys", n=len(words))
    scores = similarity_scores(query, keys)
    weights = soft_weights(query, keys, temperature)
    best = int(torch.argmax(scores))
    hard = keys[best]
    soft = weights @ keys
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.8), gridspec_kw={"width_ratios": [1.5, 1, 1]})
    plane = axes[0]
    k = keys.numpy()
    plane.scatter(k[:, 0], k[:, 1], s=40 + 900 * weights.numpy(), color=PALETTE[2], alpha=0.6, zorder=2)
    for (x, y), word in zip(k, words):
        plane.annotate(word, (x, y), xytext=(12, 6), textcoords="offset points", fontsize=10)
    plane.scatter([hard[0]], [hard[1]], s=380, facecolors="none", edgecolors=PALETTE[1], linewidths=2.5, zorder=3)
    plane.scatter([soft[0]], [soft[1]], marker="X", s=150, color="black", zorder=4)
    plane.annotate("", xy=(float(query[0]), float(query[1])), xytext=(0, 0),
                   arrowprops=dict(arrowstyle="-|>", color=PALETTE[3], lw=2))
    handles = [
        Line2D([], [], marker="o", ls="", color=PALETTE[2], alpha=0.6, markersize=9,
               label="keys = values (size = weight)"),
        Line2D([], [], marker="o", ls="", markerfacecolor="none", markeredgecolor=PALETTE[1], markeredgewidth=2,
               markersize=11, label=f"hard result: {words[best]}"),
        Line2D([], [], marker="X", ls="", color="black", markersize=9, label="soft result"),
        Line2D([], [], color=PALETTE[3], lw=2, label="query"),
    ]
    plane.set_xlim(-1.6, 1.6)
    plane.set_ylim(-1.6, 1.6)
    plane.set_aspect("equal")
    plane.axhline(0, color="#999999", lw=0.8)
    plane.axvline(0, color="#999999", lw=0.8)
    plane.set_xlabel(axis_names[0])
    plane.set_ylabel(axis_names[1])
    plane.legend(handles=handles, loc="lower left", fontsize=8.5)
    plane.set_title("query, keys and the two results")
    positions = np.arange(len(words))
    colours = [PALETTE[1] if i == best else PALETTE[0] for i in range(len(words))]
    axes[1].bar(positions, scores.numpy(), color=colours)
    axes[1].axhline(0, color="#444444", lw=0.8)
    axes[1].set_ylim(-2.6, 2.6)
    axes[1].set_title("scores: key · query")
    axes[1].set_ylabel("score")
    axes[2].bar(positions, weights.numpy(), color=PALETTE[2])
    axes[2].set_ylim(0, 1)
    axes[2].set_title(f"weights: softmax(scores / {temperature:g})")
    axes[2].set_ylabel("weight")
    for ax in axes[1:]:
        ax.set_xticks(positions, list(words), rotation=45, ha="right")
        ax.set_xlabel("key")
    fig.suptitle(f"query = ({float(query[0]):.2f}, {float(query[1]):.2f}), temperature = {temperature:g}   →   "
                 f"hard: {words[best]},  soft: ({float(soft[0]):.2f}, {float(soft[1]):.2f})", y=1.01)
    fig.tight_layout()
    return fig


def plot_weights_matrix(weights: torch.Tensor, words: Sequence[str], ax=None, title: str = ""):
    """Draw a ``(T, T)`` matrix of weights (row = the word that asks, column = the word it reads).

    Returns the Axes.
    """
    import matplotlib.pyplot as plt

    check_shape(weights, "T T", name="weights", T=len(words))
    if ax is None:
        _, ax = plt.subplots(figsize=(3.8, 3.4))
    data = weights.detach().cpu().numpy()
    ax.imshow(data, cmap="Greens", vmin=0, vmax=1)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=10,
                    color="white" if data[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(words)), list(words))
    ax.set_yticks(range(len(words)), list(words))
    ax.grid(False)
    ax.set_xlabel("reads from (key, value)")
    ax.set_ylabel("word asking (query)")
    if title:
        ax.set_title(title)
    return ax


def plot_feature_bars(vectors: Mapping[str, torch.Tensor], features: Sequence[str] = FEATURES, ax=None,
                      title: str = ""):
    """Grouped bars: one group per feature, one bar per labelled vector of shape ``(d,)``. Returns the Axes."""
    import matplotlib.pyplot as plt
    import numpy as np

    from course_lib.plotting import PALETTE

    if not vectors:
        raise ValueError("plot_feature_bars needs at least one vector")
    for label, vector in vectors.items():
        check_shape(vector, "d", name=f"vector {label!r}", d=len(features))
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6))
    columns = np.arange(len(features))
    width = 0.8 / len(vectors)
    for i, (label, vector) in enumerate(vectors.items()):
        offset = (i - (len(vectors) - 1) / 2) * width
        ax.bar(columns + offset, vector.detach().cpu().numpy(), width=width, label=label,
               color=PALETTE[i % len(PALETTE)])
    ax.set_xticks(columns, list(features))
    ax.set_xlabel("feature")
    ax.set_ylabel("value")
    ax.legend(fontsize=9)
    if title:
        ax.set_title(title)
    return ax
