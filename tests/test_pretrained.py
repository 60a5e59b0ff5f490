"""The shipped weights files: build, load, compare a rebuild, and the errors for bad files.

The full rebuild of every shipped file (minutes) is ``make verify-weights``; the fast guard on the
shipped files is ``test_pretrained_guard.py``.
"""
import copy
import dataclasses
import os
import re

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
    report = pretrained.compare_rebuild(first, second)
    assert report == {**report, "same_machine": True, "same_vocabulary": True, "identical": True, "ok": True}
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
    with pytest.raises(CheckpointError, match=f"is not a {re.escape(pretrained.FORMAT)} file"):
        pretrained.load(FAST, str(foreign))
    with pytest.raises(CheckpointError, match="holds 'bert-mlm-reviews'"):
        pretrained.load("gpt-reviews", tiny_builds[0])


def _vocabulary():
    return pretrained.RECIPES[FAST].vocabulary()


def test_stale_config_and_wrong_tensors_are_refused(tmp_path, tiny_builds):
    """Files with valid digests, written for another model: what an outdated build looks like."""
    state = pretrained.read(tiny_builds[0])
    stale = copy.deepcopy(state)
    stale["model_config"]["n_embd"] = 32
    pretrained.write(stale, str(tmp_path / "stale.pt"), _vocabulary())
    with pytest.raises(CheckpointError, match=r"another model config.*'n_embd': \(32, 64\).*build bert-mlm-reviews"):
        pretrained.load(FAST, str(tmp_path / "stale.pt"))
    broken = copy.deepcopy(state)
    broken["state_dict"].pop(next(iter(broken["state_dict"])))
    pretrained.write(broken, str(tmp_path / "broken.pt"), _vocabulary())
    with pytest.raises(CheckpointError, match="does not match BertForMaskedLM"):
        pretrained.load(FAST, str(tmp_path / "broken.pt"))


def test_a_tensor_changed_after_the_build_is_refused(tmp_path, tiny_builds):
    """A file torch reads without complaint, whose weights are no longer the ones the build wrote."""
    state = pretrained.read(tiny_builds[0])
    first = sorted(state["state_dict"])[0]
    state["state_dict"][first].view(-1)[0] += 1.0
    path = str(tmp_path / "retouched.pt")
    torch.save(state, path)  # the stored digests stay those of the build
    with pytest.raises(CheckpointError, match=rf"{re.escape(path)}.*its tensors do not match.*build bert-mlm-reviews"):
        pretrained.load(FAST, path)


def test_another_tokenizer_vocabulary_is_refused(tmp_path, monkeypatch, tiny_builds):
    """Same size, two ids swapped: the config still matches, but every review would be read scrambled."""
    swapped = _vocabulary()
    swapped[10], swapped[11] = swapped[11], swapped[10]
    built_elsewhere = str(tmp_path / "other-vocabulary.pt")
    pretrained.write(pretrained.read(tiny_builds[0]), built_elsewhere, swapped)
    message = r"{}.*another tokenizer vocabulary.*data or the tokenizer changed.*build bert-mlm-reviews"
    with pytest.raises(CheckpointError, match=message.format(re.escape(built_elsewhere))):
        pretrained.load(FAST, built_elsewhere)
    # the other way round: the file is right, today's data or tokenizer has changed
    recipe = pretrained.RECIPES[FAST]
    monkeypatch.setitem(pretrained.RECIPES, FAST, dataclasses.replace(recipe, vocabulary=lambda: swapped))
    with pytest.raises(CheckpointError, match=message.format(re.escape(tiny_builds[0]))):
        pretrained.load(FAST, tiny_builds[0])


@pytest.mark.parametrize("field, value, message", [
    ("metrics", "oops", r"field 'metrics' must be a dict of numbers, found str 'oops'"),
    ("metrics", {"val_mlm_loss": "low"}, r"field 'metrics' must be a dict of numbers"),
    ("model_config", None, r"field 'model_config' must be a dict of settings, found NoneType"),
    ("built_with", {"torch": torch.zeros(2)}, r"field 'built_with' holds more than plain data"),
    ("metrics", {"val_mlm_loss": 0.5}, r"its metadata fields \['metrics'\] do not match"),
    ("train_config", {}, r"its metadata fields \['train_config'\] do not match"),
])
def test_edited_metadata_is_refused_naming_the_field(tmp_path, tiny_builds, field, value, message):
    state = pretrained.read(tiny_builds[0])
    state[field] = value
    path = str(tmp_path / "edited.pt")
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=rf"{re.escape(path)}.*{message}.*build bert-mlm-reviews"):
        pretrained.load(FAST, path)


