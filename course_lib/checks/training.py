"""Notebook 11's exercises: the label-smoothed loss, and the warm-up + cosine learning-rate schedule."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from course_lib.checks.core import Case, CheckResult, Mistake, check_function
from course_lib.train import label_smoothed_loss, learning_rate

PAD = 0


# --- exercise 1: the label-smoothed loss ---------------------------------------------------------

def smoothed_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Reference: mean over non-PAD targets of (1 - eps) * NLL + eps * mean over the vocabulary of -log p.

    Args:
        logits: (B, T, V). target: (B, T) ids, PAD = 0 ignored. smoothing: eps in [0, 1).

    Returns:
        A scalar tensor.
    """
    return label_smoothed_loss(logits, target, smoothing, pad_id=PAD)[0]


def _per_token(logits, target, smoothing, other_classes=False, swap=False, dim=-1):
    logp = torch.log_softmax(logits.float(), dim=dim)  # (B, T, V)
    nll = -logp.gather(-1, target[..., None])[..., 0]  # (B, T)
    V = logits.shape[-1]
    if other_classes:  # eps spread over the V - 1 wrong tokens only
        uniform = (-logp.sum(-1) - nll) / (V - 1)
    else:
        uniform = -logp.mean(-1)
    if swap:
        return smoothing * nll + (1 - smoothing) * uniform
    return (1 - smoothing) * nll + smoothing * uniform


def _mean_real(values, target):
    real = target != PAD
    return values[real].mean()


def _loss_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(1101)
    logits = 2 * torch.randn(2, 4, 6, generator=gen)
    target = torch.tensor([[5, 3, 2, 0], [4, 1, 0, 0]])  # three padding positions
    square = 2 * torch.randn(3, 5, 5, generator=gen)  # T == V: a wrong axis keeps the shapes
    square_target = torch.tensor([[1, 2, 3, 4, 0], [4, 4, 1, 0, 0], [2, 3, 1, 1, 2]])
    return [Case((logits, target, 0.1), "logits (B=2, T=4, V=6), 3 padding targets, smoothing 0.1"),
            Case((square, square_target, 0.2), "logits (B=3, T=5, V=5), 3 padding targets, smoothing 0.2"),
            Case((logits, target, 0.0), "smoothing 0.0 (plain cross-entropy)")]


_LOSS_MISTAKES = [
    Mistake("you averaged over every position, padding included: PAD targets (id 0) must not count",
            lambda lg, t, e: _per_token(lg, t, e).mean(),
            "average only where target != 0, e.g. loss[target != 0].mean()"),
    Mistake("you summed the loss over the tokens instead of averaging it",
            lambda lg, t, e: _per_token(lg, t, e)[t != PAD].sum(),
            "divide by the number of real (non-padding) target tokens"),
    Mistake("you spread eps over the V - 1 wrong tokens only; PyTorch (and this course) spread it over all V "
            "tokens, the right one included",
            lambda lg, t, e: _mean_real(_per_token(lg, t, e, other_classes=True), t),
            "the smoothing term is eps * mean over all V of -log p"),
    Mistake("you swapped the weights: eps goes on the uniform part and 1 - eps on the true token",
            lambda lg, t, e: _mean_real(_per_token(lg, t, e, swap=True), t),
            "(1 - eps) * NLL + eps * uniform term"),
    Mistake("no smoothing: this is plain cross-entropy, the same for every eps",
            lambda lg, t, e: F.cross_entropy(lg.reshape(-1, lg.shape[-1]), t.reshape(-1), ignore_index=PAD),
            "add eps * (mean over the vocabulary of -log p) and weigh the NLL by 1 - eps"),
    Mistake("your log-softmax normalised over the positions (dim 1) instead of the vocabulary (dim -1)",
            lambda lg, t, e: _mean_real(_per_token(lg, t, e, dim=1), t),
            "torch.log_softmax(logits, dim=-1): each position's scores over the V tokens"),
    Mistake("you used probabilities where log-probabilities belong (p instead of log p)",
            lambda lg, t, e: _mean_real(
                (1 - e) * -torch.softmax(lg, -1).gather(-1, t[..., None])[..., 0] + e * -torch.softmax(lg, -1).mean(-1), t),
            "take torch.log_softmax(logits, dim=-1), then the negative log-probabilities"),
]


