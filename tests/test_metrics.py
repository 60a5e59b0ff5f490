import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse import metrics


def test_perplexity_is_exp_of_mean_nll_as_torch_computes_it():
    torch.manual_seed(0)
    logits, targets = torch.randn(50, 7), torch.randint(0, 7, (50,))
    nll = F.cross_entropy(logits, targets).item()
    assert metrics.perplexity(nll) == pytest.approx(math.exp(nll))
    assert metrics.perplexity(math.log(7)) == pytest.approx(7.0)  # a uniform model over 7 tokens


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_perplexity_rejects_impossible_nll(bad):
    with pytest.raises(ValueError, match="finite and >= 0"):
        metrics.perplexity(bad)


def test_accuracy():
    assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    with pytest.raises(ValueError, match="differ in length"):
        metrics.accuracy([1], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy([], [])


def test_segmentation_prf_hand_example():
    gold = [["我", "喜欢", "吃", "苹果"]]
    pred = [["我", "喜", "欢", "吃", "苹果"]]
    # correct words: 我, 吃, 苹果 -> P = 3/5, R = 3/4
    scores = metrics.segmentation_prf(pred, gold)
    assert scores["precision"] == pytest.approx(3 / 5)
    assert scores["recall"] == pytest.approx(3 / 4)
    assert scores["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert metrics.segmentation_prf(gold, gold)["f1"] == 1.0


def test_segmentation_prf_rejects_mismatched_text():
    with pytest.raises(ValueError, match="sentence 0"):
        metrics.segmentation_prf([["我", "爱"]], [["我", "喜欢"]])
    with pytest.raises(ValueError, match="sentences"):
        metrics.segmentation_prf([["a"]], [])


def test_distinct_n():
    assert metrics.distinct_n([list("abab")], 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert metrics.distinct_n([list("abc"), list("abc")], 1) == 0.5
    with pytest.raises(ValueError, match="shorter"):
        metrics.distinct_n([list("a")], 2)
