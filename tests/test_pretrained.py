"""The shipped weights files: build, load, compare, and the errors for bad files.

The full rebuild of every shipped file (minutes) is in ``test_pretrained_rebuild.py``.
"""
import copy
import os

import pytest
import torch

from llmcourse.book import pretrained
from llmcourse.book.results import perplexity_table
from llmcourse.train import CheckpointError

FAST = "bert-mlm-reviews"  # a 5-update build of this recipe takes seconds


@pytest.fixture(scope="module")
def tiny_builds(tmp_path_factory):
    """The same short build twice, in two folders."""
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    return [pretrained.build(FAST, out_dir=str(d), max_steps=5) for d in (a, b)]


def test_unknown_recipe_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown pretrained weights 'gpt-huge'.*gpt-reviews"):
        pretrained.load("gpt-huge")


def test_build_is_deterministic_and_loads(tiny_builds):
    first, second = (pretrained.read(p) for p in tiny_builds)
    report = pretrained.compare(first, second)
    assert report == {**report, "same_machine": True, "identical": True, "ok": True}
    loaded = pretrained.load(FAST, tiny_builds[0])
    assert not loaded.model.training
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, first["state_dict"][k])
    assert loaded.train_config["max_steps"] == 5 and len(loaded.history["step"]) == 5
    assert set(loaded.metrics) == {"val_mlm_loss"} and loaded.built_with["threads"] >= 1


def test_missing_corrupt_and_foreign_files(tmp_path, tiny_builds):
    with pytest.raises(FileNotFoundError, match="python -m llmcourse.book.pretrained build"):
        pretrained.load(FAST, str(tmp_path / "nothing.pt"))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(tiny_builds[0], "rb").read()[:1000])
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        pretrained.load(FAST, str(truncated))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="is not a llmcourse.pretrained/1 file"):
        pretrained.load(FAST, str(foreign))
    with pytest.raises(CheckpointError, match="holds 'bert-mlm-reviews'"):
        pretrained.load("gpt-reviews", tiny_builds[0])


def test_stale_config_and_wrong_tensors_are_refused(tmp_path, tiny_builds):
    state = pretrained.read(tiny_builds[0])
    stale = copy.deepcopy(state)
    stale["model_config"]["n_embd"] = 32
    torch.save(stale, tmp_path / "stale.pt")
    with pytest.raises(CheckpointError, match=r"another model config.*'n_embd': \(32, 64\).*build bert-mlm-reviews"):
        pretrained.load(FAST, str(tmp_path / "stale.pt"))
    broken = copy.deepcopy(state)
    broken["state_dict"].pop(next(iter(broken["state_dict"])))
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="does not match BertForMaskedLM"):
        pretrained.load(FAST, str(tmp_path / "broken.pt"))


def test_compare_elsewhere_uses_the_metrics(tiny_builds):
    shipped = pretrained.read(tiny_builds[0])
    elsewhere = copy.deepcopy(shipped)
    elsewhere["built_with"]["cpu_capability"] = "NEON"
    elsewhere["state_dict"] = {k: v + 1e-6 for k, v in elsewhere["state_dict"].items()}
    assert pretrained.compare(shipped, elsewhere)["ok"]  # other CPU, same metrics: fine
    elsewhere["metrics"] = {k: v * 1.05 for k, v in elsewhere["metrics"].items()}
    report = pretrained.compare(shipped, elsewhere)
    assert not report["ok"] and not report["identical"] and not report["same_machine"]
    same_cpu_drift = copy.deepcopy(shipped)
    same_cpu_drift["state_dict"] = elsewhere["state_dict"]
    assert not pretrained.compare(shipped, same_cpu_drift)["ok"]  # same CPU: only bit-identical passes


def test_the_write_is_atomic(tmp_path, monkeypatch, tiny_builds):
    target = str(tmp_path / f"{FAST}.pt")
    good = open(tiny_builds[0], "rb").read()
    open(target, "wb").write(good)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        pretrained.build(FAST, out_dir=str(tmp_path), max_steps=2)
    assert open(target, "rb").read() == good and os.listdir(tmp_path) == [f"{FAST}.pt"]


@pytest.mark.parametrize("name", sorted(pretrained.RECIPES))
def test_shipped_files_load_and_match_their_recipes(name):
    loaded = pretrained.load(name)
    assert loaded.train_config["max_steps"] == pretrained.RECIPES[name].train_config.max_steps
    assert loaded.built_with["torch"] and loaded.built_with["seconds"] > 0


def test_shipped_gpt_beats_every_count_model():
    """The claim chapter 6 makes (the chapter re-measures both numbers)."""
    gpt = pretrained.load("gpt-reviews").metrics
    counted = {n: r for n, r in perplexity_table().items() if r["chapter"] == 1}
    assert gpt["test_ppl"] < min(r["test"] for r in counted.values())
    assert gpt["val_ppl"] < min(r["val"] for r in counted.values())


def test_cli_list(capsys):
    assert pretrained.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} (chapter" in out for name in pretrained.RECIPES)
    with pytest.raises(KeyError):
        pretrained.main(["build", "nope"])
