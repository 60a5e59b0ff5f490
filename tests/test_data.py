from collections import Counter

import pytest

from llmcourse.data import corpus


def test_review_splits_are_disjoint_and_cover_everything():
    splits = {s: corpus.load_reviews(s) for s in corpus.SPLITS}
    texts = {s: {r.text for r in rs} for s, rs in splits.items()}
    assert not texts["train"] & texts["val"]
    assert not texts["train"] & texts["test"]
    assert not texts["val"] & texts["test"]
    everything = corpus.load_reviews("all")
    assert sum(len(v) for v in splits.values()) == len(everything)
    assert len({r.text for r in everything}) == len(everything), "duplicates must be removed"


def test_review_split_sizes_and_balance_are_as_documented():
    sizes = corpus.split_sizes()["reviews"]
    assert sizes == {"train": 13909, "val": 1654, "test": 1800}
    labels = Counter(r.label for r in corpus.load_reviews("test"))
    assert set(labels) == {0, 1} and min(labels.values()) > 800


def test_review_split_depends_only_on_the_text():
    # the split of every loaded review is recomputed from its text alone (label and position unused)
    for split in ("train", "val", "test"):
        texts = [r.text for r in corpus.load_reviews(split)[:300]]
        assert {corpus.review_split_of(t) for t in texts} == {split}


def test_no_text_carries_both_labels():
    raw_pos = set(corpus._read_lines("sentiment/pos.txt"))
    raw_neg = set(corpus._read_lines("sentiment/neg.txt"))
    kept = {r.text for r in corpus.load_reviews("all")}
    assert not kept & (raw_pos & raw_neg)


def test_segmentation_corpus_parses_words():
    train = corpus.load_segmentation("train")
    assert train[0][:3] == ["迈向", "充满", "希望"]
    sizes = corpus.split_sizes()["segmentation"]
    assert sizes == {"train": 15588, "val": 1948, "test": 1948}
    assert all(w and "/" not in w for w in train[0])


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        corpus.load_reviews("dev")
    with pytest.raises(ValueError, match="unknown split"):
        corpus.load_segmentation("training")


def test_malformed_gold_token_is_reported():
    with pytest.raises(ValueError, match="malformed token 'abc'"):
        corpus._parse_tagged_line("我/r abc")
