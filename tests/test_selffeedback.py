"""Self-feedback: the joint loss at its ends, the pseudo-sample losses against hand-computed NLLs,
pseudo-sample modes against llmcourse.generate, the arithmetic verifier, rejection sampling on a model
whose samples are known, the articles' loop against plain SGD done by hand, and the filtered loop."""
import copy
import math
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse import generate
from llmcourse.core.checks import IGNORE_INDEX
from llmcourse.data.batching import random_batches
from llmcourse.models import GPT, GPTConfig
from llmcourse.chapters.selffeedback import (
    FilteredConfig, SelfFeedbackConfig, articles_pseudo_loss, check_addition, check_lambda, completion_batch,
    filtered_self_training, joint_loss, pseudo_loss, pseudo_samples, rejection_sample, self_feedback,
    sequence_nll, verified_accuracy,
)


class BigramLM(nn.Module):
    """Next-token logits depend only on the last token: NLLs can be read off the table by hand."""

    block_size = None

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.as_tensor(table, dtype=torch.float32))  # (V, V)

    def forward(self, idx, targets=None):
        return self.table[idx], None  # (B, T, V)


def tiny_gpt(vocab=10, block_size=16, seed=0, width=32):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=2, n_head=2, n_embd=width))


def random_bigram(V=6, seed=0, scale=1.5):
    return BigramLM(torch.randn(V, V, generator=torch.Generator().manual_seed(seed)) * scale)


# ---------------------------------------------------------------- the joint loss


def test_joint_loss_ends_and_middle():
    lm, ps = torch.tensor(2.345678), torch.tensor(0.123456)
    assert torch.equal(joint_loss(lm, ps, 1.0), lm)
    assert torch.equal(joint_loss(lm, ps, 0.0), ps)
    assert torch.equal(joint_loss(lm, None, 1), lm)  # the unused loss need not be computed
    assert torch.equal(joint_loss(None, ps, 0), ps)
    torch.testing.assert_close(joint_loss(lm, ps, 0.3), 0.3 * lm + 0.7 * ps)


def test_joint_loss_at_the_ends_on_a_model_equals_each_loss():
    model = tiny_gpt()
    x = torch.randint(0, 10, (3, 8), generator=torch.Generator().manual_seed(1))
    lm = sequence_nll(model, x[:, :-1], x[:, 1:])
    ps = pseudo_loss(model, x[:, :-1].flip(1), x[:, 1:].flip(1))
    assert joint_loss(lm, ps, 1.0).item() == lm.item()
    assert joint_loss(lm, ps, 0.0).item() == ps.item()
    # and the loss the model reports itself for the same targets
    torch.testing.assert_close(lm, model(x[:, :-1], x[:, 1:])[1])


@pytest.mark.parametrize("lam", [-0.1, 1.5, float("nan"), float("inf"), True, "0.5", None])
def test_lambda_outside_0_1_is_refused(lam):
    with pytest.raises(ValueError, match="λ"):
        joint_loss(torch.tensor(1.0), torch.tensor(1.0), lam)
    with pytest.raises(ValueError, match="λ"):
        SelfFeedbackConfig(lam=lam)


def test_missing_loss_is_refused():
    with pytest.raises(ValueError, match="needs the pseudo-sample loss"):
        joint_loss(torch.tensor(1.0), None, 0.5)
    with pytest.raises(ValueError, match="needs the LM loss"):
        joint_loss(None, torch.tensor(1.0), 0.5)
    assert check_lambda(0) == 0.0 and check_lambda(1) == 1.0


# ---------------------------------------------------------------- pseudo-sample losses


def test_completion_batch_masks_prompt_and_padding():
    x, y = completion_batch([[3, 5, 6, 7], [3, 4, 9]], [2, 1], pad_id=0)
    assert x.tolist() == [[3, 5, 6], [3, 4, 0]]
    # sequence 0: prompt [3, 5], targets 6 and 7 count; sequence 1: prompt [3], targets 4 and 9 count
    assert y.tolist() == [[IGNORE_INDEX, 6, 7], [4, 9, IGNORE_INDEX]]
    x1, y1 = completion_batch([[1, 2, 3]], 1)
    assert y1.tolist() == [[2, 3]]


