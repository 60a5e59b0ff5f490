"""Bag-of-words logistic regression: features by hand, the fitted weights are the optimum (the
gradient, computed independently with autograd on a dense matrix, vanishes), predictions, errors."""
import pytest
import torch
import torch.nn.functional as F

from llmcourse.models.bow import BowLogisticRegression, ngrams

TEXTS = ["很好很好", "好书", "很差", "差评差", "书很好", "太差了", "好好", "不好很差"]
LABELS = [1, 1, 0, 0, 1, 0, 1, 0]


def test_ngrams_by_hand():
    assert ngrams(list("很好"), (1, 2)) == ["很", "好", "很 好"]
    assert ngrams(["这本", "书", "很好"], (2,)) == ["这本 书", "书 很好"]
    assert ngrams(list("好"), (2,)) == []


def test_vocabulary_and_features_by_hand():
    model = BowLogisticRegression(n_values=(1,), min_freq=2).fit(TEXTS, LABELS)
    # characters in >= 2 texts: 很 (5 texts), 好 (5), 差 (4), 书 (2)
    assert set(model.vocab) == {"很", "好", "差", "书"}
    X = model.feature_matrix(["很好很好", "书", "完全没有"])
    expected = torch.zeros(3, 4, dtype=torch.float64)
    expected[0, [model.vocab["很"], model.vocab["好"]]] = 1.0  # presence, not counts
    expected[1, model.vocab["书"]] = 1.0
    assert torch.equal(X, expected)  # unknown characters give an all-zero row


@pytest.mark.parametrize("l2", [1e-3, 1e-1])
def test_fit_reaches_the_optimum_checked_with_autograd_on_a_dense_matrix(l2):
    model = BowLogisticRegression(n_values=(1, 2), min_freq=1, l2=l2).fit(TEXTS, LABELS)
    X = model.feature_matrix(TEXTS)  # dense (N, F)
    w = model.weight.clone().requires_grad_(True)
    b = model.bias.clone().requires_grad_(True)
    y = torch.tensor(LABELS, dtype=torch.float64)
    loss = F.binary_cross_entropy_with_logits(X @ w + b, y) + 0.5 * l2 * (w ** 2).sum()
    loss.backward()
    assert w.grad.abs().max() < 1e-6 and abs(float(b.grad)) < 1e-6
    # decision_function is X w + b
    torch.testing.assert_close(model.decision_function(TEXTS), (X @ model.weight + model.bias))


def test_separable_data_is_classified_and_weights_make_sense():
    model = BowLogisticRegression(n_values=(1,), min_freq=1, l2=1e-3).fit(TEXTS, LABELS)
    assert model.predict(TEXTS) == LABELS
    top = model.top_features(1)
    assert top["positive"][0][0] == "好" and top["negative"][0][0] == "差"
    p = model.predict_proba(["好", "差"])
    assert p[0] > 0.5 > p[1]


def test_stronger_l2_gives_smaller_weights():
    small = BowLogisticRegression(l2=1e-3, min_freq=1).fit(TEXTS, LABELS)
    large = BowLogisticRegression(l2=1.0, min_freq=1).fit(TEXTS, LABELS)
    assert large.weight.norm() < small.weight.norm()


def test_custom_tokenizer_words():
    model = BowLogisticRegression(n_values=(1,), min_freq=1, tokenize=str.split).fit(
        ["很 好", "很 差", "好"], [1, 0, 1])
    assert set(model.vocab) == {"很", "好", "差"}


def test_bad_input():
    with pytest.raises(ValueError, match="n_values"):
        BowLogisticRegression(n_values=(0,))
    with pytest.raises(ValueError, match="min_freq"):
        BowLogisticRegression(min_freq=0)
    with pytest.raises(ValueError, match="l2"):
        BowLogisticRegression(l2=-1.0)
    model = BowLogisticRegression()
    with pytest.raises(RuntimeError, match="fit"):
        model.predict(["好"])
    with pytest.raises(ValueError, match="match one to one"):
        model.fit(TEXTS, LABELS[:-1])
    with pytest.raises(ValueError, match="0 or 1"):
        model.fit(TEXTS, [2] * len(TEXTS))
    with pytest.raises(TypeError, match="single str"):
        model.fit("很好", [1])
    with pytest.raises(TypeError, match="str"):
        model.fit([1, 2], [0, 1])
