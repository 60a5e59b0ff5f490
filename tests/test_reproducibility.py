"""The number-aware nbval run, the tolerances it reads and the report page made from them.

Real changes to the stored outputs must still fail: a changed word, the articles' cross-entropy 0.6931
in chapter 3 changed to 0.7931 (both through a real `pytest --nbval` run of chapter 3), and a trained
perplexity of chapter 9 multiplied by 1.25 (against that cell's declared tolerance).
"""
import json
import os
import pathlib
import re
import subprocess
import sys

import nbformat
import pytest

from llmcourse.book import nbval_plugin, record, reproducibility
from llmcourse.book.numeric_compare import compare_text

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC = json.loads(reproducibility.TOLERANCES_FILE.read_text(encoding="utf-8"))
CHAPTERS = record.chapter_notebooks()


def code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def stored_text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.get("output_type") == "stream")


def test_every_chapter_is_measured_and_every_tolerance_names_a_compared_cell():
    assert sorted(SPEC["notebooks"]) == [p.name for p in CHAPTERS]
    assert set(reproducibility.PATHS) <= set(SPEC["paths"]), "measure on every stand-in path"
    for path in CHAPTERS:
        entry = SPEC["notebooks"][path.name]
        compared = {c.id: i for i, c in enumerate(code_cells(path))
                    if c.get("outputs") and not reproducibility.IGNORED.search(c.source)}
        assert entry["compared_cells"] == len(compared), f"{path.name}: re-run `make tolerances` after recording"
        for cell_id, cell in entry["cells"].items():
            assert cell_id in compared, f"{path.name}: tolerance for cell {cell_id}, which is not a compared cell"
            assert cell["index"] == compared[cell_id]
            tol = cell["tolerance"]
            # (both sides are rounded to 3 significant digits in the file)
            assert tol["rel"] >= SPEC["multiple"] * max(m["rel"] for m in cell["moved"].values()) * 0.99
            assert tol["abs"] >= SPEC["multiple"] * max(m["abs"] for m in cell["moved"].values()) * 0.99
        assert not entry["text_changed"], (
            f"{path.name}: compared cells whose text changes on another path: {entry['text_changed']}; "
            "print sampled text in a cell of its own marked NBVAL_IGNORE_OUTPUT")


def test_only_wall_clock_results_are_glued_from_cells_that_nbval_does_not_compare():
    glued = re.compile(r'glue\(f?"([^"{]+)')  # the literal part of the name (f-strings: up to the first {)
    for path in CHAPTERS:
        allowed = reproducibility.UNCOMPARED_GLUE.get(path.name, set())
        for cell in code_cells(path):
            if reproducibility.IGNORED.search(cell.source):
                names = set(glued.findall(cell.source))
                assert names <= allowed, (f"{path.name} cell {cell.id} glues {sorted(names - allowed)} but nbval does "
                                          "not compare it: glue them from a compared cell")
        page = path.read_text(encoding="utf-8")
        for name in allowed:
            assert "machine that built this page" in page and name in page, (path.name, name)


def test_chapters_that_multiply_numpy_matrices_were_measured_with_other_openblas_kernels():
    # numpy's BLAS is OpenBLAS, not torch's MKL: ATEN_CPU_CAPABILITY and MKL_CBWR leave it on the CPU's
    # own kernels, so a chapter using numpy linear algebra needs a path that changes OpenBLAS's too.
    uses_numpy = [p for p in CHAPTERS if "import numpy" in p.read_text(encoding="utf-8")]
    assert {p.name for p in uses_numpy} >= {"01_history.ipynb", "03_math.ipynb", "04_backprop.ipynb"}
    for path in uses_numpy:
        measured_on = SPEC["notebooks"][path.name].get("measured_on", {})
        kernels = {info.get("openblas_coretype", "native") for info in measured_on.values()}
        assert kernels - {"native"}, (f"{path.name} uses numpy but was never measured with another OpenBLAS "
                                      f"kernel: `make tolerances NOTEBOOKS=notebooks/{path.name}`")


def test_the_report_page_is_generated_from_the_tolerances():
    page = reproducibility.REPORT_PAGE.read_text(encoding="utf-8")
    assert page == reproducibility.report_text(SPEC), "run `python -m llmcourse.book.reproducibility report`"


