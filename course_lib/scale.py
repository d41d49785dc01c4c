"""Attention at scale (notebook 14): what attention costs, how to measure it, and how to avoid the T × T matrix.

- Counting: :func:`attention_flops`, :func:`projection_flops`, :func:`feed_forward_flops`,
  :func:`attention_matrix_bytes`.
- Exact attention without the T × T matrix: :func:`online_softmax_merge` and :func:`blockwise_attention`
  (the idea behind FlashAttention, written for clarity rather than speed).
- Measuring: :func:`time_call`, :func:`sdpa_backends`, :func:`attention_implementations`,
  :func:`benchmark_attention`, :func:`scaling_exponent`, :func:`device_label`.
- The translation model: :func:`profile_parts` (where a forward pass spends its time) and
  :func:`decode_step_times` (what the key–value cache saves at each step).
- Figures: :func:`plot_scaling`, :func:`plot_profile`, :func:`plot_step_times`.

``python -m course_lib.benchmark`` runs the same measurements from the command line.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from course_lib.attention import check_attention_inputs, check_mask, scaled_dot_product_attention
from course_lib.files import write_atomically
from course_lib.shapes import check_int, check_shape

# --- counting --------------------------------------------------------------------------------------


def attention_flops(T_q: int, T_k: int, d_k: int, d_v: int | None = None, heads: int = 1, batch: int = 1) -> int:
    """Floating-point operations of ``softmax(q k^T / sqrt(d_k)) v``, a multiply-add counted as 2.

    The scores ``q k^T`` take ``2 T_q T_k d_k`` and the weighted sum of values ``2 T_q T_k d_v``, per head
    and per sequence. The softmax and the scaling (a few operations per score) are left out: they are
    ``O(T_q T_k)``, small next to these when ``d_k`` is 64 or more.
    """
    d_v = d_k if d_v is None else d_v
    for name, value in (("T_q", T_q), ("T_k", T_k), ("d_k", d_k), ("d_v", d_v), ("heads", heads), ("batch", batch)):
        check_int(value, name, minimum=1 if name in ("d_k", "d_v", "heads", "batch") else 0)
    return 2 * T_q * T_k * (d_k + d_v) * heads * batch


def projection_flops(T_q: int, T_k: int, d_model: int, batch: int = 1) -> int:
    """FLOPs of multi-head attention's four projections: W_Q and W_O on T_q positions, W_K and W_V on T_k.

    Each is a (d_model, d_model) matrix applied to a position: ``2 d_model²`` FLOPs (biases left out).
    """
    for name, value in (("T_q", T_q), ("T_k", T_k)):
        check_int(value, name, minimum=0)
    check_int(d_model, "d_model", minimum=1)
    check_int(batch, "batch", minimum=1)
    return 2 * d_model * d_model * (2 * T_q + 2 * T_k) * batch


def feed_forward_flops(T: int, d_model: int, d_ff: int, batch: int = 1) -> int:
    """FLOPs of a position-wise feed-forward layer on T positions: two matrices, ``4 T d_model d_ff``."""
    check_int(T, "T", minimum=0)
    check_int(d_model, "d_model", minimum=1)
    check_int(d_ff, "d_ff", minimum=1)
    check_int(batch, "batch", minimum=1)
    return 4 * T * d_model * d_ff * batch


def attention_matrix_bytes(T_q: int, T_k: int, heads: int = 1, batch: int = 1,
                           dtype: torch.dtype = torch.float32) -> int:
    """Bytes of one (batch, heads, T_q, T_k) matrix of scores or weights in ``dtype``."""
    check_int(T_q, "T_q", minimum=0)
    check_int(T_k, "T_k", minimum=0)
    check_int(heads, "heads", minimum=1)
    check_int(batch, "batch", minimum=1)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
    return batch * heads * T_q * T_k * torch.empty((), dtype=dtype).element_size()


# --- exact attention, one block of keys at a time ---------------------------------------------------


def _rescale(m_old: torch.Tensor, m_new: torch.Tensor) -> torch.Tensor:
    """exp(m_old - m_new), and 0 where m_old is -inf (nothing seen yet), even when m_new is -inf too."""
    return torch.where(torch.isneginf(m_old), torch.zeros_like(m_old), torch.exp(m_old - m_new))


def online_softmax_merge(m_a: torch.Tensor, l_a: torch.Tensor, acc_a: torch.Tensor,
                         m_b: torch.Tensor, l_b: torch.Tensor, acc_b: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Combine two partial softmax-weighted sums over disjoint sets of keys into one.

    A partial result over a set of keys with scores ``s_j`` and values ``v_j`` is, per query row:
    ``m = max_j s_j``, ``l = sum_j exp(s_j - m)`` and ``acc = sum_j exp(s_j - m) v_j``; attention's output
    is ``acc / l``. Two partial results merge exactly by moving both to the larger maximum.

    Args:
        m_a, l_a: (..., T_q) maxima and sums of the first part (``m = -inf``, ``l = 0`` for rows with no
            key yet). acc_a: (..., T_q, d_v).
        m_b, l_b, acc_b: the same for the second part.

    Returns:
        ``(m, l, acc)`` with the shapes of the inputs.
    """
    sizes = check_shape(acc_a, "... T_q d_v", name="acc_a", dtype="float")
    check_shape(acc_b, "... T_q d_v", name="acc_b", dtype="float", T_q=sizes["T_q"], d_v=sizes["d_v"])
    for name, value in (("m_a", m_a), ("l_a", l_a), ("m_b", m_b), ("l_b", l_b)):
        check_shape(value, "... T_q", name=name, dtype="float", T_q=sizes["T_q"])
    m = torch.maximum(m_a, m_b)
    scale_a, scale_b = _rescale(m_a, m), _rescale(m_b, m)
    return m, l_a * scale_a + l_b * scale_b, acc_a * scale_a[..., None] + acc_b * scale_b[..., None]


