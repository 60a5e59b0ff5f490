import json
import pathlib

import pytest

from llmcourse.book import results

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_record_and_read_back(tmp_path):
    path = tmp_path / "ppl.json"
    results.record_perplexity("bigram", 1, 80.123, 81.456, "KN", path=path)
    results.record_perplexity("gpt", 6, 40.0, 41.0, path=path)
    results.record_perplexity("bigram", 1, 79.0, 80.0, "KN", path=path)  # replaces the row
    table = results.perplexity_table(path)
    assert table["bigram"] == {"chapter": 1, "val": 79.0, "test": 80.0, "detail": "KN"}
    assert list(table) == ["bigram", "gpt"]
    text = results.format_table(table)
    assert text.splitlines()[2].startswith("| bigram | 1 | KN | 79.00 | 80.00 |")


def test_bad_rows_and_files_are_refused(tmp_path):
    path = tmp_path / "ppl.json"
    with pytest.raises(ValueError, match="test perplexity must be a finite number >= 1"):
        results.record_perplexity("x", 1, 2.0, float("nan"), path=path)
    with pytest.raises(ValueError, match="non-empty"):
        results.record_perplexity("", 1, 2.0, 2.0, path=path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="corrupt"):
        results.perplexity_table(path)
    with pytest.raises(ValueError, match="run chapter 1 first"):
        results.format_table({})


def _stored_text(notebook: pathlib.Path) -> str:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    chunks = []
    for cell in cells:
        for out in cell.get("outputs", []):
            chunks.append("".join(out.get("text", "")))
            chunks.append("".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(chunks)


def test_shipped_results_match_the_numbers_the_chapters_print():
    """Every row of the shipped table was printed by its chapter's stored (nbval-checked) outputs."""
    table = results.perplexity_table()
    assert table, "the shipped results file is empty"
    for name, row in table.items():
        notebooks = sorted((ROOT / "notebooks").glob(f"{row['chapter']:02d}_*.ipynb"))
        assert notebooks, f"row {name!r} names chapter {row['chapter']}, which has no notebook"
        text = _stored_text(notebooks[0])
        for split in ("val", "test"):
            assert f"{row[split]:.2f}" in text, f"{name!r}: {split} perplexity {row[split]:.2f} is not in {notebooks[0].name}"


def test_training_fields_are_checked_and_kept(tmp_path):
    path = tmp_path / "ppl.json"
    record_perplexity, perplexity_table = results.record_perplexity, results.perplexity_table
    row = record_perplexity("m", 5, 80.0, 81.0, "d", path, train_tokens=614400, train_seconds=12.34,
                            val_curve=[(0, 6.5), (50, 5.123456)])
    assert row["train_tokens"] == 614400 and row["train_seconds"] == 12.3
    assert perplexity_table(path)["m"]["val_curve"] == [[0, 6.5], [50, 5.1235]]
    for bad in (dict(train_tokens=0), dict(train_tokens=1.5), dict(train_seconds=-1.0),
                dict(val_curve=[]), dict(val_curve=[(0, float("nan"))]), dict(val_curve=[1, 2])):
        with pytest.raises(ValueError):
            record_perplexity("m", 5, 80.0, 81.0, "d", path, **bad)