def test_a_trained_perplexity_times_1_25_fails_in_chapter_9():
    path = ROOT / "notebooks" / "09_rlhf.ipynb"
    cell = next(c for c in code_cells(path) if 'glue("ch9_sft_ppl"' in c.source)
    tolerance = nbval_plugin.tolerance_for(path.name, cell.id)
    # measured where the paths moved it; where they did not, the (stricter) closed-form tolerance
    assert tolerance.why.startswith(("trained", "closed-form")), tolerance.why
    text = stored_text(cell)
    value = float(text.split("perplexity ")[1].split()[0])
    assert compare_text(text, text.replace(f"{value:.2f}", f"{value * 1.25:.2f}"), tolerance)
    assert compare_text(text, text.replace(f"{value:.2f}", f"{value * 0.8:.2f}"), tolerance)


def test_nbval_fails_a_changed_number_and_a_changed_word_and_passes_the_rest(tmp_path):
    source = ROOT / "notebooks" / "03_math.ipynb"
    nb = nbformat.read(source, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    ce = next(i for i, c in enumerate(cells) if "-log 0.5 by hand      = 0.6931" in stored_text(c))
    worded = next(i for i, c in enumerate(cells) if i != ce and "p(我 喜欢 吃 苹果 <eos>)" in stored_text(c))
    for i, old, new in ((ce, "-log 0.5 by hand      = 0.6931", "-log 0.5 by hand      = 0.7931"),
                        (worded, "p(我 喜欢 吃 苹果 <eos>)", "p(我 喜欢 吃 香蕉 <eos>)")):
        for out in cells[i].outputs:
            if out.get("output_type") == "stream":
                out["text"] = out["text"].replace(old, new)
    nbformat.write(nb, tmp_path / source.name)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "-p", "llmcourse.book.nbval_plugin", "-p", "no:xdist",
         "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path), str(tmp_path / source.name)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    out = result.stdout
    assert result.returncode == 1, out[-3000:]
    assert f"2 failed, {len(cells) - 2} passed" in out, out[-3000:]
    assert f"Cell {ce}" in out and "0.7931 became 0.6931" in out  # stored (edited) -> recomputed
    assert f"Cell {worded}" in out and "text around the numbers changed" in out


def test_the_run_uses_other_kernels_than_the_recording(monkeypatch):
    import torch

    monkeypatch.setattr(nbval_plugin, "recorded_path", lambda: ("AVX512", 1))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    env = {}
    line = nbval_plugin.choose_numerical_path(env)
    assert env == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2",
                   "OPENBLAS_CORETYPE": "Haswell"}
    assert "recorded with AVX512" in line and "avx2" in line
    env = {"ATEN_CPU_CAPABILITY": "default"}  # a stand-in chosen by hand is kept
    nbval_plugin.choose_numerical_path(env)
    assert env["ATEN_CPU_CAPABILITY"] == "default" and env["OMP_NUM_THREADS"] == "1" and "MKL_CBWR" not in env
    env = {"OMP_NUM_THREADS": "2"}  # another thread count is already another path: native kernels stay
    nbval_plugin.choose_numerical_path(env)
    assert "ATEN_CPU_CAPABILITY" not in env and "MKL_CBWR" not in env
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    env = {}
    nbval_plugin.choose_numerical_path(env)  # another CPU than the recording's already is another path
    assert "ATEN_CPU_CAPABILITY" not in env
    env = {"LLMCOURSE_NBVAL_PATH": "recording"}
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    nbval_plugin.choose_numerical_path(env)
    assert "ATEN_CPU_CAPABILITY" not in env


def test_the_stored_notebooks_say_how_they_were_recorded():
    for path in CHAPTERS:
        meta = nbformat.read(path, as_version=4).metadata.get("llmcourse", {}).get("recorded_with")
        assert meta, f"{path.name}: record it with `make record NOTEBOOKS={path.relative_to(ROOT)}`"
        assert meta["threads"] == record.RECORDING_THREADS and meta["mkl_cbwr"] == "native"


def test_recording_in_place_refuses_another_path(tmp_path):
    with pytest.raises(ValueError, match="pass --out DIR"):
        record.run([CHAPTERS[0]], cpu_capability="default")
    with pytest.raises(FileNotFoundError, match="not a notebook"):
        record.run([tmp_path / "missing.ipynb"])
    env = record.kernel_env(2, "avx2", tmp_path / "ppl.json", "AVX2", "Haswell")
    assert (env["OMP_NUM_THREADS"], env["ATEN_CPU_CAPABILITY"], env["MKL_CBWR"], env["OPENBLAS_CORETYPE"]) == (
        "2", "avx2", "AVX2", "Haswell")
    assert env["LLMCOURSE_RESULTS_FILE"] == str(tmp_path / "ppl.json")
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        record.kernel_env(0, None, None)


