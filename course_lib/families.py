"""One block, three families: decoder-only (GPT-style) and encoder-only (BERT-style) models (notebook 13).

The translator of notebooks 09-12 has two stacks of blocks joined by cross-attention. Keep one
stack, drop cross-attention, and two families of models appear. They differ in one mask and in
what they are trained to predict:

* **decoder-only** (GPT; Radford et al., 2018): a causal mask in every block, trained to predict
  each next token (:func:`next_token_targets`). It writes text one token at a time
  (:func:`generate_text`), with the key-value cache of notebook 12.
* **encoder-only** (BERT; Devlin et al., 2019): no causal mask, so every position sees the whole
  sentence, trained to recover tokens hidden at random (:func:`mask_tokens`: 15 % of the tokens
  chosen; of those, 80 % become ``[MASK]``, 10 % a random token, 10 % stay). It does not write
  left to right, but it reads every word with both of its sides.

:class:`LanguageModel` is both: token embeddings plus learned positions, a stack of pre-LN
:class:`~course_lib.blocks.EncoderBlock` s (the course's block, unchanged), a final layer norm and
an output layer that shares the token embedding matrix; ``causal=True`` or ``False`` picks the
family. Token ids are the course's tokenizer's (notebook 10) with two more after them, ``[MASK]``
and ``[SEP]`` (:class:`Vocabulary`).

Targets that the loss skips hold :data:`IGNORE` (-100, ``F.cross_entropy``'s ``ignore_index``).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.batching import Example, encode_pairs, token_budget_batches
from course_lib.blocks import EncoderBlock
from course_lib.decoding import eval_mode, generate, length_budget, sample_next_token
from course_lib.kv_cache import KVCache
from course_lib.masking import causal_mask, pad_sequences
from course_lib.positional import LearnedPositionalEmbedding
from course_lib.shapes import check_int, check_shape
from course_lib.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, load_tokenizer
from course_lib.train import (bleu_with_signature, hardware_description, learning_rate, read_provenance,
                              save_atomically, write_provenance)
from course_lib.transformer import check_token_ids, count_parameters

#: The target value that the loss skips (padding, and the unchosen positions of a masked language model).
IGNORE = -100


@dataclass(frozen=True)
class Vocabulary:
    """The ids of a language model: the tokenizer's ``0 .. tokenizer_size - 1``, then ``[MASK]`` and ``[SEP]``.

    ``size`` is what the embedding needs. Word ids (the ones a random replacement draws from) are
    ``first_word_id .. tokenizer_size - 1``: after PAD, BOS, EOS and UNK.
    """

    tokenizer_size: int

    def __post_init__(self):
        check_int(self.tokenizer_size, "tokenizer_size", UNK_ID + 2)

    @property
    def mask_id(self) -> int:
        return self.tokenizer_size

    @property
    def sep_id(self) -> int:
        return self.tokenizer_size + 1

    @property
    def size(self) -> int:
        return self.tokenizer_size + 2

    first_word_id = UNK_ID + 1

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids that are never chosen for masking: PAD, BOS, EOS, [MASK], [SEP]."""
        return (PAD_ID, BOS_ID, EOS_ID, self.mask_id, self.sep_id)

    @classmethod
    def of(cls, tokenizer) -> "Vocabulary":
        """The vocabulary of a course :class:`~course_lib.tokenizer.Tokenizer` (its ``vocab_size`` plus two)."""
        return cls(int(tokenizer.vocab_size))