def test_completion_batch_errors():
    with pytest.raises(ValueError, match="empty sample set"):
        completion_batch([], 1)
    with pytest.raises(ValueError, match="empty sample set"):
        completion_batch([[3, 4], [3, 5]], 2)  # prompts only: no completion token
    with pytest.raises(ValueError, match="prompt length"):
        completion_batch([[3, 4]], [5])
    with pytest.raises(ValueError, match="one per sequence"):
        completion_batch([[3, 4, 5]], [1, 1])
    with pytest.raises(TypeError):
        completion_batch("abc", 1)


def test_pseudo_loss_is_the_nll_of_the_sample_by_hand():
    model = random_bigram(V=6, seed=3)
    logp = model.table.detach().double().log_softmax(-1)  # logp[a, b] = log p(b | a)
    seqs, prompt_lens = [[0, 2, 5, 1, 4], [3, 3, 0]], [2, 1]
    by_hand = [-logp[2, 5], -logp[5, 1], -logp[1, 4], -logp[3, 3], -logp[3, 0]]  # completion tokens only
    x, y = completion_batch(seqs, prompt_lens)
    assert pseudo_loss(model, x, y).item() == pytest.approx(float(sum(by_hand) / len(by_hand)), rel=1e-6)


def test_pseudo_loss_on_a_gpt_equals_the_nll_from_separate_prefixes():
    model = tiny_gpt().eval()
    seq, n_prompt = [3, 7, 1, 8, 2, 9, 4], 3
    terms = []
    with torch.no_grad():
        for t in range(n_prompt, len(seq)):  # score token t from its own prefix, one forward each
            logits = model(torch.tensor([seq[:t]]))[0][0, -1]
            terms.append(-torch.log_softmax(logits.double(), -1)[seq[t]])
    x, y = completion_batch([seq], n_prompt)
    with torch.no_grad():
        got = pseudo_loss(model, x, y)
    assert float(got) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-5)


