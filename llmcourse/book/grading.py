"""Graded checks: run a learner's function and the reference on the same inputs and say what differs.

    >>> check_function(my_softmax, reference_softmax, [([1.0, 2.0],), ([0.0, 0.0, 0.0],)])
    ✅ my_softmax: all 2 cases match the reference

A failed check names the input, the expected and the received value, and how they differ (type,
shape, or largest difference), so the learner knows what to fix, not only that something is wrong.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch


@dataclass
class CheckResult:
    name: str
    passed: bool
    n_cases: int
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        if self.passed:
            return f"✅ {self.name}: all {self.n_cases} cases match the reference"
        lines = [f"❌ {self.name}: {len(self.problems)} of {self.n_cases} cases differ from the reference"]
        return "\n".join(lines + [f"  - {p}" for p in self.problems])

    __repr__ = __str__


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        text = np.array2string(value, precision=4, threshold=8)
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _as_array(value: Any) -> np.ndarray | None:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    return None


def compare(got: Any, expected: Any, atol: float = 1e-6, rtol: float = 1e-5) -> str | None:
    """``None`` if ``got`` matches ``expected``; otherwise a sentence saying how it differs."""
    exp_arr = _as_array(expected)
    if exp_arr is not None:
        got_arr = _as_array(got)
        if got_arr is None:
            try:
                got_arr = np.asarray(got, dtype=exp_arr.dtype)
            except (TypeError, ValueError):
                return f"expected an array/tensor of shape {exp_arr.shape}, got {type(got).__name__}"
        if got_arr.shape != exp_arr.shape:
            return f"shape {tuple(got_arr.shape)} but expected shape {tuple(exp_arr.shape)}"
        if np.issubdtype(exp_arr.dtype, np.number) and np.issubdtype(got_arr.dtype, np.number):
            if not np.allclose(got_arr, exp_arr, atol=atol, rtol=rtol, equal_nan=True):
                diff = np.abs(got_arr.astype(float) - exp_arr.astype(float))
                where = np.unravel_index(int(np.nanargmax(diff)), diff.shape) if diff.ndim else ()
                return f"values differ: largest difference {float(np.nanmax(diff)):.3g} at index {tuple(int(i) for i in where)}"
            return None
        return None if np.array_equal(got_arr, exp_arr) else "values differ"
    if isinstance(expected, bool) or isinstance(expected, str) or expected is None:
        return None if got == expected and type(got) is type(expected) else f"got {_short(got)}, expected {_short(expected)}"
    if isinstance(expected, (int, float)):
        if isinstance(got, (torch.Tensor, np.ndarray)) and np.size(got) == 1:
            got = float(np.asarray(got.detach().cpu() if isinstance(got, torch.Tensor) else got).reshape(()))
        if not isinstance(got, (int, float, np.number)) or isinstance(got, bool):
            return f"expected a number, got {type(got).__name__} {_short(got)}"
        if not math.isclose(float(got), float(expected), abs_tol=atol, rel_tol=rtol):
            return f"got {_short(float(got))}, expected {_short(float(expected))} (difference {abs(float(got) - float(expected)):.3g})"
        return None
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return f"expected a dict, got {type(got).__name__}"
        if set(got) != set(expected):
            return f"keys {sorted(map(str, got))} but expected keys {sorted(map(str, expected))}"
        for key in expected:
            problem = compare(got[key], expected[key], atol, rtol)
            if problem:
                return f"[{key!r}]: {problem}"
        return None
    if isinstance(expected, Sequence):
        if not isinstance(got, Sequence) or isinstance(got, str):
            return f"expected a {type(expected).__name__} of length {len(expected)}, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"length {len(got)} but expected length {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = compare(g, e, atol, rtol)
            if problem:
                return f"item {i}: {problem}"
        return None
    return None if got == expected else f"got {_short(got)}, expected {_short(expected)}"


def check_function(
    fn: Callable,
    reference: Callable,
    cases: Iterable,
    *,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    name: str | None = None,
) -> CheckResult:
    """Call ``fn`` and ``reference`` on every case and compare the results.

    A case is a tuple of positional arguments, or a dict of keyword arguments.
    """
    if not callable(fn):
        raise TypeError(f"expected a function to check, got {type(fn).__name__}")
    name = name or getattr(fn, "__name__", "function")
    cases = list(cases)
    if not cases:
        raise ValueError("check_function needs at least one input case")
    problems = []
    for case in cases:
        args, kwargs = ((), dict(case)) if isinstance(case, Mapping) else (tuple(case), {})
        shown = ", ".join([_short(a, 40) for a in args] + [f"{k}={_short(v, 40)}" for k, v in kwargs.items()])
        expected = reference(*args, **kwargs)
        try:
            got = fn(*args, **kwargs)
        except NotImplementedError:
            problems.append(f"({shown}): not implemented yet")
            continue
        except Exception as err:  # the learner's bug, reported rather than raised
            problems.append(f"({shown}): raised {type(err).__name__}: {err}")
            continue
        problem = compare(got, expected, atol, rtol)
        if problem:
            problems.append(f"({shown}): {problem}")
    return CheckResult(name, not problems, len(cases), problems)


def check_value(got: Any, expected: Any, *, name: str = "value", atol: float = 1e-6, rtol: float = 1e-5) -> CheckResult:
    """Compare one computed value (a number, array, list…) with the expected one. ``None`` (what a student
    version's stub sets) is reported as not answered yet."""
    problem = "not implemented yet (the value is still None)" if got is None and expected is not None \
        else compare(got, expected, atol, rtol)
    return CheckResult(name, problem is None, 1, [] if problem is None else [problem])
