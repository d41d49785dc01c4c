"""From sentence pairs to padded training batches (notebook 10).

    pairs ──encode_pairs──> Example(src ids + EOS, tgt ids + EOS)
          ──token_budget_batches──> lists of example indices, similar lengths together
          ──collate──> Batch(src (B, S), tgt_in (B, T), tgt_out (B, T), masks)

A *token budget* caps the padded size of a batch, ``B * max(S, T) <= max_tokens``, instead of
fixing B: short sentences travel in big batches, long ones in small batches, and since each batch
holds sentences of similar length, little compute goes into padding.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from course_lib.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass(frozen=True)
class Example:
    """One encoded sentence pair; both sides end with EOS."""

    src: tuple[int, ...]
    tgt: tuple[int, ...]


def encode_pairs(pairs: Sequence[tuple[str, str]], tokenizer, max_len: int | None = None
                 ) -> list[Example]:
    """Encode (source, target) text pairs with ``tokenizer`` and append EOS to both sides.

    Pairs with a side longer than ``max_len`` tokens (EOS included) are dropped when
    ``max_len`` is given; the order of the others is kept.
    """
    if max_len is not None and (not isinstance(max_len, int) or max_len < 2):
        raise ValueError(f"max_len must be an int >= 2 or None, got {max_len!r}")
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise TypeError(f"pairs must hold (source text, target text) tuples; pairs[{i}] is {pair!r}")
    if not callable(getattr(tokenizer, "encode_batch", None)):
        raise TypeError(f"tokenizer: expected a course Tokenizer (with encode_batch), got {type(tokenizer).__name__}")
    srcs = tokenizer.encode_batch([p[0] for p in pairs])
    tgts = tokenizer.encode_batch([p[1] for p in pairs])
    examples = []
    for s, t in zip(srcs, tgts):
        s, t = tuple(s) + (EOS_ID,), tuple(t) + (EOS_ID,)
        if max_len is None or (len(s) <= max_len and len(t) <= max_len):
            examples.append(Example(s, t))
    return examples


def token_budget_batches(examples: Sequence[Example], max_tokens: int, shuffle: bool = True,
                         seed: int = 0) -> list[list[int]]:
    """Group example indices into batches whose padded size ``B * max(S, T)`` is at most ``max_tokens``.

    Examples are sorted by length (target, then source; ties broken at random when ``shuffle``),
    cut into consecutive batches, and with ``shuffle`` the batch order is shuffled, all from
    ``seed`` alone, so the same seed gives the same batches. Every example lands in exactly one batch.

    Raises:
        ValueError: an example alone is longer than ``max_tokens``.
    """
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    rng = random.Random(seed)
    keys = [(len(e.tgt), len(e.src), rng.random() if shuffle else 0.0, i) for i, e in enumerate(examples)]
    keys.sort()
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for t_len, s_len, _, i in keys:
        size = max(t_len, s_len)
        if size > max_tokens:
            raise ValueError(f"example {i} has {size} tokens on its longer side, more than "
                             f"max_tokens={max_tokens}; raise max_tokens or filter with max_len")
        if current and (len(current) + 1) * max(longest, size) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, size)
    if current:
        batches.append(current)
    if shuffle:
        rng.shuffle(batches)
    return batches


@dataclass
class Batch:
    """A padded batch. ``src (B, S)``, ``tgt_in (B, T)`` = BOS + target[:-1], ``tgt_out (B, T)`` = target.

    ``src_mask (B, S)`` and ``tgt_mask (B, T)`` are True at real tokens (False at padding).
    """

    src: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor

    @property
    def src_mask(self) -> torch.Tensor:
        return self.src != PAD_ID

    @property
    def tgt_mask(self) -> torch.Tensor:
        return self.tgt_out != PAD_ID

    @property
    def num_target_tokens(self) -> int:
        """Real (non-padding) target tokens: the number the loss is averaged over."""
        return int(self.tgt_mask.sum())

    def __len__(self) -> int:
        return self.src.shape[0]

    def to(self, device) -> "Batch":
        return Batch(self.src.to(device, non_blocking=True), self.tgt_in.to(device, non_blocking=True),
                     self.tgt_out.to(device, non_blocking=True))


def _pad_right(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids -> ((B, L) int64 right-padded with PAD_ID, (B, L) bool True at real tokens).

    One tensor copy for the whole batch instead of one per row.
    """
    lengths = torch.tensor([len(r) for r in rows])
    flat = torch.tensor([i for r in rows for i in r])
    if flat.is_floating_point() or flat.dtype == torch.bool:
        raise TypeError(f"token ids must be ints, got {flat.dtype}")
    real = torch.arange(int(lengths.max())) < lengths[:, None]
    out = torch.full(real.shape, PAD_ID, dtype=torch.long)
    out[real] = flat.long()  # fills row by row, in the order of the flat list
    return out, real


