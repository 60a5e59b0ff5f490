"""Tokenizers (分词器): text -> tokens -> integer ids, and back.

Five tokenizers share one interface (:class:`Tokenizer`), so a model never cares which one made its ids:

* :class:`WhitespaceTokenizer` splits at spaces: fine for English, useless for Chinese (no spaces).
* :class:`CharTokenizer` makes every character a token: the book's default for Chinese language models.
* :class:`JiebaTokenizer` uses jieba's dictionary-based word segmentation (分词).
* :class:`BPETokenizer` learns sub-words from data with byte-pair encoding (Sennrich et al., 2016),
  here on a *character* base alphabet so that the learnt merges are readable Chinese.
* :class:`ByteBPETokenizer` is BPE on UTF-8 bytes (GPT-2): 256 base symbols, so no text is ever ``<unk>``.

:func:`normalize_text` (NFKC width folding, traditional -> simplified) prepares text for any of them.

Every tokenizer reserves the same four special tokens, whose ids later chapters rely on::

    <pad> = 0   <unk> = 1   <bos> = 2   <eos> = 3

Usage::

    tok = CharTokenizer().train(review_texts("train"))
    ids = tok.encode("这本书很好", add_eos=True)
    tok.decode(ids, skip_special_tokens=True)   # '这本书很好'
    tok.save("char.json"); CharTokenizer.load("char.json")
"""
from __future__ import annotations

import heapq
import json
import logging
import os
import re
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from llmcourse.core.checks import check_texts

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
FORMAT_VERSION = 1


