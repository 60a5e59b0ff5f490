"""Scheduled sampling and minimum-risk training against by-hand computations on a bigram model whose
probabilities are a table, and MRT's gradient against the expected-risk gradient written out."""
import math

import pytest
import torch
import torch.nn as nn

from llmcourse.chapters.pseudo_readings import (
    char_f1_risk, continuation_logprobs, minimum_risk_loss, scheduled_sampling_loss,
)
from llmcourse.chapters.selffeedback import sequence_nll
from llmcourse.core.checks import IGNORE_INDEX


class BigramLM(nn.Module):
    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.as_tensor(table, dtype=torch.float32))  # (V, V)

    def forward(self, idx, targets=None):
        return self.table[idx], None  # (B, T, V)


def bigram(V=6, seed=0):
    return BigramLM(torch.randn(V, V, generator=torch.Generator().manual_seed(seed)) * 1.5)


def test_scheduled_sampling_at_p0_is_the_lm_loss_of_the_continuation():
    model, x = bigram(), torch.tensor([[0, 1, 2, 3, 4], [5, 4, 3, 2, 1]])
    y = x[:, 1:].clone()
    y[:, :1] = IGNORE_INDEX  # prompt of 2 tokens: the first target scored is token 2
    assert scheduled_sampling_loss(model, x, 2, 0.0).item() == pytest.approx(sequence_nll(model, x[:, :-1], y).item())


def test_scheduled_sampling_at_p1_scores_real_tokens_after_the_models_predictions_by_hand():
    model, x = bigram(), torch.tensor([[0, 1, 2, 3, 4]])
    argmax = model.table.argmax(1)  # a bigram's greedy prediction of the next token
    logp = torch.log_softmax(model.table.detach(), 1)
    # inputs: x0, x1 (prompt), then the prediction of x2 made from x1, the prediction of x3 from x2
    inputs = [0, 1, int(argmax[1]), int(argmax[2])]
    by_hand = -sum(logp[inputs[t], int(x[0, t + 1])] for t in (1, 2, 3)) / 3
    assert scheduled_sampling_loss(model, x, 2, 1.0).item() == pytest.approx(float(by_hand), rel=1e-6)


def test_scheduled_sampling_keeps_the_prompt_and_has_a_gradient():
    model, x = bigram(), torch.randint(0, 6, (4, 9), generator=torch.Generator().manual_seed(1))
    loss = scheduled_sampling_loss(model, x, 3, 0.5, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert model.table.grad is not None and model.table.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompt_len=0, p=0.5), "prompt_len"), (dict(prompt_len=5, p=0.5), "prompt_len"),
    (dict(prompt_len=2, p=1.5), "probability"), (dict(prompt_len=2, p=True), "probability"),
])
def test_scheduled_sampling_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scheduled_sampling_loss(bigram(), torch.zeros(2, 5, dtype=torch.long), **kwargs)


@pytest.mark.parametrize("sample, reference, risk", [
    ([1, 2, 3], [1, 2, 3], 0.0), ([1, 2], [3, 4], 1.0), ([], [], 0.0), ([], [1], 1.0),
    ([1, 1, 2], [1, 2, 2, 2], 1 - 2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4)),
])
def test_char_f1_risk(sample, reference, risk):
    assert char_f1_risk(sample, reference) == pytest.approx(risk)


def test_minimum_risk_loss_and_its_gradient_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.0, -2.0]], requires_grad=True)
    risks = torch.tensor([[0.2, 0.9, 0.5], [1.0, 0.0, 0.4]])
    alpha = 0.7
    loss = minimum_risk_loss(logp, risks, alpha)
    q = torch.softmax(alpha * logp.detach(), 1)
    assert loss.item() == pytest.approx(float((q * risks).sum(1).mean()), rel=1e-6)
    loss.backward()
    # d/d logp_s of Σ Q Δ = α Q_s (Δ_s − Σ_r Q_r Δ_r), halved by the mean over the 2 prompts
    expected = alpha * q * (risks - (q * risks).sum(1, keepdim=True)) / 2
    torch.testing.assert_close(logp.grad, expected)


def test_minimum_risk_loss_errors():
    with pytest.raises(ValueError, match="k >= 2"):
        minimum_risk_loss(torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="shape"):
        minimum_risk_loss(torch.zeros(3, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="alpha"):
        minimum_risk_loss(torch.zeros(3, 2), torch.zeros(3, 2), alpha=0)


def test_continuation_logprobs_sums_the_continuation_tokens_by_hand():
    model = bigram()
    seqs = torch.tensor([[0, 1, 2, 3, 0], [5, 4, 3, 0, 0]])
    logp = torch.log_softmax(model.table.detach(), 1)
    got = continuation_logprobs(model, seqs, 2, lengths=[5, 4])
    first = logp[1, 2] + logp[2, 3] + logp[3, 0]
    second = logp[4, 3] + logp[3, 0]
    torch.testing.assert_close(got.detach(), torch.stack([first, second]))
    with pytest.raises(ValueError, match="lengths"):
        continuation_logprobs(model, seqs, 2, lengths=[2, 4])
    assert math.isfinite(got.sum().item())