class LanguageModel(nn.Module):
    """A stack of the course's encoder blocks over token ids: GPT-style with ``causal=True``, BERT-style without.

    ``forward(ids (B, T), cache=None) -> logits (B, T, vocab_size)``. Padding (``pad_id``) is never
    attended to; with ``causal=True`` position i also sees only positions <= i. Learned positions
    (GPT and BERT both learn theirs) limit T to ``max_len``. The output layer shares the token
    embedding matrix (tied weights), so a token's vector is both what goes in and what comes out.

    With ``causal=True`` and a :class:`~course_lib.kv_cache.KVCache` from :meth:`new_cache`, ``ids``
    holds only the tokens after those fed before (at positions t ... t + T - 1, t = ``cache.length``),
    and each block appends its keys and values to its cache: generation feeds one new token per
    step (notebook 12). The cross-attention half of each layer's cache stays empty: there is no
    source.

    Attributes:
        attention_weights: after a forward pass, one (B, h, T, t + T) tensor per block.
    """

    def __init__(self, vocab_size: int, d_model: int = 128, h: int = 4, num_layers: int = 2, d_ff: int = 512,
                 dropout: float = 0.1, max_len: int = 64, causal: bool = True, pad_id: int = PAD_ID,
                 activation: str = "gelu"):
        super().__init__()
        #: the constructor's arguments: ``LanguageModel(**model.config)`` builds the same model
        self.config = dict(vocab_size=vocab_size, d_model=d_model, h=h, num_layers=num_layers, d_ff=d_ff,
                           dropout=dropout, max_len=max_len, causal=causal, pad_id=pad_id, activation=activation)
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be True (decoder-only, GPT-style) or False (encoder-only, BERT-style), "
                            f"got {causal!r}")
        check_int(num_layers, "num_layers", 1)
        self.causal, self.pad_id, self.d_model = causal, pad_id, check_int(d_model, "d_model", 1)
        self.embed = nn.Embedding(check_int(vocab_size, "vocab_size", 1), d_model)
        self.positions = LearnedPositionalEmbedding(max_len, d_model)
        for table in (self.embed, self.positions.table):
            nn.init.normal_(table.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, h, d_ff, dropout, activation, norm_first=True)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size, bias=False)
        self.out.weight = self.embed.weight  # tied: one matrix embeds and unembeds

    @property
    def max_len(self) -> int:
        return self.positions.max_len

    @property
    def family(self) -> str:
        return "decoder-only (GPT-style)" if self.causal else "encoder-only (BERT-style)"

    def attention_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> the blocks' mask: (B, 1, T, T) causal and not padding, or (B, 1, 1, T) not padding."""
        keep = (ids != self.pad_id)[:, None, None, :]  # (B, 1, 1, T)
        return causal_mask(ids.shape[1], device=ids.device) & keep if self.causal else keep

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty cache for ``batch_size`` rows (decoder-only models only)."""
        if not self.causal:
            raise ValueError("an encoder-only (causal=False) model reads the whole sentence at once: every new "
                             "token would change every earlier position, so there is nothing to cache")
        return KVCache(len(self.blocks), batch_size, device=self.embed.weight.device)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return self.out(self.features(ids, cache))  # (B, T, vocab_size)

    def features(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """What the output layer reads: (B, T) ids -> (B, T, d_model), after the blocks and the final norm.

        Training a masked model unembeds only the chosen positions, ``model.out(features[chosen])``:
        the same logits there, for about a seventh of the output layer's work.
        """
        check_shape(ids, "B T", name="ids", dtype="int")
        if ids.shape[1] == 0:
            raise ValueError(f"ids of shape {tuple(ids.shape)} has no tokens")
        check_token_ids(ids, self.embed, "ids")
        if cache is None:
            start, mask = 0, self.attention_mask(ids)
        else:
            if not isinstance(cache, KVCache):
                raise TypeError(f"cache: expected a KVCache (from model.new_cache), got {type(cache).__name__}")
            if not self.causal:
                self.new_cache(0)  # raises: explains why an encoder-only model has no cache
            check_shape(ids, "B T", name="ids", B=cache.batch_size)
            start, mask = cache.length, cache.add_positions(ids != self.pad_id)  # (B, 1, T, t + T)
        x = self.dropout(self.positions(self.embed(ids), start))  # (B, T, d_model)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, None if cache is None else cache.layers[i].self_attn)
        return self.norm(x)

    @property
    def attention_weights(self) -> list[torch.Tensor]:
        return [block.attention_weights for block in self.blocks]


# --- what the two families learn from -------------------------------------------------------------

def next_token_targets(ids: torch.Tensor, pad_id: int = PAD_ID,
                       sep_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A causal language model's training pair: predict every token from the ones before it.

    Args:
        ids: (B, T) right-padded sequences, ``[BOS, w_1, ..., w_n, EOS, PAD, ...]``.
        sep_id: for two texts in one sequence, ``[BOS, source..., SEP, target..., EOS]``: only the
            tokens after the first ``sep_id`` of a row are targets (the source is given, not predicted).

    Returns:
        ``(inputs, targets)``, both (B, T - 1): ``inputs = ids[:, :-1]``, ``targets = ids[:, 1:]``
        with padding (and with ``sep_id``, everything up to the separator) replaced by :data:`IGNORE`,
        so position i is trained to predict token i + 1 and no position is trained to predict padding.
    """
    check_shape(ids, "B T", name="ids", dtype="int")
    if ids.shape[1] < 2:
        raise ValueError(f"ids of shape {tuple(ids.shape)}: a next-token target needs at least 2 positions")
    targets = ids[:, 1:]
    skip = targets == pad_id
    if sep_id is not None:
        is_sep = ids == sep_id  # (B, T)
        if not bool(is_sep.any(dim=1).all()):
            raise ValueError(f"sep_id={sep_id}: every row needs the separator between its two texts")
        after = (is_sep.long().cumsum(dim=1) - is_sep.long()) > 0  # (B, T): strictly after the first SEP
        skip |= ~after[:, 1:]
    return ids[:, :-1], targets.masked_fill(skip, IGNORE)


def _check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a seeded torch.Generator (the draw must be reproducible), "
                        f"got {type(generator).__name__}")
    return generator


