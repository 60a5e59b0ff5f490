"""RLHF pieces: the Bradley–Terry and DPO losses (ln 2 at a tie, the formula by hand), GAE against hand
computations, the PPO clip (zero gradient outside the trust region), β controllers, the KV-cache
sampler against the plain forward pass and llmcourse.generate, the reward model, Platt scaling, the
best-of-n KL formula against an exact discrete computation, and a PPO run that learns a toy reward."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse import generate
from llmcourse.chapters import ppo
from llmcourse.chapters import rlhf
from llmcourse.core.checks import IGNORE_INDEX
from llmcourse.models.gpt import GPT, GPTConfig

EOS, PAD = 3, 0


def tiny_gpt(seed=0, vocab_size=12, block_size=10, std=None):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=16))
    if std is not None:  # larger random weights: peaked, varied distributions
        g = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


# ---------------------------------------------------------------- Bradley–Terry and DPO


def test_bradley_terry_equal_rewards_is_ln2():
    r = torch.tensor([0.0, 1.5, -3.0, 7.0])
    assert rlhf.bradley_terry_loss(r, r.clone()).item() == pytest.approx(math.log(2), abs=1e-7)


def test_bradley_terry_matches_formula_and_is_stable():
    rc, rr = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([0.5, 1.0, 0.3])
    by_hand = -torch.log(torch.sigmoid(rc - rr)).mean()
    assert torch.allclose(rlhf.bradley_terry_loss(rc, rr), by_hand, atol=1e-7)
    # huge margins: log(sigmoid(-200)) underflows to -inf in the naive formula, softplus stays finite
    loss = rlhf.bradley_terry_loss(torch.tensor([-100.0]), torch.tensor([100.0]))
    assert loss.item() == pytest.approx(200.0, rel=1e-6)


def test_bradley_terry_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        rlhf.bradley_terry_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError, match="float tensors"):
        rlhf.bradley_terry_loss(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))


def test_dpo_loss_is_ln2_when_policy_equals_reference():
    g = torch.Generator().manual_seed(0)
    chosen, rejected = -torch.rand(5, generator=g) * 20, -torch.rand(5, generator=g) * 20
    for beta in (0.05, 0.1, 1.0):
        loss = rlhf.dpo_loss(chosen, rejected, chosen.clone(), rejected.clone(), beta)
        assert loss.item() == pytest.approx(math.log(2), abs=1e-7)


def test_dpo_loss_formula_and_gradient_direction():
    pc = torch.tensor([-10.0, -12.0], requires_grad=True)
    pr = torch.tensor([-11.0, -9.0], requires_grad=True)
    rc, rr = torch.tensor([-10.5, -12.0]), torch.tensor([-10.0, -9.5])
    beta = 0.5
    loss = rlhf.dpo_loss(pc, pr, rc, rr, beta)
    margin = beta * ((pc.detach() - rc) - (pr.detach() - rr))
    assert loss.item() == pytest.approx(float(-F.logsigmoid(margin).mean()), abs=1e-6)
    loss.backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # raise the chosen, lower the rejected


def test_dpo_loss_bad_beta():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="beta"):
        rlhf.dpo_loss(x, x, x, x, beta=0.0)


def test_dpo_objective_starts_at_ln2_and_trains_only_the_policy():
    ref = tiny_gpt(0, std=0.3)
    objective = rlhf.DPOObjective(copy.deepcopy(ref), ref, beta=0.1)
    chosen, cmask = rlhf.encode_responses([[4, 5, 6], [7]], [EOS], 5, EOS)
    rejected, rmask = rlhf.encode_responses([[8, 9], [10, 11, 4, 5, 6, 7]], [EOS], 5, EOS)
    margins, loss = objective(chosen, cmask, rejected, rmask)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert torch.allclose(margins, torch.zeros(2), atol=1e-6)
    loss.backward()
    assert all(p.grad is None for p in objective.reference.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in objective.policy.parameters())


# ---------------------------------------------------------------- GAE and rewards


def test_gae_hand_example():
    # rewards [0, 0, 1], values [0.5, 0.2, 0.4], γ = 1, λ = 0.5:
    # δ2 = 1 - 0.4 = 0.6, δ1 = 0 + 0.4 - 0.2 = 0.2, δ0 = 0 + 0.2 - 0.5 = -0.3
    # A2 = 0.6, A1 = 0.2 + 0.5 * 0.6 = 0.5, A0 = -0.3 + 0.5 * 0.5 = -0.05; returns = A + V
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 0.4]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    adv, ret = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.5)
    assert torch.allclose(adv, torch.tensor([[-0.05, 0.5, 0.6]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.45, 0.7, 1.0]]), atol=1e-6)


def test_gae_discount_and_padding():
    # γ = 0.9, λ = 0.8, second row ends after 2 tokens (its padding must not matter):
    # row 1: δ = [0.1 + 0.9*0.3 - 0.2, -0.2 + 0.9*0.1 - 0.3, 1.0 - 0.1] = [0.17, -0.41, 0.9]
    #        A2 = 0.9, A1 = -0.41 + 0.72*0.9 = 0.238, A0 = 0.17 + 0.72*0.238 = 0.34136
    # row 2: δ = [0 + 0.9*0.5 - 1.0, 2.0 - 0.5] = [-0.55, 1.5]; A1 = 1.5, A0 = -0.55 + 0.72*1.5 = 0.53
    rewards = torch.tensor([[0.1, -0.2, 1.0], [0.0, 2.0, 99.0]])
    values = torch.tensor([[0.2, 0.3, 0.1], [1.0, 0.5, 77.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv, ret = ppo.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    assert torch.allclose(adv, torch.tensor([[0.34136, 0.238, 0.9], [0.53, 1.5, 0.0]]), atol=1e-6)
    assert torch.allclose(ret[1], torch.tensor([1.53, 2.0, 0.0]), atol=1e-6)


def test_gae_limits():
    g = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    mask = torch.ones(4, 6, dtype=torch.bool)
    adv1, _ = ppo.gae(rewards, values, mask, gamma=1.0, lam=1.0)  # Monte Carlo: return-to-go minus V
    to_go = rewards.flip(1).cumsum(1).flip(1)
    assert torch.allclose(adv1, to_go - values, atol=1e-5)
    adv0, _ = ppo.gae(rewards, values, mask, gamma=0.7, lam=0.0)  # one-step TD error
    next_v = torch.cat([values[:, 1:], torch.zeros(4, 1)], dim=1)
    assert torch.allclose(adv0, rewards + 0.7 * next_v - values, atol=1e-6)


def test_gae_bad_input():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="lam"):
        ppo.gae(x, x, x.bool(), lam=1.5)
    with pytest.raises(ValueError, match="must match"):
        ppo.gae(x, torch.zeros(2, 4), x.bool())


def test_kl_penalized_rewards_hand_example():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -3.0, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -3.0, -1.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    r = ppo.kl_penalized_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, beta=0.1)
    # -β(logp - ref) = [[-0.05, 0.1, 0], [-0.1, 0, (padding) 0]]; score added at the last real token
    assert torch.allclose(r, torch.tensor([[-0.05, 0.1, 2.0], [-0.1, -1.0, 0.0]]), atol=1e-6)


# ---------------------------------------------------------------- the clipped losses


def _policy_grad(ratio, advantage, eps=0.2):
    old = torch.zeros(1, 1)
    logp = torch.log(torch.tensor([[ratio]])).requires_grad_(True)
    loss, clipfrac = ppo.ppo_policy_loss(logp, old, torch.tensor([[advantage]]), torch.ones(1, 1, dtype=torch.bool), eps)
    loss.backward()
    return loss.item(), logp.grad.item(), clipfrac.item()


def test_ppo_clip_gives_zero_gradient_outside_trust_region():
    # A > 0 and ρ > 1 + ε: the objective is flat (already improved enough); likewise A < 0 and ρ < 1 - ε
    for ratio, adv in ((1.5, 1.0), (1.21, 3.0), (0.5, -1.0), (0.79, -2.0)):
        loss, grad, clipfrac = _policy_grad(ratio, adv)
        assert grad == 0.0 and clipfrac == 1.0
        assert loss == pytest.approx(-adv * min(max(ratio, 0.8), 1.2), rel=1e-6)


def test_ppo_gradient_inside_and_on_the_pessimistic_side():
    # inside the region, or outside on the side the advantage disfavours, the gradient is -A ρ
    for ratio, adv in ((1.1, 1.0), (0.9, -1.0), (0.5, 2.0), (1.6, -0.5)):
        loss, grad, clipfrac = _policy_grad(ratio, adv)
        assert grad == pytest.approx(-adv * ratio, rel=1e-5)  # d(-A ρ)/d log π = -A ρ
        assert loss == pytest.approx(-adv * ratio, rel=1e-5) and clipfrac == 0.0


def test_ppo_value_loss_hand_example():
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.5, 0.1]])
    returns = torch.tensor([[2.0, 0.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    # position 0: V - R = -1; clipped V = 0.5 + 0.2 = 0.7, 0.7 - 2 = -1.3 -> max of squares 1.69
    # position 1: V - R = 0; clipped V = 0.1 + (-0.1) = 0.0 -> 0
    assert ppo.ppo_value_loss(values, old, returns, mask, clip=0.2).item() == pytest.approx(0.5 * 1.69 / 2)


def test_masked_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, -50.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    w = ppo.masked_whiten(x, mask)
    real = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = (real - real.mean()) / real.std(unbiased=False)
    assert torch.allclose(w[mask], expected, atol=1e-5) and (w[~mask] == 0).all()


# ---------------------------------------------------------------- β controllers


def test_kl_controllers():
    fixed = ppo.FixedKLController(0.1)
    fixed.update(50.0, 64)
    assert fixed.beta == 0.1
    up = ppo.AdaptiveKLController(0.1, target=2.0, horizon=100)
    up.update(3.0, 10)  # error = min(3/2 - 1, 0.2) = 0.2 -> β (1 + 0.2 * 10/100)
    assert up.beta == pytest.approx(0.1 * 1.02)
    down = ppo.AdaptiveKLController(0.1, target=2.0, horizon=100)
    down.update(1.8, 10)  # error = -0.1
    assert down.beta == pytest.approx(0.1 * (1 - 0.01))
    with pytest.raises(ValueError, match="target"):
        ppo.AdaptiveKLController(0.1, target=0.0)
    with pytest.raises(ValueError, match="beta"):
        ppo.FixedKLController(-1.0)


# ---------------------------------------------------------------- responses and sampling


def test_encode_responses_hand_example():
    seqs, mask = rlhf.encode_responses([[5, 6], [7, 8, 9, 10, 11]], [EOS], max_len=4, eos_id=EOS, pad_id=PAD)
    assert seqs.tolist() == [[EOS, 5, 6, EOS, PAD], [EOS, 7, 8, 9, 10]]  # complete text gets <eos>; long text is cut
    assert mask.tolist() == [[True, True, True, False], [True, True, True, True]]
    with pytest.raises(ValueError, match="max_len"):
        rlhf.encode_responses([[5]], [EOS], 0, EOS)


def test_check_responses_rejects_bad_masks():
    seqs = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="prefix"):
        rlhf.check_responses(seqs, torch.tensor([[True, False, True], [True, True, True]]))
    with pytest.raises(TypeError, match="bool"):
        rlhf.check_responses(seqs, torch.ones(2, 3))
    with pytest.raises(ValueError, match="does not fit"):
        rlhf.check_responses(seqs, torch.ones(2, 4, dtype=torch.bool))


def test_sample_responses_reads_each_token_once_through_the_model_cache():
    model = tiny_gpt(1, std=0.3)
    lengths = []  # tokens embedded per forward pass
    handle = model.transformer.wte.register_forward_pre_hook(lambda m, args: lengths.append(args[0].size(1)))
    try:
        seqs, mask = rlhf.sample_responses(model, [EOS, 5, 6], 4, 6, eos_id=99,
                                           generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert lengths == [3, 1, 1, 1, 1, 1]  # the prompt once, then one new token per step (no eos: 6 tokens)
    assert mask.all() and seqs.shape == (4, 9)


def test_sample_responses_matches_generate_sample_and_is_seeded():
    model = tiny_gpt(2, std=0.3)
    seqs, mask = rlhf.sample_responses(model, [EOS, 5], 16, 7, EOS, torch.Generator().manual_seed(3))
    ref = generate.sample(model, torch.tensor([[EOS, 5]] * 16), 7, seed=3, eos_id=EOS)  # (16, <=9)
    assert torch.equal(ref, generate.sample(model, torch.tensor([[EOS, 5]] * 16), 7, seed=3, eos_id=EOS,
                                            use_cache=False))
    for row, m, r in zip(seqs, mask, ref):
        n = int(m.sum())
        assert row[2:2 + n].tolist() == r[2:2 + n].tolist()
        assert (row[2 + n:] == PAD).all()  # after the first eos: padding
        assert n == 7 or row[1 + n] == EOS
    again, _ = rlhf.sample_responses(model, [EOS, 5], 16, 7, EOS, torch.Generator().manual_seed(3))
    assert torch.equal(seqs, again)
    assert int((seqs[:, 2:] == EOS).sum()) > 0  # the test exercised the eos path


def test_sample_responses_draws_by_inverse_cdf_from_the_same_distribution():
    model = tiny_gpt(2, std=0.5)
    n = 20_000
    first = {}
    for draw in ("multinomial", "inverse_cdf"):
        seqs, _ = rlhf.sample_responses(model, [EOS, 5], n, 1, EOS, torch.Generator().manual_seed(4), draw=draw)
        first[draw] = torch.bincount(seqs[:, 2], minlength=12).double() / n
    with torch.no_grad():
        p = model(torch.tensor([[EOS, 5]]))[0][0, -1].double().softmax(-1)  # (V,)
    se = (p * (1 - p) / n).sqrt()
    for draw, freq in first.items():
        assert (freq - p).abs().le(5 * se + 1e-9).all(), draw
    seqs, mask = rlhf.sample_responses(model, [EOS, 5], 16, 7, EOS, torch.Generator().manual_seed(3), draw="inverse_cdf")
    again, _ = rlhf.sample_responses(model, [EOS, 5], 16, 7, EOS, torch.Generator().manual_seed(3), draw="inverse_cdf")
    assert torch.equal(seqs, again)


def test_sample_responses_bad_input():
    model = tiny_gpt(0)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="block_size"):
        rlhf.sample_responses(model, [EOS, 4], 2, 10, EOS, g)  # 2 + 10 - 1 > 10
    with pytest.raises(TypeError, match="torch.Generator"):
        rlhf.sample_responses(model, [EOS], 2, 3, EOS, 0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        rlhf.sample_responses(model, [EOS], 2, 3, EOS, g, temperature=0.0)
    with pytest.raises(TypeError, match="llmcourse.models.GPT"):
        rlhf.sample_responses(torch.nn.Linear(2, 2), [EOS], 2, 3, EOS, g)
    with pytest.raises(ValueError, match="prompt"):
        rlhf.sample_responses(model, [], 2, 3, EOS, g)
    with pytest.raises(ValueError, match=r"draw must be one of \['inverse_cdf', 'multinomial'\], got 'gumbel'"):
        rlhf.sample_responses(model, [EOS], 2, 3, EOS, g, draw="gumbel")


def test_response_logprobs_and_sequence_kl():
    model = tiny_gpt(3, std=0.3)
    seqs, mask = rlhf.encode_responses([[4, 5, 6], [7, 8]], [EOS, 9], 4, EOS)
    logp = rlhf.response_logprobs(model, seqs, prompt_len=2)  # (2, 4)
    logits, _ = model(seqs)
    by_hand = torch.log_softmax(logits[0, 1], -1)[4] + torch.log_softmax(logits[0, 2], -1)[5]
    assert torch.allclose(logp[0, :2].sum(), by_hand, atol=1e-5)
    assert torch.allclose(rlhf.sequence_kl(logp, logp, mask), torch.zeros(2))
    other = tiny_gpt(4, std=0.3)
    kl = rlhf.sequence_kl(logp, rlhf.response_logprobs(other, seqs, 2), mask)
    assert kl.shape == (2,) and not torch.allclose(kl, torch.zeros(2))


def test_gpt_hidden_feeds_the_output_layer():
    model = tiny_gpt(5, std=0.3)
    idx = torch.randint(0, 12, (2, 6), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(model.lm_head(rlhf.gpt_hidden(model, idx)), model(idx)[0], atol=1e-6)


def test_sft_batcher_targets():
    seqs, mask = rlhf.encode_responses([[5, 6], [7, 8, 9, 10]], [EOS, 11], 4, EOS)
    x, y = rlhf.sft_batcher(seqs, mask, 8)(0, torch.Generator().manual_seed(0))
    for xi, yi in zip(x, y):
        row = 0 if xi[2] == 5 else 1
        expected = {0: [IGNORE_INDEX, 5, 6, EOS, IGNORE_INDEX], 1: [IGNORE_INDEX, 7, 8, 9, 10]}[row]
        assert yi.tolist() == expected and xi.tolist() == seqs[row, :-1].tolist()


# ---------------------------------------------------------------- reward model, Platt scaling, best-of-n


def test_reward_model_reads_the_last_real_token():
    rm = rlhf.RewardModel.from_gpt(tiny_gpt(6, std=0.3))
    assert torch.equal(rm.body.transformer.wte.weight, tiny_gpt(6, std=0.3).transformer.wte.weight)
    seqs, mask = rlhf.encode_responses([[4, 5], [6, 7, 8, 9, 10]], [EOS], 4, EOS)  # row 1 is cut: no eos
    r, _ = rm(seqs, mask)
    by_hand = rm.head(rlhf.gpt_hidden(rm.body, seqs)[[0, 1], [3, 4]]).squeeze(-1)  # eos of row 0; 9 of row 1
    assert torch.allclose(r, by_hand, atol=1e-6)
    changed = seqs.clone()
    changed[0, 4:] = 11  # padding after the response: must not change its reward
    assert torch.allclose(rm(changed, mask)[0], r, atol=1e-6)
    margin, loss = rm(seqs[:1], mask[:1], seqs[1:], mask[1:])
    assert torch.allclose(margin, r[:1] - r[1:], atol=1e-6)
    assert torch.allclose(loss, rlhf.bradley_terry_loss(r[:1], r[1:]), atol=1e-6)


def test_platt_scale_solves_the_likelihood_equations():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4000, generator=g) * 2
    y = (torch.rand(4000, generator=g) < torch.sigmoid(1.5 * s - 0.7)).long()
    a, b = rlhf.platt_scale(s, y)
    assert a == pytest.approx(1.5, abs=0.15) and b == pytest.approx(-0.7, abs=0.15)
    p = torch.sigmoid(a * s.double() + b)  # the maximum-likelihood conditions: zero gradient
    assert abs(float((p - y).sum())) < 1e-3 and abs(float(((p - y) * s).sum())) < 1e-3
    with pytest.raises(ValueError, match="0 or 1"):
        rlhf.platt_scale(s[:3], torch.tensor([0, 2, 1]))


def test_best_of_n_kl_bound_against_exact_discrete_value():
    # base: uniform over K outcomes with distinct rewards; best-of-n picks rank i with probability
    # (i/K)^n - ((i-1)/K)^n. As K grows, the exact KL tends to log n - (n-1)/n.
    K = 200_000
    i = torch.arange(1, K + 1, dtype=torch.float64)
    for n in (1, 2, 4, 16):
        p = (i / K) ** n - ((i - 1) / K) ** n
        kl = float((p * torch.log(p * K)).sum())
        assert kl == pytest.approx(rlhf.best_of_n_kl_bound(n), abs=1e-3)
    with pytest.raises(ValueError, match="n must be"):
        rlhf.best_of_n_kl_bound(0)


# ---------------------------------------------------------------- PPO end to end


def test_ppo_learns_a_toy_reward_and_beta_limits_kl():
    """Reward = share of token 5 in the response: PPO must raise it; a large β must keep KL smaller."""
    ref = tiny_gpt(7, vocab_size=8, block_size=8)

    def reward_fn(seqs, mask):
        return ((seqs[:, 1:] == 5) & mask).float().sum(1) / mask.sum(1)

    results = {}
    for beta in (0.0, 1.0):
        policy = ppo.PolicyWithValue(copy.deepcopy(ref))
        cfg = ppo.PPOConfig(iterations=25, batch_size=32, max_new_tokens=6, minibatch_size=16, lr=3e-3, beta=beta)
        results[beta] = ppo.ppo_train(policy, ref, reward_fn, [EOS], EOS, cfg,
                                      rollout_stats=lambda s, m: {"n": float(m.sum())})
    h0, h1 = results[0.0], results[1.0]
    assert sum(h0["score"][-5:]) / 5 > sum(h0["score"][:5]) / 5 + 0.3
    assert sum(h1["kl"][-5:]) < sum(h0["kl"][-5:])
    assert len(h0["n"]) == 25 and h0["beta"] == [0.0] * 25
    assert all(0.0 <= e <= math.log(8) + 1e-6 for e in h0["entropy"])
    assert sum(h0["entropy"][-5:]) < sum(h0["entropy"][:5])  # chasing the reward makes the policy surer


def test_response_entropy_is_the_entropy_of_the_next_token_distribution():
    model = tiny_gpt(3, vocab_size=8, block_size=8)
    seqs = torch.tensor([[EOS, 1, 2, 5], [EOS, 4, 4, 4]])
    with torch.no_grad():
        probs = model(seqs[:, :-1])[0].softmax(-1)  # (B, 3, V): the distributions of positions 1..3
        expected = -(probs * probs.log()).sum(-1)
    torch.testing.assert_close(rlhf.response_entropy(model, seqs, 1), expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied to the embedding: every logit 0, the uniform distribution
    torch.testing.assert_close(rlhf.response_entropy(model, seqs, 1), torch.full((2, 3), math.log(8)))


def test_ppo_config_errors():
    with pytest.raises(ValueError, match="minibatch_size"):
        ppo.PPOConfig(batch_size=8, minibatch_size=16)
    with pytest.raises(ValueError, match="iterations"):
        ppo.PPOConfig(iterations=0)
    with pytest.raises(TypeError, match="PolicyWithValue"):
        ppo.ppo_train(tiny_gpt(), tiny_gpt(), lambda s, m: s, [EOS], EOS, ppo.PPOConfig())


# ---------------------------------------------------------------- prompts of their own (chapter 9's frontier)


def test_a_tensor_of_equal_prompts_samples_as_the_shared_prompt():
    model = tiny_gpt(2, std=0.5)
    shared = rlhf.sample_responses(model, [EOS, 5], 6, 5, EOS, torch.Generator().manual_seed(1))
    rows = torch.tensor([[EOS, 5]] * 6)
    per_row = rlhf.sample_responses(model, rows, 6, 5, EOS, torch.Generator().manual_seed(1))
    assert torch.equal(shared[0], per_row[0]) and torch.equal(shared[1], per_row[1])


def test_each_row_answers_its_own_prompt():
    model = tiny_gpt(2, std=1.0)
    rows = torch.tensor([[EOS, 5], [EOS, 6], [EOS, 7]])
    greedy = dict(temperature=1e-4)  # (nearly) one-hot distributions: the draws do not matter
    seqs, mask = rlhf.sample_responses(model, rows, 3, 4, EOS, torch.Generator().manual_seed(0), **greedy)
    assert torch.equal(seqs[:, :2], rows)
    for i in range(3):
        alone, alone_mask = rlhf.sample_responses(model, rows[i].tolist(), 1, 4, EOS, torch.Generator().manual_seed(9), **greedy)
        assert torch.equal(alone[0], seqs[i]) and torch.equal(alone_mask[0], mask[i])
    assert len({tuple(r) for r in seqs[:, 2:].tolist()}) > 1  # the prompts lead to different answers
    with pytest.raises(ValueError, match=r"\(n=2, P\)"):
        rlhf.sample_responses(model, rows, 2, 4, EOS, torch.Generator())
    with pytest.raises(ValueError, match="at least one token"):
        rlhf.sample_responses(model, [], 2, 4, EOS, torch.Generator())


def test_ppo_draws_prompts_from_a_pool_and_reports_each_iteration():
    ref = tiny_gpt(7, vocab_size=8, block_size=8)
    pool = torch.tensor([[EOS, 1], [EOS, 2], [EOS, 4]])
    seen, calls = set(), []

    def reward_fn(seqs, mask):
        seen.update(seqs[:, 1].tolist())
        assert seqs.size(1) == 2 + 5
        return ((seqs[:, 2:] == 5) & mask).float().sum(1)

    policy = ppo.PolicyWithValue(copy.deepcopy(ref))
    cfg = ppo.PPOConfig(iterations=3, batch_size=16, max_new_tokens=5, minibatch_size=8)
    history = ppo.ppo_train(policy, ref, reward_fn, pool, EOS, cfg,
                            on_iteration=lambda i: calls.append((i, policy.training)))
    assert seen == {1, 2, 4} and calls == [(1, False), (2, False), (3, False)] and len(history["kl"]) == 3
    with pytest.raises(ValueError, match="tensor of prompts"):
        ppo.ppo_train(ppo.PolicyWithValue(copy.deepcopy(ref)), ref, reward_fn, pool[0], EOS, cfg)
