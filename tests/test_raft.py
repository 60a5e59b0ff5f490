"""RAFT's selection step keeps, per prompt, the continuation the reward model scores highest, and a round
of fine-tuning on the kept continuations makes them more likely."""
import copy
from types import SimpleNamespace

import torch
import torch.nn as nn

from llmcourse.book import experiment_raft as raft
from llmcourse.chapters.rlhf import response_logprobs, sample_responses
from llmcourse.models import GPT, GPTConfig


class CountReward(nn.Module):
    """Scores a continuation by how many times it contains token 3 (the reward models' call signature)."""

    def forward(self, seqs, mask):
        response = seqs[:, seqs.size(1) - mask.size(1):]
        return ((response == 3) & mask).sum(1).float(), None


def tiny_setting(n_prompts=6):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=8, block_size=32, n_layer=1, n_head=2, n_embd=16))
    prompts = torch.randint(1, 8, (n_prompts, 3), generator=torch.Generator().manual_seed(1))
    prompts[:, 0] = 0  # eos starts every prompt
    return SimpleNamespace(rm=CountReward(), task=SimpleNamespace(eos_id=0, train_prompts=prompts)), gpt


def test_best_continuations_keeps_the_highest_scored_sample_of_each_prompt():
    s, gpt = tiny_setting()
    prompts = s.task.train_prompts
    seqs, mask, best = raft.best_continuations(s, gpt.eval(), prompts, torch.Generator().manual_seed(3))
    # the same draws, all K per prompt, scored by hand
    all_seqs, all_mask = sample_responses(gpt, prompts.repeat_interleave(raft.K, 0), len(prompts) * raft.K, raft.ch9.L,
                                          0, torch.Generator().manual_seed(3))
    scores = CountReward()(all_seqs, all_mask)[0].view(len(prompts), raft.K)
    torch.testing.assert_close(best, scores.max(1).values)
    assert seqs.shape == (len(prompts), all_seqs.size(1)) and torch.equal(seqs[:, :3], prompts)
    torch.testing.assert_close(CountReward()(seqs, mask)[0], best)


def test_a_round_of_fine_tuning_makes_the_kept_continuations_more_likely():
    s, gpt = tiny_setting()
    seqs, mask, _ = raft.best_continuations(s, gpt.eval(), s.task.train_prompts, torch.Generator().manual_seed(3))
    before = (response_logprobs(gpt, seqs, 3) * mask).sum().item()
    tuned = copy.deepcopy(gpt)
    raft.rc.supervised_finetune(tuned, (seqs, mask), raft.round_config(0, 1))
    assert (response_logprobs(tuned, seqs, 3) * mask).sum().item() > before
