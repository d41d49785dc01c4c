"""Turning a trained translation model into text: greedy decoding and beam search.

Both take source ids ``src (B, S)`` (PAD = 0, each row ending in EOS) and return, per sentence,
the generated target ids without BOS, cut after the first EOS. :func:`translate` wraps them with
a tokenizer: German strings in, English strings out, in batches sorted by length.

:func:`sample` draws each next token at random instead, from the model's distribution reshaped by
a temperature and cut down by top-k and/or top-p (nucleus) filtering (:func:`filter_logits`).

The decoder here recomputes the whole prefix at every step; :mod:`course_lib.kv_cache` (notebook
12) runs the same searches with a key-value cache. The search loops themselves (:func:`generate`
and :func:`beam_search_loop`) only ask for the next-token logits through a callable, so both
decoders share them.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Callable, Sequence

import torch

from course_lib.masking import pad_sequences
from course_lib.shapes import check_shape
from course_lib.tokenizer import BOS_ID, EOS_ID, PAD_ID


def default_max_len(src: torch.Tensor, pad_id: int = PAD_ID) -> int:
    """A generous output limit for a batch: 1.5 x its longest source, plus 10."""
    longest = int((src != pad_id).sum(dim=1).max()) if src.numel() else 0
    return int(1.5 * longest) + 10


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


#: ``next_logits(out (B, t)) -> (B, V)``: the logits for the token after the prefixes ``out`` (BOS first).
NextLogits = Callable[[torch.Tensor], torch.Tensor]


def never_generated(logits: torch.Tensor) -> torch.Tensor:
    """Block PAD and BOS, which a search never produces: ``logits (N, V)`` -> a copy with ``-inf`` there."""
    logits = logits.clone()
    logits[:, [PAD_ID, BOS_ID]] = -math.inf  # never generate padding or a second BOS
    return logits


def generate(next_logits: NextLogits, batch_size: int, max_len: int, choose, device=None) -> list[list[int]]:
    """The token-by-token loop shared by greedy search and sampling, for any way of computing logits.

    Args:
        next_logits: ``(B, t)`` prefixes (BOS first) -> ``(B, V)`` logits of the next token.
        batch_size: B. max_len: the most tokens generated per sentence.
        choose: ``(B, V)`` logits with PAD and BOS at ``-inf`` -> ``(B,)`` next tokens
            (argmax for greedy search).

    Returns:
        One id list per sentence, without BOS, cut after the first EOS.
    """
    out = torch.full((batch_size, 1), BOS_ID, dtype=torch.long, device=device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    for _ in range(max_len):
        logits = never_generated(next_logits(out))  # (B, V)
        next_token = choose(logits).masked_fill(done, PAD_ID)  # finished sentences get padding
        out = torch.cat([out, next_token[:, None]], dim=1)
        done |= next_token == EOS_ID
        if bool(done.all()):
            break
    return [_strip(row) for row in out[:, 1:].tolist()]


def _recompute(model, src: torch.Tensor) -> NextLogits:
    """``next_logits`` that runs the decoder over the whole prefix at every step (no cache)."""
    memory, src_mask = model.encode(src)
    return lambda out: model.decode(out, memory, src_mask)[:, -1]


@torch.no_grad()
def greedy_search(model, src: torch.Tensor, max_len: int | None = None) -> list[list[int]]:
    """Always take the most likely next token (never PAD or BOS).

    Returns one id list per sentence (EOS included when produced).
    """
    check_shape(src, "B S", name="src", dtype="int")
    max_len = default_max_len(src, model.pad_id) if max_len is None else max_len
    return generate(_recompute(model, src), src.shape[0], max_len, lambda logits: logits.argmax(dim=-1),
                    device=src.device)


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's length normaliser ((5 + length) / 6) ** alpha; alpha = 0 compares raw log-probabilities."""
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
        next_logits: ``(tokens (B*K, t), parents)`` -> ``(B*K, V)`` logits of the next token.
            ``tokens`` holds every hypothesis (BOS first; sentence b owns rows b*K ... b*K+K-1);
            ``parents`` is None at the first step, then a (B*K,) long tensor: row i of ``tokens``
            extends row ``parents[i]`` of the previous call's tokens (a cached decoder reorders its
            cache by it before the step).
        batch_size: B. beam_size: K. alpha: see :func:`length_penalty`. max_len: the most tokens.

    Returns:
        The best finished hypothesis of each sentence (ids without BOS).
    """
    B, K = batch_size, beam_size
    tokens = torch.full((B * K, 1), BOS_ID, dtype=torch.long, device=device)
    parents = None
    scores = torch.full((B, K), -math.inf, device=device)
    scores[:, 0] = 0.0  # all beams start as the same BOS: keep one
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [False] * B
    for step in range(1, max_len + 1):
        logits = next_logits(tokens, parents).float()  # (B*K, V)
        logp = torch.log_softmax(logits, dim=-1)
        logp[:, [PAD_ID, BOS_ID]] = -math.inf  # never generate padding or a second BOS
        V = logp.shape[-1]
        candidates = (scores.reshape(-1, 1) + logp).reshape(B, K * V)
        top_scores, top_index = candidates.topk(min(2 * K, K * V), dim=1)
        top_scores, top_index = top_scores.tolist(), top_index.tolist()
        rows, next_tokens, new_scores = [], [], []
        for b in range(B):
            kept = 0
            if not done[b]:
                for j, (score, index) in enumerate(zip(top_scores[b], top_index[b])):
                    if score == -math.inf or kept == K:
                        break
                    row, token = b * K + index // V, index % V
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
    else:
        live = scores.tolist()
        for b in range(B):
            if not done[b]:
                for k in range(K):
                    if live[b][k] > -math.inf:
                        finished[b].append((live[b][k] / length_penalty(max_len, alpha),
                                            tokens[b * K + k, 1:].tolist()))
    return [max(f, key=lambda item: item[0])[1] if f else [] for f in finished]


@torch.no_grad()
def beam_search(model, src: torch.Tensor, beam_size: int = 4, alpha: float = 0.6,
                max_len: int | None = None) -> list[list[int]]:
    """Batched beam search with a length penalty.

    Each sentence keeps ``beam_size`` live hypotheses. At every step the 2K best extensions of
    all live hypotheses are ranked by total log-probability (PAD and BOS are never generated;
    scores stay the model's own log-probabilities); those ending in EOS among the top K
    are set aside as finished (scored by log-probability / :func:`length_penalty`), the best K
    others stay live. A sentence is done once it has K finished hypotheses; at ``max_len`` the
    live ones count as finished. The best finished hypothesis is returned.
    """
    check_shape(src, "B S", name="src", dtype="int")
    K = check_beam_size(beam_size)
    max_len = default_max_len(src, model.pad_id) if max_len is None else max_len
    memory, src_mask = model.encode(src)
    memory = memory.repeat_interleave(K, dim=0)  # (B*K, S, d_model)
    src_mask = src_mask.repeat_interleave(K, dim=0)
    return beam_search_loop(lambda tokens, parents: model.decode(tokens, memory, src_mask)[:, -1],
                            src.shape[0], K, alpha, max_len, device=src.device)


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
        logits: (B, V) float; entries may already be ``-inf`` (tokens that must never come), but
            each row needs a finite one.
        temperature: > 0. top_k: None or an int >= 1. top_p: None or 0 < top_p <= 1.

    Returns:
        (B, V): ``logits / temperature`` on the kept tokens, ``-inf`` elsewhere;
        ``softmax`` of it is the distribution :func:`sample` draws from.
    """
    check_shape(logits, "B V", name="logits", dtype="float")
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
        sorted_logits, _ = scaled.sort(dim=-1, descending=True)  # (B, V)
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
        logits: (B, V) float. temperature, top_k, top_p: see :func:`filter_logits`.
        generator: a ``torch.Generator`` for reproducible draws (None: torch's global one).

    Returns:
        (B,) long: the drawn token ids (never one that :func:`filter_logits` set to ``-inf``).
    """
    probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p).float(), dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def sample(model, src: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, generator: torch.Generator | None = None,
           max_len: int | None = None) -> list[list[int]]:
    """Ancestral sampling: draw each next token from the (filtered) model distribution.

    PAD and BOS are never drawn; a sentence stops at its first EOS or after ``max_len`` tokens.
    ``temperature`` near 0 or ``top_k=1`` gives :func:`greedy_search`'s output.

    Args:
        model: a Seq2SeqTransformer (put it in eval mode for dropout-free draws).
        src: (B, S) source ids, PAD = 0, rows ending in EOS.
        temperature, top_k, top_p: see :func:`filter_logits`.
        generator: a ``torch.Generator`` (on ``src``'s device) for reproducible samples.
        max_len: the most tokens per sentence (default :func:`default_max_len`).

    Returns:
        One id list per sentence (EOS included when produced).
    """
    check_shape(src, "B S", name="src", dtype="int")
    settings = check_sampling(temperature, top_k, top_p)
    max_len = default_max_len(src, model.pad_id) if max_len is None else max_len
    return generate(_recompute(model, src), src.shape[0], max_len,
                    lambda logits: sample_next_token(logits, *settings, generator=generator), device=src.device)


@torch.no_grad()
def translate(model, tokenizer, sentences: Sequence[str], beam_size: int = 1, alpha: float = 0.6,
              batch_size: int = 64, device=None, cached: bool = True) -> list[str]:
    """Translate ``sentences`` (a list of str): greedy when ``beam_size == 1``, else beam search.

    Sentences are encoded, sorted by length into batches of ``batch_size`` (less padding), decoded
    and returned in the original order. The model is put in eval mode. With ``cached`` (the
    default) decoding keeps a key-value cache (:mod:`course_lib.kv_cache`); the translations are
    the same either way, only the time differs.
    """
    if isinstance(sentences, str):
        raise TypeError("translate takes a list of sentences; wrap a single one in a list")
    device = device or next(model.parameters()).device
    model.eval()
    encoded = [ids + [EOS_ID] for ids in tokenizer.encode_batch(list(sentences))]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results: list[str] = [""] * len(encoded)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        src = pad_sequences([encoded[i] for i in chunk], pad_id=PAD_ID).to(device)  # (B, S)
        if cached:  # the same outputs, one new position per step (course_lib.kv_cache)
            from course_lib.kv_cache import beam_search_cached, greedy_search_cached

            outputs = (greedy_search_cached(model, src) if beam_size == 1
                       else beam_search_cached(model, src, beam_size, alpha))
        else:
            outputs = greedy_search(model, src) if beam_size == 1 else beam_search(model, src, beam_size, alpha)
        for i, ids in zip(chunk, outputs):
            results[i] = tokenizer.decode(ids)
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
