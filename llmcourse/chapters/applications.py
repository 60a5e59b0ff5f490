"""Applications (应用场景) of the book's small models, and the measurements that judge them.

* Retrieval (信息检索) for retrieval-based question answering: :class:`BM25` (Robertson et al.; the
  ranking function of Lucene and Elasticsearch) and a TF-IDF cosine baseline (:class:`TfidfRetriever`),
  both inverted indexes over character n-grams (:func:`char_ngrams`), with the measures
  :func:`ranks_of`, :func:`recall_at_k`, :func:`mean_reciprocal_rank` and their random baselines, and
  :func:`noisy_fragment` to build honest known-item queries from held-out texts.
* Extractive summarisation (抽取式摘要): :func:`split_sentences` and :func:`textrank` (Mihalcea & Tarau,
  2004; BM25 similarities between sentences, as ``snownlp`` does), and keywords (关键词) with
  :func:`keyword_textrank` (the word graph of ``jieba.analyse.textrank``); both rank by :func:`pagerank`,
  solved exactly, and break ties the same way on every machine (:func:`first_best`, :data:`TIE_DECIMALS`).
* Classification: :func:`explain`, the n-grams that pushed a bag-of-words decision
  (:class:`llmcourse.models.bow.BowLogisticRegression`) one way or the other (the confusion matrix and
  precision/recall/F1 are in :mod:`llmcourse.evaluate`).
* Generation: :func:`complete` (conditional generation: continue given prefixes), :func:`cut_at_eos`,
  :func:`ngram_overlap` (how much of a sample is copied from the training texts) and
  :func:`best_of_n_indices`.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

import torch

from llmcourse import generate
from llmcourse.core.checks import check_int, check_texts
from llmcourse.models.bow import ngrams


# ---- checks --------------------------------------------------------------------------------------
# ---- retrieval -----------------------------------------------------------------------------------
def char_ngrams(text: str, n_values: Sequence[int] = (1, 2)) -> list[str]:
    """Character n-grams of ``text`` (with repeats), the usual index terms for Chinese without a
    segmenter: ``char_ngrams("很好", (1, 2))`` -> ``['很', '好', '很 好']``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return ngrams(list(text), n_values)


