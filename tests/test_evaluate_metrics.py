import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse import evaluate


def test_perplexity_is_exp_of_mean_nll_as_torch_computes_it():
    torch.manual_seed(0)
    logits, targets = torch.randn(50, 7), torch.randint(0, 7, (50,))
    nll = F.cross_entropy(logits, targets).item()
    assert evaluate.perplexity_from_nll(nll) == pytest.approx(math.exp(nll))
    assert evaluate.perplexity_from_nll(math.log(7)) == pytest.approx(7.0)  # a uniform model over 7 tokens


def test_perplexity_of_a_huge_nll_is_infinite_not_an_overflow_error():
    assert evaluate.perplexity_from_nll(800) == math.inf  # math.exp(800) raised "math range error"


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_perplexity_rejects_impossible_nll(bad):
    with pytest.raises(ValueError, match="finite and >= 0"):
        evaluate.perplexity_from_nll(bad)


def test_accuracy():
    assert evaluate.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    with pytest.raises(ValueError, match="differ in length"):
        evaluate.accuracy([1], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        evaluate.accuracy([], [])


@pytest.mark.parametrize("predictions", [[0.9, 0.2], torch.tensor([0.9, 0.2]), [1, 0.0]])
def test_accuracy_refuses_probabilities_where_labels_are_expected(predictions):
    # [0.9, 0.2] against [1, 0] used to score 0.0 (no float equals an int label): a silent wrong result
    with pytest.raises(TypeError, match="class labels"):
        evaluate.accuracy(predictions, [1, 0])
    with pytest.raises(TypeError, match="class labels"):
        evaluate.accuracy([1, 0], predictions)


def test_confusion_matrix_refuses_bad_labels():
    with pytest.raises(ValueError, match="equal length"):
        evaluate.confusion_matrix([1], [1, 0])
    with pytest.raises(ValueError, match="class ids"):
        evaluate.confusion_matrix([2], [1])
    with pytest.raises(ValueError, match="class ids"):
        evaluate.confusion_matrix([0.9, 0.2], [1, 0])


def test_segmentation_prf_hand_example():
    gold = [["我", "喜欢", "吃", "苹果"]]
    pred = [["我", "喜", "欢", "吃", "苹果"]]
    # correct words: 我, 吃, 苹果 -> P = 3/5, R = 3/4
    scores = evaluate.segmentation_prf(pred, gold)
    assert scores["precision"] == pytest.approx(3 / 5)
    assert scores["recall"] == pytest.approx(3 / 4)
    assert scores["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert evaluate.segmentation_prf(gold, gold)["f1"] == 1.0


def test_segmentation_prf_rejects_mismatched_text():
    with pytest.raises(ValueError, match="sentence 0"):
        evaluate.segmentation_prf([["我", "爱"]], [["我", "喜欢"]])
    with pytest.raises(ValueError, match="sentences"):
        evaluate.segmentation_prf([["a"]], [])


def test_distinct_n():
    assert evaluate.distinct_n([list("abab")], 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert evaluate.distinct_n([list("abc"), list("abc")], 1) == 0.5
    with pytest.raises(ValueError, match="shorter"):
        evaluate.distinct_n([list("a")], 2)


def test_confusion_matrix_and_f1_by_hand():
    pred, gold = [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]
    cm = evaluate.confusion_matrix(pred, gold)
    assert cm.tolist() == [[2, 1], [1, 2]]  # rows true, columns predicted
    prf = evaluate.precision_recall_f1(cm)
    assert prf == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    cm = evaluate.confusion_matrix([1, 1, 1], [1, 0, 0])
    assert evaluate.precision_recall_f1(cm) == pytest.approx({"precision": 1 / 3, "recall": 1.0, "f1": 0.5})
    assert evaluate.precision_recall_f1(cm, positive=0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert evaluate.confusion_matrix([2, 0], [1, 2], n_classes=3).tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 0]]
