"""Question answering over the reviews, measured on real questions (chapter 11, §11.5).

* :class:`DenseRetriever`: documents and queries as the mean of an encoder's final hidden states
  (chapter 7's shipped masked-LM encoder, say), ranked by cosine similarity: the dense alternative to
  BM25, here without any retrieval training.
* :func:`load_questions`: the shipped question set ``questions.json``. Each *aspect* (the breakfast, the
  battery, the printing…) has a rule that labels a review relevant (a regular expression over the words
  people use for it), the relevant reviews' digests as data, and two questions: a *literal* one that uses
  those words and a *paraphrase* that avoids them. :func:`relevant_documents` re-derives the labels and
  refuses a corpus or rule that no longer gives the shipped ones.
* :func:`precision_at_k`, :func:`first_relevant_rank` (ties against the method) and
  :func:`extract_answer` (the sentence of a retrieved review that best matches the question), so the
  answer step is measured as well as the retrieval.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from llmcourse.chapters.applications import split_sentences
from llmcourse.core.checks import check_int, check_texts
from llmcourse.data import corpus
from llmcourse.data.masking import pad_with_mask

QUESTIONS_FILE = Path(__file__).with_name("questions.json")
KINDS = ("literal", "paraphrase")


# ---- dense retrieval ---------------------------------------------------------------------------------
class DenseRetriever:
    """Cosine similarity of mean-pooled hidden states. ``encoder(input_ids, attention_mask) -> (B, T, C)``
    (a :class:`~llmcourse.models.bert.BertModel`); ``encode(text) -> ids`` ([CLS] … [SEP], cut to the
    encoder's positions)."""

    def __init__(self, encoder: torch.nn.Module, encode: Callable[[str], list[int]], pad_id: int, batch_size: int = 128):
        self.encoder, self.encode, self.pad_id = encoder, encode, pad_id
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.doc_vectors: torch.Tensor | None = None

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit vectors (N, C), one per text, in the order given (batched by length)."""
        ids = [self.encode(t) for t in check_texts(texts)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [None] * len(ids)
        was_training = self.encoder.training
        device = next(self.encoder.parameters()).device  # the ids follow the encoder (a GPU, say)
        self.encoder.eval()
        for start in range(0, len(ids), self.batch_size):
            chosen = order[start:start + self.batch_size]
            x, keep = (t.to(device) for t in pad_with_mask([ids[i] for i in chosen], self.pad_id))  # (b, T) twice
            h = self.encoder(x, keep)  # (b, T, C)
            mean = (h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)  # (b, C): padding left out
            for j, i in enumerate(chosen):
                out[i] = torch.nn.functional.normalize(mean[j].float(), dim=0).cpu()
        self.encoder.train(was_training)
        return torch.stack(out)

    def fit(self, docs: Sequence[str]) -> "DenseRetriever":
        self.doc_vectors = self.embed(docs)
        return self

    def scores(self, query: str) -> torch.Tensor:
        """Cosine similarity of ``query`` with every document, (N,)."""
        if self.doc_vectors is None:
            raise RuntimeError("call fit(docs) before scores()")
        return self.doc_vectors @ self.embed([query])[0]


# ---- the shipped question set --------------------------------------------------------------------------
@dataclass(frozen=True)
class Aspect:
    name: str
    pattern: str  # a review mentioning the aspect matches it: the relevance label
    questions: dict  # kind -> question text
    relevant: tuple  # digests (text_digest) of the relevant documents, as shipped

    def matches(self, text: str) -> bool:
        return re.search(self.pattern, text) is not None


def text_digest(text: str) -> str:
    """The first 12 hex digits of the SHA-256 of a review's text: how the file names a document."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def load_questions(path: Path | str = QUESTIONS_FILE) -> list[Aspect]:
    state = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(state, dict) or state.get("format") != "llmcourse.questions/1":
        raise ValueError(f"{str(path)!r} is not an llmcourse.questions/1 file")
    aspects = []
    for row in state["aspects"]:
        if set(row["questions"]) != set(KINDS):
            raise ValueError(f"aspect {row['name']!r} must have one question of each kind {KINDS}")
        aspects.append(Aspect(row["name"], row["pattern"], dict(row["questions"]), tuple(row["relevant"])))
    return aspects


def relevant_documents(aspect: Aspect, docs: Sequence[str]) -> list[int]:
    """Ids of the documents the aspect's rule labels relevant; refuses if they are not the shipped ones."""
    ids = [i for i, d in enumerate(docs) if aspect.matches(d)]
    if sorted(text_digest(docs[i]) for i in ids) != sorted(aspect.relevant):
        raise ValueError(f"aspect {aspect.name!r}: the rule labels {len(ids)} documents relevant, the shipped file "
                         f"{len(aspect.relevant)} others or more; the corpus or the rule changed since the file was "
                         f"written (python -m llmcourse.chapters.qa write)")
    return ids


# ---- measures ----------------------------------------------------------------------------------------
def _check_scores(scores: torch.Tensor, relevant: Sequence[int]) -> set:
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1 or not torch.isfinite(scores).all():
        raise ValueError("scores must be a 1-D tensor of finite scores, one per document")
    rel = set(relevant)
    if not rel or not all(isinstance(i, int) and 0 <= i < len(scores) for i in rel):
        raise ValueError(f"relevant must be a non-empty set of document ids in [0, {len(scores)})")
    return rel


def precision_at_k(scores: torch.Tensor, relevant: Sequence[int], k: int) -> float:
    """Share of the ``k`` best-scored documents that are relevant (ties broken by id, as ``search``)."""
    rel = _check_scores(scores, relevant)
    top = torch.sort(scores, descending=True, stable=True).indices[:check_int("k", k, 1)].tolist()
    return sum(d in rel for d in top) / k


def first_relevant_rank(scores: torch.Tensor, relevant: Sequence[int]) -> int:
    """Rank of the best relevant document, ties counted against the method: 1 + the non-relevant
    documents scoring at least as high."""
    rel = _check_scores(scores, relevant)
    best = max(scores[i].item() for i in rel)
    mask = torch.ones(len(scores), dtype=torch.bool)
    mask[list(rel)] = False
    return 1 + int((scores[mask] >= best).sum())


def extract_answer(question: str, document: str, index_factory: Callable) -> str:
    """The sentence of ``document`` that ``index_factory()`` (e.g. ``applications.BM25``) ranks first for
    ``question``; the whole document if it has one sentence."""
    sentences = split_sentences(document) or [document]
    if len(sentences) == 1:
        return sentences[0]
    return sentences[index_factory().fit(sentences).search(question, k=1)[0][0]]


# ---- writing the file -----------------------------------------------------------------------------------
def knowledge_base() -> list[str]:
    """The documents the questions are asked of: the held-out reviews (validation, then test)."""
    return [r.text for split in ("val", "test") for r in corpus.load_reviews(split)]


def write(path: Path | str = QUESTIONS_FILE) -> None:
    """Re-derive every aspect's relevant documents from its rule and rewrite the file atomically."""
    path = Path(path)
    state = json.loads(path.read_text(encoding="utf-8"))
    docs = knowledge_base()
    for row in state["aspects"]:
        row["relevant"] = sorted(text_digest(d) for d in docs if re.search(row["pattern"], d))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


__all__ = ["Aspect", "DenseRetriever", "KINDS", "QUESTIONS_FILE", "extract_answer", "first_relevant_rank",
           "knowledge_base", "load_questions", "precision_at_k", "relevant_documents", "text_digest", "write"]


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["write"]:
        raise SystemExit("usage: python -m llmcourse.chapters.qa write")
    write()