def blockwise_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int = 64,
                        mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Exact scaled dot-product attention that never holds more than a (T_q, block_size) block of scores.

    Keys and values are visited ``block_size`` at a time; each block's partial softmax is merged into a
    running one with :func:`online_softmax_merge` (Milakov & Gimelshein, 2018; the idea FlashAttention
    builds on, Dao et al., 2022). The output equals :func:`course_lib.attention.scaled_dot_product_attention`'s.

    Args:
        q: (..., T_q, d_k). k: (..., T_k, d_k). v: (..., T_k, d_v).
        block_size: keys per block, a positive int.
        mask: None, or a bool mask broadcastable to (..., T_q, T_k), True where a query may attend.
            Rows with no key to attend to give zeros, as in the course's attention.
        scale: None means 1/sqrt(d_k).

    Returns:
        (..., T_q, d_v)
    """
    check_attention_inputs(q=q, k=k, v=v)
    sizes = check_shape(q, "... T_q d_k", name="q", dtype="float")
    k_sizes = check_shape(k, "... T_k d_k", name="k", dtype="float", d_k=sizes["d_k"])
    check_shape(v, "... T_k d_v", name="v", dtype="float", T_k=k_sizes["T_k"])
    check_int(block_size, "block_size", minimum=1)
    T_q, T_k = sizes["T_q"], k_sizes["T_k"]
    try:
        lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"batch axes of q {tuple(q.shape[:-2])}, k {tuple(k.shape[:-2])} and v "
                         f"{tuple(v.shape[:-2])} do not broadcast") from None
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"mask: expected a bool mask (True = may attend), got {got}")
        check_mask(mask, (*lead, T_q, T_k), q.device)
    scale = 1.0 / math.sqrt(sizes["d_k"]) if scale is None else scale
    q = q * scale  # before the product, as in course_lib.attention: half precision survives large scores
    m = q.new_full((*lead, T_q), -math.inf)  # running maximum per query
    l = q.new_zeros((*lead, T_q))  # running sum of exp(score - m)
    acc = q.new_zeros((*lead, T_q, v.shape[-1]))  # running sum of exp(score - m) * value
    for start in range(0, T_k, block_size):
        stop = min(start + block_size, T_k)
        s = q @ k[..., start:stop, :].transpose(-2, -1)  # (..., T_q, block): the only scores held
        if mask is not None:
            s = s.masked_fill(~mask[..., start:stop], -math.inf)
        m_b = s.amax(dim=-1)  # (..., T_q)
        p = torch.exp(s - torch.where(torch.isneginf(m_b), torch.zeros_like(m_b), m_b)[..., None])
        m, l, acc = online_softmax_merge(m, l, acc, m_b, p.sum(dim=-1), p @ v[..., start:stop, :])
    return torch.where(l[..., None] > 0, acc / l.clamp_min(torch.finfo(l.dtype).tiny)[..., None],
                       torch.zeros_like(acc))


# --- measuring -------------------------------------------------------------------------------------


def _synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of repeated calls, in seconds."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def best(self) -> float:
        return min(self.runs)


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 1,
              device: torch.device | str | None = None) -> Timing:
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed (synchronising a CUDA device).

    Warm-up runs absorb one-off costs (memory allocation, kernel selection, caches) that a long job pays
    once. Report the median: a single run is at the mercy of whatever else the machine is doing.
    """
    check_int(repeats, "repeats", minimum=1)
    check_int(warmup, "warmup", minimum=0)
    for _ in range(warmup):
        fn()
    _synchronize(device)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        runs.append(time.perf_counter() - start)
    return Timing(tuple(runs))


