"""NGramLM against hand-derived values, and the invariants every smoothing must keep."""
import math
import random

import pytest

from llmcourse import evaluate
from llmcourse.models import NGramLM
from llmcourse.models.ngram import BOS, EOS, UNK, review_char_sequences, review_char_vocab

TOY = ["aba", "bb"]  # padded: <bos> a b a <eos> | <bos> b b <eos>;  V = {a, b, <unk>, <eos>}


def random_corpus(seed=0, n_seq=40):
    rng = random.Random(seed)
    return [[rng.choice("abcdefg") for _ in range(rng.randint(0, 12))] for _ in range(n_seq)]


# ---- add-k ---------------------------------------------------------------------------------------
def test_add_one_bigram_matches_hand_counts():
    lm = NGramLM(2, smoothing="add-k", k=1).fit(TOY)
    assert set(lm.vocab) == {"a", "b", UNK, EOS}
    # bigram counts: (bos,a)=1 (a,b)=1 (b,a)=1 (a,eos)=1 (bos,b)=1 (b,b)=1 (b,eos)=1
    # context totals: c(bos)=2, c(a)=2, c(b)=3;  P(w|h) = (c(h,w) + 1) / (c(h) + 4)
    assert lm.prob("a", []) == pytest.approx((1 + 1) / (2 + 4))
    assert lm.prob("b", ["a"]) == pytest.approx((1 + 1) / (2 + 4))
    assert lm.prob(EOS, ["b"]) == pytest.approx((1 + 1) / (3 + 4))
    assert lm.prob("b", ["b"]) == pytest.approx((1 + 1) / (3 + 4))
    assert lm.prob(UNK, ["b"]) == pytest.approx((0 + 1) / (3 + 4))
    assert lm.prob("a", ["z"]) == pytest.approx(1 / 4)  # unseen context: uniform
    assert lm.log_prob("a", []) == pytest.approx(math.log(2 / 6))
    # the training corpus: 7 predicted tokens (5 symbols + 2 end tokens)
    probs = [2 / 6, 2 / 6, 2 / 7, 2 / 6, 2 / 6, 2 / 7, 2 / 7]
    mean_nll = -sum(math.log(p) for p in probs) / 7
    assert lm.total_nll(TOY) == (pytest.approx(mean_nll * 7), 7)
    assert lm.nll(TOY) == pytest.approx(mean_nll)
    assert lm.perplexity(TOY) == pytest.approx(math.exp(mean_nll))


def test_add_k_unigram_and_k_can_be_tuned_after_fit():
    lm = NGramLM(1, smoothing="add-k", k=0.5).fit(TOY)
    # unigram counts a=2, b=3, eos=2, unk=0; N = 7
    assert lm.prob("b", ["anything"]) == pytest.approx((3 + 0.5) / (7 + 0.5 * 4))
    lm.k = 2
    assert lm.prob(UNK) == pytest.approx((0 + 2) / (7 + 2 * 4))


# ---- Kneser–Ney ----------------------------------------------------------------------------------
def test_kneser_ney_bigram_matches_hand_derivation():
    D = 0.5
    lm = NGramLM(2, smoothing="kneser-ney", discount=D).fit(TOY)
    # unigram level = continuation counts N1+(• w): a <- {bos, b}: 2, b <- {a, bos, b}: 3,
    # eos <- {a, b}: 2, unk: 0; total 7, three types; the base is uniform 1/4.
    p1 = {w: (max(c - D, 0) + D * 3 * (1 / 4)) / 7 for w, c in {"a": 2, "b": 3, EOS: 2, UNK: 0}.items()}
    assert p1["a"] == pytest.approx(1.875 / 7)
    # bigram: c(a)=2 with followers {b:1, eos:1}; c(b)=3 with followers {a:1, b:1, eos:1}
    assert lm.prob("b", ["a"]) == pytest.approx((1 - D + D * 2 * p1["b"]) / 2)
    assert lm.prob("b", ["a"]) == pytest.approx(0.25 + 2.875 / 14)
    assert lm.prob("a", ["b"]) == pytest.approx((1 - D + D * 3 * p1["a"]) / 3)
    assert lm.prob(UNK, ["a"]) == pytest.approx(D * 2 * p1[UNK] / 2)
    assert lm.prob("a", ["never-seen"]) == pytest.approx(p1["a"])  # unseen context: the lower order