def test_articles_pseudo_loss_scores_the_pseudo_token_after_the_real_prefix():
    model = random_bigram(V=5, seed=4)
    logp = model.table.detach().double().log_softmax(-1)
    x = torch.tensor([[0, 1, 2, 3]])  # real text
    x_hat = torch.tensor([[0, 1, 4, 4]])  # pseudo text, aligned position by position
    by_hand = -(logp[0, 1] + logp[1, 4] + logp[2, 4]) / 3  # log p(x̂_t | x_<t): real prefix, pseudo token
    assert articles_pseudo_loss(model, x, x_hat).item() == pytest.approx(float(by_hand), rel=1e-6)
    # with x̂ = x the formula is the LM loss itself (what the articles' worked example computes)
    assert articles_pseudo_loss(model, x, x).item() == pytest.approx(sequence_nll(model, x[:, :-1], x[:, 1:]).item())
    # the correct pseudo loss reads the pseudo prefix instead: it differs once the texts diverge
    correct = -(logp[0, 1] + logp[1, 4] + logp[4, 4]) / 3
    assert pseudo_loss(model, x_hat[:, :-1], x_hat[:, 1:]).item() == pytest.approx(float(correct), rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        articles_pseudo_loss(model, x, x_hat[:, :3])


def test_sequence_nll_refuses_all_ignored_targets():
    model = random_bigram()
    with pytest.raises(ValueError, match="no target"):
        sequence_nll(model, torch.tensor([[1, 2]]), torch.full((1, 2), IGNORE_INDEX))


# ---------------------------------------------------------------- pseudo-sample generation


def test_greedy_mode_equals_generate_greedy_for_mixed_lengths():
    model = tiny_gpt()
    prompts = [[3, 5], [3, 7, 1], [3, 2], [3]]
    got = pseudo_samples(model, prompts, 6, "greedy")
    assert got == [generate.greedy(model, p, 6) for p in prompts]


def test_sample_mode_equals_generate_sample_with_the_same_seed():
    model = tiny_gpt()
    prompts = [[3, 5, 1], [3, 7, 1], [3, 2, 2]]  # one length: one batch, seeded with `seed`
    got = pseudo_samples(model, prompts, 8, "sample", temperature=0.8, top_k=5, seed=11)
    expected = generate.sample(model, torch.tensor(prompts), 8, temperature=0.8, top_k=5, seed=11).tolist()
    assert got == expected
    assert got == pseudo_samples(model, prompts, 8, "sample", temperature=0.8, top_k=5, seed=11)  # repeatable
    assert got != pseudo_samples(model, prompts, 8, "sample", temperature=0.8, top_k=5, seed=12)


def test_beam_mode_equals_generate_beam_search():
    model = tiny_gpt()
    prompts = [[3, 5], [3, 7, 1]]
    got = pseudo_samples(model, prompts, 5, "beam", beam_width=3, eos_id=4)
    assert got == [generate.beam_search(model, p, 5, beam_width=3, eos_id=4) for p in prompts]


def test_samples_end_after_the_first_eos():
    table = torch.full((5, 5), -9.0)
    table[0, 1] = table[1, 2] = table[2, 4] = table[4, 4] = table[3, 3] = 9.0  # 0 -> 1 -> 2 -> eos(4)
    model = BigramLM(table)
    got = pseudo_samples(model, [[0], [3]], 6, "greedy", eos_id=4)
    assert got == [[0, 1, 2, 4], [3, 3, 3, 3, 3, 3, 3]]  # the batch pads row 0 with eos; it is cut


def test_banned_tokens_are_never_generated():
    model = random_bigram(V=6, seed=2, scale=3.0)
    banned_table = model.table.detach().clone()
    banned_table[:, [1, 4]] = -1e9  # the same model with tokens 1 and 4 made impossible by hand
    by_hand = BigramLM(banned_table)
    prompts = [[0], [2], [3]]
    assert pseudo_samples(model, prompts, 8, "greedy", ban_ids=[4, 1]) == \
        [generate.greedy(by_hand, p, 8) for p in prompts]
    assert pseudo_samples(model, prompts, 8, "beam", beam_width=3, ban_ids=[1, 4]) == \
        [generate.beam_search(by_hand, p, 8, beam_width=3) for p in prompts]
    sampled = pseudo_samples(model, [[0]] * 50, 10, "sample", seed=0, ban_ids=(1, 4))
    assert not any(t in (1, 4) for s in sampled for t in s[1:])
    assert sampled == pseudo_samples(by_hand, [[0]] * 50, 10, "sample", seed=0)
    with pytest.raises(ValueError, match="ban_ids"):
        pseudo_samples(model, prompts, 2, ban_ids=[-1])
    with pytest.raises(TypeError, match="ban_ids"):
        pseudo_samples(model, prompts, 2, ban_ids=3)


def test_pseudo_samples_errors():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="mode"):
        pseudo_samples(model, [[1]], 3, "top-k")
    with pytest.raises(ValueError, match="no prompts"):
        pseudo_samples(model, [], 3)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        pseudo_samples(model, [[1], []], 3)
    with pytest.raises(TypeError):
        pseudo_samples(model, "abc", 3)
    with pytest.raises(TypeError):
        pseudo_samples(model, [[1.5, 2]], 3)


# ---------------------------------------------------------------- the verifier


@pytest.mark.parametrize("text,ok", [
    ("23+58=81", True), ("0+0=0", True), ("99+99=198", True), ("7+5=12", True),
    ("23+58=80", False), ("23+58=081", False), ("23+58=81+1", False), ("23+58=", False),
    ("", False), ("a+b=c", False), (" 23+58=81", False), ("23-58=81", False), ("23+58=8 1", False),
])
def test_check_addition(text, ok):
    assert check_addition(text) is ok


def test_check_addition_needs_a_string():
    with pytest.raises(TypeError, match="str"):
        check_addition(81)


# ---------------------------------------------------------------- rejection sampling


def deterministic_copy_model(V=8, eos=3):
    """After token a (>= 4) the next token is a again with certainty, then eos: prompt [eos, a] -> a, eos."""
    table = torch.full((V, V), -30.0)
    for a in range(4, V):
        table[a, a] = 30.0
    table[eos, 4] = 30.0
    return BigramLM(table)


