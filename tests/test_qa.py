"""Question answering (chapter 11, §11.5): the dense retriever against a hand-written mean-pool and
cosine; precision@k and the first relevant rank by hand, ties counted against the method; the answer
step; and the shipped question set: its labels re-derived from the corpus, its paraphrases free of the
rule's words, its literal questions using them, and a changed file or corpus refused."""
import json
import re

import pytest
import torch

from llmcourse.chapters import applications as app
from llmcourse.chapters import qa
from llmcourse.models.bert import BertConfig, BertModel


def _char_encode(text, max_len=32):  # [CLS]=1, [SEP]=2, characters mapped into 3..99
    return [1] + [3 + ord(c) % 97 for c in text][: max_len - 2] + [2]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=100, max_position=32, n_layer=1, n_head=2, n_embd=16, dropout=0.0)).eval()


def test_dense_retriever_is_the_cosine_of_mean_pooled_states(encoder):
    docs = ["房间很干净", "早餐一般般，种类少", "服务好", "位置方便交通也好，就是有点吵"]
    retriever = qa.DenseRetriever(encoder, _char_encode, pad_id=0, batch_size=3).fit(docs)

    def by_hand(text):  # one text at a time: no padding at all
        ids = torch.tensor([_char_encode(text)])
        with torch.no_grad():
            h = encoder(ids, torch.ones_like(ids))[0]  # (T, C)
        return torch.nn.functional.normalize(h.mean(0), dim=0)

    query = "早餐怎么样"
    expected = torch.stack([by_hand(d) for d in docs]) @ by_hand(query)
    torch.testing.assert_close(retriever.scores(query), expected, atol=1e-5, rtol=1e-5)
    assert not encoder.training  # embed() restores the mode it found


def test_dense_retriever_refuses_scores_before_fit(encoder):
    with pytest.raises(RuntimeError, match="fit"):
        qa.DenseRetriever(encoder, _char_encode, pad_id=0).scores("早餐")


def test_precision_at_k_and_first_relevant_rank_by_hand():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.5, 0.3])
    assert qa.precision_at_k(scores, [0, 3], 2) == 0.5  # top 2 = docs 0 and 2 (tie 2/3 broken by id)
    assert qa.precision_at_k(scores, [1], 3) == 0.0
    assert qa.first_relevant_rank(scores, [3]) == 3  # doc 0 and the tied doc 2 count against it
    assert qa.first_relevant_rank(scores, [1, 0]) == 1
    assert qa.first_relevant_rank(torch.zeros(4), [2]) == 4  # nothing matched: the worst rank


@pytest.mark.parametrize("scores, relevant", [
    (torch.tensor([[1.0, 2.0]]), [0]),  # not 1-D
    (torch.tensor([1.0, float("nan")]), [0]),
    (torch.tensor([1.0, 2.0]), []),
    (torch.tensor([1.0, 2.0]), [2]),
])
def test_measures_refuse_bad_input(scores, relevant):
    with pytest.raises(ValueError):
        qa.precision_at_k(scores, relevant, 1)


def test_extract_answer_returns_the_best_matching_sentence():
    doc = "位置很好。早餐种类很少，味道一般。房间干净。"
    assert qa.extract_answer("早餐怎么样", doc, app.BM25) == "早餐种类很少，味道一般。"
    assert qa.extract_answer("早餐怎么样", "只有一句话", app.BM25) == "只有一句话"


@pytest.fixture(scope="module")
def docs():
    return qa.knowledge_base()


@pytest.fixture(scope="module")
def aspects():
    return qa.load_questions()


def test_shipped_labels_are_rederived_from_the_corpus(aspects, docs):
    assert len(aspects) >= 10
    for aspect in aspects:
        relevant = qa.relevant_documents(aspect, docs)
        assert len(relevant) == len(aspect.relevant) > 0
        assert all(aspect.matches(docs[i]) for i in relevant)


def test_paraphrases_avoid_the_rule_and_literal_questions_use_it(aspects):
    for aspect in aspects:
        assert not aspect.matches(aspect.questions["paraphrase"]), aspect.name
        assert aspect.matches(aspect.questions["literal"]), aspect.name


def test_a_changed_corpus_or_rule_is_refused(aspects, docs):
    aspect = aspects[0]
    with pytest.raises(ValueError, match="changed"):
        qa.relevant_documents(aspect, docs[:-200])  # documents missing
    widened = qa.Aspect(aspect.name, aspect.pattern + "|的", aspect.questions, aspect.relevant)
    with pytest.raises(ValueError, match="changed"):
        qa.relevant_documents(widened, docs)


def test_load_questions_refuses_a_wrong_file(tmp_path):
    bad = tmp_path / "q.json"
    bad.write_text(json.dumps({"format": "something else", "aspects": []}), encoding="utf-8")
    with pytest.raises(ValueError, match="llmcourse.questions/1"):
        qa.load_questions(bad)
    state = json.loads(qa.QUESTIONS_FILE.read_text(encoding="utf-8"))
    del state["aspects"][0]["questions"]["paraphrase"]
    bad.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match="one question of each kind"):
        qa.load_questions(bad)


def test_write_rederives_the_shipped_digests(tmp_path):
    copy = tmp_path / "questions.json"
    shipped = qa.QUESTIONS_FILE.read_text(encoding="utf-8")
    state = json.loads(shipped)
    for row in state["aspects"]:
        row["relevant"] = []
    copy.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    qa.write(copy)
    assert copy.read_text(encoding="utf-8") == shipped
    assert not list(tmp_path.glob("*.tmp"))


def test_text_digest_is_a_prefix_of_sha256():
    assert re.fullmatch(r"[0-9a-f]{12}", qa.text_digest("房间很好"))
    assert qa.text_digest("a") == "ca978112ca1b"