def test_kneser_ney_trigram_matches_hand_derivation_with_bos_contexts():
    D = 0.5
    lm = NGramLM(3, smoothing="kneser-ney", discount=D).fit(["ab", "ab", "b"])
    # trigrams: (bos,bos,a)=2 (bos,a,b)=2 (a,b,eos)=2 (bos,bos,b)=1 (bos,b,eos)=1
    # bigram level: context (bos) keeps raw counts {a:2, b:1} (only padding can precede it);
    #   (a) -> {b: 1}; (b) -> {eos: 2} (two left extensions, a and bos)
    # unigram level: N1+(• a)=1, N1+(• b)=2, N1+(• eos)=1; total 4, three types
    p1 = {w: (max(c - D, 0) + D * 3 / 4) / 4 for w, c in {"a": 1, "b": 2, EOS: 1, UNK: 0}.items()}
    assert p1 == pytest.approx({"a": 0.21875, "b": 0.46875, EOS: 0.21875, UNK: 0.09375})
    p2_a_bos = (2 - D + D * 2 * p1["a"]) / 3
    p2_eos_b = (2 - D + D * 1 * p1[EOS]) / 2
    assert lm.prob("a", []) == pytest.approx((2 - D + D * 2 * p2_a_bos) / 3)
    assert lm.prob("a", []) == pytest.approx(0.6909722222)
    assert lm.prob(EOS, ["a", "b"]) == pytest.approx((2 - D + D * 1 * p2_eos_b) / 2)
    assert lm.prob(EOS, ["b"]) == pytest.approx((1 - D + D * 1 * p2_eos_b) / 1)  # context (bos, b)


def test_estimated_discount_is_ney_formula():
    lm = NGramLM(2, smoothing="kneser-ney").fit(["ab", "ab", "b"])
    # bigram counts: (bos,a)=2 (a,b)=2 (b,eos)=3 (bos,b)=1 -> n1=1, n2=2 -> D = 1 / (1 + 4)
    assert lm.discounts()[1] == pytest.approx(1 / 5)
    # unigram continuation counts: a=1, b=2, eos=1 -> n1=2, n2=1 -> D = 2 / (2 + 2)
    assert lm.discounts()[0] == pytest.approx(2 / 4)


def test_switching_smoothing_after_fit_equals_fitting_with_it():
    corpus, held_out = random_corpus(6), random_corpus(7, n_seq=8)
    lm = NGramLM(3, smoothing="add-k", k=0.1).fit(corpus)
    lm.smoothing = "kneser-ney"
    assert lm.nll(held_out) == pytest.approx(NGramLM(3, smoothing="kneser-ney").fit(corpus).nll(held_out), rel=1e-12)
    lm.smoothing = "add-k"
    assert lm.nll(held_out) == pytest.approx(NGramLM(3, smoothing="add-k", k=0.1).fit(corpus).nll(held_out), rel=1e-12)
    with pytest.raises(ValueError, match="unknown smoothing"):
        lm.smoothing = "good-turing"


# ---- invariants of every smoothing ---------------------------------------------------------------
@pytest.mark.parametrize("smoothing,hyper", [("add-k", {"k": 1.0}), ("add-k", {"k": 0.01}),
                                             ("kneser-ney", {}), ("kneser-ney", {"discount": 0.9})])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_probabilities_sum_to_one_in_every_context(n, smoothing, hyper):
    corpus = random_corpus()
    lm = NGramLM(n, smoothing=smoothing, min_count=2, **hyper).fit(corpus + [list("xyz")])
    contexts = {tuple(seq[max(0, i - n + 1):i]) for seq in corpus for i in range(len(seq) + 1)}
    contexts |= {("x",), ("q", "q", "q"), ("a", UNK), (BOS,), ()}  # unknown, <unk> and padding
    for context in sorted(contexts):
        dist = lm.next_token_probs(list(context))
        assert sum(dist.values()) == pytest.approx(1.0, abs=1e-12), context
        assert min(dist.values()) > 0, context
        for token in ("a", "g", EOS, UNK):
            assert lm.prob(token, list(context)) == pytest.approx(dist[token], rel=1e-12)


@pytest.mark.parametrize("smoothing", ["add-k", "kneser-ney"])
def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(smoothing):
    # every token of V = {a, b, <unk>, <eos>} seen once: the unigram model is exactly uniform
    lm = NGramLM(1, smoothing=smoothing, k=3.0).fit([["a", "b", UNK]])
    assert len(lm.vocab) == 4
    assert lm.perplexity(["abba", "", "zzz"]) == pytest.approx(4.0)
    assert lm.perplexity(["ab"]) == pytest.approx(evaluate.perplexity_from_nll(math.log(4)))


@pytest.mark.parametrize("smoothing", ["add-k", "kneser-ney"])
def test_nll_is_the_mean_of_log_probs_over_tokens_and_end_tokens(smoothing):
    corpus = random_corpus(1)
    lm = NGramLM(3, smoothing=smoothing, k=0.1).fit(corpus)
    held_out = random_corpus(2, n_seq=5)
    manual = [-lm.log_prob(tok, seq[:i]) for seq in held_out for i, tok in enumerate(list(seq) + [EOS])]
    assert lm.nll(held_out) == pytest.approx(sum(manual) / len(manual))
    assert len(manual) == sum(len(s) + 1 for s in held_out)


def test_kneser_ney_beats_add_one_on_held_out_text():
    rng = random.Random(0)
    words = ["abc", "abd", "bcd", "cab", "dca"]
    corpus = ["".join(rng.choice(words) for _ in range(6)) for _ in range(200)]
    train, test = corpus[:180], corpus[180:]
    kn = NGramLM(3, smoothing="kneser-ney").fit(train).perplexity(test)
    add1 = NGramLM(3, smoothing="add-k", k=1).fit(train).perplexity(test)
    assert kn < add1


