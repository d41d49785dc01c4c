"""Turning a trained translation model into text: greedy decoding and beam search.

Both take source ids ``src (B, S)`` (PAD = 0, each row ending in EOS) and return, per sentence,
the generated target ids without BOS, cut after the first EOS. :func:`translate` wraps them with
a tokenizer: German strings in, English strings out, in batches sorted by length.

:func:`sample` draws each next token at random instead, from the model's distribution reshaped by
a temperature and cut down by top-k and/or top-p (nucleus) filtering (:func:`filter_logits`).

Every search decodes with a key–value cache by default (``cached=True``, notebook 12):
:class:`IncrementalDecoder` feeds the model one new token per step and the model's own attention
modules keep the keys and values of the earlier ones (:mod:`course_lib.kv_cache`). With
``cached=False`` the decoder runs over the whole prefix at every step instead; the outputs are the
same, only the time differs. The search loops themselves (:func:`generate` and
:func:`beam_search_loop`) only ask for the next-token logits through a callable, so both ways share
them. Searches run the model in eval mode (no dropout) and give every module its mode back after.
"""
from __future__ import annotations

import contextlib
import functools
import math
import warnings
from numbers import Integral, Real
from typing import Callable, Sequence

import torch
from torch import nn

from course_lib.masking import pad_sequences
from course_lib.shapes import check_int, check_shape
from course_lib.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, check_texts
from course_lib.transformer import Seq2SeqTransformer


def length_budget(source_tokens: int) -> int:
    """The most tokens a translation of a ``source_tokens``-token source may have: 1.5 x that, plus 10."""
    return int(1.5 * source_tokens) + 10


def output_budget(src: torch.Tensor, pad_id: int = PAD_ID) -> list[int]:
    """The most tokens each sentence may generate: 1.5 x its own source length, plus 10.

    The budget grows with the source, so a long sentence is not cut at a fixed length, and it
    depends on that sentence alone, so a sentence decodes the same whatever else is in its batch.

    Args:
        src: (B, S) source ids, padded with ``pad_id``.

    Returns:
        B ints, one budget per sentence.
    """
    check_shape(src, "B S", name="src", dtype="int")
    return [length_budget(n) for n in (src != pad_id).sum(dim=1).tolist()]


def default_max_len(src: torch.Tensor, pad_id: int = PAD_ID) -> int:
    """The largest :func:`output_budget` of a batch: 1.5 x its longest source, plus 10."""
    return max(output_budget(src, pad_id), default=10)


def sentence_budgets(src: torch.Tensor, max_len=None, pad_id: int = PAD_ID) -> list[int]:
    """Per-sentence limits for a search: ``max_len`` None -> :func:`output_budget`; an int -> the same for
    every sentence; a list (or 1-d tensor) of B ints -> one each. Refuses negative or non-integer limits."""
    B = src.shape[0]
    if max_len is None:
        return output_budget(src, pad_id)
    if isinstance(max_len, torch.Tensor) and max_len.dim() == 1 or isinstance(max_len, (list, tuple)):
        limits = [check_int(m, f"max_len[{i}]", minimum=0) for i, m in enumerate(max_len)]
        if len(limits) != B:
            raise ValueError(f"max_len: expected one limit per sentence ({B}), got {len(limits)}")
        return limits
    return [check_int(max_len, "max_len", minimum=0)] * B


def _strip(row: Sequence[int]) -> list[int]:
    out = []
    for token in row:
        token = int(token)
        if token == PAD_ID:
            break
        out.append(token)
        if token == EOS_ID:
            break
    return out


#: ``next_logits(out (B, t)) -> (B, n_vocab)``: the logits for the token after the prefixes ``out`` (BOS first).
NextLogits = Callable[[torch.Tensor], torch.Tensor]


def never_generated(logits: torch.Tensor) -> torch.Tensor:
    """Block PAD and BOS, which a search never produces: ``logits (N, n_vocab)`` -> a copy with ``-inf`` there."""
    logits = logits.clone()
    logits[:, [PAD_ID, BOS_ID]] = -math.inf  # never generate padding or a second BOS
    return logits


