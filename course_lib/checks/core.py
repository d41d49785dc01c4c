"""The check API: run a learner's function and say precisely what is wrong with it.

A check compares the learner's answer with a reference on a few inputs. When they
differ, it first tries the *known mistakes* of the exercise (a wrong axis, a missing
scale, ...): each is a function that makes the wrong answer that mistake would give, so
when the learner's answer equals one, the check can name the mistake. Otherwise it
reports the first concrete difference: type, shape, dtype, NaN or the largest error.

A check never raises on a wrong answer (a notebook in its student edition runs top to
bottom): it returns a :class:`CheckResult` that Jupyter shows as a coloured box.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from html import escape
from typing import Any, Callable, Sequence

import numpy as np
import torch

CORRECT, NOT_DONE, WRONG, ERROR = "correct", "not done", "wrong", "error"
_ICONS = {CORRECT: "✅ Correct", NOT_DONE: "⏳ Not done yet", WRONG: "❌ Not yet right", ERROR: "💥 Error"}
_COLOURS = {CORRECT: "#e6f4ea", NOT_DONE: "#fff4e0", WRONG: "#fde8e8", ERROR: "#fde8e8"}


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check: ``status`` is correct, not done, wrong or error."""

    exercise: str
    status: str
    message: str
    hint: str = ""

    def __post_init__(self):
        if self.status not in _ICONS:
            raise ValueError(f"status must be one of {sorted(_ICONS)}, got {self.status!r}")

    @property
    def passed(self) -> bool:
        return self.status == CORRECT

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        text = f"{_ICONS[self.status]} · {self.exercise}: {self.message}"
        return text + (f"\n   Hint: {self.hint}" if self.hint else "")

    def _repr_html_(self) -> str:
        hint = f"<br><b>Hint:</b> {escape(self.hint)}" if self.hint else ""
        return (f"<div style='background:{_COLOURS[self.status]};padding:6px 10px;border-radius:4px'>"
                f"<b>{escape(_ICONS[self.status])}</b> · <code>{escape(self.exercise)}</code>: "
                f"{escape(self.message)}{hint}</div>")


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer: ``make(*args)`` computes what the mistake would return."""

    message: str
    make: Callable[..., Any]
    hint: str = ""


@dataclass(frozen=True)
class Case:
    """One input to try: positional ``args`` and a description for messages."""

    args: tuple
    description: str = ""
    kwargs: dict = field(default_factory=dict)


def describe_value(value: Any) -> str:
    """A short description of a value for messages: type, shape and dtype."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"a NumPy array of shape {value.shape} and dtype {value.dtype}"
    return f"a {type(value).__name__} ({value!r})" if np.isscalar(value) else f"a {type(value).__name__}"


def _as_numpy(value: Any) -> np.ndarray | None:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return np.asarray(value)
    return None