# ---- unknown tokens ------------------------------------------------------------------------------
def test_rare_tokens_map_to_unk():
    lm = NGramLM(2, smoothing="add-k", min_count=2).fit(["aab", "ac"])  # b and c seen once
    assert set(lm.vocab) == {"a", UNK, EOS}
    # training counts after mapping: (bos,a)=2 (a,a)=1 (a,unk)=2 (unk,eos)=2; c(a)=3
    assert lm.prob("b", ["a"]) == pytest.approx((2 + 1) / (3 + 3))
    assert lm.prob("never-seen", ["a"]) == lm.prob(UNK, ["a"])
    assert lm.prob(EOS, ["c"]) == lm.prob(EOS, [UNK]) == pytest.approx((2 + 1) / (2 + 3))
    assert lm.perplexity(["zzz"]) == lm.perplexity([[UNK, UNK, UNK]])


@pytest.mark.parametrize("smoothing", ["add-k", "kneser-ney"])
def test_fitting_raw_with_min_count_equals_fitting_premapped_sequences(smoothing):
    corpus = random_corpus(3) + [list("xy")]
    raw = NGramLM(3, smoothing=smoothing, min_count=2).fit(corpus)
    keep = set(raw.vocab)
    mapped = [[t if t in keep else UNK for t in seq] for seq in corpus]
    pre = NGramLM(3, smoothing=smoothing, min_count=1).fit(mapped)
    assert set(pre.vocab) == keep
    held_out = random_corpus(4, n_seq=10) + [list("xyz")]
    assert pre.nll(held_out) == pytest.approx(raw.nll(held_out), rel=1e-12)


def test_review_char_sequences_follow_the_book_convention():
    vocab = review_char_vocab()
    assert vocab == sorted(vocab) and UNK not in vocab and EOS not in vocab
    from collections import Counter
    from llmcourse.data.corpus import review_texts

    counts = Counter(ch for t in review_texts("train") for ch in t)
    assert set(vocab) == {ch for ch, c in counts.items() if c >= 2}
    test = review_char_sequences("test")
    texts = review_texts("test")
    assert len(test) == len(texts)
    assert all(len(s) == len(t) for s, t in zip(test, texts))
    assert any(UNK in s for s in test)
    assert review_char_sequences("val", add_end=True)[0][-1] == EOS
    with pytest.raises(ValueError, match="unknown split"):
        review_char_sequences("dev")


# ---- generation ----------------------------------------------------------------------------------
def test_generate_is_reproducible_and_stays_in_the_vocabulary():
    lm = NGramLM(3, smoothing="kneser-ney").fit(random_corpus(5))
    a, b = lm.generate(30, seed=7), lm.generate(30, seed=7)
    assert a == b and len(a) <= 30 and EOS not in a
    assert set(a) <= set(lm.vocab)
    assert lm.generate(0, seed=1) == []
    # a corpus that always spells "abc": the (near-)deterministic model spells it too
    det = NGramLM(3, smoothing="kneser-ney", discount=0.01).fit(["abc"] * 50)
    assert "".join(det.generate(10, seed=0)) == "abc"


# ---- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    ({"n": 0}, "n .*>= 1"), ({"n": 2.0}, "n .*>= 1"), ({"n": 2, "smoothing": "laplace"}, "unknown smoothing"),
    ({"n": 2, "k": 0}, "k .*> 0"), ({"n": 2, "k": -1}, "k .*> 0"), ({"n": 2, "k": float("nan")}, "k .*> 0"),
    ({"n": 2, "smoothing": "kneser-ney", "discount": 1.5}, "discount"),
    ({"n": 2, "smoothing": "kneser-ney", "discount": 0}, "discount"),
    ({"n": 2, "min_count": 0}, "min_count"),
])
def test_bad_hyperparameters_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NGramLM(**kwargs)


def test_bad_corpus_and_queries():
    with pytest.raises(ValueError, match="empty"):
        NGramLM(2).fit([])
    with pytest.raises(TypeError, match="single str"):
        NGramLM(2).fit("abc")
    with pytest.raises(TypeError, match="list or tuple"):
        NGramLM(2).fit([1, 2])
    with pytest.raises(TypeError, match="hashable"):
        NGramLM(2).fit([["a", ["b"]]])
    with pytest.raises(ValueError, match="reserved"):
        NGramLM(2).fit([["a", BOS]])
    with pytest.raises(RuntimeError, match="fit"):
        NGramLM(2).prob("a")
    lm = NGramLM(2).fit(TOY)
    with pytest.raises(ValueError, match="never predicted"):
        lm.prob(BOS, ["a"])
    with pytest.raises(TypeError, match="hashable"):
        lm.prob(["a"], [])
    with pytest.raises(TypeError, match="list or tuple"):
        lm.prob("a", 5)
    with pytest.raises(ValueError, match="empty"):
        lm.perplexity([])
    with pytest.raises(ValueError, match="n_tokens"):
        lm.generate(-1)
    with pytest.raises(ValueError, match="k"):
        lm.k = 0
