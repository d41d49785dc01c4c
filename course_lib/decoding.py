"""Turning a trained translation model into text: greedy decoding and beam search.

Both take source ids ``src (B, S)`` (PAD = 0, each row ending in EOS) and return, per sentence,
the generated target ids without BOS, cut after the first EOS. :func:`translate` wraps them with
a tokenizer: German strings in, English strings out, in batches sorted by length.

The decoder here recomputes the whole prefix at every step; notebook 12 adds a key-value cache.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

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


@torch.no_grad()
def greedy_search(model, src: torch.Tensor, max_len: int | None = None) -> list[list[int]]:
    """Always take the most likely next token (never PAD or BOS).

    Returns one id list per sentence (EOS included when produced).
    """
    check_shape(src, "B S", name="src", dtype="int")
    max_len = default_max_len(src, model.pad_id) if max_len is None else max_len
    memory, src_mask = model.encode(src)
    B = src.shape[0]
    out = torch.full((B, 1), BOS_ID, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logits = model.decode(out, memory, src_mask)[:, -1]
        logits[:, [PAD_ID, BOS_ID]] = -math.inf  # never generate padding or a second BOS
        next_token = logits.argmax(dim=-1).masked_fill(done, PAD_ID)
        out = torch.cat([out, next_token[:, None]], dim=1)
        done |= next_token == EOS_ID
        if bool(done.all()):
            break
    return [_strip(row) for row in out[:, 1:].tolist()]


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's length normaliser ((5 + length) / 6) ** alpha; alpha = 0 compares raw log-probabilities."""
    return ((5 + length) / 6) ** alpha


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
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
    max_len = default_max_len(src, model.pad_id) if max_len is None else max_len
    B, K = src.shape[0], beam_size
    memory, src_mask = model.encode(src)
    memory = memory.repeat_interleave(K, dim=0)  # (B*K, S, d_model)
    src_mask = src_mask.repeat_interleave(K, dim=0)
    tokens = torch.full((B * K, 1), BOS_ID, dtype=torch.long, device=src.device)
    scores = torch.full((B, K), -math.inf, device=src.device)
    scores[:, 0] = 0.0  # all beams start as the same BOS: keep one
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [False] * B
    for step in range(1, max_len + 1):
        logits = model.decode(tokens, memory, src_mask)[:, -1].float()  # (B*K, V)
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
        index = torch.tensor(rows, device=src.device)
        tokens = torch.cat([tokens[index], torch.tensor(next_tokens, device=src.device)[:, None]], dim=1)
        scores = torch.tensor(new_scores, device=src.device).reshape(B, K)
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
def translate(model, tokenizer, sentences: Sequence[str], beam_size: int = 1, alpha: float = 0.6,
              batch_size: int = 64, device=None) -> list[str]:
    """Translate ``sentences`` (a list of str): greedy when ``beam_size == 1``, else beam search.

    Sentences are encoded, sorted by length into batches of ``batch_size`` (less padding), decoded
    and returned in the original order. The model is put in eval mode.
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
        longest = max(len(encoded[i]) for i in chunk)
        src = torch.full((len(chunk), longest), PAD_ID, dtype=torch.long)
        for row, i in enumerate(chunk):
            src[row, :len(encoded[i])] = torch.tensor(encoded[i])
        src = src.to(device)
        outputs = greedy_search(model, src) if beam_size == 1 else beam_search(model, src, beam_size, alpha)
        for i, ids in zip(chunk, outputs):
            results[i] = tokenizer.decode(ids)
    return results
