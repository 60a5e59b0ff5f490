from collections import Counter

import pytest

from llmcourse import data


def test_review_splits_are_disjoint_and_cover_everything():
    splits = {s: data.load_reviews(s) for s in data.SPLITS}
    texts = {s: {r.text for r in rs} for s, rs in splits.items()}
    assert not texts["train"] & texts["val"]
    assert not texts["train"] & texts["test"]
    assert not texts["val"] & texts["test"]
    everything = data.load_reviews("all")
    assert sum(len(v) for v in splits.values()) == len(everything)
    assert len({r.text for r in everything}) == len(everything), "duplicates must be removed"


def test_review_split_sizes_and_balance_are_as_documented():
    sizes = data.split_sizes()["reviews"]
    assert sizes == {"train": 13909, "val": 1654, "test": 1800}
    labels = Counter(r.label for r in data.load_reviews("test"))
    assert set(labels) == {0, 1} and min(labels.values()) > 800


def test_review_split_depends_only_on_the_text():
    text = data.load_reviews("val")[0].text
    assert data.review_split_of(text) == "val"
    assert data.review_split_of(text) == data.review_split_of(str(text))


def test_no_text_carries_both_labels():
    raw_pos = set(data._read_lines("sentiment/pos.txt"))
    raw_neg = set(data._read_lines("sentiment/neg.txt"))
    kept = {r.text for r in data.load_reviews("all")}
    assert not kept & (raw_pos & raw_neg)


def test_segmentation_corpus_parses_words():
    train = data.load_segmentation("train")
    assert train[0][:3] == ["迈向", "充满", "希望"]
    sizes = data.split_sizes()["segmentation"]
    assert sizes == {"train": 15588, "val": 1948, "test": 1948}
    assert all(w and "/" not in w for w in train[0])


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        data.load_reviews("dev")
    with pytest.raises(ValueError, match="unknown split"):
        data.load_segmentation("training")


def test_malformed_gold_token_is_reported():
    with pytest.raises(ValueError, match="malformed token 'abc'"):
        data._parse_tagged_line("我/r abc")
