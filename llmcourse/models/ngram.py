"""Count-based n-gram language models (chapter 1), and the book's shared character-level corpus.

An n-gram model predicts each token from the ``n - 1`` tokens before it:

    P(x_1 … x_T <eos>) = ∏_t P(x_t | x_{t-n+1} … x_{t-1}),

with the sequence padded on the left by ``n - 1`` ``<bos>`` tokens and closed by one ``<eos>``
token, so the model also learns how sequences start and end. Counts alone (maximum likelihood) give
probability zero to every n-gram the training data lack, so a smoothing is always named:

* ``"add-k"``: add ``k`` to every count (``k = 1`` is Laplace smoothing),
  ``P(w | h) = (c(h, w) + k) / (c(h) + k |V|)``.
* ``"kneser-ney"``: interpolated Kneser–Ney (Kneser & Ney 1995; Chen & Goodman 1999). Subtract a
  discount ``D`` from every seen count and give the mass freed to a lower-order distribution built
  from *continuation counts* (how many different tokens precede an n-gram, not how often it occurs),
  recursively down to a uniform distribution over the vocabulary.

The vocabulary ``V`` of predicted tokens is every training token seen at least ``min_count`` times,
plus ``<unk>`` (all other tokens, in training and later) and ``<eos>``; ``<bos>`` is only ever context.

The shared perplexity convention of the book (chapter 1's table, extended by later chapters) is
character-level on the reviews: :func:`review_char_sequences` gives every chapter the same sequences.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from functools import lru_cache

import numpy as np

BOS = "<bos>"  # left padding: only ever in a context, never predicted
EOS = "<eos>"  # closes every sequence; predicted and counted in the perplexity
UNK = "<unk>"  # every token seen fewer than ``min_count`` times in training
SMOOTHINGS = ("add-k", "kneser-ney")
REVIEW_MIN_COUNT = 2  # the book's convention: characters seen < 2 times in train become <unk>


class NGramLM:
    """An n-gram language model over sequences of hashable tokens (characters, words, ids).

    >>> lm = NGramLM(2, smoothing="add-k", k=1.0).fit([list("abab"), list("ba")])
    >>> round(lm.prob("b", ["a"]), 4)  # (c(ab) + 1) / (c(a) + |V|) = (2 + 1) / (3 + 4)
    0.4286

    Args:
        n: order of the model (1 = unigram, 2 = bigram, …), at least 1.
        smoothing: ``"add-k"`` or ``"kneser-ney"`` (interpolated Kneser–Ney).
        k: the pseudo-count of add-k smoothing (> 0; 1 is Laplace).
        discount: Kneser–Ney's absolute discount ``D`` in (0, 1], the same for every order; ``None``
            estimates one per order from the training counts, ``D = n1 / (n1 + 2 n2)`` (Ney et al.
            1994), where ``n1``, ``n2`` count the n-grams seen once and twice.
        min_count: tokens seen fewer times than this in training map to ``<unk>``.

    ``smoothing``, ``k`` and ``discount`` are read when probabilities are asked for, so smoothings
    can be compared and tuned on validation data without counting again.
    """

    def __init__(self, n: int, smoothing: str = "add-k", *, k: float = 1.0,
                 discount: float | None = None, min_count: int = 1):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n (the order of the model) must be an int >= 1, got {n!r}")
        if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 1:
            raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
        self.n = n
        self._fitted = False
        self.smoothing = smoothing  # validated by the property setter
        self.min_count = min_count
        self.k = k  # validated by the property setter
        self.discount = discount

    # ---- hyper-parameters, validated whenever they are set -------------------------------------
    @property
    def smoothing(self) -> str:
        return self._smoothing

    @smoothing.setter
    def smoothing(self, value: str) -> None:
        if value not in SMOOTHINGS:
            raise ValueError(f"unknown smoothing {value!r}; expected one of {SMOOTHINGS}")
        self._smoothing = value
        if value == "kneser-ney" and self._fitted and not self._lower_orders_built:
            self._build_lower_orders()

    @property
    def k(self) -> float:
        return self._k

    @k.setter
    def k(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"k (the add-k pseudo-count) must be a finite number > 0, got {value!r}")
        self._k = float(value)

    @property
    def discount(self) -> float | None:
        return self._discount

    @discount.setter
    def discount(self, value: float | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 < value <= 1):
            raise ValueError(f"discount must be None (estimate it) or a number in (0, 1], got {value!r}")
        self._discount = None if value is None else float(value)

    # ---- training --------------------------------------------------------------------------------
    def fit(self, sequences: Iterable[Sequence[Hashable]]) -> "NGramLM":
        """Count the n-grams of ``sequences`` (a list of token lists, or of strings = characters)."""
        sequences = _check_corpus(sequences)
        token_counts: Counter = Counter()
        try:
            for seq in sequences:
                token_counts.update(seq)
        except TypeError as err:
            raise TypeError(f"tokens must be hashable (str, int, …): {err}") from None
        for reserved in (BOS, EOS):
            if reserved in token_counts:
                raise ValueError(f"the training data contain the reserved token {reserved!r}; "
                                 "the model adds the begin and end tokens itself")
        # The vocabulary keeps first-appearance order, so generation is reproducible for a seed.
        kept = [t for t, c in token_counts.items() if c >= self.min_count and t != UNK]
        self.vocab: list = kept + [UNK, EOS]
        self._index = {t: i for i, t in enumerate(self.vocab)}
        self.n_train_tokens = sum(token_counts.values())

        # Top-order counts, nested as counts[context][token]: the followers of a context are at hand
        # for the normaliser c(h), for N1+(h •), and for whole next-token distributions.
        flat: Counter = Counter()  # (x_{t-n+1}, …, x_t) -> count; zip does the sliding in C
        pad = [BOS] * (self.n - 1)
        for seq in sequences:
            padded = pad + [t if t in self._index else UNK for t in seq] + [EOS]
            flat.update(zip(*(padded[j:] for j in range(self.n))))
        top: dict[tuple, dict] = {}
        for gram, count in flat.items():
            followers = top.get(gram[:-1])
            if followers is None:
                followers = top[gram[:-1]] = {}
            followers[gram[-1]] = count

        # levels[m] holds the counts used at order m + 1 (m + 1 tokens: m of context, 1 predicted).
        self._levels: list[dict[tuple, dict]] = [dict() for _ in range(self.n)]
        self._levels[-1] = top
        self._totals = [dict() for _ in range(self.n)]
        self._totals[-1] = {h: sum(f.values()) for h, f in top.items()}
        self._estimated_discounts = [0.75] * self.n
        self._estimated_discounts[-1] = _ney_discount(top)
        self._lower_orders_built = self.n == 1
        self._fitted = True
        if self.smoothing == "kneser-ney":
            self._build_lower_orders()
        return self

    def _build_lower_orders(self) -> None:
        """Kneser–Ney's lower orders, from the top-order counts: continuation counts N1+(• h w)."""
        for m in range(self.n - 2, -1, -1):
            lower: dict[tuple, dict] = {}
            for context, followers in self._levels[m + 1].items():
                short = context[1:]
                bucket = lower.get(short)
                if bucket is None:
                    bucket = lower[short] = {}
                # One per distinct left extension. An n-gram starting with <bos> can only be
                # extended by more padding, so (as in KenLM) it keeps its plain count.
                raw = bool(short) and short[0] == BOS
                for token, count in followers.items():
                    bucket[token] = bucket.get(token, 0) + (count if raw else 1)
            self._levels[m] = lower
            self._totals[m] = {h: sum(f.values()) for h, f in lower.items()}
            self._estimated_discounts[m] = _ney_discount(lower)
        self._lower_orders_built = True

    # ---- probabilities -------------------------------------------------------------------------
    def discounts(self) -> list[float]:
        """The Kneser–Ney discount used at each order 1 … n (fixed, or estimated from the counts)."""
        self._check_fitted()
        if self._discount is not None:
            return [self._discount] * self.n
        if not self._lower_orders_built:
            self._build_lower_orders()
        return list(self._estimated_discounts)

    def prob(self, token: Hashable, context: Sequence[Hashable] = ()) -> float:
        """P(token | context). A shorter context than ``n - 1`` tokens means "at the start".

        A token outside the vocabulary gets the probability of ``<unk>`` (the class of all rare tokens).
        """
        self._check_fitted()
        return self._prob(self._token_id(token), self._context_key(context))

    def log_prob(self, token: Hashable, context: Sequence[Hashable] = ()) -> float:
        """Natural log of :meth:`prob`."""
        return math.log(self.prob(token, context))

    def next_token_probs(self, context: Sequence[Hashable] = ()) -> dict:
        """The whole distribution P(· | context) over the vocabulary (it sums to 1)."""
        self._check_fitted()
        probs = self._distribution(self._context_key(context))
        return dict(zip(self.vocab, probs.tolist()))

    def nll(self, sequences: Iterable[Sequence[Hashable]]) -> float:
        """Mean negative log-likelihood (nats) per predicted token, every ``<eos>`` included."""
        total, count = self.total_nll(sequences)
        return total / count

    def perplexity(self, sequences: Iterable[Sequence[Hashable]]) -> float:
        """exp(mean negative log-likelihood per predicted token), the end tokens included."""
        return math.exp(self.nll(sequences))

    def total_nll(self, sequences: Iterable[Sequence[Hashable]]) -> tuple[float, int]:
        """Summed negative log-likelihood (nats) and the number of predicted tokens."""
        self._check_fitted()
        sequences = _check_corpus(sequences)
        total, count = 0.0, 0
        pad = [BOS] * (self.n - 1)
        for seq in sequences:
            try:
                padded = pad + [t if t in self._index else UNK for t in seq] + [EOS]
            except TypeError as err:
                raise TypeError(f"tokens must be hashable (str, int, …): {err}") from None
            total += self._sum_nll(zip(*(padded[j:] for j in range(self.n))))
            count += len(seq) + 1
        return total, count

    def token_nlls(self, sequences: Iterable[Sequence[Hashable]]) -> list[float]:
        """The negative log-likelihood (nats) of every predicted token, each sequence's tokens and then its
        ``<eos>``, in order: the per-token values behind :meth:`total_nll` (to interpolate with another model)."""
        self._check_fitted()
        pad, out = [BOS] * (self.n - 1), []
        for seq in _check_corpus(sequences):
            padded = pad + [t if t in self._index else UNK for t in seq] + [EOS]
            out += [self._sum_nll([gram]) for gram in zip(*(padded[j:] for j in range(self.n)))]
        return out

    def _sum_nll(self, grams) -> float:
        """-sum log P(w | h) over n-gram tuples (h..., w): :meth:`_prob` inlined, as evaluation is hot."""
        n, log, total = self.n, math.log, 0.0
        if self.smoothing == "add-k":
            top, totals, k = self._levels[-1], self._totals[-1], self._k
            k_v = self._k * len(self.vocab)
            for gram in grams:
                h = gram[:-1]
                followers = top.get(h)
                count = followers.get(gram[-1], 0) if followers is not None else 0
                total -= log((count + k) / (totals.get(h, 0) + k_v))
            return total
        levels, totals_by_order = self._levels, self._totals
        discounts = self._estimated_discounts if self._discount is None else [self._discount] * n
        uniform = 1.0 / len(self.vocab)
        for gram in grams:
            token, p = gram[-1], uniform
            for m in range(n):
                h = gram[n - 1 - m:n - 1]
                followers = levels[m].get(h)
                if followers is None:
                    continue
                d = discounts[m]
                p = (max(followers.get(token, 0) - d, 0.0) + d * len(followers) * p) / totals_by_order[m][h]
            total -= log(p)
        return total

    # ---- generation ----------------------------------------------------------------------------
    def generate(self, n_tokens: int, seed: int = 0, prompt: Sequence[Hashable] = ()) -> list:
        """Sample up to ``n_tokens`` tokens after ``prompt`` (stops early at ``<eos>``, not returned)."""
        self._check_fitted()
        if not isinstance(n_tokens, int) or isinstance(n_tokens, bool) or n_tokens < 0:
            raise ValueError(f"n_tokens must be an int >= 0, got {n_tokens!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        rng = random.Random(seed)  # our own generator: the global random state is left alone
        history = [BOS] * (self.n - 1) + [t if t in self._index else UNK for t in _check_sequence(prompt)]
        out: list = []
        for _ in range(n_tokens):
            context = tuple(history[len(history) - self.n + 1:]) if self.n > 1 else ()
            token = rng.choices(self.vocab, weights=self._distribution(context).tolist())[0]
            if token == EOS:
                break
            out.append(token)
            history.append(token)
        return out

    # ---- internals -----------------------------------------------------------------------------
    def _prob(self, token, context: tuple) -> float:
        """P(token | context) for a mapped token and a context of exactly n - 1 mapped tokens."""
        if self.smoothing == "add-k":
            followers = self._levels[-1].get(context)
            count = followers.get(token, 0) if followers is not None else 0
            total = self._totals[-1].get(context, 0)
            return (count + self._k) / (total + self._k * len(self.vocab))
        # Interpolated Kneser–Ney, from the uniform distribution up to order n:
        # P_m(w | h) = (max(c_m(h, w) - D, 0) + D N1+(h •) P_{m-1}(w | h')) / c_m(h),
        # and P_m = P_{m-1} when the context h was never seen at order m.
        discounts = self._estimated_discounts if self._discount is None else [self._discount] * self.n
        p = 1.0 / len(self.vocab)
        for m in range(self.n):
            h = context[len(context) - m:] if m else ()
            followers = self._levels[m].get(h)
            if followers is None:
                continue
            d = discounts[m]
            p = (max(followers.get(token, 0) - d, 0.0) + d * len(followers) * p) / self._totals[m][h]
        return p

    def _distribution(self, context: tuple) -> np.ndarray:
        """P(· | context) over ``self.vocab`` as an array (same formulas as :meth:`_prob`)."""
        size = len(self.vocab)
        if self.smoothing == "add-k":
            followers = self._levels[-1].get(context, {})
            total = self._totals[-1].get(context, 0)
            probs = np.full(size, self._k)
            for token, count in followers.items():
                probs[self._index[token]] += count
            return probs / (total + self._k * size)
        discounts = self._estimated_discounts if self._discount is None else [self._discount] * self.n
        probs = np.full(size, 1.0 / size)
        for m in range(self.n):
            h = context[len(context) - m:] if m else ()
            followers = self._levels[m].get(h)
            if followers is None:
                continue
            d, total = discounts[m], self._totals[m][h]
            probs *= d * len(followers) / total
            for token, count in followers.items():
                probs[self._index[token]] += max(count - d, 0.0) / total
        return probs

    def _token_id(self, token) -> Hashable:
        _check_token(token)
        if token == BOS:
            raise ValueError(f"{BOS!r} is never predicted (it only pads contexts); ask about a real token or {EOS!r}")
        return token if token in self._index else UNK

    def _context_key(self, context: Sequence[Hashable]) -> tuple:
        context = _check_sequence(context, "context")
        if self.n == 1:
            return ()
        mapped = [t if (t in self._index or t == BOS) else UNK for t in context]
        mapped = [BOS] * (self.n - 1) + mapped  # a short context is the start of a sequence
        return tuple(mapped[len(mapped) - self.n + 1:])

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError("this NGramLM is not fitted yet; call fit(sequences) first")

    def __repr__(self) -> str:
        hyper = f"k={self._k}" if self.smoothing == "add-k" else f"discount={self._discount}"
        size = f", |V|={len(self.vocab)}" if self._fitted else ""
        return f"NGramLM(n={self.n}, smoothing={self.smoothing!r}, {hyper}, min_count={self.min_count}{size})"


def _ney_discount(level: dict[tuple, dict]) -> float:
    """D = n1 / (n1 + 2 n2) from the count-of-counts; 0.75 if an order lacks singletons."""
    n1 = n2 = 0
    for followers in level.values():
        for count in followers.values():
            n1 += count == 1
            n2 += count == 2
    return n1 / (n1 + 2 * n2) if n1 else 0.75


def _check_token(token) -> None:
    if not isinstance(token, Hashable):
        raise TypeError(f"tokens must be hashable (str, int, …), got {type(token).__name__}")


def _check_sequence(seq, what: str = "sequence", check_tokens: bool = True) -> Sequence:
    if isinstance(seq, str):
        return seq  # a string is a sequence of characters
    if not isinstance(seq, (list, tuple)):
        raise TypeError(f"each {what} must be a list or tuple of tokens (or a str of characters), "
                        f"got {type(seq).__name__}")
    if check_tokens:
        for token in seq:
            _check_token(token)
    return seq


def _check_corpus(sequences) -> list:
    if isinstance(sequences, (str, bytes)):
        raise TypeError("expected a collection of sequences (e.g. a list of strings), got a single "
                        f"{type(sequences).__name__}; wrap it in a list")
    try:
        sequences = list(sequences)
    except TypeError:
        raise TypeError(f"expected an iterable of token sequences, got {type(sequences).__name__}") from None
    if not sequences:
        raise ValueError("the corpus is empty: pass at least one sequence of tokens")
    for seq in sequences:
        # Tokens are checked where they are hashed (one pass, not two over a million tokens).
        _check_sequence(seq, check_tokens=False)
    return sequences


# ---- the book's character-level review corpus (shared by every chapter's perplexity) -------------
@lru_cache(maxsize=None)
def _review_char_vocab(min_count: int) -> tuple[str, ...]:
    from llmcourse.data.corpus import review_texts

    counts = Counter(ch for text in review_texts("train") for ch in text)
    return tuple(sorted(ch for ch, c in counts.items() if c >= min_count))


def review_char_vocab(min_count: int = REVIEW_MIN_COUNT) -> list[str]:
    """The characters seen at least ``min_count`` times in the training reviews, sorted.

    With the default this is the book's character vocabulary; add ``<unk>`` and ``<eos>`` (and
    ``<bos>`` as an input) for the full token set of a model.
    """
    if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    return list(_review_char_vocab(min_count))


def review_char_sequences(split: str, vocab: Iterable[str] | None = None, add_end: bool = False) -> list[list[str]]:
    """The reviews of ``split`` as character lists, characters outside ``vocab`` mapped to ``<unk>``.

    This is the book's shared perplexity corpus: ``vocab`` defaults to :func:`review_char_vocab`
    (characters seen at least twice in ``train``); every model predicts each character and one
    ``<eos>`` per review (``add_end=True`` appends it here, for models that do not add it themselves),
    and perplexity = exp(mean negative log-likelihood per predicted token) over the whole split.
    """
    from llmcourse.data.corpus import review_texts

    keep = set(review_char_vocab() if vocab is None else vocab)
    if not keep:
        raise ValueError("vocab is empty; pass the characters to keep, or None for the book's vocabulary")
    end = [EOS] if add_end else []
    return [[ch if ch in keep else UNK for ch in text] + end for text in review_texts(split)]