def mask_tokens(ids: torch.Tensor, vocab: Vocabulary, generator: torch.Generator, rate: float = 0.15,
                split: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> tuple[torch.Tensor, torch.Tensor]:
    """A masked language model's training pair (BERT's recipe).

    In each row, ``max(1, round(rate * n))`` of its n maskable tokens (not PAD, BOS, EOS, [MASK] or
    [SEP]) are chosen at random, as BERT's data code does. Of the chosen, with the probabilities of
    ``split``: 80 % become ``[MASK]``, 10 % a random word id, 10 % stay as they are, so that the
    model cannot learn to look only where it sees ``[MASK]``. The loss is taken at the chosen
    positions only.

    Args:
        ids: (B, T) token ids. vocab: the model's :class:`Vocabulary`.
        generator: a seeded ``torch.Generator`` on ``ids``' device: the same seed, the same draw.
        rate: the fraction of tokens chosen. split: (mask, random, keep) probabilities, adding to 1.

    Returns:
        ``(inputs, labels)``, both (B, T): the corrupted ids, and the original id at each chosen
        position with :data:`IGNORE` everywhere else.
    """
    check_shape(ids, "B T", name="ids", dtype="int")
    _check_generator(generator)
    if not 0 < rate <= 1:
        raise ValueError(f"rate must lie in (0, 1], got {rate!r}")
    if len(split) != 3 or min(split) < 0 or not math.isclose(sum(split), 1.0):
        raise ValueError(f"split must be three probabilities (mask, random, keep) adding to 1, got {split!r}")
    maskable = ~torch.isin(ids, torch.tensor(vocab.special_ids, device=ids.device))  # (B, T)
    n = maskable.sum(dim=1)  # (B,)
    k = torch.where(n > 0, torch.clamp((n * rate).round().long(), min=1), 0)  # (B,) how many to choose
    scores = torch.rand(ids.shape, generator=generator, device=ids.device).masked_fill(~maskable, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)  # (B, T): 0 = the lowest score of the row
    chosen = rank < k[:, None]
    u = torch.rand(ids.shape, generator=generator, device=ids.device)
    random_ids = torch.randint(vocab.first_word_id, vocab.tokenizer_size, ids.shape, generator=generator,
                               device=ids.device)
    inputs = torch.where(chosen & (u < split[0]), vocab.mask_id, ids)
    inputs = torch.where(chosen & (u >= split[0]) & (u < split[0] + split[1]), random_ids, inputs)
    return inputs, ids.masked_fill(~chosen, IGNORE)


def language_model_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose target is not :data:`IGNORE`.

    Args:
        logits: (B, T, vocab_size). targets: (B, T) ids or :data:`IGNORE`.
    """
    sizes = check_shape(logits, "B T vocab", name="logits", dtype="float")
    check_shape(targets, "B T", name="targets", dtype="int", B=sizes["B"], T=sizes["T"])
    if not bool((targets != IGNORE).any()):
        raise ValueError("targets: every position is IGNORE, so there is nothing to learn from")
    return F.cross_entropy(logits.reshape(-1, sizes["vocab"]).float(), targets.reshape(-1), ignore_index=IGNORE)


def predicted_loss(model: LanguageModel, inputs: torch.Tensor, targets: torch.Tensor,
                   label_smoothing: float = 0.0) -> torch.Tensor:
    """:func:`language_model_loss` of ``model(inputs)``, unembedding only the positions with a target.

    The same value (to float rounding) for less work: a masked model predicts 15 % of its
    positions, and the output layer, ``d_model x vocab_size``, is the largest matrix of a small model.
    ``label_smoothing`` spreads that much of each target's probability over the whole vocabulary
    (the translator's recipe, notebook 11); 0 is plain cross-entropy.
    """
    check_shape(targets, "B T", name="targets", dtype="int", B=inputs.shape[0], T=inputs.shape[1])
    keep = targets != IGNORE  # (B, T)
    if not bool(keep.any()):
        raise ValueError("targets: every position is IGNORE, so there is nothing to learn from")
    return F.cross_entropy(model.out(model.features(inputs)[keep]).float(), targets[keep],
                           label_smoothing=label_smoothing)


# --- training --------------------------------------------------------------------------------------

def encode_captions(tokenizer, sentences: Sequence[str], max_len: int | None = None) -> list[list[int]]:
    """Sentences -> ``[BOS, ids..., EOS]`` lists; those longer than ``max_len`` tokens are dropped."""
    sequences = [[BOS_ID, *ids, EOS_ID] for ids in tokenizer.encode_batch(list(sentences))]
    return [s for s in sequences if max_len is None or len(s) <= max_len]


def sequence_batches(sequences: Sequence[Sequence[int]], max_tokens: int, seed: int = 0,
                     shuffle: bool = True) -> list[torch.Tensor]:
    """Right-padded (B, T) batches of similar-length sequences with ``B * T <= max_tokens`` (notebook 10's batching)."""
    examples = [Example((), tuple(s)) for s in sequences]
    return [pad_sequences([sequences[i] for i in batch], PAD_ID)
            for batch in token_budget_batches(examples, max_tokens, shuffle=shuffle, seed=seed)]


def training_pair(model: LanguageModel, ids: torch.Tensor, vocab: Vocabulary | None = None,
                  generator: torch.Generator | None = None,
                  sep_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (inputs, targets) a model of its family learns from: next tokens (causal) or masked tokens.

    With ``sep_id`` (a causal model reading ``[BOS, source..., SEP, target..., EOS]``) only the
    tokens after the separator are targets.
    """
    if model.causal:
        return next_token_targets(ids, model.pad_id, sep_id)
    if sep_id is not None:
        raise ValueError("sep_id is for a causal model that continues a source: an encoder-only model sees the target")
    if vocab is None:
        raise ValueError("an encoder-only model learns from masked tokens: give the Vocabulary (for [MASK])")
    return mask_tokens(ids, vocab, generator)


@dataclass
class TrainingRun:
    """What :func:`train_language_model` did: the loss of every update, the tokens predicted, the time."""

    losses: list[float]
    predicted_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.predicted_tokens / max(self.seconds, 1e-9)


def train_language_model(model: LanguageModel, sequences: Sequence[Sequence[int]], steps: int,
                         vocab: Vocabulary | None = None, max_tokens: int = 2048, lr: float = 2e-3,
                         warmup_steps: int = 50, weight_decay: float = 0.01, seed: int = 0,
                         on_step: Callable[[int, float], None] | None = None, sep_id: int | None = None,
                         label_smoothing: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                         final_lr_fraction: float = 0.05) -> TrainingRun:
    """Train ``model`` for ``steps`` updates on ``sequences`` (``[BOS, ..., EOS]`` id lists) with its family's objective.

    AdamW (``betas``), warm-up then cosine decay to ``final_lr_fraction * lr`` (notebook 11's
    :func:`~course_lib.train.learning_rate`), gradient norm clipped to 1. Batches of at most
    ``max_tokens`` padded tokens cycle through the data, reshuffled every pass; masking draws from a
    generator seeded with ``seed``: the same seed, the same run. With ``sep_id`` a causal model learns
    to continue ``[BOS, source..., SEP]`` (the loss on the target side only, :func:`next_token_targets`).
    """
    steps = check_int(steps, "steps", 1)
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=lr, betas=tuple(betas))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: learning_rate(s, steps, 1.0, warmup_steps, final_lr_fraction))
    generator = torch.Generator(device=model.embed.weight.device).manual_seed(seed)
    losses, predicted, started, epoch = [], 0, time.perf_counter(), 0
    model.train()
    while len(losses) < steps:
        for ids in sequence_batches(sequences, max_tokens, seed=seed + epoch):
            inputs, targets = training_pair(model, ids.to(model.embed.weight.device), vocab, generator, sep_id)
            loss = predicted_loss(model, inputs, targets, label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            predicted += int((targets != IGNORE).sum())
            if on_step is not None:
                on_step(len(losses), losses[-1])
            if len(losses) == steps:
                break
        epoch += 1
    model.eval()
    return TrainingRun(losses, predicted, time.perf_counter() - started)


# --- measuring ---------------------------------------------------------------------------------------

@torch.no_grad()
def perplexity(model: LanguageModel, sequences: Sequence[Sequence[int]], max_tokens: int = 4096,
               sep_id: int | None = None) -> float:
    """exp(mean next-token cross-entropy) of a causal model over every predicted token (EOS included).

    With ``sep_id``, over the tokens after the separator only (a translation's target side).
    """
    if not model.causal:
        raise ValueError("perplexity needs a causal model: an encoder-only model sees the token it would predict")
    total, count = 0.0, 0
    with eval_mode(model):
        for ids in sequence_batches(sequences, max_tokens, shuffle=False):
            inputs, targets = next_token_targets(ids.to(model.embed.weight.device), model.pad_id, sep_id)
            n = int((targets != IGNORE).sum())
            total += float(language_model_loss(model(inputs), targets)) * n
            count += n
    return math.exp(total / count)


def choose_blanks(sequences: Sequence[Sequence[int]], vocab: Vocabulary, seed: int = 0) -> list[int]:
    """One position per sequence to hide in a fill-in-the-blank test: a word, never BOS/EOS/PAD, seeded."""
    generator = torch.Generator().manual_seed(seed)
    positions = []
    for i, seq in enumerate(sequences):
        words = [p for p, token in enumerate(seq) if token not in vocab.special_ids]
        if not words:
            raise ValueError(f"sequences[{i}] has no word to hide")
        positions.append(words[int(torch.randint(len(words), (1,), generator=generator))])
    return positions


@torch.no_grad()
def blank_logits(model: LanguageModel, ids: torch.Tensor, positions: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
    """Each family's guess for a hidden token: (B, vocab_size) logits for position ``positions[b]`` of row b.

    The token there becomes ``[MASK]``. An encoder-only model reads the whole row and answers at
    the position itself; a causal model can only continue the words on the left, so its guess is
    the next-token prediction one position earlier (it never sees the right side).
    """
    sizes = check_shape(ids, "B T", name="ids", dtype="int")
    check_shape(positions, "B", name="positions", dtype="int", B=sizes["B"])
    if bool((positions < 1).any()) or bool((positions >= sizes["T"]).any()):
        raise ValueError(f"positions must lie in 1..{sizes['T'] - 1} (position 0 holds BOS), got {positions.tolist()}")
    rows = torch.arange(sizes["B"], device=ids.device)
    hidden = ids.clone()
    hidden[rows, positions] = vocab.mask_id
    with eval_mode(model):
        logits = model(hidden)  # (B, T, vocab_size)
    at = positions - 1 if model.causal else positions
    return logits[rows, at]


@torch.no_grad()
def blank_accuracy(model: LanguageModel, sequences: Sequence[Sequence[int]], positions: Sequence[int],
                   vocab: Vocabulary, batch_size: int = 256) -> float:
    """The fraction of hidden tokens (one per sequence, at ``positions``) that the model's top guess gets right."""
    if len(positions) != len(sequences):
        raise ValueError(f"one position per sequence: got {len(positions)} positions for {len(sequences)} sequences")
    device, right = model.embed.weight.device, 0
    for first in range(0, len(sequences), batch_size):
        ids = pad_sequences(list(sequences[first:first + batch_size]), PAD_ID).to(device)
        where = torch.tensor(positions[first:first + batch_size], device=device)
        guess = blank_logits(model, ids, where, vocab).argmax(dim=-1)
        right += int((guess == ids[torch.arange(len(where), device=device), where]).sum())
    return right / len(sequences)


def encode_blank(tokenizer, vocab: Vocabulary, text: str) -> tuple[list[int], int]:
    """``"A [MASK] is barking at a cat."`` -> (``[BOS, ..., [MASK], ..., EOS]``, the position of [MASK])."""
    if text.count("[MASK]") != 1:
        raise ValueError(f"text must hold exactly one [MASK], got {text!r}")
    left, right = (part.strip() for part in text.split("[MASK]"))
    ids = [BOS_ID, *(tokenizer.encode(left) if left else [])]
    position = len(ids)
    return [*ids, vocab.mask_id, *(tokenizer.encode(right) if right else []), EOS_ID], position


@torch.no_grad()
def fill_in(model: LanguageModel, tokenizer, vocab: Vocabulary, text: str, k: int = 5) -> list[tuple[str, float]]:
    """The model's ``k`` most likely pieces for the one ``[MASK]`` in ``text``, with their probabilities."""
    ids, position = encode_blank(tokenizer, vocab, text)
    device = model.embed.weight.device
    logits = blank_logits(model, torch.tensor([ids], device=device), torch.tensor([position], device=device), vocab)
    probs = torch.softmax(logits[0, :vocab.tokenizer_size].float(), dim=-1)  # only real pieces
    top = probs.topk(check_int(k, "k", 1))
    return [(tokenizer.id_to_piece(int(i)), float(p)) for p, i in zip(top.values, top.indices)]


# --- writing -----------------------------------------------------------------------------------------

@torch.no_grad()
def generate_text(model: LanguageModel, prompt: Sequence[int], num_samples: int = 1, max_new_tokens: int = 30,
                  temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                  generator: torch.Generator | None = None, cached: bool = True) -> list[list[int]]:
    """Continue ``prompt`` (ids, BOS first) ``num_samples`` times by sampling (notebook 12's filters).

    ``prompt`` may also be a batch of prompts of one length, ``(B, P)`` (a tensor or B lists), each
    continued once (``num_samples=1``): e.g. German sentences of equal length, each followed by ``[SEP]``.

    With ``cached=True`` the model takes the prompt in one pass and then one new token per step,
    its blocks keeping the keys and values of the earlier ones; with ``cached=False`` it reads the
    whole text at every step. The draws are the same for the same generator state. ``top_k=1``
    gives greedy decoding. Returns one id list per sample: the new tokens, cut after EOS.
    """
    if not model.causal:
        raise ValueError("generate_text needs a decoder-only (causal=True) model")
    if not isinstance(cached, bool):
        raise TypeError(f"cached must be True or False, got {cached!r}")
    device = model.embed.weight.device
    try:
        prefix = torch.as_tensor(prompt if isinstance(prompt, torch.Tensor) else list(prompt), dtype=torch.long)
    except (ValueError, TypeError):
        raise ValueError("prompt: expected one list of ids, or prompts of one length ((B, P) ids)") from None
    num_samples = check_int(num_samples, "num_samples", 1)
    if prefix.dim() == 2 and num_samples != 1:
        raise ValueError(f"a batch of {prefix.shape[0]} prompts is continued once each: num_samples must be 1, "
                         f"got {num_samples}")
    if prefix.dim() not in (1, 2) or prefix.numel() == 0:
        raise ValueError(f"prompt must start with BOS: got ids of shape {tuple(prefix.shape)}")
    prefix = prefix.to(device).reshape(-1, prefix.shape[-1]).repeat(num_samples, 1)  # (N, P)
    if bool((prefix[:, 0] != BOS_ID).any()):
        raise ValueError("prompt must start with BOS (encode the text and put BOS_ID before it)")
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", 0)
    if prefix.shape[1] + max_new_tokens > model.max_len:
        raise ValueError(f"prompt ({prefix.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                         f"model's max_len ({model.max_len}), the positions it has learned")
    num_samples = prefix.shape[0]
    with eval_mode(model):
        if cached:
            cache = model.new_cache(num_samples)
            next_logits = lambda out: model(out[:, cache.length:], cache)[:, -1]  # noqa: E731 (new tokens only)
        else:
            next_logits = lambda out: model(out)[:, -1]  # noqa: E731 (the whole text, every step)
        choose = lambda logits: sample_next_token(logits, temperature, top_k, top_p, generator)  # noqa: E731
        return generate(next_logits, num_samples, max_new_tokens, choose, device=device, prefix=prefix)


# --- translation as one sequence ------------------------------------------------------------------

def encode_translation_pairs(tokenizer, pairs: Sequence[tuple[str, str]], vocab: Vocabulary,
                             max_len: int | None = 64) -> list[list[int]]:
    """(German, English) pairs -> ``[BOS, German..., SEP, English..., EOS]`` id lists for a decoder-only translator.

    Pairs are kept or dropped as the translator's (:func:`~course_lib.batching.encode_pairs`): a side
    longer than ``max_len`` tokens, counting the token that ends it (SEP or EOS), is dropped.
    """
    examples = encode_pairs(list(pairs), tokenizer, max_len)  # both sides end in EOS
    return [[BOS_ID, *e.src[:-1], vocab.sep_id, *e.tgt] for e in examples]


def one_sequence_budget(source_length: int) -> int:
    """The most English tokens for a German sentence of ``source_length`` pieces: the translator's
    :func:`~course_lib.decoding.output_budget` (1.5 x the source with its end token, plus 10)."""
    return length_budget(source_length + 1)


def translate_in_one_sequence(model: LanguageModel, tokenizer, vocab: Vocabulary, sentences: Sequence[str],
                              batch_size: int = 64) -> list[str]:
    """Greedy translations by a decoder-only model: continue ``[BOS, German..., SEP]`` until EOS.

    Sentences of the same length in pieces are decoded together (a batch of prompts needs one
    length), through the KV cache, with the budget of :func:`one_sequence_budget` (cut to the
    positions the model has); the results come back in the input order. A blank sentence gives "".
    Ids past the tokenizer's (``[MASK]``, ``[SEP]``), never a target in training, are left out of the text.
    """
    if isinstance(sentences, str):
        raise TypeError("translate_in_one_sequence takes a list of sentences; wrap a single one in a list")
    check_int(batch_size, "batch_size", minimum=1)
    results = [""] * len(sentences)
    encoded = tokenizer.encode_batch([str(s) for s in sentences])
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        if str(sentences[i]).strip():
            by_length.setdefault(len(ids), []).append(i)
    for length, todo in sorted(by_length.items()):
        if length + 3 > model.max_len:
            raise ValueError(f"sentences {todo[:5]} have {length} pieces: with BOS, SEP and one output token "
                             f"that is more than the model's max_len ({model.max_len})")
        budget = min(one_sequence_budget(length), model.max_len - length - 2)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            prompts = torch.tensor([[BOS_ID, *encoded[i], vocab.sep_id] for i in chunk])  # (B, length + 2)
            for i, ids in zip(chunk, generate_text(model, prompts, max_new_tokens=budget, top_k=1)):
                results[i] = tokenizer.decode([t for t in ids if t < vocab.tokenizer_size])  # no [MASK]/[SEP]
    return results


# --- pictures ------------------------------------------------------------------------------------------

@torch.no_grad()
def attention_maps(model: LanguageModel, ids: torch.Tensor) -> torch.Tensor:
    """Every block's self-attention weights for one pass: (B, T) ids -> (L, B, h, T, T)."""
    check_shape(ids, "B T", name="ids", dtype="int")
    with eval_mode(model):
        model(ids)
    return torch.stack(model.attention_weights)


@torch.no_grad()
def attention_by_region(model: LanguageModel, ids: torch.Tensor, sep_id: int, even: bool = False) -> torch.Tensor:
    """Where a decoder-only translator looks while it writes the target, block by block.

    Args:
        ids: (B, T) right-padded ``[BOS, source..., SEP, target..., EOS]`` rows.
        sep_id: the separator's id.

    Returns:
        (L, 3): for each block, the attention weight (averaged over heads, then over every query that
        predicts a target token, from SEP to the token before EOS, in every row) that falls on
        ``BOS``, on the source tokens, and on ``SEP`` with the target written so far. Each row adds up to 1.
        With ``even=True``, (1, 3): the same split for queries that spread their attention evenly over
        every position the causal mask lets them see, the baseline to read the model's against.
    """
    sizes = check_shape(ids, "B T", name="ids", dtype="int")
    is_sep = ids == sep_id
    if not bool((is_sep.sum(dim=1) == 1).all()):
        raise ValueError(f"every row of ids needs exactly one separator (id {sep_id}) between its two texts")
    sep = is_sep.long().argmax(dim=1)  # (B,)
    last = (ids != model.pad_id).sum(dim=1) - 1  # (B,) the position of EOS
    position = torch.arange(sizes["T"], device=ids.device)  # (T,)
    key = position.expand(sizes["B"], -1)  # (B, T_k)
    regions = torch.stack([key == 0, (key > 0) & (key < sep[:, None]), key >= sep[:, None]], dim=-1).float()  # (B, T_k, 3)
    queries = (position[None, :] >= sep[:, None]) & (position[None, :] < last[:, None])  # (B, T_q)
    if even:
        allowed = causal_mask(sizes["T"], device=ids.device).float()  # (T_q, T_k): keys up to the query
        weights = (allowed / allowed.sum(dim=-1, keepdim=True)).expand(1, sizes["B"], -1, -1)  # (1, B, T_q, T_k)
    else:
        weights = attention_maps(model, ids).mean(dim=2)  # (L, B, T_q, T_k)
    mass = weights @ regions  # (L, B, T_q, 3)
    return mass[:, queries].mean(dim=1)  # (L, 3)


def plot_attention_pattern(allowed: torch.Tensor, weights: torch.Tensor, query_labels: Sequence[str],
                           key_labels: Sequence[str], title: str = ""):
    """Two panels: which keys each query may attend to (the family's mask), and where a trained model looked.

    Args:
        allowed: (T_q, T_k) bool. weights: (T_q, T_k) attention weights (rows add up to 1).
        query_labels: T_q names; key_labels: T_k names.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from course_lib.masking import plot_mask

    sizes = check_shape(allowed, "T_q T_k", name="allowed", dtype="bool")
    check_shape(weights, "T_q T_k", name="weights", dtype="float", **sizes)
    width = 0.42 * sizes["T_k"] + 2.2
    fig, (left, right) = plt.subplots(1, 2, figsize=(2 * width + 1.0, 0.4 * sizes["T_q"] + 2.2))
    plot_mask(allowed.cpu(), query_labels, key_labels, ax=left, title="allowed by the mask", annotate=False,
              legend=False)
    image = right.imshow(weights.detach().cpu().numpy(), cmap="Blues", vmin=0, vmax=1, aspect="equal")
    right.set_xticks(range(sizes["T_k"]), key_labels, rotation=60, ha="right")
    right.set_yticks(range(sizes["T_q"]), query_labels)
    right.set_xlabel("key (attended to)")
    right.set_title("what the trained model attends to")
    right.grid(False)
    fig.colorbar(image, ax=right, fraction=0.046, pad=0.04, label="attention weight")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- the shipped pair: trained from the command line ------------------------------------------------

#: Where the course's trained language models live (committed): one folder per family.
PRETRAINED_ROOT = Path(__file__).resolve().parent.parent / "data" / "pretrained"
FAMILY_FOLDERS = {"gpt": "multi30k_en_gpt", "bert": "multi30k_en_bert"}
#: The size of the English tokenizer of the language models (notebook 13): a small output layer.
ENGLISH_VOCAB_SIZE = 2000
#: The shipped pair's sizes and training settings, the same for both families: they differ in mask and objective.
PAIR_SIZES = dict(d_model=128, h=4, num_layers=2, d_ff=512, dropout=0.1, max_len=48)
PAIR_TRAINING = dict(max_tokens=4096, lr=1e-3, warmup_steps=100, seed=0)
#: Updates per family: the same number of predicted tokens (about 5.7 million). A masked model predicts
#: 15 % of the words of a batch and a causal one every token, so BERT needs about 7 times the updates.
PAIR_STEPS = {"gpt": 1500, "bert": 10500}

#: The decoder-only translator (notebook 13, section 8): notebook 11's shipped translator's width, heads,
#: feed-forward size and tokenizer (8,000 pieces shared by German and English), with its 3 + 3 blocks
#: (cross-attention in the 3 decoder blocks) replaced by 7 causal blocks: 7.6 million parameters each.
#: 128 positions hold the longest pair it trains on: 63 + 63 pieces, BOS and SEP.
TRANSLATOR_FOLDER = "multi30k_de_en_gpt"
TRANSLATOR_SIZES = dict(d_model=256, h=4, num_layers=7, d_ff=1024, dropout=0.1, max_len=128)
#: The translator's recipe (train.RECIPES["full"]): the same pairs (a side of at most 64 tokens), peak rate,
#: warm-up, final rate, betas, label smoothing and weight decay; batches of at most 8,192 padded tokens of
#: German + English hold as many pairs as its batches of 4,096 (the longer side), so an epoch has as many updates.
TRANSLATOR_TRAINING = dict(max_tokens=8192, lr=1e-3, warmup_steps=400, final_lr_fraction=0.05, betas=(0.9, 0.98),
                           label_smoothing=0.1, weight_decay=0.01, seed=0)
TRANSLATOR_PAIR_MAX_LEN = 64
#: Validation sentences translated after every epoch, as the translator's training did (its bleu_sentences).
TRANSLATOR_BLEU_SENTENCES = 500
#: Every shipped model of this module: the pair, and the decoder-only translator.
SHIPPED_FOLDERS = {**FAMILY_FOLDERS, "translator": TRANSLATOR_FOLDER}


def english_captions(split: str, tokenizer, max_len: int = PAIR_SIZES["max_len"]) -> list[list[int]]:
    """The English side of a Multi30k split as ``[BOS, ..., EOS]`` id lists of at most ``max_len`` tokens."""
    from course_lib.data import load_split

    return encode_captions(tokenizer, [en for _, en in load_split(split)], max_len)


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric 8-bit storage of a matrix, one scale per row: (R, C) float -> ((R, C) int8, (R,) float32).

    Row r is stored as ``round(weight[r] / scale[r])`` with ``scale[r] = max |weight[r]| / 127``, so
    each value comes back (:func:`dequantize_rows`) within half a step, ``scale[r] / 2``, of where it was.
    """
    check_shape(weight, "R C", name="weight", dtype="float")
    scale = weight.detach().abs().amax(dim=1).float().clamp(min=1e-12) / 127  # (R,)
    return (weight.detach().float() / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


def dequantize_rows(quantized: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float matrix of :func:`quantize_rows`: (R, C) int8 and (R,) scales -> (R, C) float32."""
    check_shape(quantized, "R C", name="quantized", dtype="int")
    check_shape(scale, "R", name="scale", dtype="float", R=quantized.shape[0])
    return quantized.float() * scale.float()[:, None]


def export_language_model(model: LanguageModel, tokenizer, out_dir: str | os.PathLike, provenance: dict,
                          int8: bool = False) -> Path:
    """Write ``model.pt`` (weights + config), ``tokenizer.model`` and ``provenance.json`` (with SHA-256s).

    Weights are stored in fp16, or with ``int8`` every matrix in 8 bits with one scale per row
    (:func:`quantize_rows`: half the size, for the 7.6-million-parameter translator) and the rest in fp16.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights, scales = {}, {}
    for name, t in model.state_dict().items():
        if name == "out.weight":  # tied to the embedding: stored once
            continue
        if int8 and t.is_floating_point() and t.dim() == 2:
            weights[name], scales[name] = quantize_rows(t.cpu())
        else:
            weights[name] = (t.detach().half() if t.is_floating_point() else t.detach()).cpu()
    saved = {"format": "course_lib.language_model/1", "config": model.config, "weights": weights}
    if scales:
        saved["int8_row_scales"] = scales
    save_atomically(saved, out / "model.pt")
    tokenizer.save(out / "tokenizer.model")
    write_provenance(out, provenance)
    return out


def load_language_model(family: str = "gpt", folder: str | os.PathLike | None = None, device="cpu"):
    """A shipped language model: ``(model in eval mode, tokenizer, provenance dict)``.

    ``family`` is ``"gpt"``, ``"bert"`` or ``"translator"`` (the folders under ``data/pretrained/``), or
    give ``folder``.
    Every file is checked against the SHA-256 that ``provenance.json`` records before it is read.
    """
    if folder is None:
        if family not in SHIPPED_FOLDERS:
            raise ValueError(f"family must be one of {sorted(SHIPPED_FOLDERS)}, got {family!r}")
        folder = PRETRAINED_ROOT / SHIPPED_FOLDERS[family]
    folder = Path(folder)
    provenance = read_provenance(folder, "trained language model")
    saved = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    model = LanguageModel(**saved["config"])
    scales = saved.get("int8_row_scales", {})
    weights = {k: dequantize_rows(v, scales[k]) if k in scales else v.float() for k, v in saved["weights"].items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if set(missing) - {"out.weight"} or unexpected:
        raise ValueError(f"{folder / 'model.pt'} does not fit a LanguageModel: missing {missing}, unexpected {unexpected}")
    return model.to(device).eval(), Tokenizer.from_file(folder / "tokenizer.model"), provenance


def main(argv: list[str] | None = None) -> int:
    """``python -m course_lib.families --family gpt --export data/pretrained/multi30k_en_gpt``: train and ship one."""
    parser = argparse.ArgumentParser(prog="python -m course_lib.families", description=main.__doc__)
    parser.add_argument("--family", choices=sorted(SHIPPED_FOLDERS), required=True)
    parser.add_argument("--steps", type=int, default=None, help=f"updates (default: {PAIR_STEPS})")
    parser.add_argument("--epochs", type=int, default=None,
                        help="translator only: passes over the training pairs (an alternative to --steps)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--export", required=True, help="the folder to write the model, tokenizer and provenance to")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m course_lib.families " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.family == "translator":
        return _train_translator(args, command)
    tokenizer = load_tokenizer(ENGLISH_VOCAB_SIZE, languages=("en",))
    vocab = Vocabulary.of(tokenizer)
    train, val = english_captions("train", tokenizer), english_captions("val", tokenizer)
    torch.manual_seed(PAIR_TRAINING["seed"])
    model = LanguageModel(vocab.size, causal=args.family == "gpt", **PAIR_SIZES)
    training = dict(PAIR_TRAINING, steps=args.steps or PAIR_STEPS[args.family])
    run = train_language_model(model, train, vocab=vocab, **training,
                               on_step=lambda i, loss: print(f"step {i:5d}  loss {loss:.3f}", flush=True)
                               if i % 100 == 0 else None)
    blanks = choose_blanks(val, vocab, seed=0)
    scores = {"val_blank_accuracy": blank_accuracy(model, val, blanks, vocab)}
    if model.causal:
        scores["val_perplexity"] = perplexity(model, val)
    print(run.seconds, scores)
    provenance = {
        "command": command, "family": model.family, "sizes": PAIR_SIZES, "training": training,
        "tokenizer": {"vocab_size": ENGLISH_VOCAB_SIZE, "languages": ["en"], "sha256": tokenizer.sha256},
        "data": {"train_sequences": len(train), "val_sequences": len(val),
                 "blanks": "one word per validation caption, choose_blanks(seed=0)"},
        "hardware": hardware_description(torch.device("cpu")), "torch": torch.__version__,
        "train_seconds": round(run.seconds, 1), "predicted_tokens_per_second": round(run.tokens_per_second),
        "final_train_loss": sum(run.losses[-50:]) / len(run.losses[-50:]), **scores,
    }
    export_language_model(model, tokenizer, args.export, provenance)
    print(f"written to {args.export}")
    return 0


def _train_translator(args, command: str) -> int:
    from course_lib.data import load_split

    tokenizer = load_tokenizer()  # notebook 10's: 8,000 pieces, German and English
    vocab = Vocabulary.of(tokenizer)
    val_pairs = load_split("val")
    train = encode_translation_pairs(tokenizer, load_split("train"), vocab, TRANSLATOR_PAIR_MAX_LEN)
    val = encode_translation_pairs(tokenizer, val_pairs, vocab, TRANSLATOR_PAIR_MAX_LEN)
    per_epoch = len(sequence_batches(train, TRANSLATOR_TRAINING["max_tokens"], seed=TRANSLATOR_TRAINING["seed"]))
    if (args.steps is None) == (args.epochs is None):
        raise SystemExit("the translator needs --epochs or --steps (one of them)")
    steps = args.steps or args.epochs * per_epoch
    torch.manual_seed(TRANSLATOR_TRAINING["seed"])
    model = LanguageModel(vocab.size, causal=True, **TRANSLATOR_SIZES)
    history, losses, started = [], [], time.perf_counter()
    epoch_start, evaluating = 0, 0.0  # the step the current epoch began after; seconds spent evaluating
    bleu_pairs = val_pairs[:TRANSLATOR_BLEU_SENTENCES]

    def on_step(i: int, loss: float) -> None:
        nonlocal epoch_start, evaluating
        losses.append(loss)
        if i % 50 == 0:
            print(f"step {i:5d}  loss {loss:.3f}  {time.perf_counter() - started - evaluating:6.0f} s", flush=True)
        if i % per_epoch == 0 or i == steps:
            eval_started = time.perf_counter()
            hyps = translate_in_one_sequence(model, tokenizer, vocab, [de for de, _ in bleu_pairs])
            row = {"epoch": round(i / per_epoch, 2), "step": i, "train_loss": sum(losses[epoch_start:]) / (i - epoch_start),
                   "val_ppl": perplexity(model, val, sep_id=vocab.sep_id),
                   "val_bleu": bleu_with_signature(hyps, [en for _, en in bleu_pairs])["bleu"],
                   "train_seconds": round(eval_started - started - evaluating, 1)}  # training alone
            history.append(row)
            epoch_start = i
            print(row, flush=True)
            model.train()
            evaluating += time.perf_counter() - eval_started

    run = train_language_model(model, train, steps=steps, vocab=vocab, sep_id=vocab.sep_id, on_step=on_step,
                               **TRANSLATOR_TRAINING)
    checkpoint = Path("runs") / "translator_gpt_trained.pt"  # full precision, in case the export goes wrong
    checkpoint.parent.mkdir(exist_ok=True)
    save_atomically({"config": model.config, "state": model.state_dict()}, checkpoint)
    references = [en for _, en in val_pairs]
    trained_bleu = bleu_with_signature(translate_in_one_sequence(model, tokenizer, vocab,
                                                                 [de for de, _ in val_pairs]), references)
    trained_ppl = perplexity(model, val, sep_id=vocab.sep_id)
    provenance = _translator_provenance(command, model, tokenizer, train, val, steps, per_epoch, run, evaluating,
                                        history, {"val_greedy_full_precision": trained_bleu,
                                                  "val_ppl_full_precision": trained_ppl})
    export_language_model(model, tokenizer, args.export, provenance, int8=True)
    shipped, _, _ = load_language_model(folder=args.export)  # measure what is shipped: 8-bit matrices
    decode_started = time.perf_counter()
    hyps = translate_in_one_sequence(shipped, tokenizer, vocab, [de for de, _ in val_pairs])
    provenance.update({"val_greedy": bleu_with_signature(hyps, references),
                       "val_greedy_seconds": round(time.perf_counter() - decode_started, 1),
                       "val_ppl": perplexity(shipped, val, sep_id=vocab.sep_id)})
    print(provenance, flush=True)
    write_provenance(Path(args.export), provenance)
    print(f"written to {args.export}")
    return 0


def _translator_provenance(command, model, tokenizer, train, val, steps, per_epoch, run, evaluating, history,
                           scores) -> dict:
    return {
        "command": command, "family": "decoder-only translator", "sizes": TRANSLATOR_SIZES,
        "training": dict(TRANSLATOR_TRAINING, steps=steps, betas=list(TRANSLATOR_TRAINING["betas"])),
        "updates_per_epoch": per_epoch, "parameters": count_parameters(model),
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "languages": ["de", "en"], "sha256": tokenizer.sha256},
        "data": {"train_pairs": len(train), "val_pairs": len(val), "pair_max_len": TRANSLATOR_PAIR_MAX_LEN,
                 "sequence": "[BOS] German [SEP] English [EOS], loss on the English side (and EOS) only"},
        "hardware": hardware_description(torch.device("cpu")), "torch": torch.__version__,
        "train_seconds": round(run.seconds - evaluating, 1), "evaluation_seconds": round(evaluating, 1),
        "predicted_tokens_per_second": round(run.predicted_tokens / (run.seconds - evaluating)),
        "epochs": history, "shipped_weights": "int8 matrices (one scale per row), fp16 vectors", **scores,
    }


if __name__ == "__main__":
    raise SystemExit(main())
