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


# --- Checks of whole modules ------------------------------------------------------------------
# A build exercise asks for an nn.Module. Its check builds the learner's module and course_lib's
# with the same arguments, copies course_lib's (random, seeded) weights into the learner's, runs
# both on the same inputs and compares every output, then the gradients of every parameter and
# every input. A known mistake is a function ``make(reference, *args, **kwargs)`` that computes,
# from the reference module's weights, the outputs that mistake would give.


@dataclass(frozen=True)
class ModuleMistake(Mistake):
    """A known wrong module: ``make(reference, *args, **kwargs)`` returns its outputs (a tuple)."""


def seeded_module(make: Callable[[], torch.nn.Module], seed: int, weight_scale: float = 1.0) -> torch.nn.Module:
    """``make()`` under ``torch.manual_seed(seed)``, leaving the caller's random state as it was.

    A check's reference module is built this way, so that it has the same weights on every call.
    ``weight_scale`` multiplies every parameter: larger weights than PyTorch's defaults make every
    known slip change the outputs clearly.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = make()
    if weight_scale != 1.0:
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(weight_scale)
    return module


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _constructed(cls: Any, init_kwargs: dict, exercise: str) -> torch.nn.Module | CheckResult:
    """The learner's module, or the CheckResult that says why it could not be built."""
    if not callable(cls) or isinstance(cls, torch.nn.Module):
        return CheckResult(exercise, ERROR, f"expected your module's class, got {describe_value(cls)}",
                           "pass the class itself, without calling it: check(MyModule)")
    try:
        module = cls(**init_kwargs)
    except NotImplementedError:
        return CheckResult(exercise, NOT_DONE,
                           "replace `raise NotImplementedError` with your code, then run this check again.")
    except Exception as exc:
        hint = ("call super().__init__() first in __init__, before creating any layer"
                if "before Module.__init__() call" in str(exc) else "")
        arguments = ", ".join(f"{k}={v!r}" for k, v in init_kwargs.items())
        return CheckResult(exercise, ERROR, f"building your module with ({arguments}) raised "
                           f"{type(exc).__name__}: {exc}", hint)
    if not isinstance(module, torch.nn.Module):
        return CheckResult(exercise, ERROR, f"your class built {describe_value(module)}, not an nn.Module",
                           "write class MyModule(nn.Module) and call super().__init__() in __init__")
    return module


def _parameter_problem(module: torch.nn.Module, reference: torch.nn.Module) -> str | None:
    """How the learner's parameters differ in name or shape from the reference's; None if they match."""
    mine = {name: tuple(p.shape) for name, p in module.named_parameters()}
    wanted = {name: tuple(p.shape) for name, p in reference.named_parameters()}
    missing = [name for name in wanted if name not in mine]
    extra = [name for name in mine if name not in wanted]
    if extra:
        listed = ", ".join(f"{name} {mine[name]}" for name in extra)
        return (f"your module has parameters that the exercise does not ask for: {listed} "
                f"(expected exactly: {', '.join(wanted)})")
    if missing:
        listed = ", ".join(f"{name} {wanted[name]}" for name in missing)
        return f"your module has no parameter {listed} (expected exactly: {', '.join(wanted)})"
    for name, shape in wanted.items():
        if mine[name] != shape:
            return f"{name} has shape {mine[name]}, expected {shape}"
    return None


def _leaf_inputs(case: Case) -> tuple[tuple, dict]:
    """Fresh copies of a case's inputs; float tensors require gradients."""
    def fresh(value):
        if isinstance(value, torch.Tensor):
            value = value.detach().clone()
            if value.is_floating_point():
                value.requires_grad_(True)
        return value
    return tuple(fresh(a) for a in case.args), {k: fresh(v) for k, v in case.kwargs.items()}


def _gradient_seeds(outputs: tuple, seed: int = 0) -> list:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(o.shape, generator=gen) if isinstance(o, torch.Tensor) and o.is_floating_point()
            else None for o in outputs]


def _backward(outputs: tuple, seeds: list) -> bool:
    """Backpropagate sum(output * seed) over every float output; False when nothing needs a gradient."""
    total = sum((o * s).sum() for o, s in zip(outputs, seeds)
                if s is not None and isinstance(o, torch.Tensor) and o.requires_grad)
    if not isinstance(total, torch.Tensor):
        return False
    total.backward()
    return True


