"""Milestones on the road to large language models, for chapter 1's timeline.

Each entry has the year of first public release (conference or arXiv), the parameter counts *as the
paper itself published them* (``()`` when none was published, or the idea has no parameters), and a
short citation; for language models whose paper published it, also the context window in tokens.
Only published numbers are listed: GPT-4's size, for example, was never disclosed, so it has none
here. The table itself is data, in ``milestones.json`` next to this file.

``MARKOV_1913`` holds the counts Markov (1913) published for the first 20,000 letters of Pushkin's
*Eugene Onegin*, which chapter 1 computes its statements from.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

# "rules": hand-written rules and patterns (machine translation 1954, ELIZA 1966), before statistics.
ERAS = ("foundations", "rules", "statistical", "neural", "pretrained", "aligned")


@dataclass(frozen=True)
class Milestone:
    name: str
    year: int
    era: str  # one of ERAS
    what: str  # one line: why it matters
    citation: str  # authors (year). Title. Venue.
    params: tuple[int, ...] = ()  # published sizes in parameters, smallest first
    context: int | None = None  # published context window in tokens (n_ctx), where there is one

    def __post_init__(self) -> None:
        if self.era not in ERAS:
            raise ValueError(f"unknown era {self.era!r} for {self.name}; expected one of {ERAS}")
        if list(self.params) != sorted(self.params) or any(p <= 0 for p in self.params):
            raise ValueError(f"params of {self.name} must be positive and sorted, got {self.params}")
        if self.context is not None and (not isinstance(self.context, int) or isinstance(self.context, bool)
                                         or self.context < 1):
            raise ValueError(f"context of {self.name} must be None or an int >= 1 (tokens), got {self.context!r}")

    @property
    def largest(self) -> int | None:
        """The largest published size, or ``None``."""
        return self.params[-1] if self.params else None


M, B = 10**6, 10**9

# Markov, A. A. (1913), his counts for the first 20,000 letters of Eugene Onegin (English translation:
# Markov 2006, Science in Context 19(4); retold in Hayes, B. (2013). First links in the Markov chain.
# American Scientist 101(2)). The two conditional frequencies are the ones he published (3 decimals).
MARKOV_1913 = {
    "letters": 20_000,
    "vowels": 8_638,
    "consonants": 11_362,
    "p_vowel_after_vowel": 0.128,
    "p_vowel_after_consonant": 0.663,
}


def by_name(name: str) -> Milestone:
    """The milestone called ``name`` (a ``KeyError`` lists the names when there is none)."""
    for m in MILESTONES:
        if m.name == name:
            return m
    raise KeyError(f"no milestone named {name!r}; the names are {[m.name for m in MILESTONES]}")

def _load(path: pathlib.Path) -> tuple[Milestone, ...]:
    """The table in ``milestones.json`` (data, kept apart from the code): one object per milestone."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    return tuple(Milestone(**{**row, "params": tuple(row["params"])}) for row in rows)


MILESTONES: tuple[Milestone, ...] = _load(pathlib.Path(__file__).with_name("milestones.json"))


def with_parameters() -> list[Milestone]:
    """Milestones whose papers published a parameter count (the log-axis part of the timeline)."""
    return [m for m in MILESTONES if m.params]


def without_parameters() -> list[Milestone]:
    """Ideas and models with no published parameter count (the plain timeline)."""
    return [m for m in MILESTONES if not m.params]


def format_params(count: int) -> str:
    """A parameter count as people write it: 117M, 1.5B, 175B."""
    if not isinstance(count, int) or count <= 0:
        raise ValueError(f"a parameter count must be a positive int, got {count!r}")
    if count >= B:
        value, unit = count / B, "B"
    else:
        value, unit = count / M, "M"
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return text + unit