def test_missing_or_malformed_digests_are_refused(tmp_path, tiny_builds):
    state = pretrained.read(tiny_builds[0])
    del state["sha256"]
    torch.save(state, tmp_path / "no-digests.pt")
    with pytest.raises(CheckpointError, match=r"lacks \['sha256'\]"):
        pretrained.load(FAST, str(tmp_path / "no-digests.pt"))
    state["sha256"] = {"tensors": "0" * 64}
    torch.save(state, tmp_path / "bad-digests.pt")
    with pytest.raises(CheckpointError, match="'sha256' digests are missing or malformed.*build bert-mlm-reviews"):
        pretrained.load(FAST, str(tmp_path / "bad-digests.pt"))


def test_a_file_in_the_old_format_is_refused_with_the_fix(tmp_path, tiny_builds):
    """Format 1 had no digests: such a file could be corrupt, edited or stale without anyone knowing."""
    state = pretrained.read(tiny_builds[0])
    old = {k: v for k, v in state.items() if k != "sha256"}
    old["format"] = "llmcourse.pretrained/1"
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"format llmcourse\.pretrained/1, which this code no longer reads.*"
                                              r"Rebuild it with `python -m llmcourse\.book\.pretrained build bert-mlm"):
        pretrained.load(FAST, str(tmp_path / "old.pt"))


def test_compare_rebuild_elsewhere_uses_the_metrics(tiny_builds):
    shipped = pretrained.read(tiny_builds[0])
    elsewhere = copy.deepcopy(shipped)
    elsewhere["built_with"]["cpu_capability"] = "NEON"
    elsewhere["state_dict"] = {k: v + 1e-6 for k, v in elsewhere["state_dict"].items()}
    assert pretrained.compare_rebuild(shipped, elsewhere)["ok"]  # other CPU, same metrics: fine
    other_vocabulary = copy.deepcopy(elsewhere)
    other_vocabulary["sha256"]["vocabulary"] = "0" * 64
    assert not pretrained.compare_rebuild(shipped, other_vocabulary)["ok"]  # close metrics cannot excuse other ids
    elsewhere["metrics"] = {k: v * 1.05 for k, v in elsewhere["metrics"].items()}
    report = pretrained.compare_rebuild(shipped, elsewhere)
    assert not report["ok"] and not report["identical"] and not report["same_machine"]
    same_cpu_drift = copy.deepcopy(shipped)
    same_cpu_drift["state_dict"] = elsewhere["state_dict"]
    assert not pretrained.compare_rebuild(shipped, same_cpu_drift)["ok"]  # same CPU: only bit-identical passes


def test_verify_compares_a_rebuild_read_from_the_new_format(monkeypatch, tiny_builds):
    """`verify` end to end on the tiny builds instead of a 13-minute retraining: the shipped file and the
    rebuild are both read (digests checked) and compared."""
    monkeypatch.setattr(pretrained, "weights_path", lambda name: tiny_builds[0])
    monkeypatch.setattr(pretrained, "build", lambda name, out_dir: tiny_builds[1])
    report = pretrained.verify(FAST)
    assert report["ok"] and report["identical"] and report["same_vocabulary"]


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


# what chapters 6 and 7 print from the shipped files' stored metrics (and chapter 6 records in
# results/perplexity.json): a rebuilt or migrated file must report them, or the chapters must be re-recorded
BOOK_METRICS = {"gpt-reviews": {"val_ppl": 49.57, "test_ppl": 50.64}, "bert-mlm-reviews": {"val_mlm_loss": 3.3002}}


@pytest.mark.parametrize("name", sorted(pretrained.RECIPES))
def test_shipped_files_load_and_match_their_recipes(name):
    loaded = pretrained.load(name)
    assert loaded.train_config["max_steps"] == pretrained.RECIPES[name].train_config.max_steps
    assert loaded.built_with["torch"] and loaded.built_with["seconds"] > 0
    digits = {"gpt-reviews": 2, "bert-mlm-reviews": 4}[name]
    assert {k: round(v, digits) for k, v in loaded.metrics.items()} == BOOK_METRICS[name]
    if name == "gpt-reviews":
        row = perplexity_table()["GPT, 10x the training (shipped weights)"]
        assert BOOK_METRICS[name] == {"val_ppl": row["val"], "test_ppl": row["test"]}


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
