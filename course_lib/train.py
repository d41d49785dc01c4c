"""Training the German->English translator (notebook 11), in a notebook or from the command line.

    python -m course_lib.train --recipe quick --out runs/quick          # CPU, about a minute
    python -m course_lib.train --recipe full --out runs/full            # the committed checkpoint
    torchrun --nproc-per-node 2 -m course_lib.train --recipe quick ...  # DistributedDataParallel

A *recipe* (:class:`Recipe`) fixes everything that decides the result: model size, data, batch
token budget, optimiser and schedule, epochs and seed. :class:`Trainer` runs it: label-smoothed
cross-entropy, AdamW, linear warm-up then cosine decay, gradient clipping, bf16 autocast on CUDA.
After every epoch it measures validation loss, perplexity and BLEU and writes a checkpoint with
the optimiser, scheduler and random-number state, so a run that is stopped resumes on the same
curve.

The command line adds ``--export``: the final weights in fp16, the tokenizer and a provenance
file (command, hardware, wall time, BLEU) in one folder, the form in which the course ships its
trained model (:func:`load_pretrained`).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.batching import Batch, BatchPlan, encode_pairs
from course_lib.files import write_atomically
from course_lib.tokenizer import PAD_ID, Tokenizer

ROOT = Path(__file__).resolve().parent.parent
#: Where the course's trained de->en model lives (committed).
PRETRAINED_DIR = ROOT / "data" / "pretrained" / "multi30k_de_en"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run's result."""

    name: str
    # model
    d_model: int = 256
    heads: int = 4
    encoder_layers: int = 3
    decoder_layers: int = 3
    d_ff: int = 1024
    dropout: float = 0.1
    vocab_size: int = 8000
    # data
    train_pairs: int | None = None  # None: the whole training split; else the first N after shuffling
    max_len: int = 64  # drop training pairs with a side longer than this (tokens, EOS included)
    max_tokens: int = 4096  # padded tokens per batch, B * max(S, T)
    # optimisation
    epochs: int = 20
    lr: float = 1e-3
    warmup_steps: int = 400
    final_lr_fraction: float = 0.05
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    seed: int = 0
    # evaluation each epoch
    bleu_sentences: int | None = 500  # validation sentences translated (greedy) for BLEU; None: all

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        values = dict(values)
        values["betas"] = tuple(values["betas"])
        return cls(**values)


RECIPES = {
    # The committed model: 7.6M parameters, the whole training split, 20 epochs.
    "full": Recipe("full"),
    # For CPUs and CI: every part of the recipe at work in about 40 seconds on 2 cores. A 0.75M-parameter
    # model (most of it the embedding), 4,500 pairs, 3 epochs of small batches: it learns the shape of
    # the sentences and the frequent words, and translates badly; the full recipe makes the real model.
    "quick": Recipe("quick", d_model=64, heads=4, encoder_layers=2, decoder_layers=2, d_ff=256,
                    dropout=0.1, train_pairs=4_500, max_len=40, max_tokens=1024, epochs=3, lr=4e-3,
                    warmup_steps=45, bleu_sentences=100),
}