class _InvertedIndex:
    """Shared machinery of the two retrievers: an inverted index (倒排索引). For every term t it keeps
    its *postings*, the documents d that contain t with a weight ``w_{t,d}``; a query with term weights
    ``q_t`` scores document d as ``Σ_t q_t · w_{t,d}``, so only the postings of the query's terms are
    read, never the whole collection. Subclasses define the two weights."""

    def __init__(self, tokenize: Callable[[str], list[str]] | None = None) -> None:
        if tokenize is not None and not callable(tokenize):
            raise TypeError("tokenize must be a function str -> list[str]")
        self.tokenize = tokenize if tokenize is not None else char_ngrams
        self.vocab: dict[str, int] | None = None

    def _doc_weights(self, term: torch.Tensor, doc: torch.Tensor, tf: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _query_weights(self, counts: Counter) -> dict[str, float]:
        raise NotImplementedError

    def fit(self, docs: Sequence[str]):
        """Index ``docs`` (a list of texts); returns ``self``."""
        docs = check_texts(docs, "docs")
        vocab: dict[str, int] = {}
        term_ids, doc_ids, counts, lengths = [], [], [], []
        for d, text in enumerate(docs):
            terms = self.tokenize(text)
            lengths.append(len(terms))
            for term, count in Counter(terms).items():
                term_ids.append(vocab.setdefault(term, len(vocab)))
                doc_ids.append(d)
                counts.append(count)
        self.vocab, self.n_docs = vocab, len(docs)
        self.doc_len = torch.tensor(lengths, dtype=torch.float64)  # (N,) terms per document
        term = torch.tensor(term_ids, dtype=torch.long)  # (P,) one entry per (term, document) pair
        order = torch.sort(term, stable=True).indices  # postings grouped by term, documents in order
        self.df = torch.bincount(term, minlength=len(vocab))  # (V,) documents containing each term
        self.ptr = [0] + torch.cumsum(self.df, 0).tolist()  # postings of term t: ptr[t] .. ptr[t + 1]
        self.post_doc = torch.tensor(doc_ids, dtype=torch.long)[order]  # (P,)
        tf = torch.tensor(counts, dtype=torch.float64)[order]  # (P,) count of the term in the document
        self.post_weight = self._doc_weights(term[order], self.post_doc, tf)  # (P,)
        return self

    def scores(self, query: str) -> torch.Tensor:
        """Score of every indexed document for ``query`` (n_docs,), float64; 0 where no term matches."""
        if self.vocab is None:
            raise RuntimeError("call fit(docs) before scoring")
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        out = torch.zeros(self.n_docs, dtype=torch.float64)
        for term, q in self._query_weights(Counter(self.tokenize(query))).items():
            t = self.vocab.get(term)
            if t is None:  # a term no document contains adds nothing
                continue
            s, e = self.ptr[t], self.ptr[t + 1]
            out.index_add_(0, self.post_doc[s:e], q * self.post_weight[s:e])
        return out

    def search(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` best documents as ``(doc id, score)``, best first (ties: lower id first)."""
        check_int("k", k, 1)
        s = self.scores(query)
        order = torch.sort(s, descending=True, stable=True).indices[:k].tolist()  # stable: ties keep id order
        return [(d, float(s[d])) for d in order]


class BM25(_InvertedIndex):
    """Okapi BM25 (Robertson & Zaragoza, 2009). A document d scores, for a query with terms t (a
    repeated query term counts each time),

        score(q, d) = Σ_t idf(t) · f(t, d) (k1 + 1) / (f(t, d) + k1 (1 - b + b |d| / avgdl))

    with f(t, d) the count of t in d, |d| its number of terms and avgdl the mean over the collection.
    ``k1`` makes repeated terms saturate (a term's contribution tends to idf · (k1 + 1)); ``b`` divides
    by the document length relative to the average (b = 0: no length normalisation). ``idf="lucene"``
    is ``log(1 + (N - n + 0.5) / (n + 0.5))`` (never negative; Lucene's); ``idf="robertson"`` is the
    classic ``log((N - n + 0.5) / (n + 0.5))``, negative for terms in more than half the documents
    (snownlp's). N = number of documents, n = documents containing t.
    """

    def __init__(self, k1: float = 1.5, b: float = 0.75, idf: str = "lucene",
                 tokenize: Callable[[str], list[str]] | None = None) -> None:
        super().__init__(tokenize)
        if isinstance(k1, bool) or not isinstance(k1, (int, float)) or not k1 >= 0:
            raise ValueError(f"k1 must be a number >= 0, got {k1!r}")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b <= 1:
            raise ValueError(f"b must be a number in [0, 1], got {b!r}")
        if idf not in ("lucene", "robertson"):
            raise ValueError(f"idf must be 'lucene' or 'robertson', got {idf!r}")
        self.k1, self.b, self.idf_kind = float(k1), float(b), idf

    def idf(self, n: torch.Tensor) -> torch.Tensor:
        """Inverse document frequency of terms found in ``n`` of the N documents (any shape)."""
        ratio = (self.n_docs - n.double() + 0.5) / (n.double() + 0.5)
        return torch.log1p(ratio) if self.idf_kind == "lucene" else torch.log(ratio)

    def _doc_weights(self, term, doc, tf):
        # The document's side of each term's contribution does not depend on the query: once, here.
        self.avgdl = self.doc_len.mean().item()
        norm = self.k1 * (1 - self.b + self.b * self.doc_len / max(self.avgdl, 1e-12))  # (N,)
        return self.idf(self.df)[term] * tf * (self.k1 + 1) / (tf + norm[doc])

    def _query_weights(self, counts: Counter) -> dict[str, float]:
        return {t: float(c) for t, c in counts.items()}


class TfidfRetriever(_InvertedIndex):
    """TF-IDF with cosine similarity: a document is the vector ``f(t, d) · idf(t)``, with the smoothed
    ``idf(t) = log((1 + N) / (1 + n)) + 1``, scaled to unit length; the query likewise; the score is
    their dot product (the cosine). No saturation of repeated terms, and length enters only through
    the normalisation: the two things BM25 adds."""

    def idf(self, n: torch.Tensor) -> torch.Tensor:
        return torch.log((1 + self.n_docs) / (1 + n.double())) + 1.0

    def _doc_weights(self, term, doc, tf):
        w = tf * self.idf(self.df)[term]  # (P,)
        sq = torch.zeros(self.n_docs, dtype=torch.float64).index_add_(0, doc, w * w)  # squared norms (N,)
        return w / sq.sqrt().clamp(min=1e-12)[doc]

    def _query_weights(self, counts: Counter) -> dict[str, float]:
        # a term no document contains has n = 0 and still lengthens the query vector
        n = torch.tensor([int(self.df[self.vocab[t]]) if t in self.vocab else 0 for t in counts])
        w = torch.tensor([float(c) for c in counts.values()], dtype=torch.float64) * self.idf(n)
        w = w / w.norm().clamp(min=1e-12)
        return dict(zip(counts, w.tolist()))


def ranks_of(scores: torch.Tensor, relevant: Sequence[int]) -> torch.Tensor:
    """1-based rank of each query's relevant document (Q,) from scores (Q, N). Ties are counted
    against the method: rank = 1 + the number of *other* documents scoring at least as high, so a
    query that matches nothing (all scores equal) gets rank N, not a lucky rank 1."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError("scores must be a (Q, N) tensor: one row of document scores per query")
    rel = torch.as_tensor(list(relevant), dtype=torch.long)
    if rel.shape != (scores.size(0),):
        raise ValueError(f"relevant must hold one document id per query ({scores.size(0)}), got {tuple(rel.shape)}")
    if bool(scores.isnan().any()):
        raise ValueError("scores hold NaN: a NaN compares as neither higher nor lower, so ranks would be "
                         "meaningless; check the retriever's scores (e.g. 0/0 in a normalisation)")
    if rel.numel() and (rel.min() < 0 or rel.max() >= scores.size(1)):
        raise ValueError(f"relevant ids must be in [0, {scores.size(1)}), the documents scored")
    own = scores.gather(1, rel[:, None])  # (Q, 1)
    return (scores >= own).sum(dim=1)  # counts the document itself once: 1 + others at least as high


def _check_ranks(ranks) -> torch.Tensor:
    ranks = torch.as_tensor(ranks)
    if ranks.dim() != 1 or ranks.numel() == 0 or ranks.is_floating_point() or bool((ranks < 1).any()):
        raise ValueError("ranks must be a non-empty 1-D tensor of 1-based integer ranks")
    return ranks


def recall_at_k(ranks, k: int) -> float:
    """Share of queries whose relevant document is among the top ``k`` (one relevant document each)."""
    check_int("k", k, 1)
    return (_check_ranks(ranks) <= k).double().mean().item()


def mean_reciprocal_rank(ranks) -> float:
    """MRR: the mean over queries of 1 / rank of the relevant document."""
    return (1.0 / _check_ranks(ranks).double()).mean().item()


def random_recall_at_k(n_docs: int, k: int) -> float:
    """Expected recall@k of a random ranking of ``n_docs`` documents: k / N."""
    check_int("n_docs", n_docs, 1)
    return min(check_int("k", k, 1), n_docs) / n_docs


def random_mrr(n_docs: int) -> float:
    """Expected MRR of a random ranking: the rank is uniform on 1..N, so (1/N) Σ 1/r = H_N / N."""
    check_int("n_docs", n_docs, 1)
    return sum(1.0 / r for r in range(1, n_docs + 1)) / n_docs


def noisy_fragment(text: str, length: int, noise: float, alphabet: str, generator: torch.Generator) -> str:
    """A query built from a document: a random span of ``length`` characters (the whole text if
    shorter), each character then replaced, with probability ``noise``, by one drawn uniformly from
    ``alphabet`` (typos, other wording). The document it came from is the one relevant answer."""
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty str")
    check_int("length", length, 1)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
        raise ValueError(f"noise must be a probability in [0, 1], got {noise!r}")
    if not isinstance(alphabet, str) or not alphabet:
        raise ValueError("alphabet must be a non-empty str of replacement characters")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a seeded torch.Generator, got {type(generator).__name__}")
    start = int(torch.randint(max(1, len(text) - length + 1), (1,), generator=generator))
    span = list(text[start: start + length])
    replace = torch.rand(len(span), generator=generator) < noise
    picks = torch.randint(len(alphabet), (len(span),), generator=generator)
    return "".join(alphabet[p] if r else c for c, r, p in zip(span, replace.tolist(), picks.tolist()))


# ---- extractive summarisation --------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;…])|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences of a Chinese text: cut after 。！？!?；;… (kept) and at line breaks; blanks dropped."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def textrank(sentences: Sequence[str], damping: float = 0.85, retriever: _InvertedIndex | None = None) -> torch.Tensor:
    """TextRank centrality of each sentence (S,), float64: PageRank on the graph whose edge j -> i
    has weight ``w_ji`` = the BM25 score of sentence i for sentence j as the query, i.e. the solution of

        v_i = (1 - d) + d Σ_{j≠i} w_ji / (Σ_{k≠j} w_jk) · v_j,

    found exactly with one linear solve. A sentence that shares words with many others scores high.
    (A sentence with no weight to share passes none on.) ``retriever`` defaults to ``BM25()``."""
    sentences = check_texts(sentences, "sentences")
    index = (retriever if retriever is not None else BM25()).fit(sentences)
    W = torch.stack([index.scores(s) for s in sentences])  # (S, S): row j = sentence j as the query
    W.fill_diagonal_(0.0)
    return pagerank(W, damping)


# Scores equal to this many decimals are ties. Symmetric nodes of a graph get the same PageRank, but a
# linear solve's last digits differ from one CPU's LAPACK to another's: rounding first makes the first
# node win a tie on every machine (a quarter of the reviews' keyword graphs tie at the top-5 cut).
TIE_DECIMALS = 10


def first_best(scores: torch.Tensor) -> int:
    """Index of the highest of ``scores`` (N,); of scores equal to :data:`TIE_DECIMALS` decimals, the first."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1 or scores.numel() == 0:
        raise ValueError(f"scores must be a non-empty 1-D tensor, got {getattr(scores, 'shape', type(scores))}")
    return int(torch.round(scores.double(), decimals=TIE_DECIMALS).argmax())  # argmax: the first maximum


def pagerank(weights: torch.Tensor, damping: float = 0.85) -> torch.Tensor:
    """Weighted PageRank (N,), float64, solved exactly: v = (1 - d) 1 + d M^T v with M the rows of
    ``weights`` (N, N; row j = what node j gives to each node) divided by their sums. A node with no
    weight to give passes none on. (Negative weights, as snownlp's BM25 idf gives, are allowed.)"""
    if not isinstance(weights, torch.Tensor) or weights.dim() != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"weights must be a square (N, N) tensor, got {getattr(weights, 'shape', type(weights))}")
    if not torch.isfinite(weights).all():
        raise ValueError("weights must be finite")
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not 0 <= damping < 1:
        raise ValueError(f"damping must be a number in [0, 1), got {damping!r}")
    W = weights.double()
    out = W.sum(dim=1, keepdim=True)  # (N, 1) total weight each node gives away
    M = torch.where(out != 0, W / torch.where(out != 0, out, torch.ones_like(out)), torch.zeros_like(W))
    # v = (1 - d) 1 + d M^T v  <=>  (I - d M^T) v = (1 - d) 1
    A = torch.eye(len(W), dtype=torch.float64) - damping * M.T
    return torch.linalg.solve(A, torch.full((len(W),), 1.0 - damping, dtype=torch.float64))


def keyword_textrank(words: Sequence[str], keep: Sequence[bool], window: int = 5,
                     damping: float = 0.85) -> list[tuple[str, float]]:
    """TextRank keywords (Mihalcea & Tarau, 2004): the words of the graph ranked, best first (ties to
    :data:`TIE_DECIMALS` decimals: first seen, as in jieba's stable sort).

    The graph is the one ``jieba.analyse.textrank`` builds: a kept word and each kept word among the
    next ``window - 1`` tokens add 1 to their edge in both directions (a word paired with itself adds
    2 to its self-loop, as there); then :func:`pagerank`, solved exactly rather than in 10 sweeps.
    ``keep[i]`` says whether token i may be a keyword (jieba keeps nouns and verbs of two or more
    characters that are not stop words)."""
    if len(words) != len(keep):
        raise ValueError(f"words and keep must have the same length, got {len(words)} and {len(keep)}")
    check_int("window", window, 2)
    pairs = [(words[i], words[j]) for i in range(len(words)) if keep[i]
             for j in range(i + 1, min(i + window, len(words))) if keep[j]]
    nodes: dict[str, int] = {}
    for w in (w for pair in pairs for w in pair):  # a word with no kept neighbour is not in the graph
        nodes.setdefault(w, len(nodes))
    if not nodes:
        return []
    W = torch.zeros(len(nodes), len(nodes), dtype=torch.float64)
    for a, b in pairs:
        W[nodes[a], nodes[b]] += 1
        W[nodes[b], nodes[a]] += 1
    v = pagerank(W, damping).tolist()
    # sorted() is stable: words whose scores agree to TIE_DECIMALS decimals stay in the order first seen
    return sorted(((w, v[n]) for w, n in nodes.items()), key=lambda item: -round(item[1], TIE_DECIMALS))


# ---- explaining a classifier ---------------------------------------------------------------------
def explain(classifier, text: str, k: int = 3) -> dict[str, list[tuple[str, float]]]:
    """Why a bag-of-words classifier decided as it did: the ``k`` n-grams *present in* ``text`` with the
    largest positive and the largest negative weights (the decision is the bias plus the sum of all
    present weights)."""
    if getattr(classifier, "weight", None) is None or getattr(classifier, "vocab", None) is None:
        raise TypeError("classifier must be a fitted llmcourse.models.bow.BowLogisticRegression")
    check_int("k", k, 1)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    ids, _ = classifier.features([text])  # ids of the known n-grams in the text
    names = list(classifier.vocab)
    present = sorted(((names[i], float(classifier.weight[i])) for i in ids.tolist()), key=lambda nw: -nw[1])
    return {"positive": [nw for nw in present[:k] if nw[1] > 0],
            "negative": [nw for nw in present[::-1][:k] if nw[1] < 0]}


# ---- generation ----------------------------------------------------------------------------------
def cut_at_eos(ids: torch.Tensor, prompt_len: int, eos_id: int) -> list[list[int]]:
    """The generated part of each row of ``ids`` (B, T): the tokens after the first ``prompt_len``,
    up to (not including) the first ``eos_id``."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise ValueError("ids must be a (B, T) tensor of token ids")
    check_int("prompt_len", prompt_len, 0)
    if prompt_len > ids.size(1):
        raise ValueError(f"prompt_len ({prompt_len}) is longer than the rows ({ids.size(1)})")
    out = []
    for row in ids[:, prompt_len:].tolist():
        out.append(row[: row.index(eos_id)] if eos_id in row else row)
    return out


def complete(model: torch.nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_id: int,
             seed: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None) -> list[list[int]]:
    """Conditional generation: continue each prompt (a list of token ids) with
    :func:`llmcourse.generate.sample`, and return the continuations (ids, without the prompt and the
    final ``eos_id``), in the order given. Prompts of equal length are sampled as one batch; the
    batch of length ``n`` uses seed ``seed + n``, so the result does not depend on the other prompts."""
    if isinstance(prompts, (str, torch.Tensor)) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of token-id lists")
    prompts = [list(p) for p in prompts]
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (e.g. the <eos> that starts a text)")
    check_int("seed", seed, 0)
    out: list[list[int] | None] = [None] * len(prompts)
    for n in sorted({len(p) for p in prompts}):
        rows = [i for i, p in enumerate(prompts) if len(p) == n]
        idx = torch.tensor([prompts[i] for i in rows], dtype=torch.long)  # (b, n)
        gen = generate.sample(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                              seed=seed + n, eos_id=eos_id)
        for i, cont in zip(rows, cut_at_eos(gen.cpu(), n, eos_id)):
            out[i] = cont
    return out


def ngram_overlap(samples: Sequence[Sequence], reference: Sequence[Sequence], n: int) -> float:
    """Share of the n-grams of ``samples`` (token sequences) that occur somewhere in ``reference``:
    near 1 means the samples copy the reference, near 0 that they are new (or nonsense)."""
    check_int("n", n, 1)
    seen = {tuple(r[i: i + n]) for r in reference for i in range(len(r) - n + 1)}
    grams = [tuple(s[i: i + n]) for s in samples for i in range(len(s) - n + 1)]
    if not grams:
        raise ValueError(f"no {n}-grams in the samples: every sample is shorter than {n}")
    return sum(g in seen for g in grams) / len(grams)


def best_of_n_indices(rewards: torch.Tensor, n: int) -> torch.Tensor:
    """Best-of-n from one pool: split ``rewards`` (M,) into consecutive groups of ``n`` (a remainder is
    dropped) and return the pool index of the highest reward in each group (first one on ties)."""
    check_int("n", n, 1)
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 1 or rewards.numel() < n:
        raise ValueError(f"rewards must be a 1-D tensor with at least n = {n} entries")
    groups = rewards[: rewards.numel() // n * n].view(-1, n)  # (M // n, n)
    return torch.arange(groups.size(0)) * n + groups.argmax(dim=1)


__all__ = [
    "BM25", "TIE_DECIMALS", "TfidfRetriever", "best_of_n_indices", "char_ngrams", "complete", "cut_at_eos",
    "explain", "first_best", "keyword_textrank", "mean_reciprocal_rank", "ngram_overlap", "noisy_fragment", "pagerank",
    "random_mrr", "random_recall_at_k", "ranks_of", "recall_at_k", "split_sentences", "textrank",
]
