"""Chapter 8's verifiable task, two-digit addition written as text (两位数加法), as one reusable object.

``23+58=81``: a character vocabulary of the digits, ``+`` and ``=``; a question is ``<eos> a+b=`` and an
answer the digits of ``a + b`` followed by ``<eos>``. Of the 10,000 questions with ``0 <= a, b <= 99``
(shuffled with seed 0), the first ``n_test`` are held out, the next ``n_seed`` come with answers (the
supervised data) and the next ``n_pool`` without (the unlabeled questions that self-training and RL
sample on). The verifier accepts a completion only if it ends with ``<eos>`` and the whole text is a
correct sum; it never reveals the answer. Chapter 8 builds the same objects in its cells and checks
that they equal these.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from llmcourse.chapters.selffeedback import check_addition, completion_batch, sequence_nll, verified_accuracy
from llmcourse.core.runtime import set_seed
from llmcourse.data.tokenizers import CharTokenizer
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.train import TrainConfig, train

ANSWER_TOKENS = 5  # up to three digits and <eos>, plus one spare


@dataclass
class AdditionTask:
    tokenizer: CharTokenizer
    eos_id: int
    test_pairs: list = field(repr=False)
    seed_pairs: list = field(repr=False)
    pool_pairs: list = field(repr=False)

    def question(self, a: int, b: int) -> list[int]:
        return [self.eos_id] + self.tokenizer.encode(f"{a}+{b}=")

    def answer(self, a: int, b: int) -> list[int]:
        return self.tokenizer.encode(str(a + b)) + [self.eos_id]

    def verifier(self, q: list[int], completion: list[int]) -> bool:
        """Accepts a finished answer (ending with <eos>) that makes the question a correct sum."""
        return (len(completion) > 1 and completion[-1] == self.eos_id
                and check_addition(self.tokenizer.decode(list(q[1:]) + list(completion[:-1]))))

    @property
    def seed_data(self) -> list[tuple[list[int], list[int]]]:
        return [(self.question(a, b), self.answer(a, b)) for a, b in self.seed_pairs]

    @property
    def test_questions(self) -> list[list[int]]:
        return [self.question(a, b) for a, b in self.test_pairs]

    @property
    def pool_questions(self) -> list[list[int]]:
        return [self.question(a, b) for a, b in self.pool_pairs]

    def accuracy(self, model: GPT, questions=None) -> float:
        """Share of (test) questions whose greedy answer the verifier accepts."""
        return verified_accuracy(model, self.test_questions if questions is None else questions, self.verifier,
                                 ANSWER_TOKENS, eos_id=self.eos_id)


def addition_task(n_test: int = 500, n_seed: int = 500, n_pool: int = 600) -> AdditionTask:
    tokenizer = CharTokenizer(min_freq=1).train(["0123456789+="])
    pairs = [(a, b) for a in range(100) for b in range(100)]
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0)).tolist()
    pairs = [pairs[i] for i in order]
    return AdditionTask(tokenizer, tokenizer.token_to_id("<eos>"), pairs[:n_test], pairs[n_test:n_test + n_seed],
                        pairs[n_test + n_seed:n_test + n_seed + n_pool])


class AnswerLoss(torch.nn.Module):
    """Wraps a GPT so that :func:`llmcourse.train.train` optimises the loss of the answer tokens only."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, x, y):
        return None, sequence_nll(self.gpt, x, y)


def model_config(task: AdditionTask) -> GPTConfig:
    """Chapter 8's arithmetic GPT: 2 layers, 2 heads, width 64, context 16."""
    return GPTConfig(vocab_size=len(task.tokenizer), block_size=16, n_layer=2, n_head=2, n_embd=64)


def base_train_config(steps: int = 800, seed: int = 0) -> TrainConfig:
    return TrainConfig(max_steps=steps, lr=3e-3, min_lr=3e-4, warmup_steps=20, weight_decay=0.0, eval_interval=None,
                       seed=seed)


def train_base_model(task: AdditionTask, steps: int = 800, seed: int = 0, device="cpu") -> GPT:
    """The base model: ``steps`` updates of 32 supervised examples, answer tokens only, from seed ``seed``."""
    data = task.seed_data
    x, y = completion_batch([q + c for q, c in data], [len(q) for q, _ in data])

    def batch(i, generator):  # 32 random supervised examples
        rows = torch.randint(len(data), (32,), generator=generator)
        return x[rows], y[rows]

    set_seed(seed)
    model = GPT(model_config(task)).to(device)
    train(AnswerLoss(model), batch, base_train_config(steps, seed), device=device)
    return model.eval()


__all__ = ["ANSWER_TOKENS", "AdditionTask", "AnswerLoss", "addition_task", "base_train_config", "model_config",
           "train_base_model"]
