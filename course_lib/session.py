"""One call at the top of every notebook makes it reproducible: :func:`setup`.

It seeds every random number generator, fixes torch's thread count (results can differ
in the last bits between 1 and 2 threads, so the count is fixed rather than "all cores"),
sets print options so tensors print rounded, applies the course's plotting style and
picks the device. The same notebook then prints the same text on a 2-core laptop, an
8-core workstation and the CI machine.
"""
from __future__ import annotations

import os
import platform
import random
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

#: Environment variable that overrides the device choice: ``cpu``, ``cuda``, ``mps`` or ``auto``.
DEVICE_ENV = "COURSE_DEVICE"
VALID_DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_SEED = 0
DEFAULT_THREADS = 2


def seed_everything(seed: int = DEFAULT_SEED) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every GPU)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def assert_claims(claims: dict[str, object]) -> None:
    """Check what a training run must show on every machine, and print it: ``{claim: holds}``.

    Training results differ in their last digits from CPU to CPU, so a notebook prints its exact
    figures in a cell the tests ignore and states the lesson as claims with a tolerance, e.g.
    ``{"two heads get at least 95% right": acc2 >= 0.95}``. Each claim that holds is printed as
    ``✓ <claim>``; if any does not, an ``AssertionError`` names every one that fails.

    Args:
        claims: a non-empty dict from the claim's text to its truth value (a bool, or anything with
            one truth value, such as a one-element tensor).
    """
    if not isinstance(claims, dict) or not claims:
        raise TypeError(f"claims: expected a non-empty dict {{claim text: bool}}, got {claims!r}")
    verdicts = {}
    for claim, holds in claims.items():
        if not isinstance(claim, str):
            raise TypeError(f"claims: each key must be the claim's text (a str), got {claim!r}")
        try:
            verdicts[claim] = bool(holds)
        except RuntimeError as error:  # e.g. a tensor of several elements
            raise TypeError(f"claim {claim!r}: expected one truth value, got {type(holds).__name__} "
                            f"({error}); reduce it with .all() or .any()") from None
    failed = [claim for claim, holds in verdicts.items() if not holds]
    if failed:
        raise AssertionError("this claim does not hold here: " + "; ".join(failed))
    for claim in verdicts:
        print("✓", claim)


@contextmanager
def one_thread():
    """Run the code inside on one CPU thread, and restore the thread count afterwards.

    Models this small run faster on one thread than on several (handing tiny tensors between
    threads costs more than it saves, most of all on a busy machine), and timings taken on one
    thread are not disturbed by another program competing for the other cores.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(preference: str | None = None) -> torch.device:
    """Choose where tensors live: CUDA if present, then Apple's MPS, then the CPU.

    ``preference`` (or, when it is None, the ``COURSE_DEVICE`` environment variable) can
    force a choice. The test suite sets ``COURSE_DEVICE=cpu`` so that stored outputs are
    reproduced on any machine. Asking for a device that is not there is an error, not a
    silent fallback.
    """
    choice = preference if preference is not None else os.environ.get(DEVICE_ENV, "auto")
    choice = str(choice).strip().lower() or "auto"
    if choice not in VALID_DEVICES:
        source = "preference" if preference is not None else f"${DEVICE_ENV}"
        raise ValueError(f"{source} must be one of {', '.join(VALID_DEVICES)}; got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "CUDA was requested but torch.cuda.is_available() is False "
            f"(this torch {torch.__version__} was built with CUDA {torch.version.cuda}). "
            "Install a CUDA build of torch, or use COURSE_DEVICE=auto."
        )
    if choice == "mps" and not _mps_available():
        raise RuntimeError("Apple MPS was requested but torch.backends.mps.is_available() is False.")
    if choice == "auto":
        if torch.cuda.is_available():
            choice = "cuda"
        elif _mps_available():
            choice = "mps"
        else:
            choice = "cpu"
    return torch.device(choice)


def setup(seed: int = DEFAULT_SEED, threads: int = DEFAULT_THREADS, device: str | None = None,
          quiet: bool = False) -> torch.device:
    """Make the notebook deterministic and return the device to compute on.

    Args:
        seed: seeds ``random``, NumPy and torch.
        threads: torch's intra-op thread count, fixed so sums are added in the same order
            on every machine.
        device: ``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``; None reads ``COURSE_DEVICE``.
        quiet: do not print the one-line summary.

    Returns:
        The ``torch.device`` chosen by :func:`pick_device`.
    """
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    seed_everything(seed)
    torch.set_num_threads(threads)
    torch.set_printoptions(precision=4, sci_mode=False, linewidth=100)
    np.set_printoptions(precision=4, suppress=True, linewidth=100)
    torch.backends.cudnn.benchmark = False
    from course_lib.plotting import apply_style  # matplotlib is imported only when needed

    apply_style()
    chosen = pick_device(device)
    if not quiet:
        print(f"course_lib ready: seed {seed}, {threads} CPU threads, device {chosen.type}")
    return chosen


@dataclass(frozen=True)
class EnvironmentReport:
    """What this notebook runs on; shown as a table in notebook 00."""

    rows: tuple[tuple[str, str], ...]

    def __getitem__(self, key: str) -> str:
        for name, value in self.rows:
            if name == key:
                return value
        raise KeyError(key)

    def __repr__(self) -> str:
        width = max(len(name) for name, _ in self.rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in self.rows)

    def _repr_html_(self) -> str:
        from html import escape

        body = "".join(f"<tr><th style='text-align:left'>{escape(n)}</th><td style='text-align:left'>"
                       f"{escape(v)}</td></tr>" for n, v in self.rows)
        return f"<table>{body}</table>"


def _version(module_name: str) -> str:
    try:
        from importlib.metadata import version

        return version(module_name)
    except Exception:  # not installed: say so rather than fail the report
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name as the operating system gives it (``/proc/cpuinfo`` on Linux), else
    what ``platform.processor()`` says, else ``"unknown"``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or "unknown"


def environment_report() -> EnvironmentReport:
    """Versions, hardware and the device the course would use on this machine.

    ``CPU capability`` is the set of vector instructions torch's CPU kernels use here (``AVX512``,
    ``AVX2``, ``DEFAULT`` for plain C++, ...; the ``ATEN_CPU_CAPABILITY`` variable can lower it).
    Kernels for different capabilities, like different CPU models, may add numbers in a different
    order and so differ in the last bits.
    """
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        gpu = ", ".join(names)
    elif _mps_available():
        gpu = "Apple GPU (MPS)"
    else:
        gpu = "none found"
    rows = (
        ("python", sys.version.split()[0]),
        ("platform", f"{platform.system()} {platform.machine()}"),
        ("CPU", cpu_model()),
        ("CPU cores", str(os.cpu_count())),
        ("CPU capability", torch.backends.cpu.get_cpu_capability()),
        ("torch threads", str(torch.get_num_threads())),
        ("torch", torch.__version__),
        ("CUDA build", str(torch.version.cuda)),
        ("GPU", gpu),
        ("device chosen", pick_device().type),
        ("numpy", np.__version__),
        ("matplotlib", _version("matplotlib")),
        ("ipywidgets", _version("ipywidgets")),
        ("jupyterlab", _version("jupyterlab")),
        ("course_lib", _version("attention-course")),
    )
    return EnvironmentReport(rows)