def get_recipe(name: str, **overrides) -> Recipe:
    """A recipe from :data:`RECIPES` with some fields changed, e.g. ``get_recipe("quick", epochs=1)``."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: expected one of {', '.join(RECIPES)}")
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown recipe field(s) {sorted(unknown)}; fields are {sorted(fields)}")
    return dataclasses.replace(RECIPES[name], **overrides)


def default_recipe_name(device: torch.device) -> str:
    """``"full"`` on a GPU, ``"quick"`` on a CPU."""
    return "full" if torch.device(device).type in ("cuda", "mps") else "quick"


# --- the pieces of the recipe ---------------------------------------------------------------------

def learning_rate(step: int, total_steps: int, peak: float, warmup_steps: int,
                  final_fraction: float = 0.05) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine decay to ``final_fraction * peak``.

    ``step`` counts optimiser updates from 0; the value is the rate used *for* update ``step``.
    """
    if total_steps < 1 or warmup_steps < 0 or not 0 <= final_fraction <= 1:
        raise ValueError(f"need total_steps >= 1, warmup_steps >= 0 and 0 <= final_fraction <= 1, got "
                         f"{total_steps}, {warmup_steps}, {final_fraction}")
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def label_smoothed_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.1,
                        pad_id: int = PAD_ID) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean label-smoothed cross-entropy over the non-padding targets, and the plain NLL (for perplexity).

    Args:
        logits: (B, T, n_vocab) unnormalised scores. target: (B, T) ids; ``pad_id`` positions are ignored.
        smoothing: the probability mass spread evenly over all n_vocab tokens (0 = plain cross-entropy).

    Returns:
        ``(loss, nll)``: two scalars, each averaged over the real target tokens.
    """
    if logits.dim() != 3 or target.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (B, T, n_vocab) and target (B, T), got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    flat_logits, flat_target = logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1)
    loss = F.cross_entropy(flat_logits, flat_target, ignore_index=pad_id, label_smoothing=smoothing)
    with torch.no_grad():
        nll = F.cross_entropy(flat_logits, flat_target, ignore_index=pad_id)
    return loss, nll


def autocast_for(device) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in: bf16 autocast on CUDA, plain float32 elsewhere."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer, scheduler=None,
               smoothing: float = 0.1, clip_norm: float = 1.0,
               autocast: contextlib.AbstractContextManager | None = None) -> tuple[float, float]:
    """One update of a translator: the step that every epoch of :class:`Trainer` repeats.

    Forward pass ``model(batch.src (B, S), batch.tgt_in (B, T)) -> logits (B, T, n_vocab)`` (inside
    ``autocast`` when given), label-smoothed cross-entropy against ``batch.tgt_out (B, T)`` over the
    real target tokens, then: clear the old gradients, backpropagate, clip the gradient norm to
    ``clip_norm``, step the optimiser, and step the scheduler (once per update; None skips it).

    Returns:
        ``(loss, norm)``: the loss as a float, and the gradient norm before clipping.
    """
    with autocast if autocast is not None else contextlib.nullcontext():
        logits = model(batch.src, batch.tgt_in)  # (B, T, n_vocab)
    loss, _ = label_smoothed_loss(logits, batch.tgt_out, smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return float(loss.detach()), float(norm)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW with the recipe's rate and betas; weight decay on matrices only (not biases or norm gains)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=recipe.betas)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe,
                   total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The recipe's :func:`learning_rate` schedule over ``total_steps`` updates, stepped once per update."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate(step, total_steps, 1.0, recipe.warmup_steps, recipe.final_lr_fraction))


def build_model(recipe: Recipe, vocab_size: int | None = None):
    """The course's :class:`~course_lib.transformer.Seq2SeqTransformer` with one shared embedding."""
    from course_lib.transformer import Seq2SeqTransformer

    vocab = vocab_size or recipe.vocab_size
    return Seq2SeqTransformer(vocab, vocab, d_model=recipe.d_model, h=recipe.heads,
                              num_encoder_layers=recipe.encoder_layers, num_decoder_layers=recipe.decoder_layers,
                              d_ff=recipe.d_ff, dropout=recipe.dropout, share_embeddings=True, pad_id=PAD_ID,
                              trained_max_len=recipe.max_len)


def corpus_bleu(hypotheses: list[str], references: list[str], lowercase_tokenized: bool = False):
    """sacreBLEU's corpus BLEU (cased, detokenised, 13a) or, with ``lowercase_tokenized``, lowercased."""
    from sacrebleu.metrics import BLEU

    metric = BLEU(lowercase=lowercase_tokenized)
    return metric.corpus_score(hypotheses, [references]), metric.get_signature()


def bleu_with_signature(hypotheses: list[str], references: list[str]) -> dict:
    """:func:`corpus_bleu` (cased, 13a) as ``{"bleu": score rounded to 2 places, "signature": str}``.

    The form in which the training commands record a score in provenance, and notebook 13 prints one.
    """
    score, signature = corpus_bleu(hypotheses, references)
    return {"bleu": round(score.score, 2), "signature": str(signature)}