def generate(next_logits: NextLogits, batch_size: int, max_len, choose, device=None,
             prefix: torch.Tensor | None = None) -> list[list[int]]:
    """The token-by-token loop shared by greedy search and sampling, for any way of computing logits.

    Args:
        next_logits: ``(B, t)`` prefixes (BOS first) -> ``(B, n_vocab)`` logits of the next token.
        batch_size: B.
        max_len: the most tokens generated per sentence: one int for all, or B ints, one each
            (see :func:`output_budget`); a sentence that reaches its own limit stops there.
        choose: ``(B, n_vocab)`` logits with PAD and BOS at ``-inf`` -> ``(B,)`` next tokens
            (argmax for greedy search).
        prefix: ``(B, P)`` ids that every row starts from (BOS first, no padding), e.g. a prompt for
            a decoder-only model (notebook 13); None starts from BOS alone.

    Returns:
        One id list per sentence, without BOS (or the prefix), cut after the first EOS.
    """
    limits = [max_len] * batch_size if isinstance(max_len, Integral) else list(max_len)
    limit = torch.tensor(limits, dtype=torch.long, device=device).reshape(batch_size)  # (B,)
    if prefix is None:
        out = torch.full((batch_size, 1), BOS_ID, dtype=torch.long, device=device)
    else:
        check_shape(prefix, "B P", name="prefix", dtype="int", B=batch_size)
        if prefix.shape[1] == 0:
            raise ValueError("prefix has no tokens: it starts with BOS")
        out = prefix.to(device)
    start = out.shape[1]
    done = limit <= 0
    for step in range(max(limits, default=0)):
        if bool(done.all()):
            break
        logits = never_generated(next_logits(out))  # (B, n_vocab)
        next_token = choose(logits).masked_fill(done, PAD_ID)  # finished sentences get padding
        out = torch.cat([out, next_token[:, None]], dim=1)
        done |= (next_token == EOS_ID) | (limit <= step + 1)
    return [_strip(row) for row in out[:, start:].tolist()]


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """Put ``module`` in eval mode (no dropout) for a while, then give every submodule its own mode back."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _in_eval_mode(search):
    """Run a search ``search(model, ...)`` with the model in eval mode and without gradients."""
    @functools.wraps(search)
    def wrapped(model, *args, **kwargs):
        with torch.no_grad(), eval_mode(model):
            return search(model, *args, **kwargs)

    return wrapped


class IncrementalDecoder:
    """Run a :class:`~course_lib.transformer.Seq2SeqTransformer`'s decoder one token at a time with a KV cache.

    Usage::

        decoder = IncrementalDecoder(model).start(src)   # encode; an empty cache
        logits = decoder.step(torch.full((B,), BOS_ID))  # (B, n_vocab): the first output token's logits
        logits = decoder.step(next_tokens)               # (B, n_vocab): the one after, and so on
        decoder.reorder(indices)                         # keep/reorder rows (beam search)

    ``step`` calls ``model.decode(tokens[:, None], memory, src_mask, cache)``: the model's own layers,
    one new position, the keys and values of the earlier ones taken from the cache
    (:mod:`course_lib.kv_cache`). Its logits equal ``model.decode(prefix, memory, src_mask)[:, -1]``
    for the prefix of every token fed so far, to float rounding. It always has eval-mode semantics
    (no dropout, whatever ``model.training`` says; the model's mode is left as it was) and runs
    under ``torch.no_grad()``.

    Attributes:
        model: the wrapped model. memory: (B, S, d_model), the encoded source. src_mask: (B, 1, 1, S).
        cache: the :class:`~course_lib.kv_cache.KVCache` (None before ``start``).
    """

    def __init__(self, model: Seq2SeqTransformer):
        if not isinstance(model, Seq2SeqTransformer):
            raise TypeError(f"expected a Seq2SeqTransformer, got {type(model).__name__}")
        self.model = model
        self.memory = self.src_mask = self.cache = None

    def _started(self):
        if self.cache is None:
            raise RuntimeError("call start(src) before step() or reorder()")
        return self.cache

    @property
    def length(self) -> int:
        """The number of tokens fed so far (the position of the next one)."""
        return self._started().length

    @torch.no_grad()
    def start(self, src: torch.Tensor) -> "IncrementalDecoder":
        """Encode ``src (B, S)`` (PAD = model.pad_id) and start an empty cache (t = 0). Returns ``self``."""
        check_shape(src, "B S", name="src", dtype="int")
        with eval_mode(self.model):
            self.memory, self.src_mask = self.model.encode(src)  # (B, S, d_model), (B, 1, 1, S)
        self.cache = self.model.new_cache(src.shape[0])
        return self

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (at position t = :attr:`length`) and return the next-token logits.

        Args:
            tokens: (B,) ids; the first step feeds BOS.

        Returns:
            (B, n_vocab) logits of the token at position t + 1.
        """
        cache = self._started()
        check_shape(tokens, "B", name="tokens", dtype="int", B=cache.batch_size)
        tokens = tokens.to(self.memory.device)
        self.model.check_ids(tokens, "tokens", self.model.tgt_embed)
        with eval_mode(self.model):
            return self.model.decode(tokens[:, None], self.memory, self.src_mask, cache)[:, 0]  # (B, n_vocab)

    def reorder(self, indices: torch.Tensor) -> None:
        """Keep rows ``indices (N,)`` of the cache and the source, in that order; e.g. the parents of beam search's hypotheses.

        Rows may repeat (``torch.arange(B).repeat_interleave(K)`` makes K copies of each sentence).
        """
        self._started().reorder(indices)
        indices = indices.to(self.memory.device)
        self.memory, self.src_mask = self.memory[indices], self.src_mask[indices]

    def cache_bytes(self, kind: str = "all") -> int:
        """Bytes held by the cached keys/values now: ``kind`` "self", "cross" or "all"."""
        return self._started().nbytes(kind)


def _next_logits(model, src: torch.Tensor, cached: bool) -> NextLogits:
    """``next_logits`` for :func:`generate`: one new position per step with a cache, else the whole prefix."""
    if cached:
        decoder = IncrementalDecoder(model).start(src)
        return lambda out: decoder.step(out[:, -1])
    memory, src_mask = model.encode(src)
    return lambda out: model.decode(out, memory, src_mask)[:, -1]


def _check_cached(cached) -> bool:
    if not isinstance(cached, bool):
        raise TypeError(f"cached must be True (a key-value cache) or False (the whole prefix every step), got {cached!r}")
    return cached


@_in_eval_mode
def greedy_search(model, src: torch.Tensor, max_len: int | None = None, cached: bool = True) -> list[list[int]]:
    """Always take the most likely next token (never PAD or BOS).

    ``max_len``: None gives each sentence its own :func:`output_budget`; or an int, or B ints.
    ``cached``: decode with a key–value cache (default) or run the whole prefix at every step; the
    outputs are the same. Returns one id list per sentence (EOS included when produced).
    """
    check_shape(src, "B S", name="src", dtype="int")
    max_len = sentence_budgets(src, max_len, model.pad_id)
    return generate(_next_logits(model, src, _check_cached(cached)), src.shape[0], max_len,
                    lambda logits: logits.argmax(dim=-1), device=src.device)


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's length normaliser ((5 + length) / 6) ** alpha; alpha = 0 compares raw log-probabilities.

    ``length`` is a non-negative number of tokens; ``alpha`` a finite number (usually 0 to 2).
    """
    if isinstance(length, bool) or not isinstance(length, Real) or not length >= 0:
        raise ValueError(f"length must be a non-negative number of tokens, got {length!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number (0 = no length normalisation), got {alpha!r}")
    return ((5 + length) / 6) ** alpha


def check_beam_size(beam_size) -> int:
    """``beam_size`` must be a positive int (a ValueError says what came otherwise)."""
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
    return beam_size


def beam_search_loop(next_logits, batch_size: int, beam_size: int, alpha: float, max_len: int,
                     device=None) -> list[list[int]]:
    """The bookkeeping of :func:`beam_search`, for any way of computing the next-token logits.

    Args:
        next_logits: ``(tokens (B*K, t), parents)`` -> ``(B*K, n_vocab)`` logits of the next token.
            ``tokens`` holds every hypothesis (BOS first; sentence b owns rows b*K ... b*K+K-1);
            ``parents`` is None at the first step, then a (B*K,) long tensor: row i of ``tokens``
            extends row ``parents[i]`` of the previous call's tokens (a cached decoder reorders its
            cache by it before the step).
        batch_size: B. beam_size: K. alpha: see :func:`length_penalty`.
        max_len: the most tokens per sentence, one int for all or B ints (see :func:`output_budget`);
            at its limit a sentence's live hypotheses count as finished.

    Returns:
        The best finished hypothesis of each sentence (ids without BOS).
    """
    B, K = batch_size, beam_size
    limits = [max_len] * B if isinstance(max_len, Integral) else list(max_len)
    tokens = torch.full((B * K, 1), BOS_ID, dtype=torch.long, device=device)
    parents = None
    scores = torch.full((B, K), -math.inf, device=device)
    scores[:, 0] = 0.0  # all beams start as the same BOS: keep one
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [limit <= 0 for limit in limits]
    for step in range(1, max(limits, default=0) + 1):
        logits = next_logits(tokens, parents).float()  # (B*K, n_vocab)
        logp = torch.log_softmax(logits, dim=-1)
        logp[:, [PAD_ID, BOS_ID]] = -math.inf  # never generate padding or a second BOS
        n_vocab = logp.shape[-1]
        candidates = (scores.reshape(-1, 1) + logp).reshape(B, K * n_vocab)
        top_scores, top_index = candidates.topk(min(2 * K, K * n_vocab), dim=1)
        top_scores, top_index = top_scores.tolist(), top_index.tolist()
        rows, next_tokens, new_scores = [], [], []
        for b in range(B):
            kept = 0
            if not done[b]:
                for j, (score, index) in enumerate(zip(top_scores[b], top_index[b])):
                    if score == -math.inf or kept == K:
                        break
                    row, token = b * K + index // n_vocab, index % n_vocab
                    if token == EOS_ID:
                        if j < K:
                            hypothesis = tokens[row, 1:].tolist() + [EOS_ID]
                            finished[b].append((score / length_penalty(step, alpha), hypothesis))
                        continue
                    rows.append(row)
                    next_tokens.append(token)
                    new_scores.append(score)
                    kept += 1
                if len(finished[b]) >= K:
                    done[b] = True
            for _ in range(K - kept):  # dead slots: a padding token with score -inf
                rows.append(b * K)
                next_tokens.append(PAD_ID)
                new_scores.append(-math.inf)
        if all(done):
            break
        parents = torch.tensor(rows, dtype=torch.long, device=device)
        tokens = torch.cat([tokens[parents], torch.tensor(next_tokens, device=device)[:, None]], dim=1)
        scores = torch.tensor(new_scores, device=device).reshape(B, K)
        live = None
        for b in range(B):  # a sentence at its own limit: its live hypotheses count as finished
            if not done[b] and step >= limits[b]:
                live = scores.tolist() if live is None else live
                for k in range(K):
                    if live[b][k] > -math.inf:
                        finished[b].append((live[b][k] / length_penalty(step, alpha), tokens[b * K + k, 1:].tolist()))
                done[b] = True
    return [max(f, key=lambda item: item[0])[1] if f else [] for f in finished]


@_in_eval_mode
def beam_search(model, src: torch.Tensor, beam_size: int = 4, alpha: float = 0.6,
                max_len: int | None = None, cached: bool = True) -> list[list[int]]:
    """Batched beam search with a length penalty.

    Each sentence keeps ``beam_size`` live hypotheses. At every step the 2K best extensions of
    all live hypotheses are ranked by total log-probability (PAD and BOS are never generated;
    scores stay the model's own log-probabilities); those ending in EOS among the top K
    are set aside as finished (scored by log-probability / :func:`length_penalty`), the best K
    others stay live. A sentence is done once it has K finished hypotheses; at its ``max_len``
    (default: its own :func:`output_budget`) the live ones count as finished. The best finished
    hypothesis is returned.

    With ``cached`` (the default) a key–value cache holds B*K rows, K copies of each sentence, and
    is reordered by the parents of the surviving hypotheses after every step; without it the
    decoder runs every hypothesis's whole prefix at every step. The outputs are the same.
    """
    check_shape(src, "B S", name="src", dtype="int")
    K = check_beam_size(beam_size)
    max_len = sentence_budgets(src, max_len, model.pad_id)
    B = src.shape[0]
    if _check_cached(cached):
        decoder = IncrementalDecoder(model).start(src)
        decoder.reorder(torch.arange(B, device=src.device).repeat_interleave(K))  # (B*K,) K copies of each

        def next_logits(tokens, parents):
            if parents is not None:
                decoder.reorder(parents)
            return decoder.step(tokens[:, -1])
    else:
        memory, src_mask = model.encode(src)
        memory = memory.repeat_interleave(K, dim=0)  # (B*K, S, d_model)
        src_mask = src_mask.repeat_interleave(K, dim=0)

        def next_logits(tokens, parents):
            return model.decode(tokens, memory, src_mask)[:, -1]
    return beam_search_loop(next_logits, B, K, alpha, max_len, device=src.device)


# --- sampling ------------------------------------------------------------------------------------

def check_sampling(temperature=1.0, top_k=None, top_p=None) -> tuple[float, int | None, float | None]:
    """Validate sampling settings: ``temperature > 0``, ``top_k`` None or an int >= 1, ``top_p`` None or in (0, 1]."""
    if isinstance(temperature, bool) or not isinstance(temperature, Real) \
            or not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0 (1.0 = the model's own distribution), "
                         f"got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 1):
        raise ValueError(f"top_k must be None (no limit) or an int >= 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, Real)
                              or not (0 < top_p <= 1)):
        raise ValueError(f"top_p must be None (no limit) or a number with 0 < top_p <= 1, got {top_p!r}")
    return float(temperature), None if top_k is None else int(top_k), None if top_p is None else float(top_p)


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Reshape and cut the next-token distribution before sampling; a pure function.

    In this order: divide by ``temperature`` (< 1 sharpens, > 1 flattens); keep the ``top_k``
    highest logits; keep the nucleus, the smallest set of most likely tokens whose probabilities
    (after the temperature and top-k) add up to at least ``top_p``, always at least the top token.
    Ties are kept together: a token whose logit equals that of the last token kept is kept too
    (so more than k tokens may survive top-k). ``top_p = 1`` keeps every token.

    Args:
        logits: (B, n_vocab) float; entries may already be ``-inf`` (tokens that must never come), but
            each row needs a finite one.
        temperature: > 0. top_k: None or an int >= 1. top_p: None or 0 < top_p <= 1.

    Returns:
        (B, n_vocab): ``logits / temperature`` on the kept tokens, ``-inf`` elsewhere;
        ``softmax`` of it is the distribution :func:`sample` draws from.
    """
    check_shape(logits, "B n_vocab", name="logits", dtype="float")
    temperature, top_k, top_p = check_sampling(temperature, top_k, top_p)
    if logits.numel() and not bool(torch.isfinite(logits).any(dim=-1).all()):
        raise ValueError("logits: every row needs at least one finite entry, got a row of -inf/nan only")
    if torch.isnan(logits).any() or torch.isposinf(logits).any():
        raise ValueError("logits: expected finite values or -inf, got nan or +inf")
    scaled = logits / temperature
    if torch.isposinf(scaled).any():
        raise ValueError(f"logits / temperature overflowed to +inf: temperature={temperature!r} is too small "
                         "for these logits")
    if logits.shape[-1] == 0:
        return scaled
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th highest logit
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    if top_p is not None and top_p < 1:
        sorted_logits, _ = scaled.sort(dim=-1, descending=True)  # (B, n_vocab)
        probs = torch.softmax(sorted_logits.double(), dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
        keep = before < top_p  # the nucleus: the first token always (0 < p)
        n_kept = keep.sum(dim=-1, keepdim=True)  # (B, 1), >= 1
        threshold = sorted_logits.gather(-1, n_kept - 1)  # (B, 1): the logit of the last token kept
        scaled = scaled.masked_fill(scaled < threshold, -math.inf)
    return scaled


def sample_next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row from ``softmax(filter_logits(logits, ...))``.

    Args:
        logits: (B, n_vocab) float. temperature, top_k, top_p: see :func:`filter_logits`.
        generator: a ``torch.Generator`` for reproducible draws (None: torch's global one).

    Returns:
        (B,) long: the drawn token ids (never one that :func:`filter_logits` set to ``-inf``).
    """
    probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p).float(), dim=-1)  # (B, n_vocab)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@_in_eval_mode
def sample(model, src: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, generator: torch.Generator | None = None,
           max_len: int | None = None, cached: bool = True) -> list[list[int]]:
    """Ancestral sampling: draw each next token from the (filtered) model distribution.

    PAD and BOS are never drawn; a sentence stops at its first EOS or after ``max_len`` tokens.
    ``temperature`` near 0 or ``top_k=1`` gives :func:`greedy_search`'s output.

    Args:
        model: a Seq2SeqTransformer (run in eval mode: no dropout).
        src: (B, S) source ids, PAD = 0, rows ending in EOS.
        temperature, top_k, top_p: see :func:`filter_logits`.
        generator: a ``torch.Generator`` (on ``src``'s device) for reproducible samples.
        max_len: the most tokens per sentence: None (each sentence its :func:`output_budget`), an int, or B ints.
        cached: decode with a key–value cache (default) or not; the same draws for the same generator state.

    Returns:
        One id list per sentence (EOS included when produced).
    """
    check_shape(src, "B S", name="src", dtype="int")
    settings = check_sampling(temperature, top_k, top_p)
    max_len = sentence_budgets(src, max_len, model.pad_id)
    return generate(_next_logits(model, src, _check_cached(cached)), src.shape[0], max_len,
                    lambda logits: sample_next_token(logits, *settings, generator=generator), device=src.device)


def _too_long_warning(index: list[int], lengths: list[int], trained: int) -> str:
    shown = ", ".join(f"sentence {i} ({n} tokens)" for i, n in list(zip(index, lengths))[:5])
    more = f" and {len(index) - 5} more" if len(index) > 5 else ""
    return (f"{shown}{more}: longer than any source the model was trained on (at most {trained} tokens, "
            "EOS included); it will translate them, but expect a poor translation. Split long texts into "
            "sentences before translating.")


def _unknown_warning(unknown: dict[int, list[str]]) -> str:
    shown = "; ".join(f"sentence {i}: {', '.join(repr(p) for p in pieces)}" for i, pieces in list(unknown.items())[:5])
    more = f" and {len(unknown) - 5} more sentences" if len(unknown) > 5 else ""
    return (f"text the tokenizer has never seen ({shown}{more}): each such piece is read as the one <unk> "
            "token, so the translation cannot reproduce it.")


def _cut_warning(index: list[int], budgets: list[int]) -> str:
    shown = ", ".join(f"sentence {i} (budget {n} tokens)" for i, n in list(zip(index, budgets))[:5])
    more = f" and {len(index) - 5} more" if len(index) > 5 else ""
    return (f"{shown}{more}: the translation reached its length budget (1.5 x the source length + 10) "
            "without an end-of-sentence token, so it stops there. The model is most likely repeating "
            "itself; the text is returned as it stands.")


@torch.no_grad()
def translate(model, tokenizer, sentences: Sequence[str], beam_size: int = 1, alpha: float = 0.6,
              batch_size: int = 64, device=None, cached: bool = True, warn: bool = True) -> list[str]:
    """Translate ``sentences`` (a list of str): greedy when ``beam_size == 1``, else beam search.

    Sentences are encoded, sorted by length into batches of ``batch_size`` (less padding), decoded
    and returned in the original order. Each sentence may generate up to its own
    :func:`output_budget` (1.5 x its source length + 10 tokens), so a translation does not depend
    on the other sentences of its batch. An empty or blank sentence translates to ``""``.
    The model is put in eval mode. With ``cached`` (the default) decoding keeps a key-value cache
    (:class:`IncrementalDecoder`); the translations are the same either way, only the time differs.

    With ``warn`` (the default) a ``UserWarning`` names the sentences that hold text the tokenizer
    has never seen (read as ``<unk>``), those longer than any source the model was trained on
    (``model.trained_max_len``, when known) and those whose translation stopped at the budget
    without an end-of-sentence token. Pass ``warn=False`` for a corpus evaluation that counts such
    cases itself.
    """
    if isinstance(sentences, str):
        raise TypeError("translate takes a list of sentences; wrap a single one in a list")
    sentences = check_texts(sentences, "sentences")
    check_beam_size(beam_size)
    check_int(batch_size, "batch_size", minimum=1)
    device = device or next(model.parameters()).device
    model.eval()
    results: list[str] = [""] * len(sentences)
    todo = [i for i, sentence in enumerate(sentences) if sentence.strip()]  # blank ones stay ""
    encoded = dict(zip(todo, (ids + [EOS_ID] for ids in tokenizer.encode_batch([sentences[i] for i in todo]))))
    trained = getattr(model, "trained_max_len", None)
    too_long = [i for i in todo if trained is not None and len(encoded[i]) > trained]
    if warn and too_long:
        warnings.warn(_too_long_warning(too_long, [len(encoded[i]) for i in too_long], trained), stacklevel=3)
    spell = getattr(tokenizer, "unknown_pieces", None)
    unknown = {i: spell(sentences[i]) for i in todo if UNK_ID in encoded[i]} if spell else {}
    if warn and unknown:
        warnings.warn(_unknown_warning(unknown), stacklevel=3)
    order = sorted(todo, key=lambda i: len(encoded[i]))
    cut: list[tuple[int, int]] = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        src = pad_sequences([encoded[i] for i in chunk], pad_id=PAD_ID).to(device)  # (B, S)
        budgets = output_budget(src, PAD_ID)
        outputs = (greedy_search(model, src, budgets, cached=cached) if beam_size == 1
                   else beam_search(model, src, beam_size, alpha, budgets, cached=cached))
        for i, ids, budget in zip(chunk, outputs, budgets):
            results[i] = tokenizer.decode(ids)
            if len(ids) >= budget and EOS_ID not in ids:
                cut.append((i, budget))
    if warn and cut:
        cut.sort()
        warnings.warn(_cut_warning([i for i, _ in cut], [n for _, n in cut]), stacklevel=3)
    return results


# --- a figure for notebook 12's translation playground ---------------------------------------------

def plot_beams(hypotheses: Sequence[tuple[float, str]], weights: torch.Tensor, src_labels: Sequence[str],
               tgt_labels: Sequence[str], title: str | None = None, score_name: str = "score"):
    """Beam search's finished hypotheses as text, above the cross-attention map of the best one.

    Args:
        hypotheses: ``(score, text)`` pairs, best first (at least one); the first is the output drawn.
        weights: (T, S) cross-attention of the best output: row t = where the decoder looked in the
            source while producing output token t (e.g. the last layer, averaged over heads).
        src_labels: S source tokens (columns). tgt_labels: T output tokens (rows).
        title: the figure's title. score_name: what the scores are, for the text panel's heading.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from course_lib.attention import plot_attention

    sizes = check_shape(weights, "T S", name="weights")
    T, S = sizes["T"], sizes["S"]
    if len(src_labels) != S or len(tgt_labels) != T:
        raise ValueError(f"expected {S} source labels and {T} output labels for weights of shape (T, S) = "
                         f"({T}, {S}), got {len(src_labels)} and {len(tgt_labels)}")
    hypotheses = list(hypotheses)
    if not hypotheses:
        raise ValueError("hypotheses is empty: pass at least the best (score, text) pair")
    text_h = 0.42 + 0.3 * len(hypotheses)
    map_h, width = 0.3 * T + 1.4, max(7.0, 0.42 * S + 2.5)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, text_h + map_h + 0.5),
                                      gridspec_kw={"height_ratios": [text_h, map_h]})
    top.axis("off")
    lines = [f"{score_name:>8}   hypothesis (best first)"]
    for rank, (score, text) in enumerate(hypotheses):
        lines.append(f"{score:8.3f}   {'→ ' if rank == 0 else '  '}{text}")
    top.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=9.5, va="top", ha="left",
             transform=top.transAxes)
    plot_attention(weights, list(tgt_labels), list(src_labels), ax=bottom, colorbar=True, annotate=False,
                   title="cross-attention of the best output", xlabel="source token", ylabel="output token")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