def test_the_how_to_use_page_names_the_chapters_whose_numbers_move_like_a_seed():
    """book/intro.md tells readers how far their numbers may differ; that sentence follows the data."""
    import re

    seedlike = sorted(int(nb[:2]) for nb, entry in SPEC["notebooks"].items()
                      if reproducibility._how_far(entry) == "like a change of seed")
    intro = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    named = re.search(r"samples of\s+their own model \(chapters? ([^)]*)\)", intro)
    assert named, "book/intro.md must name the chapters whose numbers move like a change of seed"
    assert sorted(int(n) for n in re.findall(r"\d+", named.group(1))) == seedlike


def test_each_number_gets_its_own_measured_slack_with_the_cell_median_as_floor():
    cell = nbformat.v4.new_code_cell("print(table)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="acc 0.500 ppl 100.0 kl 2.0 n 7\n")]
    moved = {"a": {"changes": {"stdout": [[0.01, 2.0, 0.0, 0.0]]}, "text_changed": None},
             "b": {"changes": {"stdout": [[0.03, 0.0, 0.5, 0.0]]}, "text_changed": None}}
    tol = reproducibility.cell_tolerance(cell, moved)
    m = reproducibility.MULTIPLE
    # relative changes of the numbers >= 1: ppl 2 %, kl 25 %, median 13.5 %. acc: its own 0.03 (the only
    # small number); ppl: the median 13.5 % > its own 2 %; kl: its own 0.5; n (an integer): the median.
    assert tol["slack"]["stdout"][0] == pytest.approx([m * 0.03, m * 13.5, m * 0.5, m * 0.135 * 7], rel=1e-2)
    assert not tol["integers"]
    still = {"a": {"changes": {"stdout": [[0.0, 0.0, 0.0, 0.0]]}, "text_changed": None}}
    assert reproducibility.cell_tolerance(cell, still) is None


def test_every_measured_slack_matches_its_stored_output():
    from llmcourse.book.numeric_compare import NUMBER

    for path in CHAPTERS:
        cells = {c.id: c for c in code_cells(path)}
        for cell_id, entry in SPEC["notebooks"][path.name]["cells"].items():
            flat = reproducibility._flat(cells[cell_id])
            for key, outputs in entry["tolerance"]["slack"].items():
                counts = [len(NUMBER.findall(v)) if isinstance(v, str) else 0 for v in flat[key]]
                assert [len(o) for o in outputs] == counts, f"{path.name} cell {entry['index']}: stale slack"


def test_the_report_lists_each_path_as_each_chapter_ran_it():
    """A path's name ("2 threads") means other kernels on another CPU: one row per way it ran."""
    intel = {"torch": "2.13.0+cpu", "cpu_capability": "AVX512", "mkl_cbwr": "native", "threads": 2,
             "machine": "x86_64"}
    amd = dict(intel, cpu_capability="AVX2", cpu="AMD EPYC")
    notebooks = {"01_a.ipynb": {"measured_on": {"2 threads": intel}},
                 "02_b.ipynb": {"measured_on": {"2 threads": intel}},
                 "03_c.ipynb": {"measured_on": {"2 threads": amd}}}
    rows = reproducibility._path_rows(notebooks)
    assert rows == ["| 2 threads | not recorded | AVX512 | native | native | 2 | 2.13.0+cpu | 1–2 |",
                    "| 2 threads | AMD EPYC | AVX2 | native | native | 2 | 2.13.0+cpu | 3 |"]
    assert reproducibility._chapter_list(["01_a", "02_b", "03_c", "05_d", "07_e", "08_f"]) == "1–3, 5, 7–8"
    page = reproducibility.REPORT_PAGE.read_text(encoding="utf-8")
    for notebook, entry in SPEC["notebooks"].items():
        for name, info in entry["measured_on"].items():
            assert f"| {name} | {info.get('cpu', 'not recorded')} | {info['cpu_capability']} |" in page, (notebook, name)


def test_the_cpu_model_is_recorded_with_each_run():
    model = record.cpu_model()
    assert isinstance(model, str) and model.strip(), model
    assert record.numerical_path(record.kernel_env(1, None, None))["cpu"] == model


def test_the_report_says_which_chapters_make_test_moves_off_their_recording():
    one = reproducibility._test_path_text({"AVX512": ["01_a", "02_b"]})
    assert "another path than the recording's" in " ".join(one)
    mixed = " ".join(reproducibility._test_path_text({"AVX512": ["01_a", "02_b"], "AVX2": ["03_c"]}))
    assert "chapters 3 with AVX2; chapters 1–2 with AVX512" in mixed and "ATEN_CPU_CAPABILITY=default" in mixed