class UnknownTokenIdError(KeyError, ValueError):
    """An id outside the vocabulary (a ``KeyError`` and a ``ValueError``, so either ``except`` catches it)."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


def _check_text(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"expected a str of text, got {type(text).__name__}")
    return text


class Tokenizer(ABC):
    """The shared interface: ``train`` / ``tokenize`` / ``encode`` / ``decode`` / ``save`` / ``load``.

    A subclass says how text is cut into token strings (:meth:`tokenize`) and how tokens join back into
    text (``joiner``). The vocabulary is the four special tokens, then every training token seen at
    least ``min_freq`` times, most frequent first (ties alphabetical), so ids are deterministic.
    """

    joiner: str = ""  # how decode() glues token strings back together

    def __init__(self, min_freq: int = 1):
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an int >= 1, got {min_freq!r}")
        self.min_freq = min_freq
        self._id_to_token: list[str] = list(SPECIAL_TOKENS)
        self._token_to_id: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        self.trained = False  # an untrained tokenizer would encode every token as <unk>: encode refuses

    # ---- what a subclass defines ---------------------------------------------------------------
    @abstractmethod
    def tokenize(self, text: str) -> list[str]:
        """Cut ``text`` into token strings (before mapping to ids; rare tokens are not replaced yet)."""

    def _config(self) -> dict:
        """Constructor arguments to store in the saved file (subclasses add theirs)."""
        return {"min_freq": self.min_freq}

    def _extra_state(self) -> dict:
        """Learnt state beyond the vocabulary (BPE: its merges)."""
        return {}

    def _set_extra_state(self, state: dict) -> None:
        pass

    # ---- training ------------------------------------------------------------------------------
    def train(self, texts: Iterable[str]) -> "Tokenizer":
        """Build the vocabulary from ``texts`` (a list of strings). Returns ``self`` for chaining."""
        texts = check_texts(texts, "train() texts", allow_empty_strings=False)
        counts = Counter(token for text in texts for token in self.tokenize(text))
        self._build_vocab(counts)
        return self

    def _build_vocab(self, counts: Counter, extra_tokens: Sequence[str] = ()) -> None:
        kept = sorted((t for t, c in counts.items() if c >= self.min_freq and t not in SPECIAL_TOKENS),
                      key=lambda t: (-counts[t], t))
        self._id_to_token = list(SPECIAL_TOKENS)
        self._token_to_id = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        for token in list(kept) + list(extra_tokens):
            if token not in self._token_to_id:  # two BPE merges can spell the same string
                self._token_to_id[token] = len(self._id_to_token)
                self._id_to_token.append(token)
        self.trained = True

    # ---- ids -----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return len(self._id_to_token)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def vocab(self) -> dict[str, int]:
        """A copy of the token -> id mapping."""
        return dict(self._token_to_id)

    def token_to_id(self, token: str) -> int:
        """Id of ``token``; tokens outside the vocabulary get the ``<unk>`` id (1)."""
        if not isinstance(token, str):
            raise TypeError(f"a token is a str, got {type(token).__name__}")
        return self._token_to_id.get(token, UNK_ID)

    def id_to_token(self, index: int) -> str:
        """The token string of id ``index``; an id outside ``0 .. vocab_size-1`` is an error."""
        if isinstance(index, bool) or not isinstance(index, int):
            try:  # accept numpy / torch integer scalars
                import operator
                index = operator.index(index)
            except TypeError:
                raise TypeError(f"a token id is an int, got {type(index).__name__}") from None
        if not 0 <= index < len(self._id_to_token):
            raise UnknownTokenIdError(f"unknown token id {index}: the vocabulary has {self.vocab_size} ids (0 .. {self.vocab_size - 1})")
        return self._id_to_token[index]

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of ``text``, optionally wrapped in ``<bos>`` ... ``<eos>``."""
        if not self.trained:
            raise RuntimeError(f"this {type(self).__name__} has no vocabulary yet, so every token would encode as "
                               f"<unk>: call .train(texts) first (or {type(self).__name__}.load(path))")
        ids = [self._token_to_id.get(t, UNK_ID) for t in self.tokenize(_check_text(text))]
        return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text from ids. ``skip_special_tokens`` drops ``<pad>``, ``<bos>``, ``<eos>`` (``<unk>`` stays visible)."""
        if hasattr(ids, "tolist"):  # a torch tensor or numpy array
            ids = ids.tolist()
        tokens = [self.id_to_token(i) for i in ids]
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in (PAD, BOS, EOS)]
        return self.joiner.join(tokens)

    # ---- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (kind, settings, vocabulary, merges)."""
        state = {"kind": type(self).__name__, "format_version": FORMAT_VERSION, "config": self._config(),
                 "vocab": self._id_to_token, **self._extra_state()}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(state, f, ensure_ascii=False, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Read a file written by :meth:`save`. ``Tokenizer.load`` accepts any kind; a subclass only its own."""
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a tokenizer file: invalid JSON ({err})") from None
        if not isinstance(state, dict) or not {"kind", "config", "vocab"} <= set(state):
            raise ValueError(f"{path} is not a tokenizer file: expected a JSON object with 'kind', 'config' and 'vocab'")
        kinds = {k.__name__: k for k in (WhitespaceTokenizer, CharTokenizer, JiebaTokenizer, BPETokenizer,
                                          ByteBPETokenizer)}
        kind = state["kind"]
        if kind not in kinds:
            raise ValueError(f"{path} holds an unknown tokenizer kind {kind!r}; expected one of {sorted(kinds)}")
        if cls is not Tokenizer and kind != cls.__name__:
            raise ValueError(f"{path} holds a {kind}, not a {cls.__name__}; load it with {kind}.load or Tokenizer.load")
        vocab = state["vocab"]
        if (not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab)
                or tuple(vocab[:4]) != SPECIAL_TOKENS or len(set(vocab)) != len(vocab)):
            raise ValueError(f"{path}: 'vocab' must be a list of distinct strings starting with {list(SPECIAL_TOKENS)}")
        if state.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"{path}: format version {state.get('format_version')!r}, this code reads {FORMAT_VERSION}")
        try:
            tok = kinds[kind](**state["config"])
        except TypeError as err:
            raise ValueError(f"{path}: bad settings for {kind}: {err}") from None
        tok._id_to_token = list(vocab)
        tok._token_to_id = {t: i for i, t in enumerate(vocab)}
        tok.trained = True
        tok._set_extra_state(state)
        return tok

    def __eq__(self, other: object) -> bool:
        return (type(self) is type(other) and self._config() == other._config()
                and self._id_to_token == other._id_to_token and self._extra_state() == other._extra_state())

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({settings}; vocab_size={self.vocab_size})"


class WhitespaceTokenizer(Tokenizer):
    """Split at runs of whitespace (``str.split()``). A Chinese sentence has none, so it stays one token."""

    joiner = " "

    def tokenize(self, text: str) -> list[str]:
        return _check_text(text).split()


class CharTokenizer(Tokenizer):
    """One token per character. ``min_freq=2`` maps characters seen once in training to ``<unk>``
    (the book's shared perplexity convention)."""

    def __init__(self, min_freq: int = 2):
        super().__init__(min_freq)

    def tokenize(self, text: str) -> list[str]:
        return list(_check_text(text))


JIEBA_MODES = ("precise", "full", "search")


@lru_cache(maxsize=None)
def _jieba():
    """Import jieba once, quietly (its 'Loading model cost …' log line would end up in notebook outputs)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


class JiebaTokenizer(Tokenizer):
    """Words from jieba (dictionary + HMM for unseen words).

    ``tokenize(text, mode)`` offers jieba's three modes: ``precise`` (精确模式, one segmentation that
    spells the text exactly), ``full`` (全模式, every dictionary word found, overlapping) and ``search``
    (搜索引擎模式, precise plus the shorter words inside long ones). ``encode`` always uses precise mode,
    the only one whose tokens join back into the text.
    """

    def __init__(self, min_freq: int = 1, hmm: bool = True):
        super().__init__(min_freq)
        if not isinstance(hmm, bool):
            raise TypeError(f"hmm must be True or False, got {hmm!r}")
        self.hmm = hmm

    def _config(self) -> dict:
        return {"min_freq": self.min_freq, "hmm": self.hmm}

    def tokenize(self, text: str, mode: str = "precise") -> list[str]:
        text = _check_text(text)
        if mode not in JIEBA_MODES:
            raise ValueError(f"unknown jieba mode {mode!r}; expected one of {JIEBA_MODES}")
        jieba = _jieba()
        if mode == "precise":
            return jieba.lcut(text, HMM=self.hmm)
        if mode == "full":
            return jieba.lcut(text, cut_all=True)
        return jieba.lcut_for_search(text, HMM=self.hmm)


# A chunk is a run of word characters (CJK, letters, digits), a run of whitespace, or one punctuation
# mark. BPE never merges across chunks, so "好，" never becomes a token, and the chunks of a text always
# join back into it exactly.
CHUNK_PATTERN = re.compile(r"\w+|\s+|[^\w\s]")


def split_chunks(text: str) -> list[str]:
    """Pre-split text at whitespace and punctuation; ``''.join(split_chunks(t)) == t``."""
    return CHUNK_PATTERN.findall(_check_text(text))


def _merge_word(symbols: tuple[str, ...], pair: tuple[str, str], merged: str) -> tuple[str, ...]:
    """Replace every non-overlapping occurrence of ``pair`` in ``symbols``, left to right."""
    out, i, n = [], 0, len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def count_pairs(word_counts: Mapping[tuple[str, ...], int]) -> Counter:
    """How often each adjacent symbol pair occurs, each word weighted by its count (one BPE step's statistics)."""
    pairs: Counter = Counter()
    for word, n in word_counts.items():
        for pair in zip(word, word[1:]):
            pairs[pair] += n
    return pairs


def merge_pair(word_counts: Mapping[tuple[str, ...], int], pair: tuple[str, str]) -> dict[tuple[str, ...], int]:
    """Rewrite every word with ``pair`` fused into one symbol (the other half of a BPE step)."""
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise ValueError(f"pair must be a tuple of two symbols, got {pair!r}")
    merged: dict[tuple[str, ...], int] = {}
    for word, n in word_counts.items():
        new = _merge_word(tuple(word), pair, pair[0] + pair[1])
        merged[new] = merged.get(new, 0) + n
    return merged


def bpe_step(word_counts: Mapping[tuple[str, ...], int]) -> tuple[tuple[str, str] | None, dict[tuple[str, ...], int]]:
    """One textbook BPE merge: the most frequent pair (ties: the pair that sorts first) and the rewritten words.

    Returns ``(None, words)`` when no pair is left. :class:`BPETokenizer` does the same, only incrementally.
    """
    pairs = count_pairs(word_counts)
    if not pairs:
        return None, dict(word_counts)
    best = min(pairs, key=lambda p: (-pairs[p], p))
    return best, merge_pair(word_counts, best)


def forward_max_match(text: str, dictionary: Iterable[str] | set[str], max_len: int | None = None) -> list[str]:
    """Forward maximum matching (正向最大匹配): from the left, take the longest dictionary word that
    starts here (at most ``max_len`` characters), or a single character if none does."""
    text = _check_text(text)
    words = dictionary if isinstance(dictionary, (set, frozenset, dict)) else set(dictionary)
    if max_len is None:
        max_len = max((len(w) for w in words), default=1)
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    out, i = [], 0
    while i < len(text):
        for size in range(min(max_len, len(text) - i), 0, -1):
            if size == 1 or text[i:i + size] in words:
                out.append(text[i:i + size])
                i += size
                break
    return out


def learn_merges(words: list[tuple[str, ...]], freqs: list[int], num_merges: int,
                 frozen: str | None = None) -> list[tuple[str, str]]:
    """The BPE merges of a corpus given as distinct ``words`` (symbol tuples, rewritten in place) with
    their counts ``freqs``: the same merges as repeating :func:`bpe_step`, computed incrementally.

    After a merge only the words that contain the merged pair are re-counted (an index from each pair to
    its words), and a heap with lazy deletion finds the most frequent pair (ties: the pair that sorts
    first). Merging stops after ``num_merges`` merges or when no pair occurs twice. A pair holding the
    ``frozen`` symbol (``<unk>`` for :class:`BPETokenizer`) never merges. Symbols may be any strings:
    characters for :class:`BPETokenizer`, byte symbols for :class:`ByteBPETokenizer`.
    """
    pair_count: dict[tuple[str, str], int] = defaultdict(int)  # pair -> occurrences in the corpus
    where: dict[tuple[str, str], set[int]] = defaultdict(set)  # pair -> ids of words holding it
    for w, (symbols, f) in enumerate(zip(words, freqs)):
        for pair in zip(symbols, symbols[1:]):
            pair_count[pair] += f
            where[pair].add(w)
    for pair in [p for p in pair_count if frozen in p]:  # the frozen symbol (<unk>) never merges
        del pair_count[pair], where[pair]
    # max-heap by count, ties to the smallest pair; stale entries are skipped when popped
    heap = [(-c, pair) for pair, c in pair_count.items()]
    heapq.heapify(heap)

    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:
            continue  # stale: the count changed after this entry was pushed
        if -neg < 2:
            break  # a pair seen once is not worth a vocabulary entry
        merges.append(pair)
        merged = pair[0] + pair[1]
        changed: set[tuple[str, str]] = set()
        for w in where.pop(pair):
            old = words[w]
            new = _merge_word(old, pair, merged)
            if len(new) == len(old):
                continue  # stale index entry: the pair left this word in an earlier merge
            words[w] = new
            # re-count this word's pairs: -1 for each old pair, +1 for each new one
            delta: dict[tuple[str, str], int] = {}
            for p in zip(old, old[1:]):
                delta[p] = delta.get(p, 0) - 1
            for p in zip(new, new[1:]):
                delta[p] = delta.get(p, 0) + 1
                if p[0] == merged or p[1] == merged:  # only pairs with the new symbol are new here
                    where[p].add(w)
            f = freqs[w]
            for p, d in delta.items():
                if d and frozen not in p:
                    pair_count[p] += d * f
                    changed.add(p)
        pair_count.pop(pair, None)
        for p in changed:
            c = pair_count.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_count.pop(p, None)

    return merges


class _MergeRules:
    """What both BPE tokenizers share: learnt merges, applied lowest rank first, saved and loaded.
    A subclass says what a chunk's symbols are before any merge (``_symbols``)."""

    def _no_merges_yet(self, num_merges) -> None:
        if isinstance(num_merges, bool) or not isinstance(num_merges, int) or num_merges < 0:
            raise ValueError(f"num_merges must be an int >= 0, got {num_merges!r}")
        self.num_merges = num_merges
        self._set_merges([])

    def _extra_state(self) -> dict:
        return {"merges": [list(p) for p in self.merges]}

    def _read_merges(self, state: dict) -> None:
        merges = state.get("merges")
        if not isinstance(merges, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in merges):
            raise ValueError(f"a {type(self).__name__} file needs 'merges': a list of [left, right] string pairs")
        self._set_merges([tuple(p) for p in merges])
        missing = [a + b for a, b in self.merges if a + b not in self._token_to_id]
        if missing:
            raise ValueError(f"the merged token {missing[0]!r} is missing from the vocabulary")

    def _set_merges(self, merges: list[tuple[str, str]]) -> None:
        self.merges = list(merges)
        self._ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self._cache = {}

    def _check_num_merges(self, num_merges) -> None:
        if isinstance(num_merges, bool) or not isinstance(num_merges, int) or not 0 <= num_merges <= len(self.merges):
            raise ValueError(f"num_merges must be an int in 0 .. {len(self.merges)}, got {num_merges!r}")

    def _bpe(self, chunk: str) -> tuple[str, ...]:
        """Apply the merges to one chunk, lowest rank first (cached: chunks repeat a lot)."""
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        symbols = self._symbols(chunk)
        while len(symbols) > 1:
            rank, pair = min((self._ranks.get(p, len(self._ranks)), p) for p in zip(symbols, symbols[1:]))
            if rank == len(self._ranks):
                break  # no learnt merge applies
            symbols = _merge_word(symbols, pair, pair[0] + pair[1])
        if len(self._cache) < 200_000:
            self._cache[chunk] = symbols
        return symbols

    def tokenize(self, text: str) -> list[str]:
        """Sub-word token strings: the merged symbols of each chunk."""
        return [s for chunk in split_chunks(_check_text(text)) for s in self._bpe(chunk)]


class BPETokenizer(_MergeRules, Tokenizer):
    """Byte-pair encoding (字节对编码) on a character alphabet, trained from scratch.

    Training (Sennrich et al., 2016): start from characters, then ``num_merges`` times merge the most
    frequent adjacent pair of symbols into one new symbol. Ties go to the pair that sorts first
    (``min`` over ``(symbol_a, symbol_b)``), so training is deterministic. Merges stop early when no
    pair occurs at least twice. Characters seen fewer than ``min_freq`` times become ``<unk>`` and
    never take part in a merge.

    Speed: the text is pre-split into chunks (:func:`split_chunks`), each distinct chunk is stored once
    with its count, and after a merge only the chunks that contain the merged pair are re-counted;
    a heap with lazy deletion finds the most frequent pair.

    Encoding applies the learnt merges by rank (earliest first) inside each chunk, which reproduces the
    training segmentation.
    """

    def __init__(self, num_merges: int = 1000, min_freq: int = 2):
        super().__init__(min_freq)
        self._no_merges_yet(num_merges)

    def _config(self) -> dict:
        return {"num_merges": self.num_merges, "min_freq": self.min_freq}

    def _set_extra_state(self, state: dict) -> None:
        self._read_merges(state)

    # ---- training ------------------------------------------------------------------------------
    def train(self, texts: Iterable[str]) -> "BPETokenizer":
        texts = check_texts(texts, "train() texts", allow_empty_strings=False)
        chunk_counts = Counter(chunk for text in texts for chunk in split_chunks(text))
        char_counts: Counter = Counter()
        for chunk, c in chunk_counts.items():
            for ch in chunk:
                char_counts[ch] += c
        alphabet = {ch for ch, c in char_counts.items() if c >= self.min_freq}

        # distinct chunks as symbol tuples (rare characters -> <unk>), with their counts
        words = [tuple(ch if ch in alphabet else UNK for ch in chunk) for chunk in chunk_counts]
        freqs = list(chunk_counts.values())

        merges = learn_merges(words, freqs, self.num_merges, frozen=UNK)

        base = sorted(alphabet, key=lambda ch: (-char_counts[ch], ch))
        self._build_vocab(Counter(), extra_tokens=base + [a + b for a, b in merges])
        self._set_merges(merges)
        return self

    # ---- encoding ------------------------------------------------------------------------------
    def _symbols(self, chunk: str) -> tuple[str, ...]:
        """A chunk's characters before any merge; characters outside the alphabet become ``<unk>``."""
        return tuple(ch if ch in self._token_to_id else UNK for ch in chunk)

    def truncated(self, num_merges: int) -> "BPETokenizer":
        """The tokenizer that training with only the first ``num_merges`` merges would have given.

        BPE merges are learnt greedily one after another, so a smaller BPE is a prefix of a larger one:
        one training run gives the whole vocabulary-size curve.
        """
        self._check_num_merges(num_merges)
        small = BPETokenizer(num_merges=num_merges, min_freq=self.min_freq)
        small._build_vocab(Counter(), extra_tokens=self.alphabet + [a + b for a, b in self.merges[:num_merges]])
        small._set_merges(self.merges[:num_merges])
        return small

    @property
    def alphabet(self) -> list[str]:
        """The single characters of the vocabulary (the base alphabet), in id order."""
        # merged tokens are at least two characters long, so the length tells them apart
        return [t for t in self._id_to_token[len(SPECIAL_TOKENS):] if len(t) == 1]


def _bytes_to_symbols() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (Radford et al., 2019): printable Latin-1 bytes stand for
    themselves, the others (controls, space, 0x7F-0xA0, 0xAD) are moved to U+0100 and up. So every byte
    is one visible character, and a byte-level token is an ordinary str that JSON stores as it is."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_SYMBOLS: dict[int, str] = _bytes_to_symbols()  # byte -> its one-character symbol
SYMBOL_BYTES: dict[str, int] = {s: b for b, s in BYTE_SYMBOLS.items()}


def to_byte_symbols(text: str) -> tuple[str, ...]:
    """The UTF-8 bytes of ``text`` as byte symbols: ``'中'`` (3 bytes E4 B8 AD) -> ``('ä', '¸', 'Ń')``."""
    return tuple(BYTE_SYMBOLS[b] for b in _check_text(text).encode("utf-8"))


def symbols_to_bytes(token: str) -> bytes:
    """The bytes a byte-level token stands for (the inverse of :func:`to_byte_symbols`)."""
    try:
        return bytes(SYMBOL_BYTES[ch] for ch in token)
    except KeyError as err:
        raise ValueError(f"{token!r} is not a byte-level token: {err.args[0]!r} stands for no byte") from None


class ByteBPETokenizer(_MergeRules, Tokenizer):
    """Byte-level BPE (字节级 BPE), as in GPT-2: BPE on the UTF-8 bytes of the text.

    The base alphabet is the 256 bytes (ids 4 .. 259, in byte order), so every text has an encoding and
    ``decode(encode(text)) == text`` exactly, emoji and never-seen characters included: there is no
    ``<unk>``. A Chinese character is three bytes before any merge. Training is :func:`learn_merges`
    (the same trainer as :class:`BPETokenizer`) on the chunks of :func:`split_chunks`, spelt in byte
    symbols (:data:`BYTE_SYMBOLS`), so merges never cross whitespace or punctuation. Token strings are byte
    symbols; :meth:`token_bytes` gives the bytes, :meth:`decode` the text.
    """

    def __init__(self, num_merges: int = 1000):
        super().__init__(min_freq=1)
        self._no_merges_yet(num_merges)

    def _config(self) -> dict:
        return {"num_merges": self.num_merges}

    def _set_extra_state(self, state: dict) -> None:
        base = [BYTE_SYMBOLS[b] for b in range(256)]
        if self._id_to_token[len(SPECIAL_TOKENS):len(SPECIAL_TOKENS) + 256] != base:
            raise ValueError("a ByteBPETokenizer vocabulary must hold the 256 byte symbols right after the special tokens")
        self._read_merges(state)

    def train(self, texts: Iterable[str]) -> "ByteBPETokenizer":
        texts = check_texts(texts, "train() texts", allow_empty_strings=False)
        chunk_counts = Counter(chunk for text in texts for chunk in split_chunks(text))
        words = [to_byte_symbols(chunk) for chunk in chunk_counts]
        merges = learn_merges(words, list(chunk_counts.values()), self.num_merges)
        self._build_from_merges(merges)
        return self

    def _build_from_merges(self, merges: list[tuple[str, str]]) -> None:
        # the base alphabet is all 256 bytes, seen or not: that is what makes <unk> unnecessary
        tokens = [BYTE_SYMBOLS[b] for b in range(256)]
        self._id_to_token = list(SPECIAL_TOKENS)
        self._token_to_id = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        kept = []
        for token in tokens + [a + b for a, b in merges]:
            if token not in self._token_to_id:  # two merges can spell the same bytes
                self._token_to_id[token] = len(self._id_to_token)
                self._id_to_token.append(token)
        for a, b in merges:  # a merge may spell a special token's text ("<pad>"): it could not get an id
            if self._token_to_id[a + b] < len(SPECIAL_TOKENS):
                raise ValueError(f"a merge spells the special token {a + b!r}; train on text without it")
            kept.append((a, b))
        self._set_merges(kept)
        self.trained = True

    def _symbols(self, chunk: str) -> tuple[str, ...]:
        """A chunk's UTF-8 bytes (as byte symbols) before any merge: never ``<unk>``."""
        return to_byte_symbols(chunk)

    def token_bytes(self, index: int) -> bytes:
        """The bytes of token id ``index`` (a special token: its name in ASCII)."""
        token = self.id_to_token(index)
        return token.encode("ascii") if index < len(SPECIAL_TOKENS) else symbols_to_bytes(token)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text from ids: the tokens' bytes joined and read as UTF-8. Bytes that do not form a whole
        character (a sequence cut inside one) become U+FFFD, as in every byte-level tokenizer."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        parts, buffer = [], bytearray()
        for i in ids:
            token = self.id_to_token(i)
            if i < len(SPECIAL_TOKENS):  # id_to_token accepted it, so it is an int here
                parts.append(buffer.decode("utf-8", errors="replace"))
                buffer = bytearray()
                if not (skip_special_tokens and token in (PAD, BOS, EOS)):
                    parts.append(token)
            else:
                buffer += symbols_to_bytes(token)
        parts.append(buffer.decode("utf-8", errors="replace"))
        return "".join(parts)

    def truncated(self, num_merges: int) -> "ByteBPETokenizer":
        """The tokenizer that training with only the first ``num_merges`` merges would have given."""
        self._check_num_merges(num_merges)
        small = ByteBPETokenizer(num_merges=num_merges)
        small._build_from_merges(self.merges[:num_merges])
        return small


@lru_cache(maxsize=None)
def _t2s_table() -> dict[int, str]:
    """snownlp's offline traditional -> simplified table (``snownlp.normal.zh``), its one-character
    entries only, as a ``str.translate`` table: the text keeps its length and character positions.
    (A few traditional forms that GB2312 also holds, such as 後 and 於, are left as they are.)"""
    from snownlp.normal import zh

    def in_gb2312(ch: str) -> bool:  # GB2312 is the simplified character set of mainland China
        try:
            ch.encode("gb2312")
            return True
        except UnicodeEncodeError:
            return False

    # snownlp's table also maps some simplified characters (余 -> 馀, 著 -> 着): keep only the pairs whose
    # source is outside GB2312 and whose target is inside it
    return {ord(t): s for t, s in zh.zh2hans.items()
            if len(t) == 1 and len(s) == 1 and t != s and not in_gb2312(t) and in_gb2312(s)}


def to_simplified(text: str) -> str:
    """Traditional characters (繁体) -> simplified (简体), character by character with snownlp's table.

    A character-level table cannot resolve the one-to-many cases (乾 is 干 in 乾燥 but stays in 乾隆), so it
    is a normalisation for counting and vocabularies, not a faithful converter."""
    return _check_text(text).translate(_t2s_table())


def normalize_text(text: str, width: bool = True, simplified: bool = True) -> str:
    """Unicode normalisation before tokenizing. ``width``: NFKC (full-width ``ＡＢＣ１２３，`` -> half-width
    ``ABC123,``, compatibility forms such as ``…`` -> ``...``); ``simplified``: :func:`to_simplified`."""
    import unicodedata

    text = _check_text(text)
    if width:
        text = unicodedata.normalize("NFKC", text)
    return to_simplified(text) if simplified else text


__all__ = [
    "PAD", "UNK", "BOS", "EOS", "SPECIAL_TOKENS", "PAD_ID", "UNK_ID", "BOS_ID", "EOS_ID",
    "Tokenizer", "UnknownTokenIdError", "WhitespaceTokenizer", "CharTokenizer", "JiebaTokenizer", "BPETokenizer",
    "JIEBA_MODES", "split_chunks", "count_pairs", "merge_pair", "bpe_step", "forward_max_match",
    "learn_merges", "ByteBPETokenizer", "BYTE_SYMBOLS", "SYMBOL_BYTES", "to_byte_symbols", "symbols_to_bytes",
    "normalize_text", "to_simplified",
]