def check_smoothed_loss(fn) -> CheckResult:
    """Check a learner's ``smoothed_loss(logits (B, T, V), target (B, T), smoothing) -> scalar``."""
    return check_function(fn, exercise="smoothed_loss", reference=smoothed_loss, cases=_loss_cases(),
                          mistakes=_LOSS_MISTAKES, shape_names="()", rtol=1e-4, atol=1e-5)


# --- exercise 2: warm-up then cosine decay -------------------------------------------------------

def _curve(schedule, total, peak, warmup, final):
    """The schedule at every step from 0 to total + 4, as a tensor (float64)."""
    return torch.tensor([float(schedule(step, total, peak, warmup, final)) for step in range(total + 5)],
                        dtype=torch.float64)


def _reference_curve(total, peak, warmup, final):
    return _curve(learning_rate, total, peak, warmup, final)


def _cos(progress):
    return 0.5 * (1 + math.cos(math.pi * progress))


_SCHEDULE_MISTAKES = [
    Mistake("your warm-up starts at 0: with step counted from 0, the first update would not move the "
            "weights at all; the rate for step s is peak * (s + 1) / warmup_steps",
            lambda n, p, w, f: _curve(lambda s, *_: p * s / w if s < w else learning_rate(s, n, p, w, f), n, p, w, f),
            "use (step + 1) / warmup_steps during warm-up, so step warmup_steps - 1 reaches the peak"),
    Mistake("your schedule decays to 0 instead of to final_fraction * peak",
            lambda n, p, w, f: _curve(lambda s, *_: learning_rate(s, n, p, w, 0.0), n, p, w, f),
            "peak * (final_fraction + (1 - final_fraction) * 0.5 * (1 + cos(pi * progress)))"),
    Mistake("your decay is linear, not a cosine",
            lambda n, p, w, f: _curve(lambda s, *_: learning_rate(s, n, p, w, f) if s < w else
                                      p * (f + (1 - f) * (1 - min(1.0, (s - w) / (n - w)))), n, p, w, f),
            "after warm-up use 0.5 * (1 + cos(pi * progress)), progress from 0 to 1"),
    Mistake("there is no warm-up: the rate starts at the peak",
            lambda n, p, w, f: _curve(lambda s, *_: learning_rate(s, n, p, 0, f), n, p, w, f),
            "for step < warmup_steps return peak * (step + 1) / warmup_steps"),
    Mistake("your cosine's progress counts from step 0, not from the end of warm-up, so the rate is already "
            "below the peak when warm-up ends",
            lambda n, p, w, f: _curve(lambda s, *_: learning_rate(s, n, p, w, f) if s < w else
                                      p * (f + (1 - f) * _cos(min(1.0, s / n))), n, p, w, f),
            "progress = (step - warmup_steps) / (total_steps - warmup_steps)"),
    Mistake("after total_steps your rate rises again: the cosine is periodic, so clamp progress at 1",
            lambda n, p, w, f: _curve(lambda s, *_: learning_rate(s, n, p, w, f) if s < w else
                                      p * (f + (1 - f) * _cos((s - w) / (n - w))), n, p, w, f),
            "progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))"),
]


def check_warmup_cosine(fn) -> CheckResult:
    """Check a learner's ``warmup_cosine(step, total_steps, peak, warmup_steps, final_fraction) -> float``.

    The check evaluates it at every step from 0 to total_steps + 4 and compares the whole curve.
    """
    def whole_curve(total, peak, warmup, final):
        return _curve(fn, total, peak, warmup, final)

    cases = [Case((40, 1e-3, 8, 0.05), "total_steps 40, peak 1e-3, warm-up 8 steps, final_fraction 0.05"),
             Case((25, 2.0, 5, 0.1), "total_steps 25, peak 2.0, warm-up 5 steps, final_fraction 0.1")]
    return check_function(whole_curve, exercise="warmup_cosine", reference=_reference_curve, cases=cases,
                          mistakes=_SCHEDULE_MISTAKES, shape_names="(steps,)", rtol=1e-6, atol=1e-12)
