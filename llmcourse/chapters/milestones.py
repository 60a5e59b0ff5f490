"""Milestones on the road to large language models, for chapter 1's timeline.

Each entry has the year of first public release (conference or arXiv), the parameter counts *as the
paper itself published them* (``()`` when none was published, or the idea has no parameters), and a
short citation. Only published numbers are listed: GPT-4's size, for example, was never disclosed,
so it has none here. The table itself is data, in ``milestones.json`` next to this file.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

ERAS = ("foundations", "statistical", "neural", "pretrained", "aligned")


@dataclass(frozen=True)
class Milestone:
    name: str
    year: int
    era: str  # one of ERAS
    what: str  # one line: why it matters
    citation: str  # authors (year). Title. Venue.
    params: tuple[int, ...] = ()  # published sizes in parameters, smallest first

    def __post_init__(self) -> None:
        if self.era not in ERAS:
            raise ValueError(f"unknown era {self.era!r} for {self.name}; expected one of {ERAS}")
        if list(self.params) != sorted(self.params) or any(p <= 0 for p in self.params):
            raise ValueError(f"params of {self.name} must be positive and sorted, got {self.params}")

    @property
    def largest(self) -> int | None:
        """The largest published size, or ``None``."""
        return self.params[-1] if self.params else None


M, B = 10**6, 10**9

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