def _gradient_problem(module, reference, case: Case) -> str | None:
    """Compare the gradients of every parameter and every float input; None when they agree."""
    args, kwargs = _leaf_inputs(case)
    ref_args, ref_kwargs = _leaf_inputs(case)
    module.zero_grad(set_to_none=True)
    reference.zero_grad(set_to_none=True)
    outputs, expected = _as_tuple(module(*args, **kwargs)), _as_tuple(reference(*ref_args, **ref_kwargs))
    seeds = _gradient_seeds(expected)
    if not _backward(outputs, seeds):
        return ("no gradient flows through your outputs: did you compute them under torch.no_grad() or "
                "call .detach()? Training needs the gradients")
    _backward(expected, seeds)
    pairs = [(name, p, reference.get_parameter(name)) for name, p in module.named_parameters()]
    for name, p, ref_p in pairs:
        if ref_p.grad is not None and p.grad is None:
            return f"no gradient reaches {name}: your forward does not use it, or detaches what it computes"
    for name, p, ref_p in pairs:
        if ref_p.grad is not None and not same_value(p.grad, ref_p.grad, rtol=1e-4, atol=1e-5):
            return (f"the outputs are right, but the gradient of {name} is not: is part of the computation "
                    "detached, done under torch.no_grad(), or written in place?")
    named_inputs = [(f"input {i}", a, r) for i, (a, r) in enumerate(zip(args, ref_args))]
    named_inputs += [(k, kwargs[k], ref_kwargs[k]) for k in kwargs]
    for name, a, r in named_inputs:
        if isinstance(r, torch.Tensor) and r.grad is not None:
            if a.grad is None or not same_value(a.grad, r.grad, rtol=1e-4, atol=1e-5):
                return f"the outputs are right, but the gradient that flows back into {name} is not"
    return None


def check_module(cls: Any, *, exercise: str, init_kwargs: dict, make_reference: Callable[[], torch.nn.Module],
                 cases: Sequence[Case], mistakes: Sequence[ModuleMistake] = (),
                 output_names: Sequence[str] = ("output",), parameter_hint: str = "",
                 success: str = "matches course_lib's module, outputs and gradients, on every test input.",
                 rtol: float = 1e-5, atol: float = 1e-5) -> CheckResult:
    """Build the learner's module ``cls(**init_kwargs)`` and compare it with ``make_reference()``.

    The reference's weights are copied into the learner's module (so the names and shapes of
    the parameters must be the exercise's). On every case both run in evaluation mode; their
    outputs (a tensor or a tuple, named by ``output_names``) must agree, then the gradients of
    every parameter and input. When an output differs, each mistake's ``make(reference, *args,
    **kwargs)`` is tried; the first that reproduces the learner's outputs is named.

    Returns a :class:`CheckResult` (never raises on a wrong module): *not done* when building or
    running it raises NotImplementedError, *error* when it raises anything else.
    """
    module = _constructed(cls, init_kwargs, exercise)
    if isinstance(module, CheckResult):
        return module
    reference = make_reference()
    problem = _parameter_problem(module, reference)
    if problem is not None:
        return CheckResult(exercise, WRONG, problem, parameter_hint)
    with torch.no_grad():  # by name; buffers (such as a registered mask) stay the learner's own
        for name, p in module.named_parameters():
            p.copy_(reference.get_parameter(name))
    module.eval()
    reference.eval()
    for case in cases:
        where = f" (on {case.description})" if case.description else ""
        args, kwargs = _leaf_inputs(case)
        try:
            with torch.no_grad():
                answer = module(*args, **kwargs)
        except NotImplementedError:
            return CheckResult(exercise, NOT_DONE,
                               "replace `raise NotImplementedError` with your code, then run this check again.")
        except Exception as exc:
            return CheckResult(exercise, ERROR, f"your forward raised {type(exc).__name__}: {exc}{where}")
        with torch.no_grad():
            expected = _as_tuple(reference(*case.args, **case.kwargs))
        outputs = _as_tuple(answer)
        if len(outputs) != len(expected):
            wanted = " and ".join(output_names)
            return CheckResult(exercise, WRONG, f"your forward returned {len(outputs)} value(s), "
                               f"expected {len(expected)}: {wanted}{where}",
                               f"return {', '.join(output_names)}" if len(output_names) > 1 else "")
        for name, got, want in zip(output_names, outputs, expected):
            problem = compare_answer(got, want, rtol=rtol, atol=atol)
            if problem is None:
                continue
            for mistake in mistakes:
                with torch.no_grad():
                    wrong = _mistaken_answer(mistake, Case((reference,) + case.args, kwargs=case.kwargs))
                if wrong is None:
                    continue
                wrong = _as_tuple(wrong)
                if len(wrong) == len(expected) and all(same_value(a, b, rtol, atol) for a, b in zip(outputs, wrong)) \
                        and not all(same_value(a, b, rtol, atol) for a, b in zip(wrong, expected)):
                    return CheckResult(exercise, WRONG, mistake.message + where, mistake.hint)
            return CheckResult(exercise, WRONG, f"{name}: {problem}{where}")
        try:
            problem = _gradient_problem(module, reference, case)
        except Exception as exc:
            return CheckResult(exercise, ERROR, f"backpropagating through your module raised "
                               f"{type(exc).__name__}: {exc}{where}")
        if problem is not None:
            return CheckResult(exercise, WRONG, problem + where)
    return CheckResult(exercise, CORRECT, success)