def test_rejection_sample_on_a_model_with_known_samples():
    model = random_bigram(V=6, seed=0, scale=0.0)  # uniform: every completion equally likely
    prompts = [[0], [1], [2], [3]]
    # accept only completions that start with the prompt's own token
    acc, stats = rejection_sample(model, prompts, lambda p, c: c[0] == p[0], k=50, max_new_tokens=2, seed=0)
    assert stats["pass_at_k"] == 1.0  # 50 uniform draws over 6 tokens: each prompt gets one (seeded)
    assert all(c[0] == p[0] for p, c in acc) and len(acc) == 4  # at most one kept per prompt
    assert 0.05 < stats["accept_rate"] < 0.35  # about 1/6 of the samples
    none, stats0 = rejection_sample(model, prompts, lambda p, c: False, k=3, max_new_tokens=2)
    assert none == [] and stats0 == {"pass_at_k": 0.0, "accept_rate": 0.0}


def test_verified_accuracy_and_rejection_on_a_deterministic_model():
    model = deterministic_copy_model()
    prompts = [[3, 4], [3, 5], [3, 6], [3, 7]]
    is_copy = lambda p, c: c == [p[-1], p[-1]]  # noqa: E731
    assert verified_accuracy(model, prompts, is_copy, 2) == 1.0
    acc, stats = rejection_sample(model, prompts, lambda p, c: p[-1] in (4, 5), k=4, max_new_tokens=2)
    assert stats == {"pass_at_k": 0.5, "accept_rate": 0.5}
    assert acc == [([3, 4], [4, 4]), ([3, 5], [5, 5])]
    with pytest.raises(TypeError, match="verifier"):
        rejection_sample(model, prompts, None, k=2, max_new_tokens=2)
    with pytest.raises(ValueError, match="k must"):
        rejection_sample(model, prompts, is_copy, k=0, max_new_tokens=2)


# ---------------------------------------------------------------- the articles' loop


def test_loop_at_lambda_one_is_plain_sgd_on_the_lm_loss():
    stream = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(0))
    model = tiny_gpt()
    by_hand = copy.deepcopy(model)
    cfg = SelfFeedbackConfig(lam=1.0, iterations=2, steps_per_iteration=3, batch_size=4, block_size=8,
                             lr=0.1, optimizer="sgd", grad_clip=None, seed=5)
    history = self_feedback(model, stream, [[1, 2]], cfg)
    g = torch.Generator().manual_seed(5)
    for _ in range(6):  # θ ← θ − η ∇L_LM, written out
        x, y = random_batches(stream, 8, 4, g)
        loss = F.cross_entropy(by_hand(x)[0].reshape(-1, 10), y.reshape(-1))
        grads = torch.autograd.grad(loss, list(by_hand.parameters()))
        with torch.no_grad():
            for p, gr in zip(by_hand.parameters(), grads):
                p -= 0.1 * gr
    for p, q in zip(model.parameters(), by_hand.parameters()):
        torch.testing.assert_close(p, q)
    assert history["iteration"] == [0, 1, 2] and history["samples"] == [None, None, None]
    assert math.isnan(history["pseudo_loss"][1])


def test_loop_at_lambda_zero_learns_its_own_greedy_samples_and_is_deterministic():
    stream = torch.randint(0, 10, (300,), generator=torch.Generator().manual_seed(0))
    pool = [[3, a] for a in range(10)]
    cfg = SelfFeedbackConfig(lam=0.0, iterations=3, steps_per_iteration=10, mode="greedy", n_samples=6,
                             max_new_tokens=6, batch_size=4, block_size=8, lr=3e-3, seed=0)
    runs = []
    for _ in range(2):
        model = tiny_gpt()
        history = self_feedback(model, stream, pool, cfg, eval_fn=lambda m: {"w": float(m.lm_head.weight.sum())})
        runs.append((history, [p.detach().clone() for p in model.parameters()]))
    (h1, p1), (h2, p2) = runs
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))  # bit-identical on the CPU
    assert h1["pseudo_loss"][1:] == h2["pseudo_loss"][1:] and h1["w"] == h2["w"] and len(h1["w"]) == 4
    # training on its own greedy output makes the model more certain of it
    assert h1["pseudo_loss"][3] < 0.5 * h1["pseudo_loss"][1]
    assert all(len(s) == 6 for s in h1["samples"][1:])
    assert math.isnan(h1["lm_loss"][2])