def collate(examples: Sequence[Example]) -> Batch:
    """Pad a list of examples into a :class:`Batch` (PAD = 0; tgt_in starts with BOS).

    ``tgt_in`` is built per example, ``(BOS,) + tgt[:-1]``, and then padded, so it is PAD wherever
    ``tgt_out`` is (the same as :func:`course_lib.masking.pad_sequences` on each side).
    """
    if not examples:
        raise ValueError("collate needs at least one example")
    for i, e in enumerate(examples):
        if not e.src or not e.tgt:
            raise ValueError(f"examples[{i}] has an empty side ({len(e.src)} source and {len(e.tgt)} target "
                             f"tokens); each side needs at least its EOS")
    src, _ = _pad_right([e.src for e in examples])
    tgt_out, real = _pad_right([e.tgt for e in examples])
    shifted = torch.cat([torch.full_like(tgt_out[:, :1], BOS_ID), tgt_out[:, :-1]], dim=1)
    tgt_in = torch.where(real, shifted, PAD_ID)
    return Batch(src, tgt_in, tgt_out)


class BatchPlan:
    """The batches of one dataset for every epoch: epoch ``e`` uses seed ``seed + e``.

    With ``world_size > 1`` (DistributedDataParallel) rank r takes batches r, r + W, r + 2W, ...,
    and every rank gets the same number of batches (a few at the end are dropped), so no process
    waits for a gradient that never comes.
    """

    def __init__(self, examples: Sequence[Example], max_tokens: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if not examples:
            raise ValueError("BatchPlan needs at least one example")
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}")
        self.examples, self.max_tokens, self.shuffle, self.seed = list(examples), max_tokens, shuffle, seed
        self.rank, self.world_size = rank, world_size

    def indices(self, epoch: int = 0) -> list[list[int]]:
        batches = token_budget_batches(self.examples, self.max_tokens, self.shuffle, self.seed + epoch)
        if self.world_size > 1:
            usable = len(batches) - len(batches) % self.world_size
            if usable == 0:
                raise ValueError(f"only {len(batches)} batches for {self.world_size} processes")
            batches = batches[self.rank:usable:self.world_size]
        return batches

    def __len__(self) -> int:
        return len(self.indices(0))

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        for batch in self.indices(epoch):
            yield collate([self.examples[i] for i in batch])


def padding_fraction(batches: Sequence[Batch]) -> float:
    """Share of the positions in ``batches`` (source and target) that are padding."""
    total = sum(b.src.numel() + b.tgt_out.numel() for b in batches)
    real = sum(int(b.src_mask.sum()) + b.num_target_tokens for b in batches)
    return 1 - real / total if total else 0.0


def plot_batch(batch: Batch, id_to_piece=None, title: str | None = None):
    """Draw a batch's ``src (B, S)``, ``tgt_in (B, T)`` and ``tgt_out (B, T)`` as grids, padding in grey.

    Args:
        batch: a :class:`Batch` (a few short sentences read best).
        id_to_piece: e.g. ``tokenizer.id_to_piece``, to write pieces instead of ids in the cells.
        title: the figure's title.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    names = {PAD_ID: "<pad>", BOS_ID: "<s>", EOS_ID: "</s>"}
    panels = [("src", batch.src, "(B, S)"), ("tgt_in", batch.tgt_in, "(B, T)"), ("tgt_out", batch.tgt_out, "(B, T)")]
    width = max(t.shape[1] for _, t, _ in panels)
    B = batch.src.shape[0]
    fig, axes = plt.subplots(3, 1, figsize=(max(5.0, 0.95 * width + 1.6), 3 * (0.42 * B + 0.75)))
    for ax, (name, ids, dims) in zip(axes, panels):
        ids = ids.detach().cpu()
        real = (ids != PAD_ID).numpy().astype(float)
        ax.imshow(real, cmap=ListedColormap(["#E5E5E5", "#CFE3F3"]), vmin=0, vmax=1, aspect="auto",
                  interpolation="nearest")
        for b in range(ids.shape[0]):
            for t in range(ids.shape[1]):
                i = int(ids[b, t])
                text = names.get(i) or (id_to_piece(i) if id_to_piece else str(i))
                ax.text(t, b, text, ha="center", va="center", fontsize=8,
                        color="#888888" if i == PAD_ID else "black")
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_xticks(range(ids.shape[1]))
        ax.set_yticks(range(ids.shape[0]))
        ax.set_xticks([x - 0.5 for x in range(1, ids.shape[1])], minor=True)
        ax.set_yticks([y - 0.5 for y in range(1, ids.shape[0])], minor=True)
        ax.grid(False)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
        ax.set_ylabel("sentence b")
        ax.set_xlabel("position")
        shape = f"({ids.shape[0]}, {ids.shape[1]})"
        ax.set_title(f"{name} {dims} = {shape}", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
