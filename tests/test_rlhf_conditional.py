"""Chapter 9's conditional task: prompts are review beginnings, the proxy and the gold judge learn from
disjoint halves, texts are decoded exactly, and a policy's measurements mean what they say."""
import copy

import pytest
import torch

from llmcourse.chapters import rlhf, rlhf_conditional as rc
from llmcourse.data.corpus import Review
from llmcourse.data.tokenizers import EOS_ID, CharTokenizer
from llmcourse.models.gpt import GPT, GPTConfig

GOOD, BAD = "好棒满意喜欢", "差烂失望错"


def reviews(n, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        label = i % 2
        chars = GOOD if label else BAD
        k = int(torch.randint(3, 14, (1,), generator=g))
        out.append(Review("".join(chars[int(j)] for j in torch.randint(len(chars), (k,), generator=g)), label))
    return out


@pytest.fixture(scope="module")
def setting():
    data = {"train": reviews(80, 0), "test": reviews(30, 1)}
    tok = CharTokenizer(min_freq=1).train([r.text for r in data["train"]])
    task = rc.conditional_task(tok, data, L=6, eos_id=EOS_ID, n_eval=12)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok), block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    return data, tok, task, model


def test_prompts_are_review_beginnings_and_demos_continue_them(setting):
    data, tok, task, _ = setting
    usable = [r for r in data["train"] if len(r.text) > rc.PREFIX]
    assert task.train_prompts.shape == (len(usable), 1 + rc.PREFIX) and task.prompt_len == 5
    assert bool((task.train_prompts[:, 0] == EOS_ID).all())
    seqs, mask = task.demos
    assert torch.equal(seqs[:, :5], task.train_prompts)
    assert rc.texts_of(task, seqs, mask) == [r.text[: rc.PREFIX + 6] for r in usable]
    ends = [len(r.text) - rc.PREFIX + 1 <= 6 for r in usable]  # the review ends inside L: <eos> follows it
    assert [bool((seqs[i, 5:][mask[i]] == EOS_ID).any()) for i in range(len(usable))] == ends
    assert len(task.positive_demos[0]) == sum(r.label for r in usable)
    assert task.eval_prompts.shape == (12, 5)


def test_the_proxy_and_the_gold_judge_learn_from_disjoint_halves(setting):
    data, _, task, _ = setting
    a, b = {id(r) for r in task.half_a}, {id(r) for r in task.half_b}
    assert not a & b and len(a) + len(b) == len([r for r in data["train"] if len(r.text) > rc.PREFIX])
    gold = rc.train_gold_judge(task)
    assert rc.review_beginning(task, task.half_b[0]) == task.half_b[0].text[:10]
    acc = rc.judge_accuracies(task, rlhf.RewardModel(GPTConfig(vocab_size=len(setting[1]), block_size=16, n_layer=1,
                                                               n_head=2, n_embd=16)), gold, data["test"])
    assert acc["gold"] == 1.0 and 0.0 <= acc["proxy"] <= 1.0  # separable characters: the judge is perfect


def test_label_pairs_use_each_row_once():
    labels = torch.tensor([1, 0, 1, 1, 0, 0, 0])
    seqs = torch.arange(7)[:, None].repeat(1, 3)
    mask = torch.ones(7, 2, dtype=torch.bool)
    chosen, _, rejected, _ = rc.label_pairs(seqs, mask, labels, seed=0)
    assert len(chosen) == 3 and set(labels[chosen[:, 0]].tolist()) == {1} and set(labels[rejected[:, 0]].tolist()) == {0}
    assert len(set(chosen[:, 0].tolist()) | set(rejected[:, 0].tolist())) == 6


def test_measurements_of_a_policy(setting):
    _, tok, task, model = setting
    rm = rc.train_proxy_reward(model, task, rc.rm_config(steps=20))
    gold = rc.train_gold_judge(task)
    same = rc.evaluate_policy(task, model, copy.deepcopy(model), rm, gold, seed=0)
    assert same["kl"] == pytest.approx(0.0, abs=1e-6)
    assert set(same) == {"proxy", "gold", "proxy_pos", "gold_pos", "kl", "distinct2", "length", "cuo"}
    assert 0.0 <= same["gold_pos"] <= 1.0 and 1.0 <= same["length"] <= 6.0
    # 错 outside 不错 is counted per response (here the prompt's characters are not)
    seqs, mask = rlhf.encode_responses([tok.encode("错错好")], [EOS_ID] * 5, 6, EOS_ID)
    assert rc.measure(task, seqs, mask, rm, gold, kl=1.5)["cuo"] == 2.0
    assert rc.measure(task, seqs, mask, rm, gold, kl=1.5)["kl"] == 1.5
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.transformer.h[0].mlp.c_fc.weight.mul_(3.0)
    s, m = rlhf.sample_responses(other, task.eval_prompts, 12, 6, EOS_ID, torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = rlhf.sequence_kl(rlhf.response_logprobs(other, s, 5), rlhf.response_logprobs(model, s, 5), m)
    torch.testing.assert_close(rc.kl_per_response(other, model, s, m), direct)
    assert float(direct.abs().max()) > 0.0
