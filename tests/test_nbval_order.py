"""The test order that keeps both xdist workers busy: chapters first, longest measured first, each
file's items together and in order."""
from types import SimpleNamespace

from llmcourse.book import nbval_plugin


def _items(*paths):
    return [SimpleNamespace(fspath=p, name=f"{p}#{i}") for i, p in enumerate(paths)]


def test_longest_notebooks_first_keeps_each_files_order(monkeypatch):
    monkeypatch.setattr(nbval_plugin, "measured_seconds",
                        lambda: {"01_a.ipynb": 30.0, "02_b.ipynb": 150.0, "03_c.ipynb": 90.0})
    items = _items("tests/test_x.py", "notebooks/01_a.ipynb", "notebooks/01_a.ipynb", "tests/test_y.py",
                   "notebooks/02_b.ipynb", "notebooks/03_c.ipynb", "notebooks/02_b.ipynb", "notebooks/99_new.ipynb")
    ordered = [i.name for i in nbval_plugin.longest_notebooks_first(items)]
    assert ordered == ["notebooks/02_b.ipynb#4", "notebooks/02_b.ipynb#6", "notebooks/03_c.ipynb#5",
                       "notebooks/01_a.ipynb#1", "notebooks/01_a.ipynb#2",
                       "tests/test_x.py#0", "tests/test_y.py#3", "notebooks/99_new.ipynb#7"]


def test_every_shipped_chapter_has_a_measured_time():
    seconds = nbval_plugin.measured_seconds()
    chapters = sorted(p.name for p in nbval_plugin.ROOT.joinpath("notebooks").glob("*.ipynb"))
    assert chapters and all(seconds.get(name, 0) > 0 for name in chapters), seconds
