"""llmcourse.chapters.lm_math against torch.nn.functional and hand-derived values (chapter 3)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmcourse.chapters import lm_math as M

ARTICLE_P = [0.1, 0.2, 0.5, 0.2]  # seed 003 §4.2: p(x_3 | x_<3), the target "machine" is index 2


def random_logits(shape, seed=0, scale=3.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def random_dist(shape, seed=0):
    return torch.softmax(random_logits(shape, seed), dim=-1)


# --- hand values ---------------------------------------------------------------------------------
def test_articles_cross_entropy_example():
    assert M.cross_entropy(ARTICLE_P, 2) == pytest.approx(-math.log(0.5))
    assert M.cross_entropy(ARTICLE_P, 2) == pytest.approx(0.6931471805599453, abs=1e-12)
    assert M.cross_entropy(ARTICLE_P, 0) == pytest.approx(math.log(10))


def test_softmax_hand_values():
    np.testing.assert_allclose(M.softmax([0.0, 0.0, 0.0, 0.0]), [0.25] * 4)
    e = math.e
    np.testing.assert_allclose(M.softmax([0.0, 1.0]), [1 / (1 + e), e / (1 + e)])
    np.testing.assert_allclose(M.softmax(np.log(ARTICLE_P)), ARTICLE_P)


def test_uniform_perplexity_is_vocabulary_size():
    for V in (2, 7, 5000):
        assert M.perplexity_from_probs(np.full(13, 1 / V)) == pytest.approx(V)
        assert M.perplexity_from_probs(np.full((3, V), 1 / V), [0, 1, V - 1]) == pytest.approx(V)


def test_perplexity_hand_value():
    # geometric mean of 1/p: (1/0.5 * 1/0.25 * 1/1)^(1/3) = 8^(1/3) = 2
    assert M.perplexity_from_probs([0.5, 0.25, 1.0]) == pytest.approx(2.0)
    assert M.perplexity_from_probs([0.5, 0.0]) == math.inf


def test_kl_and_entropy_hand_values():
    assert M.entropy([0.5, 0.5]) == pytest.approx(math.log(2))
    assert M.entropy([1.0, 0.0, 0.0]) == 0.0
    # KL([1, 0] || [0.5, 0.5]) = log 2; KL in the other direction is infinite
    assert M.kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert M.kl_divergence([0.5, 0.5], [1.0, 0.0]) == math.inf
    assert M.kl_divergence(ARTICLE_P, ARTICLE_P) == 0.0


def test_chain_rule_hand_value():
    cond = np.array([[0.5, 0.5, 0.0], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    tokens = [0, 1, 2]
    assert M.sequence_prob(cond, tokens) == pytest.approx(0.5 * 0.6 * 0.6)
    assert M.sequence_log_prob(cond, tokens) == pytest.approx(math.log(0.18))
    np.testing.assert_allclose(M.token_log_probs(cond, tokens), np.log([0.5, 0.6, 0.6]))


def test_categorical_mle():
    np.testing.assert_allclose(M.categorical_mle([3, 1, 0, 4]), [3 / 8, 1 / 8, 0, 4 / 8])


# --- against torch ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5,), (4, 7), (2, 3, 11)])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_softmax_and_log_softmax_match_torch(shape, temperature):
    z = random_logits(shape)
    torch.testing.assert_close(M.softmax(z, temperature=temperature), F.softmax(z / temperature, dim=-1))
    torch.testing.assert_close(M.log_softmax(z, temperature=temperature), F.log_softmax(z / temperature, dim=-1))
    np.testing.assert_allclose(M.softmax(z.numpy(), temperature=temperature), F.softmax(z / temperature, -1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(M.log_softmax(z.numpy(), temperature=temperature), F.log_softmax(z / temperature, -1).numpy(), rtol=1e-12)
    torch.testing.assert_close(M.logsumexp(z), torch.logsumexp(z, dim=-1))


def test_softmax_other_dim_matches_torch():
    z = random_logits((3, 4, 5))
    for dim in (0, 1, 2):
        torch.testing.assert_close(M.softmax(z, dim=dim), F.softmax(z, dim=dim))
        np.testing.assert_allclose(M.log_softmax(z.numpy(), dim=dim), F.log_softmax(z, dim=dim).numpy(), rtol=1e-12)


def test_stable_for_huge_and_tiny_logits():
    z = np.array([1000.0, 1001.0, 1002.0])
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(z) / np.exp(z).sum()
    assert np.isnan(naive).all()  # the naive formula really does break
    expected = F.softmax(torch.tensor(z), -1).numpy()
    np.testing.assert_allclose(M.softmax(z), expected)
    np.testing.assert_allclose(M.softmax(z - 3000.0), expected)
    lp = M.log_softmax(np.array([0.0, -800.0]))
    assert lp[1] == pytest.approx(-800.0)  # exp(-800) underflows to 0, its log does not
    assert np.isfinite(M.log_softmax(torch.tensor([1e4, 0.0], dtype=torch.float32))).all()


def test_softmax_keeps_gradients():
    z = random_logits((6,)).requires_grad_()
    M.log_softmax(z)[2].backward()
    z2 = z.detach().clone().requires_grad_()
    F.log_softmax(z2, -1)[2].backward()
    torch.testing.assert_close(z.grad, z2.grad)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(reduction):
    logits = random_logits((8, 10), seed=1)
    target = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(2))
    expected = F.cross_entropy(logits, target, reduction=reduction)
    torch.testing.assert_close(M.cross_entropy(logits, target, from_logits=True, reduction=reduction), expected)
    torch.testing.assert_close(M.cross_entropy(F.softmax(logits, -1), target, reduction=reduction), expected)
    got_np = M.cross_entropy(logits.numpy(), target.numpy(), from_logits=True, reduction=reduction)
    np.testing.assert_allclose(got_np, expected.numpy(), rtol=1e-10)
    torch.testing.assert_close(M.nll_from_log_probs(F.log_softmax(logits, -1), target, reduction), expected)


def test_cross_entropy_sequence_shape_matches_torch():
    logits = random_logits((2, 5, 9), seed=3)  # (batch, T, V)
    target = torch.randint(0, 9, (2, 5), generator=torch.Generator().manual_seed(4))
    expected = F.cross_entropy(logits.reshape(-1, 9), target.reshape(-1))
    torch.testing.assert_close(M.cross_entropy(logits, target, from_logits=True), expected)


def test_cross_entropy_articles_example_matches_torch():
    p = torch.tensor(ARTICLE_P, dtype=torch.float64)
    expected = F.nll_loss(torch.log(p).unsqueeze(0), torch.tensor([2]))
    torch.testing.assert_close(M.cross_entropy(p, torch.tensor(2)), expected)
    torch.testing.assert_close(F.cross_entropy(torch.log(p).unsqueeze(0), torch.tensor([2])), expected)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_matches_torch(reduction):
    a, b = random_logits((4, 3), seed=5), random_logits((4, 3), seed=6)
    torch.testing.assert_close(M.mse(a, b, reduction=reduction), F.mse_loss(a, b, reduction=reduction))
    np.testing.assert_allclose(M.mse(a.numpy(), b.numpy(), reduction=reduction), F.mse_loss(a, b, reduction=reduction).numpy())


def test_kl_matches_torch_kl_div_convention():
    p, q = random_dist((6, 8), seed=7), random_dist((6, 8), seed=8)
    # F.kl_div(input, target) = sum target * (log target - input): input is log q, target is p -> KL(p || q)
    expected_rows = F.kl_div(q.log(), p, reduction="none").sum(-1)
    torch.testing.assert_close(M.kl_divergence(p, q), expected_rows)
    np.testing.assert_allclose(M.kl_divergence(p.numpy(), q.numpy()), expected_rows.numpy(), rtol=1e-10)
    torch.testing.assert_close(M.kl_divergence(p, q).mean(), F.kl_div(q.log(), p, reduction="batchmean"))
    # and the asymmetry is real
    assert not torch.allclose(M.kl_divergence(p, q), M.kl_divergence(q, p))


def test_kl_nonnegative_and_cross_entropy_decomposition():
    p, q = random_dist((500, 6), seed=9), random_dist((500, 6), seed=10)
    kl = M.kl_divergence(p, q)
    assert (kl >= 0).all()
    torch.testing.assert_close(M.cross_entropy_dist(p, q), M.entropy(p) + kl)
    # with a one-hot p, H(p, q) is the cross-entropy of the index
    onehot = F.one_hot(torch.tensor([2]), 4).double()
    assert float(M.cross_entropy_dist(onehot[0], torch.tensor(ARTICLE_P, dtype=torch.float64))) == pytest.approx(math.log(2))


def test_perplexity_matches_exp_of_torch_cross_entropy():
    logits = random_logits((12, 20), seed=11)
    target = torch.randint(0, 20, (12,), generator=torch.Generator().manual_seed(12))
    expected = math.exp(F.cross_entropy(logits, target).item())
    probs = F.softmax(logits, -1)
    assert M.perplexity_from_probs(probs, target) == pytest.approx(expected)
    assert M.perplexity_from_probs(probs[torch.arange(12), target]) == pytest.approx(expected)


def test_gradients_match_autograd():
    for seed, target in [(13, 0), (14, 3), (15, 5)]:
        z = random_logits((6,), seed=seed).requires_grad_()
        F.cross_entropy(z.unsqueeze(0), torch.tensor([target])).backward()
        np.testing.assert_allclose(M.cross_entropy_grad_logits(z.detach().numpy(), target), z.grad.numpy(), atol=1e-12)
        z.grad = None
        y = F.one_hot(torch.tensor(target), 6).double()
        F.mse_loss(F.softmax(z, -1), y).backward()
        np.testing.assert_allclose(M.mse_softmax_grad_logits(z.detach().numpy(), target), z.grad.numpy(), atol=1e-12)


def test_mle_equals_optimised_nll():
    counts = torch.tensor([5.0, 1.0, 3.0, 1.0], dtype=torch.float64)
    theta = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = -(counts * F.log_softmax(theta, -1)).sum() / counts.sum()
        loss.backward()
        return loss

    opt.step(closure)
    np.testing.assert_allclose(F.softmax(theta, -1).detach().numpy(), M.categorical_mle(counts), atol=1e-6)


# --- bad input ----------------------------------------------------------------------------------
def test_probabilities_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        M.cross_entropy([0.1, 0.2, 0.5, 0.3], 2)
    with pytest.raises(ValueError, match="sum to 1"):
        M.kl_divergence([0.5, 0.5], [0.5, 0.6])
    with pytest.raises(ValueError, match="sum to 1"):
        M.cross_entropy([2.0, 1.0, 0.5], 0)  # logits passed as probabilities


def test_negative_and_nan_probabilities_rejected():
    with pytest.raises(ValueError, match="negative"):
        M.cross_entropy([-0.1, 0.6, 0.5], 1)
    with pytest.raises(ValueError, match="negative"):
        M.entropy([1.2, -0.2])
    with pytest.raises(ValueError, match="NaN"):
        M.kl_divergence([float("nan"), 1.0], [0.5, 0.5])


def test_target_out_of_range_or_wrong_type():
    with pytest.raises(ValueError, match="out of range"):
        M.cross_entropy(ARTICLE_P, 4)
    with pytest.raises(ValueError, match="out of range"):
        M.cross_entropy(ARTICLE_P, -1)
    with pytest.raises(ValueError, match="out of range"):
        M.cross_entropy(torch.zeros(3, 5), torch.tensor([0, 5, 1]), from_logits=True)
    with pytest.raises(TypeError, match="integer"):
        M.cross_entropy(ARTICLE_P, 2.0)
    with pytest.raises(TypeError, match="integer"):
        M.cross_entropy(torch.zeros(2, 3), torch.tensor([0.0, 1.0]), from_logits=True)


def test_shape_mismatches():
    with pytest.raises(ValueError, match="shape"):
        M.cross_entropy(torch.zeros(3, 5), torch.tensor([0, 1]), from_logits=True)
    with pytest.raises(ValueError, match="shape"):
        M.mse([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="shape"):
        M.kl_divergence([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match=r"\(T, V\)"):
        M.sequence_log_prob([0.5, 0.5], [0])
    with pytest.raises(ValueError, match="shape"):
        M.sequence_log_prob(np.full((3, 2), 0.5), [0, 1])


def test_other_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        M.softmax([1.0, 2.0], temperature=0)
    with pytest.raises(ValueError, match="empty"):
        M.softmax([])
    with pytest.raises(ValueError, match="scalar"):
        M.softmax(3.0)
    with pytest.raises(TypeError):
        M.softmax("1, 2, 3")
    with pytest.raises(ValueError, match="reduction"):
        M.cross_entropy(ARTICLE_P, 2, reduction="avg")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.perplexity_from_probs([0.5, 1.5])
    with pytest.raises(ValueError, match="undefined"):
        M.categorical_mle([0, 0, 0])
