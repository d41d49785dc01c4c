"""Named shapes: check a tensor against a pattern like ``"B T d_model"`` and say it in words.

Every public function of course_lib checks its inputs with :func:`check_shape`, so a
wrong input fails at once with a message that names what was expected and what came,
instead of broadcasting quietly into a wrong answer.
"""
from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
import torch


def _dims(pattern: str) -> list[str]:
    dims = pattern.replace(",", " ").split()
    if not dims and pattern.strip():
        raise ValueError(f"could not read a shape pattern from {pattern!r}")
    return dims


def _fmt(dims: list[str]) -> str:
    return "(" + ", ".join(dims) + ")"


def check_shape(x: Any, pattern: str, *, name: str = "tensor", dtype: str | None = None,
                **sizes: int) -> dict[str, int]:
    """Check that ``x`` has the named shape ``pattern`` and return the size of each name.

    Args:
        x: a ``torch.Tensor`` or NumPy array.
        pattern: axis names separated by spaces, e.g. ``"B T d_model"``; a number stands for
            an axis of exactly that size (``"B 1 T"``); ``"..."`` as the first item allows any
            leading axes.
        name: what to call ``x`` in error messages.
        dtype: ``"float"``, ``"int"`` or ``"bool"`` to also require that kind of dtype.
        **sizes: known sizes, e.g. ``d_model=8``; a name that occurs twice must have the
            same size both times.

    Returns:
        ``{"B": 2, "T": 5, "d_model": 8}`` (merged with ``sizes``).

    Raises:
        TypeError: ``x`` is not a tensor or array, or has the wrong kind of dtype.
        ValueError: the number of axes or a size is not what the pattern says.
    """
    dims = _dims(pattern)
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name}: expected a tensor of shape {_fmt(dims)}, got {type(x).__name__}")
    shape = tuple(x.shape)
    leading = bool(dims) and dims[0] == "..."
    named = dims[1:] if leading else dims
    if "..." in named:
        raise ValueError(f"shape pattern {pattern!r}: '...' may only come first")
    if (leading and len(shape) < len(named)) or (not leading and len(shape) != len(named)):
        raise ValueError(f"{name}: expected {len(named)}{'+' if leading else ''} axes {_fmt(dims)}, "
                         f"got shape {shape} with {len(shape)} axes")
    found = dict(sizes)
    actual = shape[len(shape) - len(named):]
    for dim, size in zip(named, actual):
        if dim.isdigit():
            if size != int(dim):
                raise ValueError(f"{name}: expected an axis of size {dim} in {_fmt(dims)}, got shape {shape}")
            continue
        if dim in found and found[dim] != size:
            reading = ", ".join(f"{d}={s}" for d, s in zip(named, actual))
            raise ValueError(f"{name}: expected {dim}={found[dim]}, got {dim}={size} "
                             f"(shape {shape} read as {reading})")
        found[dim] = size
    if dtype is not None:
        _check_dtype(x, dtype, name)
    return found


def _check_dtype(x: Any, kind: str, name: str) -> None:
    if isinstance(x, torch.Tensor):
        ok = {"float": x.is_floating_point(), "bool": x.dtype == torch.bool,
              "int": not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool}
    else:
        ok = {"float": np.issubdtype(x.dtype, np.floating), "bool": x.dtype == np.bool_,
              "int": np.issubdtype(x.dtype, np.integer)}
    if kind not in ok:
        raise ValueError(f"dtype kind must be 'float', 'int' or 'bool', got {kind!r}")
    if not ok[kind]:
        article = "an" if kind == "int" else "a"
        raise TypeError(f"{name}: expected {article} {kind} dtype, got {x.dtype}")


def describe(x: Any, pattern: str) -> str:
    """Say a tensor's shape with names: ``describe(x, "B T d_model")`` -> ``'(B=2, T=3, d_model=4) float32'``."""
    dims = _dims(pattern)
    check_shape(x, pattern)
    named = dims[1:] if dims and dims[0] == "..." else dims
    shape = tuple(x.shape)
    extra = shape[: len(shape) - len(named)]
    parts = [str(s) for s in extra] + [f"{d}={s}" if not d.isdigit() else d
                                       for d, s in zip(named, shape[len(extra):])]
    dtype = str(x.dtype).replace("torch.", "")
    return "(" + ", ".join(parts) + ") " + dtype


def check_int(value: Any, name: str, minimum: int | None = None) -> int:
    """Return ``value`` as an int, accepting a one-element integer tensor; refuse bools and floats.

    Raises:
        TypeError: ``value`` is not an integer.
        ValueError: it is below ``minimum`` ("a positive int" for 1, "a non-negative int" for 0).
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        kind = {1: "a positive int", 0: "a non-negative int"}.get(minimum, f"an int >= {minimum}")
        raise ValueError(f"{name} must be {kind}, got {value}")
    return int(value)
