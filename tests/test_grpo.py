"""GRPO and RLOO: advantages against their formulas, the k3 KL against the exact KL, pass@k against
counting subsets, and the loop learning a verifiable task."""
import copy
import itertools
import math

import pytest
import torch

from llmcourse.chapters.grpo import VerifiableRLConfig, group_advantages, k3_kl, pass_at_k, verifiable_rl
from llmcourse.models.gpt import GPT, GPTConfig


def test_grpo_advantages_are_group_z_scores():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    a = group_advantages(r, "grpo")
    for g in range(2):
        mean, std = r[g].mean(), r[g].std(unbiased=False)
        torch.testing.assert_close(a[g], (r[g] - mean) / (std + 1e-6))
    assert torch.equal(a[2], torch.zeros(4))  # all wrong: nothing to learn from this prompt


def test_rloo_is_the_leave_one_out_baseline():
    r = torch.tensor([[3.0, 1.0, 0.0, 2.0, 5.0]])
    a = group_advantages(r, "rloo")
    by_hand = torch.tensor([[r[0, i] - (r[0].sum() - r[0, i]) / 4 for i in range(5)]])
    torch.testing.assert_close(a, by_hand)


def test_k3_is_never_negative_and_its_expectation_is_the_kl():
    g = torch.Generator().manual_seed(0)
    p, q = torch.rand(7, generator=g).softmax(0), torch.rand(7, generator=g).softmax(0)
    k3 = k3_kl(p.log(), q.log())  # per outcome, under samples from p
    assert bool((k3 >= 0).all())
    exact_kl = (p * (p.log() - q.log())).sum()
    torch.testing.assert_close((p * k3).sum(), exact_kl, rtol=1e-6, atol=1e-7)


def test_pass_at_k_counts_subsets():
    for n, c, k in ((5, 2, 1), (5, 2, 3), (6, 0, 2), (6, 6, 2), (8, 3, 4)):
        subsets = list(itertools.combinations(range(n), k))
        hit = sum(any(i < c for i in s) for s in subsets) / len(subsets)  # the first c samples are correct
        assert pass_at_k(n, c, k) == pytest.approx(hit, abs=1e-12)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="c <= n and k <= n"):
        pass_at_k(3, 4, 1)


def tiny_policy():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=6, block_size=4, n_layer=1, n_head=1, n_embd=8)).eval()


def first_token_prob(model, token=3):
    with torch.no_grad():
        return model(torch.tensor([[0]]))[0][0, -1].softmax(-1)[token].item()


@pytest.mark.parametrize("advantage", ["grpo", "rloo"])
def test_the_loop_learns_a_verifiable_task(advantage):
    """Reward 1 when the first generated token is 3: its probability must rise from about 1/6."""
    model = tiny_policy()
    reference = copy.deepcopy(model)
    before = first_token_prob(model)
    cfg = VerifiableRLConfig(iterations=40, prompts_per_step=2, group_size=8, advantage=advantage, lr=1e-2,
                             max_new_tokens=2, seed=0)
    history = verifiable_rl(model, reference, [[0]], lambda prompt, c: len(c) > 0 and c[0] == 3, cfg, eos_id=5,
                            eval_fn=lambda m: {"p3": first_token_prob(m)}, eval_every=20)
    assert before < 0.3 and first_token_prob(model) > 0.9
    assert history["eval_step"] == [0, 20, 40] and history["p3"][-1] == pytest.approx(first_token_prob(model))
    assert history["samples"][-1] == 40 * 2 * 8 and len(history["reward"]) == 40
    assert history["kl"][-1] > history["kl"][0]  # it moved away from the reference
    assert first_token_prob(reference) == pytest.approx(before)  # the reference is not trained


def test_the_kl_penalty_holds_the_policy_near_the_reference():
    results = {}
    for beta in (0.0, 1.0):
        model = tiny_policy()
        cfg = VerifiableRLConfig(iterations=40, prompts_per_step=2, group_size=8, lr=1e-2, beta=beta, max_new_tokens=2)
        h = verifiable_rl(model, copy.deepcopy(tiny_policy()), [[0]], lambda p, c: len(c) > 0 and c[0] == 3, cfg, eos_id=5)
        results[beta] = h["kl"][-1]
    assert results[1.0] < results[0.0]


def test_bad_settings():
    with pytest.raises(ValueError, match="group_size must be an int >= 2"):
        VerifiableRLConfig(group_size=1)
    with pytest.raises(ValueError, match="advantage must be one of"):
        VerifiableRLConfig(advantage="ppo")
    with pytest.raises(ValueError, match=r"\(groups, n\) tensor with n >= 2"):
        group_advantages(torch.ones(4))
    with pytest.raises(ValueError, match="prompts must be a non-empty list"):
        verifiable_rl(tiny_policy(), tiny_policy(), [], lambda p, c: True, VerifiableRLConfig(), eos_id=5)
    assert math.isclose(pass_at_k(4, 1, 4), 1.0)