def same_value(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """True when two arrays/tensors/numbers have the same shape and close values."""
    x, y = _as_numpy(a), _as_numpy(b)
    if x is None or y is None or x.shape != y.shape:
        return False
    try:
        return bool(np.allclose(x.astype(np.float64), y.astype(np.float64), rtol=rtol, atol=atol,
                                equal_nan=True))
    except (TypeError, ValueError):
        return False


def _clone(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)


def _integers_as_other_dtype(answer: Any, expected: Any) -> bool:
    return (isinstance(expected, torch.Tensor) and isinstance(answer, torch.Tensor)
            and not expected.is_floating_point() and expected.dtype != torch.bool
            and (answer.is_floating_point() or answer.dtype == torch.bool))


def compare_answer(answer: Any, expected: Any, *, shape_names: str = "", rtol: float = 1e-5,
                   atol: float = 1e-6) -> str | None:
    """Describe how ``answer`` differs from ``expected``; None when they agree."""
    if answer is None:
        return "your function returned None: did you forget the `return`?"
    if isinstance(expected, torch.Tensor) and not isinstance(answer, torch.Tensor):
        return f"expected a torch tensor, got {describe_value(answer)}"
    if isinstance(expected, np.ndarray) and not isinstance(answer, np.ndarray):
        return f"expected a NumPy array, got {describe_value(answer)}"
    x, y = _as_numpy(answer), _as_numpy(expected)
    if x is None or y is None:
        return None if answer == expected else f"expected {expected!r}, got {answer!r}"
    if x.shape != y.shape:
        named = f" = {shape_names}" if shape_names else ""
        return f"expected shape {tuple(y.shape)}{named}, got shape {tuple(x.shape)}"
    if np.issubdtype(y.dtype, np.floating) and not np.issubdtype(x.dtype, np.floating):
        return f"expected floating-point values ({y.dtype}), got {x.dtype}: integer arithmetic loses the fractions"
    if np.issubdtype(x.dtype, np.number) and not np.all(np.isfinite(x)) and np.all(np.isfinite(y)):
        bad = "NaN" if np.isnan(x).any() else "inf"
        return f"your answer contains {bad} where every expected value is finite"
    if not same_value(x, y, rtol=rtol, atol=atol):
        diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
        where = np.unravel_index(np.argmax(diff), diff.shape) if diff.ndim else ()
        index = tuple(int(i) for i in where)
        return (f"the shape is right but the values differ: the largest difference is {diff.max():.4g} "
                f"at index {index} (expected {float(y[index]):.4g}, got {float(x[index]):.4g})")
    return None


def _mistaken_answer(mistake: Mistake, case: Case) -> Any:
    """What ``mistake`` would answer on ``case``; None when that mistake cannot happen on these shapes.

    Runs silently: a mistake that overflows or warns must not print into the learner's notebook.
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return mistake.make(*case.args, **case.kwargs)
        except Exception:  # e.g. a wrong axis that does not broadcast for this input
            return None


def check_function(fn: Callable[..., Any], *, exercise: str, reference: Callable[..., Any],
                   cases: Sequence[Case], mistakes: Sequence[Mistake] = (), shape_names: str = "",
                   success: str = "matches the reference on every test input.", rtol: float = 1e-5,
                   atol: float = 1e-6, dtype_hint: str = "") -> CheckResult:
    """Run ``fn`` on every case and compare it with ``reference``.

    When the reference returns an integer tensor (token ids, indices), an answer with the right
    values in a float or bool dtype is wrong too; ``dtype_hint`` says how to keep the dtype.

    Returns a :class:`CheckResult`: *not done* when ``fn`` raises NotImplementedError
    (the stub of the student edition), *error* when it raises anything else, *wrong*
    with the name of a known mistake or the first difference found, else *correct*.
    """
    if not callable(fn):
        return CheckResult(exercise, ERROR, f"expected a function, got {describe_value(fn)}",
                           "pass the function itself, without calling it: check(my_function)")
    if not cases:
        raise ValueError("check_function needs at least one Case")
    for case in cases:
        inputs = tuple(_clone(a) for a in case.args)
        where = f" (on {case.description})" if case.description else ""
        try:
            answer = fn(*inputs, **case.kwargs)
        except NotImplementedError:
            return CheckResult(exercise, NOT_DONE,
                               "replace `raise NotImplementedError` with your code, then run this check again.")
        except Exception as exc:  # the learner's bug, reported rather than raised
            return CheckResult(exercise, ERROR, f"your function raised {type(exc).__name__}: {exc}{where}")
        for before, after in zip(case.args, inputs):
            if isinstance(before, (torch.Tensor, np.ndarray)) and not same_value(before, after):
                return CheckResult(exercise, WRONG, f"your function changed its input in place{where}",
                                   "compute a new tensor instead of writing into the argument")
        expected = reference(*case.args, **case.kwargs)
        problem = compare_answer(answer, expected, shape_names=shape_names, rtol=rtol, atol=atol)
        if problem is None:
            if _integers_as_other_dtype(answer, expected):  # values right, but e.g. float ids
                return CheckResult(exercise, WRONG, f"the values are right, but the dtype is {answer.dtype}, "
                                   f"not an integer dtype like {expected.dtype}{where}", dtype_hint)
            continue
        for mistake in mistakes:
            wrong = _mistaken_answer(mistake, case)
            if not same_value(wrong, expected, rtol=rtol, atol=atol) and same_value(answer, wrong, rtol, atol):
                return CheckResult(exercise, WRONG, mistake.message + where, mistake.hint)
        return CheckResult(exercise, WRONG, problem + where)
    return CheckResult(exercise, CORRECT, success)