def test_loop_input_errors():
    model = tiny_gpt()
    stream = torch.arange(100) % 10
    with pytest.raises(ValueError, match="no prompts"):
        self_feedback(model, stream, [], SelfFeedbackConfig())
    with pytest.raises(TypeError, match="SelfFeedbackConfig"):
        self_feedback(model, stream, [[1]], {"lam": 0.5})
    with pytest.raises(ValueError, match="mode"):
        SelfFeedbackConfig(mode="nucleus")
    with pytest.raises(ValueError, match="optimizer"):
        SelfFeedbackConfig(optimizer="adam")
    with pytest.raises(ValueError, match="iterations"):
        SelfFeedbackConfig(iterations=0)
    with pytest.raises(ValueError, match="lr"):
        SelfFeedbackConfig(lr=0)
    with pytest.raises(TypeError, match="steps_per_iteration must be an int"):
        SelfFeedbackConfig(steps_per_iteration=2.5)  # refused, not truncated
    with pytest.raises(ValueError, match="grad_clip"):
        SelfFeedbackConfig(grad_clip=float("inf"))


# ---------------------------------------------------------------- filtered self-training


def copy_task(V=10, eos=3):
    prompts = [[eos, a] for a in range(4, V)]
    verifier = lambda p, c: c == [p[-1], eos]  # noqa: E731  the answer is the prompt's token, then eos
    return prompts, verifier


def test_filtered_self_training_improves_on_a_tiny_copy_task_and_is_deterministic():
    prompts, verifier = copy_task()
    cfg = FilteredConfig(rounds=3, k=16, steps_per_round=40, batch_size=8, lr=1e-2, max_new_tokens=2, eos_id=3, seed=0)
    runs = []
    for _ in range(2):
        model = tiny_gpt()
        acc = lambda m: {"acc": verified_accuracy(m, prompts, verifier, 2, eos_id=3)}  # noqa: E731
        runs.append((filtered_self_training(model, prompts, verifier, cfg, eval_fn=acc),
                     [p.detach().clone() for p in model.parameters()]))
    (h1, p1), (h2, p2) = runs
    assert h1 == h2 or all(a == b or (math.isnan(a) and math.isnan(b))
                           for k in h1 for a, b in zip(h1[k], h2[k]))
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert h1["round"] == [0, 1, 2, 3]
    assert h1["acc"][-1] > h1["acc"][0]  # verified samples taught it the task it rarely solved
    assert h1["pass_at_k"][-1] >= h1["pass_at_k"][1]


def test_filtered_round_without_anything_to_learn_makes_no_update():
    prompts, _ = copy_task()
    model = tiny_gpt()
    before = [p.detach().clone() for p in model.parameters()]
    h = filtered_self_training(model, prompts, lambda p, c: False, FilteredConfig(rounds=2, k=2, max_new_tokens=2))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert h["n_train"] == [0, 0, 0] and math.isnan(h["train_loss"][1])
    # with supervised seed data the same round trains on it alone
    h2 = filtered_self_training(model, prompts, lambda p, c: False,
                                FilteredConfig(rounds=1, k=2, steps_per_round=3, max_new_tokens=2),
                                seed_data=[([3, 4], [4, 3])])
    assert h2["n_train"] == [0, 1] and h2["train_loss"][1] > 0


def test_filtered_config_errors():
    with pytest.raises(ValueError, match="k"):
        FilteredConfig(k=0)
    with pytest.raises(ValueError, match="temperature"):
        FilteredConfig(temperature=0.0)
    with pytest.raises(TypeError, match="FilteredConfig"):
        filtered_self_training(tiny_gpt(), [[1]], lambda p, c: True, SelfFeedbackConfig())