#: PyTorch's fused attention kernels, by the name the course prints.
SDPA_BACKENDS = ("math", "flash", "efficient", "cudnn")


def _backend(name: str):
    from torch.nn.attention import SDPBackend

    table = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
    if name not in table:
        raise ValueError(f"unknown SDPA back-end {name!r}; expected one of {SDPA_BACKENDS}")
    return table[name]


def sdpa_with_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str,
                      is_causal: bool = False) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` restricted to one back-end ("math", "flash", "efficient", "cudnn").

    Raises RuntimeError when that back-end cannot run these inputs on this device.
    """
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel(_backend(backend)), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a refused back-end warns before it raises
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)


def sdpa_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> list[str]:
    """The SDPA back-ends that run on ``device`` for ``dtype`` (tried on a tiny (1, 2, 16, 64) input)."""
    probe = torch.randn(1, 2, 16, 64, device=device).to(dtype)
    found = []
    for name in SDPA_BACKENDS:
        try:
            sdpa_with_backend(probe, probe, probe, name)
        except RuntimeError:
            continue
        found.append(name)
    return found


def attention_implementations(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                              block_size: int = 256) -> dict[str, Callable[..., torch.Tensor]]:
    """Every attention the course can time on ``device``: ``name -> fn(q, k, v) -> output``.

    "course" is :func:`course_lib.attention.scaled_dot_product_attention` (it builds and returns the
    weights), "blockwise" is :func:`blockwise_attention`, "sdpa: <back-end>" each available back-end of
    ``F.scaled_dot_product_attention``.
    """
    impls: dict[str, Callable[..., torch.Tensor]] = {
        "course": lambda q, k, v: scaled_dot_product_attention(q, k, v)[0],
        "blockwise": lambda q, k, v: blockwise_attention(q, k, v, block_size=block_size),
    }
    for name in sdpa_backends(device, dtype):
        impls[f"sdpa: {name}"] = lambda q, k, v, name=name: sdpa_with_backend(q, k, v, name)
    return impls


@dataclass(frozen=True)
class BenchmarkRow:
    """One measurement: an implementation at one sequence length T (T queries attending to T keys)."""

    implementation: str
    length: int
    seconds: float
    peak_bytes: int | None  # extra memory at the peak (CUDA only; None on other devices)


def benchmark_attention(lengths: Sequence[int], heads: int = 4, d_k: int = 64, batch: int = 1,
                        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                        implementations: dict[str, Callable[..., torch.Tensor]] | None = None,
                        repeats: int = 3, seed: int = 0) -> list[BenchmarkRow]:
    """Time each implementation on random (batch, heads, T, d_k) inputs for every T in ``lengths``.

    On CUDA the peak memory each call allocates beyond its inputs is recorded too.
    """
    if not lengths:
        raise ValueError("lengths must name at least one sequence length")
    for T in lengths:
        check_int(T, "length", minimum=1)
    impls = attention_implementations(device, dtype) if implementations is None else implementations
    cuda = torch.device(device).type == "cuda"
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for T in lengths:
        q, k, v = (torch.randn(batch, heads, T, d_k, generator=gen).to(device=device, dtype=dtype) for _ in range(3))
        for name, fn in impls.items():
            timing = time_call(lambda: fn(q, k, v), repeats=repeats, warmup=1, device=device)
            peak = None
            if cuda:
                torch.cuda.synchronize(device)
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                fn(q, k, v)
                torch.cuda.synchronize(device)
                peak = torch.cuda.max_memory_allocated(device) - base
            rows.append(BenchmarkRow(name, T, timing.median, peak))
    return rows


def scaling_exponent(lengths: Sequence[float], seconds: Sequence[float]) -> float:
    """The slope of log(seconds) against log(length) (least squares): 2 means time grows like T²."""
    if len(lengths) != len(seconds) or len(lengths) < 2:
        raise ValueError(f"need at least two (length, seconds) pairs of equal count, got {len(lengths)} "
                         f"lengths and {len(seconds)} times")
    if min(lengths) <= 0 or min(seconds) <= 0:
        raise ValueError("lengths and seconds must be positive to take logarithms")
    x = [math.log(t) for t in lengths]
    y = [math.log(s) for s in seconds]
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxx = sum((a - mx) ** 2 for a in x)
    if sxx == 0:
        raise ValueError("the lengths must not all be equal")
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx


def benchmark_table(rows: Sequence[BenchmarkRow], baseline: str = "course") -> str:
    """A text table: one line per length, milliseconds per implementation and each one's speed-up over ``baseline``."""
    names = list(dict.fromkeys(r.implementation for r in rows))
    lengths = sorted({r.length for r in rows})
    seconds = {(r.implementation, r.length): r.seconds for r in rows}
    header = f"{'T':>6} " + " ".join(f"{n:>16}" for n in names)
    lines = [header + "   (ms; in brackets: times faster than " + baseline + ")"]
    for T in lengths:
        base = seconds.get((baseline, T))
        cells = []
        for n in names:
            s = seconds.get((n, T))
            if s is None:
                cells.append(f"{'-':>16}")
            elif base is None or n == baseline:
                cells.append(f"{s * 1e3:>16.2f}")
            else:
                cells.append(f"{s * 1e3:>9.2f} ({base / s:4.1f}x)")
        lines.append(f"{T:>6} " + " ".join(cells))
    return "\n".join(lines)


def device_label(device: torch.device | str) -> str:
    """Name the hardware for figure titles: the GPU's name, or "CPU, N threads"."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "GPU: Apple MPS"
    return f"CPU, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}"


#: Where ``python -m course_lib.benchmark attention --record`` stores measurements (notebook 14 plots them).
RECORDED_DIR = Path(__file__).resolve().parent.parent / "data" / "benchmarks"


def save_benchmark(rows: Sequence[BenchmarkRow], path: str | os.PathLike, **settings) -> Path:
    """Write rows and their settings (device label, torch version, dtype, ...) to a JSON file, atomically."""
    if not rows:
        raise ValueError("no benchmark rows to save")
    record = {"settings": {"torch": torch.__version__, **settings},
              "rows": [{"implementation": r.implementation, "length": r.length, "seconds": r.seconds,
                        "peak_bytes": r.peak_bytes} for r in rows]}

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
            f.write("\n")

    return write_atomically(path, write)


def load_benchmark(path: str | os.PathLike) -> tuple[dict, list[BenchmarkRow]]:
    """Read a file written by :func:`save_benchmark`: ``(settings, rows)``; a ValueError names what is missing."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        settings, raw = record["settings"], record["rows"]
        rows = [BenchmarkRow(str(r["implementation"]), int(r["length"]), float(r["seconds"]),
                             None if r.get("peak_bytes") is None else int(r["peak_bytes"])) for r in raw]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a benchmark record written by save_benchmark ({exc!r})") from None
    if not isinstance(settings, dict) or not rows:
        raise ValueError(f"{path}: a benchmark record needs a settings object and at least one row")
    return settings, rows


def recorded_benchmarks(folder: str | os.PathLike = RECORDED_DIR) -> list[tuple[Path, dict, list[BenchmarkRow]]]:
    """Every ``attention_*.json`` record in ``folder``, sorted by file name: ``[(path, settings, rows), ...]``."""
    folder = Path(folder)
    return [(path, *load_benchmark(path)) for path in sorted(folder.glob("attention_*.json"))]


# --- the translation model -------------------------------------------------------------------------

#: The parts :func:`profile_parts` reports, in order.
PROFILE_PARTS = ("embeddings", "attention projections", "attention core", "feed-forward", "layer norms",
                 "output layer", "everything else")


def _part_of(name: str) -> str | None:
    """Which part a named submodule of a Seq2SeqTransformer is timed as (None: not timed on its own)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("src_embed", "tgt_embed"):
        return "embeddings"
    if leaf in ("self_attn", "cross_attn"):
        return "attention"
    if leaf in ("w_q", "w_k", "w_v", "w_o") and name.rsplit(".", 2)[-2] in ("self_attn", "cross_attn"):
        return "attention projections"
    if leaf == "ff":
        return "feed-forward"
    if "norm" in leaf:
        return "layer norms"
    if name == "out":
        return "output layer"
    return None


@contextmanager
def _timed_parts(model: torch.nn.Module, totals: dict[str, float]):
    starts: dict[int, list[float]] = {}
    handles = []

    def pre(module, args):
        starts.setdefault(id(module), []).append(time.perf_counter())

    def post_for(part):
        def post(module, args, output):
            totals[part] = totals.get(part, 0.0) + time.perf_counter() - starts[id(module)].pop()
        return post

    seen = set()
    for name, module in model.named_modules():
        part = _part_of(name)
        if part is None or id(module) in seen:  # a shared embedding is one module with two names
            continue
        seen.add(id(module))
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post_for(part)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def profile_parts(model: torch.nn.Module, run: Callable[[], object], repeats: int = 3) -> dict[str, float]:
    """Seconds that ``run()`` spends in each part of a Seq2SeqTransformer (see :data:`PROFILE_PARTS`).

    Forward hooks time the model's submodules: token embeddings; the four projections of every attention
    layer; the attention core (each attention layer's time minus its projections: scores, softmax,
    masking, the weighted sum); feed-forward layers; layer norms; the output layer (logits over the target
    vocabulary). "everything else" is the rest of ``run()``'s time: positional encodings, residual
    additions, masks, Python. Times are summed over ``repeats`` runs after one untimed warm-up run, and
    divided by ``repeats``. Only modules called through ``module(...)`` are seen by hooks.
    """
    check_int(repeats, "repeats", minimum=1)
    run()  # warm-up
    totals: dict[str, float] = {}
    with _timed_parts(model, totals):
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        total = time.perf_counter() - start
    parts = {name: totals.get(name, 0.0) / repeats for name in PROFILE_PARTS}
    parts["attention core"] = max(0.0, (totals.get("attention", 0.0) - totals.get("attention projections", 0.0))
                                  / repeats)
    parts["everything else"] = max(0.0, total / repeats - sum(v for k, v in parts.items() if k != "everything else"))
    return parts


@contextmanager
def _silenced_stderr_fd():
    """Point file descriptor 2 at /dev/null for a moment: PyTorch's profiler back-end (Kineto) writes
    start/stop notices straight to it, below Python's sys.stderr."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def operator_table(run: Callable[[], object], row_limit: int = 8) -> str:
    """``torch.profiler``'s table of the operators ``run()`` calls, sorted by their own CPU time.

    One untimed warm-up call first; the profiler's start/stop notices are kept out of the output.
    """
    from torch.profiler import ProfilerActivity, profile

    check_int(row_limit, "row_limit", minimum=1)
    run()
    with _silenced_stderr_fd():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit, max_name_column_width=30)


@torch.no_grad()
def decode_step_times(model, src: torch.Tensor, tokens: torch.Tensor, repeats: int = 3
                      ) -> tuple[list[float], list[float]]:
    """Seconds per decoding step, without and with the key–value cache, feeding the given tokens.

    Without the cache, step t runs the decoder on the whole prefix ``tokens[:, :t]`` (t positions) and
    keeps the last position's logits, as :func:`course_lib.decoding.greedy_search` does; with it,
    :class:`course_lib.decoding.IncrementalDecoder` runs one position. The encoder's work is left out of
    both. Each step's time is the best of ``repeats`` runs.

    Args:
        model: a Seq2SeqTransformer. src: (B, S) source ids. tokens: (B, T) target ids fed in order
            (BOS first); T steps are timed.

    Returns:
        ``(without, with_cache)``: two lists of T seconds.
    """
    from course_lib.decoding import IncrementalDecoder, eval_mode

    sizes = check_shape(src, "B S", name="src", dtype="int")
    check_shape(tokens, "B T", name="tokens", dtype="int", B=sizes["B"])
    check_int(repeats, "repeats", minimum=1)
    with eval_mode(model):
        memory, src_mask = model.encode(src)
        T = tokens.shape[1]
        without = [math.inf] * T
        cached = [math.inf] * T
        for _ in range(repeats):
            for t in range(1, T + 1):
                start = time.perf_counter()
                model.decode(tokens[:, :t], memory, src_mask)[:, -1]
                without[t - 1] = min(without[t - 1], time.perf_counter() - start)
            decoder = IncrementalDecoder(model).start(src)
            for t in range(T):
                start = time.perf_counter()
                decoder.step(tokens[:, t])
                cached[t] = min(cached[t], time.perf_counter() - start)
    return without, cached


# --- figures ---------------------------------------------------------------------------------------


def plot_online_softmax(scores: torch.Tensor, block_size: int = 3, blocks_seen: int = 2):
    """Online softmax over one query's scores (n,), read block by block: what is known after some blocks.

    Left: the scores, the keys seen so far in colour, the block borders, and the running maximum m.
    Right: the softmax over the keys seen so far (``exp(s - m) / l``) beside the final softmax over
    all n keys. ``blocks_seen`` beyond the last block counts as all of them. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    check_shape(scores, "n", name="scores", dtype="float")
    block_size, blocks_seen = check_int(block_size, "block_size", 1), check_int(blocks_seen, "blocks_seen", 1)
    n = scores.numel()
    seen = min(n, block_size * blocks_seen)
    m = scores[:seen].max()
    running = torch.zeros(n)
    running[:seen] = torch.softmax(scores[:seen], dim=0)  # = exp(s - m) / l over the keys seen
    final = torch.softmax(scores, dim=0)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.bar(range(n), scores.tolist(), color=["tab:blue" if j < seen else "lightgrey" for j in range(n)])
    ax1.axhline(float(m), color="tab:red", linestyle="--", label=f"running max m = {float(m):.1f}")
    for start in range(0, n, block_size):
        ax1.axvline(start - 0.5, color="black", linewidth=0.5)
    ax1.set(xlabel="key j", ylabel="score s_j", title=f"{seen} of {n} keys seen")
    ax1.legend(fontsize=8, loc="upper left")
    ax2.bar([j - 0.2 for j in range(n)], running.tolist(), width=0.4, label="running weights (keys seen)")
    ax2.bar([j + 0.2 for j in range(n)], final.tolist(), width=0.4, color="tab:orange", label="final weights")
    ax2.set(xlabel="key j", ylabel="weight", ylim=(0, 1), title="weights so far against the final softmax")
    ax2.legend(fontsize=8)
    fig.suptitle(f"Online softmax: block size {block_size}, {min(blocks_seen, math.ceil(n / block_size))} "
                 "block(s) seen")
    fig.tight_layout()
    return fig


def plot_scaling(rows: Sequence[BenchmarkRow], title: str, ax=None, reference_slope: float | None = 2.0):
    """Log-log plot of time against sequence length, one line per implementation, with a T² guide line."""
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("no benchmark rows to plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    names = list(dict.fromkeys(r.implementation for r in rows))
    for name in names:
        mine = sorted((r.length, r.seconds * 1e3) for r in rows if r.implementation == name)
        ax.plot([t for t, _ in mine], [ms for _, ms in mine], marker="o", label=name)
    if reference_slope is not None:
        course = sorted((r.length, r.seconds * 1e3) for r in rows if r.implementation == names[0])
        T0, ms0 = course[-1]
        Ts = [t for t, _ in course]
        ax.plot(Ts, [ms0 * (t / T0) ** reference_slope for t in Ts], color="grey", linestyle=":",
                label=f"∝ T^{reference_slope:g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (queries = keys)")
    ax.set_ylabel("time per call (ms, log scale)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax.figure


def plot_profile(parts: dict[str, float], title: str, ax=None):
    """Horizontal bars: the share of time each part of the model takes (``parts`` from :func:`profile_parts`)."""
    import matplotlib.pyplot as plt

    total = sum(parts.values())
    if total <= 0:
        raise ValueError("the profile holds no time")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    names = list(parts)[::-1]
    shares = [100 * parts[n] / total for n in names]
    bars = ax.barh(names, shares, color="tab:blue")
    for bar, share in zip(bars, shares):
        ax.text(bar.get_width() + 0.5, bar.get_y() + bar.get_height() / 2, f"{share:.0f}%", va="center", fontsize=8)
    ax.set_xlabel("share of the time (%)")
    ax.set_xlim(0, max(shares) * 1.15 + 1)
    ax.set_title(title)
    return ax.figure


def plot_step_times(without: Sequence[float], with_cache: Sequence[float], title: str, axes=None):
    """Two panels: milliseconds per decoding step, and cumulative seconds, without and with the KV cache."""
    import matplotlib.pyplot as plt

    if len(without) != len(with_cache) or not without:
        raise ValueError(f"need two equally long, non-empty lists of step times, got {len(without)} and "
                         f"{len(with_cache)}")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = range(1, len(without) + 1)
    for values, label in ((without, "without cache (whole prefix)"), (with_cache, "with KV cache (one position)")):
        axes[0].plot(steps, [1e3 * s for s in values], label=label)
        running, total = [], 0.0
        for s in values:
            total += s
            running.append(total)
        axes[1].plot(steps, running, label=label)
    axes[0].set_xlabel("step t (output tokens so far)")
    axes[0].set_ylabel("time of step t (ms)")
    axes[0].set_title("each step")
    axes[1].set_xlabel("output length T")
    axes[1].set_ylabel("time for T tokens (s)")
    axes[1].set_title("all steps so far")
    axes[0].legend(fontsize=8)
    axes[0].figure.suptitle(title)
    axes[0].figure.tight_layout()
    return axes[0].figure
