"""The book builds with warnings as errors from the stored notebook outputs.

nbval (the other half of `make test`) re-executes every notebook and checks its stored outputs, so
together they check what `make book` publishes. Executing again here would double the test time.
"""
import pathlib
import re
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_book_builds_with_warnings_as_errors(tmp_path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    config["execute"]["execute_notebooks"] = "off"
    config_path = tmp_path / "_config.yml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    jupyter_book = pathlib.Path(sys.executable).parent / "jupyter-book"
    result = subprocess.run(
        [str(jupyter_book), "build", str(ROOT), "--config", str(config_path),
         "--path-output", str(tmp_path / "out"), "--warningiserror", "--keep-going"],
        capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, (result.stdout[-5000:] + "\n" + result.stderr[-5000:])
    html = tmp_path / "out" / "_build" / "html"
    pages = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert pages, "no chapter notebooks found"
    for notebook in pages:
        page = html / "notebooks" / f"{notebook.stem}.html"
        assert page.exists(), f"chapter page {page.name} was not built"
        text = page.read_text(encoding="utf-8")
        assert "{glue" not in text, f"{page.name}: an unresolved glue role is shown as raw text"
        assert re.search(r"[\u4e00-\u9fff]", text), f"{page.name}: no Chinese text on the page"
    for name in ("intro", "glossary", "errata", "references", "notation"):
        assert (html / "book" / f"{name}.html").exists(), f"book page {name} missing"