def test_an_eval_fn_that_raises_leaves_the_model_in_its_mode():
    """Both loops evaluate in eval mode without gradients and restore the mode even when eval_fn fails."""
    stream = torch.arange(200) % 10
    seen = []

    def failing(m):
        seen.append((m.training, torch.is_grad_enabled()))
        raise RuntimeError("evaluation failed")

    model = tiny_gpt().train()
    with pytest.raises(RuntimeError, match="evaluation failed"):
        self_feedback(model, stream, [[1, 2]], SelfFeedbackConfig(lam=1.0, iterations=1, steps_per_iteration=1),
                      eval_fn=failing)
    assert model.training and seen == [(False, False)]
    prompts, verifier = copy_task()
    with pytest.raises(RuntimeError, match="evaluation failed"):
        filtered_self_training(model, prompts, verifier, FilteredConfig(rounds=1, k=1), eval_fn=failing)
    assert model.training
    model.eval()
    with pytest.raises(RuntimeError):
        self_feedback(model, stream, [[1, 2]], SelfFeedbackConfig(lam=1.0, iterations=1), eval_fn=failing)
    assert not model.training  # an eval-mode model stays in eval mode


def test_restart_fine_tunes_the_starting_model_on_each_rounds_answers():
    """ReST-EM / STaR: with restart, every round starts from the initial weights and trains on that round's
    accepted answers (sampled from the latest model); a one-round run is the same with and without."""
    prompts, verifier = copy_task()
    cfg = FilteredConfig(rounds=3, k=16, steps_per_round=40, batch_size=8, lr=1e-2, max_new_tokens=2, eos_id=3,
                         seed=0, restart=True)
    model = tiny_gpt()
    acc = lambda m: {"acc": verified_accuracy(m, prompts, verifier, 2, eos_id=3)}  # noqa: E731
    h = filtered_self_training(model, prompts, verifier, cfg, eval_fn=acc)
    assert h["acc"][-1] > h["acc"][0]
    assert h["n_train"][1:] == h["n_accepted"][1:]  # no seed data: exactly this round's answers
    one = [tiny_gpt(), tiny_gpt()]
    for m, restart in zip(one, (False, True)):
        filtered_self_training(m, prompts, verifier, replace(cfg, rounds=1, restart=restart))
    assert all(torch.equal(a, b) for a, b in zip(one[0].parameters(), one[1].parameters()))
    with pytest.raises(TypeError, match="restart must be a bool"):
        FilteredConfig(restart=1)


def test_regenerating_every_step_generates_from_each_steps_parameters(monkeypatch):
    """Article 003 §3.2's reading: a fresh batch of batch_size pseudo-samples at every step, from the
    parameters of that step (the default reuses one iteration's samples for all its steps)."""
    import llmcourse.chapters.selffeedback as sfm
    stream = torch.randint(0, 10, (300,), generator=torch.Generator().manual_seed(0))
    pool = [[3, a] for a in range(10)]
    cfg = SelfFeedbackConfig(lam=0.0, iterations=2, steps_per_iteration=5, mode="greedy", n_samples=6,
                             max_new_tokens=6, batch_size=4, block_size=8, lr=3e-3, seed=0, regenerate_every_step=True)
    calls, real = [], sfm.pseudo_samples
    weights_seen = []

    def spy(model, prompts, *args, **kwargs):
        calls.append(len(prompts))
        weights_seen.append(float(model.lm_head.weight.detach().sum()))
        return real(model, prompts, *args, **kwargs)

    monkeypatch.setattr(sfm, "pseudo_samples", spy)
    model = tiny_gpt()
    history = self_feedback(model, stream, pool, cfg)
    assert calls == [4] * 10  # one batch per step, batch_size each
    assert len(set(weights_seen)) == 10  # each from that step's parameters
    assert history["samples"] == [None, None, None] and history["pseudo_loss"][2] < history["pseudo_loss"][1]
    monkeypatch.setattr(sfm, "pseudo_samples", real)
    again = tiny_gpt()
    self_feedback(again, stream, pool, cfg)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    with pytest.raises(TypeError, match="regenerate_every_step must be a bool"):
        SelfFeedbackConfig(regenerate_every_step="yes")
