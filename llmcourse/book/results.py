"""The book's running perplexity table: chapter 1 starts it, later chapters add their models.

Each chapter records the perplexities it computed (``record_perplexity``) into a JSON file that
ships with the package, and a later chapter shows the whole table (``perplexity_table``) without
re-training earlier models. The numbers are only ever written by the chapters' own computations,
and ``tests/test_results.py`` checks that the file agrees with the numbers stored in the notebooks.
Writes are atomic (temporary file + ``os.replace``), so a chapter reading the table while another
records never sees a half-written file.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

RESULTS_FILE = Path(__file__).with_name("results") / "perplexity.json"
# A run that checks the stored notebooks on another numerical path (nbval, the reproducibility
# measurements) points this variable at a scratch copy, so the shipped table keeps the recorded numbers.
RESULTS_ENV = "LLMCOURSE_RESULTS_FILE"


def results_file() -> Path:
    """The table the chapters read and write: ``$LLMCOURSE_RESULTS_FILE`` if set, else the shipped file."""
    override = os.environ.get(RESULTS_ENV)
    return Path(override) if override else RESULTS_FILE


def _load(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"results file {path} is corrupt ({err}); restore it with git checkout") from err
    if not isinstance(table, dict):
        raise ValueError(f"results file {path} should hold a JSON object keyed by model name")
    return table


def record_perplexity(model: str, chapter: int, val: float, test: float, detail: str = "",
                      path: Path | str | None = None, *, train_tokens: int | None = None,
                      train_seconds: float | None = None, val_curve: list | None = None) -> dict:
    """Add or replace one row (perplexities rounded to 2 decimals) and return it.

    A trained model may add how much it read (``train_tokens``), how long training took on the machine that
    recorded it (``train_seconds``: a measurement of that machine, never a compared number) and its
    validation-loss estimates ``val_curve`` as ``[[update, loss], ...]``, so that a later chapter can
    compare models at equal tokens and at equal wall-clock time without training them again."""
    if not model:
        raise ValueError("model name must be a non-empty string")
    for name, value in (("val", val), ("test", test)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
            raise ValueError(f"{name} perplexity must be a finite number >= 1, got {value!r}")
    path = Path(path) if path is not None else results_file()
    table = _load(path)
    row = {"chapter": int(chapter), "val": round(float(val), 2), "test": round(float(test), 2), "detail": detail}
    row.update(_training_fields(train_tokens, train_seconds, val_curve))
    table[model] = row
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(dict(sorted(table.items(), key=lambda kv: (kv[1]["chapter"], kv[0]))), f,
                  ensure_ascii=False, indent=1)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; the table is meant to be shared
    os.replace(tmp, path)
    return row


def _training_fields(train_tokens, train_seconds, val_curve) -> dict:
    fields = {}
    if train_tokens is not None:
        if isinstance(train_tokens, bool) or not isinstance(train_tokens, int) or train_tokens < 1:
            raise ValueError(f"train_tokens must be a positive int, got {train_tokens!r}")
        fields["train_tokens"] = train_tokens
    if train_seconds is not None:
        if not isinstance(train_seconds, (int, float)) or not math.isfinite(train_seconds) or train_seconds <= 0:
            raise ValueError(f"train_seconds must be a positive number, got {train_seconds!r}")
        fields["train_seconds"] = round(float(train_seconds), 1)
    if val_curve is not None:
        try:
            curve = [[int(step), round(float(loss), 4)] for step, loss in val_curve]
        except (TypeError, ValueError):
            raise ValueError("val_curve must be a list of [update, validation loss] pairs") from None
        if not curve or any(not math.isfinite(loss) for _, loss in curve):
            raise ValueError("val_curve must be a non-empty list of finite [update, loss] pairs")
        fields["val_curve"] = curve
    return fields


def perplexity_table(path: Path | str | None = None) -> dict[str, dict]:
    """All recorded rows, by chapter then name."""
    return _load(Path(path) if path is not None else results_file())


def format_table(rows: dict[str, dict]) -> str:
    """The rows as a Markdown table (model, chapter, detail, val and test perplexity)."""
    if not rows:
        raise ValueError("no results recorded yet: run chapter 1 first")
    lines = ["| model | chapter | detail | val ppl | test ppl |", "|---|---|---|---|---|"]
    for name, row in sorted(rows.items(), key=lambda kv: (kv[1]["chapter"], -kv[1]["test"])):
        lines.append(f"| {name} | {row['chapter']} | {row['detail']} | {row['val']:.2f} | {row['test']:.2f} |")
    return "\n".join(lines)
