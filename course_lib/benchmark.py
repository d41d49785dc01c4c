"""Notebook 14's measurements from the command line; every ratio is measured within the same run.

    python -m course_lib.benchmark attention [--device cuda] [--lengths 256 1024 4096] [--record]
    python -m course_lib.benchmark kv-cache  [--sentences 100] [--beam-size 4]
    python -m course_lib.benchmark profile   [--sentences 64]

``attention`` times the course's attention, the block-wise one and every available back-end of
``F.scaled_dot_product_attention`` across sequence lengths, prints milliseconds, speed-ups over the
course's version and each one's scaling exponent; ``--record`` also writes the results to
``data/benchmarks/attention_<device>.json``, which notebook 14 plots (labelled with the device).
``kv-cache`` decodes validation sentences with the course's model with and without the key–value
cache (the outputs must be identical) and prints the speed-up. ``profile`` prints where a forward
pass of the model spends its time.
"""
from __future__ import annotations

import argparse
import re
import sys
import time

import torch

from course_lib import scale

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible to torch on this machine")
    return device


def run_attention(args) -> int:
    device = _device(args.device)
    dtype = DTYPES[args.dtype]
    if device.type == "cpu" and dtype != torch.float32:
        print(f"note: {args.dtype} on a CPU is mostly emulated; float32 is the fair CPU comparison")
    lengths = args.lengths or ([256, 512, 1024, 2048, 4096, 8192, 16384] if device.type == "cuda"
                               else [128, 256, 512, 1024, 2048, 4096])
    label = scale.device_label(device)
    print(f"attention on {label}, torch {torch.__version__}, {args.dtype}, batch {args.batch}, "
          f"{args.heads} heads of d_k = {args.d_k}, median of {args.repeats} runs")
    impls = scale.attention_implementations(device, dtype)
    if args.skip:
        impls = {name: fn for name, fn in impls.items() if name not in args.skip}
    rows = scale.benchmark_attention(lengths, heads=args.heads, d_k=args.d_k, batch=args.batch, device=device,
                                     dtype=dtype, implementations=impls, repeats=args.repeats)
    print(scale.benchmark_table(rows))
    fit = [T for T in lengths if T >= min(512, max(lengths))]
    if len(fit) >= 2:
        print(f"scaling exponent (slope of log time against log T, T >= {fit[0]}; 2 means T²):")
        for name in impls:
            seconds = [r.seconds for r in rows if r.implementation == name and r.length in fit]
            print(f"  {name:>16}: {scale.scaling_exponent(fit, seconds):.2f}")
    if device.type == "cuda":
        print("peak extra memory per call (MiB):")
        for T in lengths:
            cells = " ".join(f"{r.implementation}={r.peak_bytes / 2**20:.1f}" for r in rows if r.length == T)
            print(f"  T = {T:>6}: {cells}")
    if args.record:
        name = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
        path = scale.save_benchmark(rows, scale.RECORDED_DIR / f"attention_{name}.json", device=label,
                                    dtype=args.dtype, heads=args.heads, d_k=args.d_k, batch=args.batch,
                                    repeats=args.repeats, measured=time.strftime("%Y-%m-%d"))
        print(f"recorded in {path}")
    return 0


def _sources(n: int, device):
    from course_lib.data import load_split
    from course_lib.masking import pad_sequences
    from course_lib.train import load_pretrained
    from course_lib.tokenizer import EOS_ID, PAD_ID

    model, tokenizer, _ = load_pretrained(device=device)
    pairs = load_split("val")[:n]
    src = pad_sequences([tokenizer.encode(de) + [EOS_ID] for de, _ in pairs], pad_id=PAD_ID).to(device)
    return model, tokenizer, pairs, src


def run_kv_cache(args) -> int:
    from course_lib.decoding import beam_search, greedy_search

    device = _device(args.device)
    model, _, _, src = _sources(args.sentences, device)
    print(f"the course's model on {scale.device_label(device)}: {args.sentences} validation sentences, one batch")
    searches = [("greedy", greedy_search, {}), (f"beam {args.beam_size}", beam_search, {"beam_size": args.beam_size})]
    for name, search, kwargs in searches:
        start = time.perf_counter()
        without = search(model, src, cached=False, **kwargs)
        seconds_without = time.perf_counter() - start
        start = time.perf_counter()
        with_cache = search(model, src, cached=True, **kwargs)
        seconds_with = time.perf_counter() - start
        if without != with_cache:
            print(f"{name}: the cached search gave different outputs", file=sys.stderr)
            return 1
        print(f"{name:>8}: without cache {seconds_without:.2f} s, with cache {seconds_with:.2f} s: "
              f"{seconds_without / seconds_with:.1f}x faster, identical outputs")
    return 0


def run_profile(args) -> int:
    from course_lib.batching import collate, encode_pairs

    device = _device(args.device)
    model, tokenizer, pairs, src = _sources(args.sentences, device)
    batch = collate(encode_pairs(pairs, tokenizer)).to(device)

    def forward():
        with torch.no_grad():
            model(batch.src, batch.tgt_in)

    parts = scale.profile_parts(model, forward, repeats=args.repeats)
    total = sum(parts.values())
    print(f"one forward pass over {len(pairs)} validation pairs ({tuple(batch.src.shape)} source, "
          f"{tuple(batch.tgt_in.shape)} target ids) on {scale.device_label(device)}: {total * 1e3:.1f} ms")
    for name, seconds in parts.items():
        print(f"  {name:>22}: {seconds * 1e3:8.2f} ms  {100 * seconds / total:5.1f}%")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course_lib.benchmark", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    sub = parser.add_subparsers(dest="command", required=True)
    att = sub.add_parser("attention", help="attention implementations across sequence lengths")
    att.add_argument("--device", default="auto", help="cpu, cuda or auto (default: a GPU when there is one)")
    att.add_argument("--lengths", type=int, nargs="+", help="sequence lengths T (default depends on the device)")
    att.add_argument("--heads", type=int, default=4)
    att.add_argument("--d-k", type=int, default=64)
    att.add_argument("--batch", type=int, default=1)
    att.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    att.add_argument("--repeats", type=int, default=5)
    att.add_argument("--skip", nargs="+", default=[], help="implementations to leave out, e.g. blockwise")
    att.add_argument("--record", action="store_true", help="also write data/benchmarks/attention_<device>.json")
    att.set_defaults(run=run_attention)
    kv = sub.add_parser("kv-cache", help="decoding with and without the key-value cache")
    kv.add_argument("--device", default="auto")
    kv.add_argument("--sentences", type=int, default=100)
    kv.add_argument("--beam-size", type=int, default=4)
    kv.set_defaults(run=run_kv_cache)
    prof = sub.add_parser("profile", help="where a forward pass of the translation model spends its time")
    prof.add_argument("--device", default="auto")
    prof.add_argument("--sentences", type=int, default=64)
    prof.add_argument("--repeats", type=int, default=3)
    prof.set_defaults(run=run_profile)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
