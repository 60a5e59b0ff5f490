"""The fast guard on the shipped weights, part of `make test` on any CPU: each file's bytes are the ones
its recipe wrote (SHA-256), a corrupted copy is refused wherever it lies, one stored metric re-measures
within tolerance, and the first updates of each recipe replay its stored loss history within tolerance.
The full rebuild from scratch (about 20 minutes) is `make verify-weights`, run by the weights workflow
when the code it depends on changes."""
import os
import re
import shutil

import pytest

from llmcourse.book import pretrained
from llmcourse.core.checkpoint import CheckpointError


@pytest.mark.parametrize("name", sorted(pretrained.RECIPES))
def test_each_shipped_file_has_the_hash_its_recipe_recorded(name):
    pretrained.check_integrity(name)
    listed = pretrained.read_manifest()
    assert set(listed) == {f"{n}.pt" for n in pretrained.RECIPES}, "SHA256SUMS lists other files than the recipes"


def test_a_corrupted_file_is_refused_with_the_fix(tmp_path, monkeypatch):
    name = "gpt-reviews"
    shutil.copy(pretrained.weights_path(name), tmp_path / f"{name}.pt")
    shutil.copy(pretrained.MANIFEST, tmp_path / "SHA256SUMS")
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(pretrained, "MANIFEST", str(tmp_path / "SHA256SUMS"))
    pretrained.load(name)  # the intact copy loads
    path = tmp_path / f"{name}.pt"
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])  # still a loadable zip
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"gpt-reviews.pt.*is corrupt.*pretrained build gpt-reviews"):
        pretrained.load(name)
    os.remove(tmp_path / "SHA256SUMS")
    with pytest.raises(CheckpointError, match="is not listed in"):
        pretrained.load(name)


def test_a_corrupted_copy_elsewhere_is_refused_by_the_digests_inside_it(tmp_path):
    """SHA256SUMS only knows the shipped paths; a copy loaded from another path is checked by the
    SHA-256 of its tensors stored in the file (before format 2 such a copy loaded, with a weight of
    85.7 where the largest was 17.8, perplexity 452 instead of 79, and the stored metrics reported)."""
    name = "gpt-reviews"
    path = tmp_path / "copy.pt"
    raw = bytearray(open(pretrained.weights_path(name), "rb").read())
    middle = len(raw) // 2  # inside the token embedding, by far the largest tensor
    raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
    path.write_bytes(bytes(raw))
    # torch reads such a zip without complaint today; should it ever check the zip's CRCs, its
    # "cannot be read" error is as good
    fix = re.escape("python -m llmcourse.book.pretrained build gpt-reviews")
    refused = rf"{re.escape(str(path))}.*(its tensors do not match|cannot be read).*{fix}"
    with pytest.raises(CheckpointError, match=refused):
        pretrained.load(name, str(path))


@pytest.mark.parametrize("name", sorted(pretrained.RECIPES))
def test_the_metric_and_the_first_updates_reproduce(name):
    report = pretrained.guard(name)
    stored, remeasured, moved = report["metric"]
    assert moved <= pretrained.GUARD_RTOL["metric"], (
        f"{name}: {pretrained.RECIPES[name].guard_metric} re-measures {remeasured:.6f}, stored {stored:.6f}")
    updates, worst = report["losses"]
    assert updates == pretrained.GUARD_UPDATES
    assert worst <= pretrained.GUARD_RTOL["losses"], (
        f"{name}: the first {updates} losses moved by up to {worst:.2e} relative; "
        f"allowed {pretrained.GUARD_RTOL['losses']:.2e}")
