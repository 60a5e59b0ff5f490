"""Compare a re-executed notebook output with the stored one: the text exactly, the numbers within a
declared tolerance (数值容差比较).

An output is split into a *template* (the text with every number replaced by a placeholder, runs of
spaces and tabs collapsed to one, since column padding follows a number's width) and the list of its
numbers. The templates must be equal. Each pair of numbers must then agree:

- integers (``13909``, ``-3``, ``1,654``) exactly, unless the cell's tolerance says its integers are
  trained or sampled results (``integers: true``);
- decimals (``0.6931``, ``1.2e-05``) within ``rel·|stored|`` when ``|stored| >= 1`` and within ``abs``
  below 1, or one unit of the last printed digit, whichever is larger. A cell with no declared
  tolerance is closed-form maths: ``abs = 0``, ``rel = 1e-6``, so only the rounding of the last
  printed digit may differ.

Per-cell tolerances for trained and sampled results live in ``notebooks/tolerances.json``, sized
from measurement by :mod:`llmcourse.book.reproducibility`.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# A number is not part of a word: "gpt2", "ch6_", "v1" stay text. Only ASCII letters count as word
# characters here, so a number written against Chinese text ("共13909条") is still a number.
NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.])"
    r"(?P<sign>-)?"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?![\d])|\d+)"
    r"(?P<frac>\.\d+)?"
    r"(?P<exp>[eE][-+]?\d+)?"
    r"(?![A-Za-z0-9_])"
)
PLACEHOLDER = "\u2058"  # a character no output uses, so a number can never match plain text
SPACES = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class Number:
    text: str
    value: float
    is_integer: bool
    unit: float  # one unit of the last printed digit (0 for an integer)


@dataclass(frozen=True)
class Tolerance:
    """How far a cell's numbers may move: ``rel`` for magnitudes >= 1, ``abs`` below, for decimals (and
    integers when ``integers`` is true); one unit of the last printed digit is always allowed.

    ``slack``, when measured, gives each number its own allowed absolute change instead:
    ``slack[key][j][i]`` for the ``i``-th number of the ``j``-th output of kind ``key`` (stream name or
    MIME type), so that one volatile column does not widen the tolerance of a whole table."""

    rel: float = 1e-6
    abs: float = 0.0
    integers: bool = False
    why: str = "closed-form: the printed precision"
    slack: Mapping[str, Sequence[Sequence[float]]] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("rel", "abs"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Tolerance.{name} must be a finite number >= 0, got {value!r}")

    def allows(self, stored: Number, new: Number, slack: float | None = None) -> bool:
        if stored.is_integer != new.is_integer:
            return False  # "5" became "5.0": the formatting changed, which is a text change
        if stored.is_integer and not self.integers:
            return stored.value == new.value
        if slack is None:
            # Magnitude >= 1 (perplexities, counts) moves relatively, smaller numbers (probabilities,
            # accuracies) absolutely.
            size = abs(stored.value)
            slack = self.rel * size if size >= 1 else self.abs
        # The finer of the two printed precisions is always allowed (a glued round(x, 4) that prints
        # "0.72" is 0.7200).
        return abs(new.value - stored.value) <= max(slack, min(stored.unit, new.unit)) * (1 + 1e-12)

    def slack_of(self, key: str, output: int, count: int) -> Sequence[float] | None:
        """The measured per-number slack of one output, if it was measured for this many numbers."""
        outputs = self.slack.get(key, ())
        if output < len(outputs) and len(outputs[output]) == count:
            return outputs[output]
        return None

    def describe(self) -> str:
        parts = [f"rel {self.rel:.3g}", f"abs {self.abs:.3g}"]
        if self.integers:
            parts.append("integers too")
        return f"{', '.join(parts)} ({self.why})"


CLOSED_FORM = Tolerance()


def parse_number(match: re.Match) -> Number:
    digits = match.group("int").replace(",", "")
    frac, exp = match.group("frac") or "", match.group("exp") or ""
    text = match.group(0)
    value = float((match.group("sign") or "") + digits + frac + exp)
    if not frac and not exp:
        return Number(text, value, True, 0.0)
    decimals = len(frac) - 1 if frac else 0
    exponent = int(exp[1:]) if exp else 0
    return Number(text, value, False, 10.0 ** (exponent - decimals))


def split_numbers(text: str) -> tuple[str, list[Number]]:
    """``text`` as (template, numbers): the template has a placeholder where each number was."""
    numbers = [parse_number(m) for m in NUMBER.finditer(text)]
    template = SPACES.sub(" ", NUMBER.sub(PLACEHOLDER, text))
    return template, numbers


def _context(template: str, index: int, width: int = 40) -> str:
    """The text around the ``index``-th number, for an error message."""
    pos = -1
    for _ in range(index + 1):
        pos = template.index(PLACEHOLDER, pos + 1)
    left = template[max(0, pos - width):pos].replace("\n", "⏎")
    right = template[pos + 1:pos + 1 + width].replace("\n", "⏎")
    return f"…{left}[#]{right}…".replace(PLACEHOLDER, "#")


def _first_difference(a: str, b: str, width: int = 50) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    show = lambda s: s[max(0, i - width):i + width].replace("\n", "⏎").replace(PLACEHOLDER, "#")  # noqa: E731
    return f"stored: …{show(a)}…\n      new:    …{show(b)}…"


def compare_text(stored: str, new: str, tolerance: Tolerance = CLOSED_FORM,
                 slack: Sequence[float] | None = None) -> list[str]:
    """The differences between two outputs that the tolerance does not allow (empty: they agree);
    ``slack``: each number's own allowed change (see :class:`Tolerance`)."""
    if stored == new:
        return []
    stored_template, stored_numbers = split_numbers(stored)
    new_template, new_numbers = split_numbers(new)
    if stored_template != new_template:
        return ["the text around the numbers changed (numbers shown as #):\n      "
                + _first_difference(stored_template, new_template)]
    problems = []
    for i, (a, b) in enumerate(zip(stored_numbers, new_numbers)):
        own = slack[i] if slack is not None else None
        if not tolerance.allows(a, b, own):
            change = abs(b.value - a.value)
            relative = f", {change / abs(a.value):.3g} relative" if a.value else ""
            allowed = f"±{own:.3g} (measured for this number; {tolerance.why})" if own is not None \
                else tolerance.describe()
            problems.append(f"number {a.text} became {b.text} (off by {change:.3g}{relative}) at "
                            f"{_context(stored_template, i)}; allowed: {allowed}")
    return problems


def compare_outputs(stored: dict[str, list], new: dict[str, list], tolerance: Tolerance = CLOSED_FORM) -> list[str]:
    """Compare two cells' outputs, each flattened to ``{key: [values]}`` (stream name or MIME type,
    the way nbval flattens them). Text values are compared with :func:`compare_text`; others exactly."""
    problems = []
    if set(stored) != set(new):
        missing, extra = sorted(set(stored) - set(new)), sorted(set(new) - set(stored))
        return [f"the kinds of output differ: missing {missing}, unexpected {extra}"]
    for key in stored:
        if len(stored[key]) != len(new[key]):
            problems.append(f"{key!r}: {len(stored[key])} outputs stored, {len(new[key])} now")
            continue
        for j, (a, b) in enumerate(zip(stored[key], new[key])):
            if isinstance(a, str) and isinstance(b, str):
                slack = tolerance.slack_of(key, j, len(NUMBER.findall(a))) if tolerance.slack else None
                problems += [f"{key!r}: {p}" for p in compare_text(a, b, tolerance, slack)]
            elif a != b:
                problems.append(f"{key!r}: stored {a!r:.200} but now {b!r:.200}")
    return problems