# --- the state of a run ---------------------------------------------------------------------------

def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    # .cpu(): torch.load(map_location="cuda") moves the saved states to the GPU, and torch only takes them on the CPU
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_atomically(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` into a temporary file in the same folder, then rename it into place."""
    return write_atomically(path, lambda tmp: torch.save(obj, tmp))


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@dataclass
class EpochResult:
    epoch: int
    step: int
    lr: float
    train_loss: float
    val_loss: float
    val_ppl: float
    val_bleu: float
    target_tokens: int
    seconds: float

    def line(self) -> str:
        return (f"epoch {self.epoch:2d}  train loss {self.train_loss:.3f}  val loss {self.val_loss:.3f}  "
                f"val ppl {self.val_ppl:6.2f}  val BLEU {self.val_bleu:5.2f}")


class Trainer:
    """Run a :class:`Recipe` on Multi30k (or on given pairs), one epoch at a time.

    Args:
        recipe: what to train.
        tokenizer: the shared :class:`~course_lib.tokenizer.Tokenizer`.
        train_pairs, val_pairs: (German, English) text pairs.
        device: where to train; on CUDA the forward pass runs under bf16 autocast.
        checkpoint: a file to write after every epoch (and to resume from with :meth:`resume`).
    """

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, train_pairs, val_pairs, device="cpu",
                 checkpoint: str | os.PathLike | None = None, progress: bool = True):
        self.recipe, self.tokenizer, self.device = recipe, tokenizer, torch.device(device)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.progress = progress
        self.rank, self.world_size = _distributed()
        torch.manual_seed(recipe.seed)  # same initial weights on every process
        self.train_examples = encode_pairs(self.select_pairs(train_pairs, recipe), tokenizer, max_len=recipe.max_len)
        self.val_pairs = list(val_pairs)
        self.val_examples = encode_pairs(self.val_pairs, tokenizer)
        self.plan = BatchPlan(self.train_examples, recipe.max_tokens, shuffle=True, seed=recipe.seed,
                              rank=self.rank, world_size=self.world_size)
        self.val_plan = BatchPlan(self.val_examples, max(recipe.max_tokens, max(
            max(len(e.src), len(e.tgt)) for e in self.val_examples)), shuffle=False)
        self.steps_per_epoch = len(self.plan)
        self.total_steps = self.steps_per_epoch * recipe.epochs
        self.model = build_model(recipe, tokenizer.vocab_size).to(self.device)
        self.ddp_model = self.model
        if self.world_size > 1:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = make_optimizer(self.model, recipe)
        self.scheduler = make_scheduler(self.optimizer, recipe, self.total_steps)
        self.epoch, self.step = 0, 0
        self.history: list[EpochResult] = []
        self.step_losses: list[float] = []  # the loss of every update this Trainer ran (not kept in checkpoints)

    @staticmethod
    def select_pairs(pairs, recipe: Recipe) -> list:
        """The training pairs a recipe uses: all, or ``recipe.train_pairs`` of them drawn with its seed (in corpus order)."""
        pairs = list(pairs)
        if recipe.train_pairs is None or recipe.train_pairs >= len(pairs):
            return pairs
        order = list(range(len(pairs)))
        random.Random(recipe.seed).shuffle(order)
        return [pairs[i] for i in sorted(order[:recipe.train_pairs])]

    # -- one epoch --
    def _autocast(self):
        return autocast_for(self.device)

    def train_epoch(self) -> tuple[float, int]:
        """One pass over the training batches; returns (mean loss per target token, target tokens)."""
        from tqdm.auto import tqdm

        self.ddp_model.train()
        total_loss, total_tokens = 0.0, 0
        batches = self.plan.epoch(self.epoch)
        bar = tqdm(batches, total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{self.recipe.epochs}",
                   disable=not self.progress or self.rank != 0, unit="batch", leave=True)
        # leave=True: each epoch's finished bar stays, in a live notebook as in the stored one.
        for batch in bar:
            batch = batch.to(self.device)
            value, _ = train_step(self.ddp_model, batch, self.optimizer, self.scheduler, self.recipe.label_smoothing,
                                  self.recipe.clip_norm, self._autocast())
            self.step += 1
            self.step_losses.append(value)
            n = batch.num_target_tokens
            total_loss += value * n
            total_tokens += n
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
        bar.close()
        return total_loss / max(1, total_tokens), total_tokens

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """(label-smoothed loss, perplexity = exp(plain NLL)) over the validation split."""
        self.model.eval()
        total_loss = total_nll = 0.0
        tokens = 0
        for batch in self.val_plan.epoch(0):
            batch = batch.to(self.device)
            with self._autocast():
                logits = self.model(batch.src, batch.tgt_in)
            loss, nll = label_smoothed_loss(logits, batch.tgt_out, self.recipe.label_smoothing)
            n = batch.num_target_tokens
            total_loss += float(loss) * n
            total_nll += float(nll) * n
            tokens += n
        return total_loss / tokens, math.exp(total_nll / tokens)

    def bleu(self, pairs=None, beam_size: int = 1) -> float:
        """sacreBLEU on ``pairs`` (default: the first ``bleu_sentences`` validation pairs)."""
        from course_lib.decoding import translate

        if pairs is None:
            pairs = self.val_pairs[:self.recipe.bleu_sentences]
        hypotheses = translate(self.model, self.tokenizer, [p[0] for p in pairs], beam_size=beam_size,
                               device=self.device, warn=False)  # an evaluation: looping outputs count as they are
        return corpus_bleu(hypotheses, [p[1] for p in pairs])[0].score

    def run_epoch(self) -> EpochResult:
        start = time.perf_counter()
        train_loss, tokens = self.train_epoch()
        if self.world_size > 1:  # the mean over all processes
            stats = torch.tensor([train_loss * tokens, tokens], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(stats)
            train_loss, tokens = float(stats[0] / stats[1]), int(stats[1])
        seconds = time.perf_counter() - start
        val_loss, val_ppl = self.validate()
        val_bleu = self.bleu() if self.rank == 0 else float("nan")
        self.epoch += 1
        result = EpochResult(self.epoch, self.step, self.scheduler.get_last_lr()[0], train_loss, val_loss,
                             val_ppl, val_bleu, tokens, seconds)
        self.history.append(result)
        if self.checkpoint is not None and self.rank == 0:
            self.save(self.checkpoint)
        if self.world_size > 1:
            torch.distributed.barrier()
        return result

    def fit(self, on_epoch: Callable[[list[EpochResult]], None] | None = None,
            stop_after: int | None = None) -> list[EpochResult]:
        """Train until ``recipe.epochs`` (or ``stop_after`` more epochs); ``on_epoch(history)`` after each."""
        remaining = self.recipe.epochs - self.epoch
        for _ in range(remaining if stop_after is None else min(remaining, stop_after)):
            self.run_epoch()
            if on_epoch is not None:
                on_epoch(self.history)
        return self.history

    # -- checkpoints --
    def state_dict(self) -> dict:
        return {"format": "course_lib.train/1", "recipe": self.recipe.to_dict(), "epoch": self.epoch,
                "step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
                "history": [dataclasses.asdict(h) for h in self.history], "tokenizer_sha256": self.tokenizer.sha256}

    def save(self, path: str | os.PathLike) -> Path:
        return save_atomically(self.state_dict(), path)

    def load_state_dict(self, state: dict) -> None:
        saved = Recipe.from_dict(state["recipe"])
        if saved != self.recipe:
            diff = {k: (v, getattr(self.recipe, k)) for k, v in saved.to_dict().items()
                    if v != getattr(self.recipe, k) and not (k == "betas" and tuple(v) == self.recipe.betas)}
            raise ValueError(f"the checkpoint was made with another recipe; differences (saved, now): {diff}. "
                             f"Resume with the same settings, or start afresh (--no-resume, or another --out)")
        if state["tokenizer_sha256"] != self.tokenizer.sha256:
            raise ValueError(f"the checkpoint was made with tokenizer {state['tokenizer_sha256'][:12]}…, "
                             f"this trainer has {self.tokenizer.sha256[:12]}…")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.history = [EpochResult(**h) for h in state["history"]]
        set_rng_state(state["rng"])

    def resume(self, path: str | os.PathLike | None = None) -> bool:
        """Load the checkpoint at ``path`` (default: this trainer's) if it exists; True when it did."""
        path = Path(path) if path else self.checkpoint
        if path is None or not path.is_file():
            return False
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=False))
        return True


# --- pictures ---------------------------------------------------------------------------------------

def plot_learning_rate(recipes: dict[str, tuple[Recipe, int]], ax=None):
    """The learning rate against the update step, one line per ``{label: (recipe, steps_per_epoch)}``."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 3.2))
    for label, (recipe, steps_per_epoch) in recipes.items():
        total = steps_per_epoch * recipe.epochs
        steps = range(total)
        ax.plot(steps, [learning_rate(s, total, recipe.lr, recipe.warmup_steps, recipe.final_lr_fraction)
                        for s in steps], label=f"{label}: {recipe.epochs} epochs x {steps_per_epoch} steps")
        ax.axvline(recipe.warmup_steps, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("update step")
    ax.set_ylabel("learning rate")
    ax.set_title("Linear warm-up, then cosine decay (dotted: end of warm-up)")
    ax.legend(fontsize=8)
    return ax.figure


def plot_history(history, title: str = "Training curves"):
    """Two panels from a list of :class:`EpochResult` (or dicts): losses per epoch, and validation BLEU."""
    import matplotlib.pyplot as plt

    rows = [h if isinstance(h, dict) else dataclasses.asdict(h) for h in history]
    epochs = [r["epoch"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(epochs, [r["train_loss"] for r in rows], "o-", label="training loss")
    left.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation loss")
    left.set_xlabel("epoch")
    left.set_ylabel("label-smoothed loss (nats/token)")
    left.legend(fontsize=8)
    right.plot(epochs, [r["val_bleu"] for r in rows], "o-", color="C2")
    right.set_xlabel("epoch")
    right.set_ylabel("validation BLEU (greedy)")
    for ax in (left, right):
        ax.set_xticks(epochs if len(epochs) <= 12 else epochs[::max(1, len(epochs) // 10)])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


class LiveCurves:
    """A figure in the notebook that redraws itself after every epoch: pass ``update`` as ``on_epoch``.

    The placeholder shown before the first epoch is an image too, so the cell's output has the same
    kind before and after the updates (nbval compares the kinds; it does not see display updates).
    """

    def __init__(self, title: str = "Training curves"):
        import matplotlib.pyplot as plt
        from IPython.display import Image, display

        from course_lib.plotting import figure_to_png

        self.title = title
        fig, ax = plt.subplots(figsize=(9, 0.6))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: the curves appear here after the first epoch", ha="center", va="center")
        self.handle = display(Image(figure_to_png(fig)), display_id=True)
        plt.close(fig)

    def update(self, history) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import Image

        from course_lib.plotting import figure_to_png

        fig = plot_history(history, f"{self.title} (after epoch {len(history)})")
        if self.handle is not None:  # None outside a notebook: nothing to update
            self.handle.update(Image(figure_to_png(fig)))
        plt.close(fig)


# --- the shipped model ----------------------------------------------------------------------------

def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_model(trainer: Trainer, out_dir: str | os.PathLike, provenance: dict) -> Path:
    """Write ``model.pt`` (fp16 weights + recipe), ``tokenizer.model`` and ``provenance.json`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights, seen = {}, set()
    for name, tensor in trainer.model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:  # a tied matrix (target embedding, output layer): stored once
            continue
        seen.add(id(tensor))
        tensor = tensor.detach()
        weights[name] = (tensor.half() if tensor.is_floating_point() else tensor).cpu()
    save_atomically({"format": "course_lib.pretrained/1", "recipe": trainer.recipe.to_dict(),
                     "vocab_size": trainer.tokenizer.vocab_size, "weights": weights}, out / "model.pt")
    trainer.tokenizer.save(out / "tokenizer.model")
    write_provenance(out, provenance)
    return out


def write_provenance(folder: Path, provenance: dict, names=("model.pt", "tokenizer.model")) -> None:
    """Write ``folder/provenance.json``: ``provenance`` plus the SHA-256 and size of each file in ``names``."""
    record = dict(provenance)
    record["files"] = {name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
                       for name in names}
    text = json.dumps(record, indent=2, sort_keys=False) + "\n"
    write_atomically(folder / "provenance.json", lambda tmp: Path(tmp).write_text(text))


def read_provenance(folder: Path, what: str = "trained model") -> dict:
    """``folder/provenance.json``, after checking every file it lists against its recorded SHA-256."""
    provenance_path = folder / "provenance.json"
    if not provenance_path.is_file():
        raise FileNotFoundError(f"no {what} at {folder} (expected provenance.json, model.pt, tokenizer.model)")
    provenance = json.loads(provenance_path.read_text())
    for name, info in provenance["files"].items():
        actual = sha256_file(folder / name)
        if actual != info["sha256"]:
            raise ValueError(f"{folder / name} has SHA-256 {actual}, provenance.json records {info['sha256']}; "
                             f"the file is damaged or was replaced: restore it with git checkout")
    return provenance


def load_pretrained(folder: str | os.PathLike = PRETRAINED_DIR, device="cpu"):
    """The course's trained de->en model: ``(model in eval mode, tokenizer, provenance dict)``.

    Every file is checked against the SHA-256 recorded in ``provenance.json`` first.
    """
    folder = Path(folder)
    provenance = read_provenance(folder)
    tokenizer = Tokenizer.from_file(folder / "tokenizer.model")
    saved = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    recipe = Recipe.from_dict(saved["recipe"])
    model = build_model(recipe, saved["vocab_size"])
    model.load_state_dict({k: v.float() for k, v in saved["weights"].items()}, strict=False)
    tied = {name for name, tensor in model.state_dict(keep_vars=True).items()
            if tensor is model.src_embed.weight and name != "src_embed.weight"}
    missing = set(model.state_dict()) - set(saved["weights"]) - tied
    if missing:
        raise ValueError(f"{folder / 'model.pt'} lacks weights for {sorted(missing)[:5]}")
    return model.to(device).eval(), tokenizer, provenance


# --- command line ---------------------------------------------------------------------------------

def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def parse_overrides(assignments: list[str]) -> dict:
    """``["d_model=128", "lr=5e-4", "train_pairs=None"]`` -> typed recipe overrides (types from :class:`Recipe`)."""
    defaults = RECIPES["full"].to_dict()
    overrides = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in defaults or name == "name":
            raise SystemExit(f"--set expects FIELD=VALUE with FIELD one of "
                             f"{', '.join(k for k in defaults if k != 'name')}; got {assignment!r}")
        default = defaults[name]
        try:
            if text == "None" and name in ("train_pairs", "bleu_sentences"):
                value = None
            elif isinstance(default, tuple):
                value = tuple(float(v) for v in text.split(","))
                if len(value) != len(default):
                    raise ValueError(f"{len(default)} values needed")
            elif isinstance(default, bool):
                value = text.lower() in ("1", "true", "yes")
            elif isinstance(default, int) or default is None:
                value = int(text)
            else:
                value = float(text)
        except ValueError:
            raise SystemExit(f"--set {name}: cannot read {text!r} as a {type(default).__name__}") from None
        overrides[name] = value
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.train",
                                     description="Train the course's German->English Transformer on Multi30k.")
    parser.add_argument("--recipe", choices=sorted(RECIPES), help="default: full on a GPU, quick on a CPU")
    parser.add_argument("--out", default="runs/translation", help="folder for checkpoint.pt and the log")
    parser.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    parser.add_argument("--train-pairs", type=int, help="override: train on this many pairs")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    parser.add_argument("--stop-after", type=int, help="stop after this many epochs (to test resuming)")
    parser.add_argument("--export", help="after training, write the fp16 model, tokenizer and provenance here")
    parser.add_argument("--test-beam", type=int, default=4, help="beam size for the final test BLEU (0: skip)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any recipe field, e.g. --set d_model=128 --set lr=5e-4 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    from course_lib.data import load_split
    from course_lib.session import pick_device
    from course_lib.tokenizer import load_tokenizer

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if world_size > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and args.device in (None, "cuda")
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
        device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
    else:
        device = pick_device(args.device)
    rank = torch.distributed.get_rank() if world_size > 1 else 0
    say = print if rank == 0 else (lambda *a, **k: None)

    overrides = parse_overrides(args.set)
    overrides.update({k: v for k, v in (("epochs", args.epochs), ("train_pairs", args.train_pairs)) if v is not None})
    recipe = get_recipe(args.recipe or default_recipe_name(device), **overrides)
    out = Path(args.out)
    tokenizer = load_tokenizer(recipe.vocab_size)
    trainer = Trainer(recipe, tokenizer, load_split("train"), load_split("val"), device=device,
                      checkpoint=out / "checkpoint.pt", progress=not args.quiet)
    if not args.no_resume and trainer.resume():
        say(f"resumed from {trainer.checkpoint} after epoch {trainer.epoch}")
    from course_lib.transformer import count_parameters
    say(f"recipe {recipe.name}: {count_parameters(trainer.model):,} parameters, {len(trainer.train_examples):,} "
        f"training pairs, {trainer.steps_per_epoch} steps per epoch per process, {world_size} process(es) on {device}")
    start = time.perf_counter()
    log_path = out / "log.jsonl"

    def on_epoch(history):
        say(history[-1].line() + f"  ({history[-1].seconds:.0f} s, {history[-1].target_tokens / history[-1].seconds:,.0f} target tokens/s)")
        if rank == 0:
            with open(log_path, "a") as log:
                log.write(json.dumps(dataclasses.asdict(history[-1])) + "\n")

    trainer.fit(on_epoch=on_epoch, stop_after=args.stop_after)
    wall = time.perf_counter() - start
    if rank == 0 and trainer.epoch == recipe.epochs and (args.export or args.test_beam):
        test = load_split("test_2016_flickr")
        from course_lib.decoding import translate

        scores = {}
        for beam in sorted({1, args.test_beam} - {0}):
            t0 = time.perf_counter()
            hyps = translate(trainer.model, tokenizer, [p[0] for p in test], beam_size=beam, device=device, warn=False)
            seconds = time.perf_counter() - t0
            cased = bleu_with_signature(hyps, [p[1] for p in test])
            lower, lower_signature = corpus_bleu(hyps, [p[1] for p in test], lowercase_tokenized=True)
            name = "greedy" if beam == 1 else f"beam{beam}"
            scores[name] = {**cased, "bleu_lowercase": round(lower.score, 2), "signature_lowercase": str(lower_signature),
                            "seconds": round(seconds, 1)}
            say(f"test_2016_flickr {name}: BLEU {cased['bleu']:.2f} ({cased['signature']}); lowercased {lower.score:.2f}")
        if args.export:
            provenance = {
                "command": "python -m course_lib.train " + " ".join(argv if argv is not None else sys.argv[1:]),
                "recipe": recipe.to_dict(), "hardware": hardware_description(device), "processes": world_size,
                "torch": torch.__version__, "train_seconds_this_invocation": round(wall, 1),
                "train_seconds_total": round(sum(h.seconds for h in trainer.history), 1),
                "epochs": [dataclasses.asdict(h) for h in trainer.history], "test_2016_flickr": scores,
                "tokenizer_sha256": tokenizer.sha256,
            }
            export_model(trainer, args.export, provenance)
            say(f"exported to {args.export}")
    if world_size > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
