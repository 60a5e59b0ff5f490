"""Chapter 8's verifiable task, two-digit addition written as text (两位数加法), as one reusable object.

``23+58=81``: a character vocabulary of the digits, ``+`` and ``=``; a question is ``<eos> a+b=`` and an
answer the digits of ``a + b`` followed by ``<eos>``. Of the 10,000 questions with ``0 <= a, b <= 99``
(shuffled with seed 0), the first ``n_test`` are held out, the next ``n_seed`` come with answers (the
supervised data) and the next ``n_pool`` without (the unlabeled questions that self-training and RL
sample on). The verifier accepts a completion only if it ends with ``<eos>`` and the whole text is a
correct sum; it never reveals the answer. Chapter 8 builds the same objects in its cells and checks
that they equal these.

:func:`carry_task` is the same task written at a fixed width (``07+58=065``: two-digit operands and
three-digit sums, zero-padded), so every question and every answer occupies the same positions and
no test question needs a position that training never reached; its supervised examples are chosen
by how many carries their sum needs (:func:`carries`), so that the model meets a kind of question it
has seen only a few times.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from llmcourse.chapters.selffeedback import check_addition, completion_batch, sequence_nll, verified_accuracy
from llmcourse.core.checks import check_int
from llmcourse.core.runtime import set_seed
from llmcourse.data.tokenizers import CharTokenizer
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.train import TrainConfig, train

ANSWER_TOKENS = 5  # up to three digits and <eos>, plus one spare
_PADDED = re.compile(r"(\d{2})\+(\d{2})=(\d{3})")


def carries(a: int, b: int) -> int:
    """How many carries the column addition of two two-digit numbers needs: 0, 1 (units or tens) or 2."""
    if not (0 <= a <= 99 and 0 <= b <= 99):
        raise ValueError(f"carries expects two numbers in 0..99, got {a} and {b}")
    units = a % 10 + b % 10 >= 10
    tens = a // 10 + b // 10 + units >= 10
    return int(units) + int(tens)


def check_padded_addition(text: str) -> bool:
    """``True`` iff ``text`` is exactly ``"aa+bb=ccc"``, zero-padded, with ``ccc == aa + bb``."""
    match = _PADDED.fullmatch(text)
    return match is not None and int(match[3]) == int(match[1]) + int(match[2])


@dataclass
class AdditionTask:
    tokenizer: CharTokenizer
    eos_id: int
    test_pairs: list = field(repr=False)
    seed_pairs: list = field(repr=False)
    pool_pairs: list = field(repr=False)
    padded: bool = False  # the fixed-width format of carry_task

    def question(self, a: int, b: int) -> list[int]:
        return [self.eos_id] + self.tokenizer.encode(f"{a:02d}+{b:02d}=" if self.padded else f"{a}+{b}=")

    def answer(self, a: int, b: int) -> list[int]:
        return self.tokenizer.encode(f"{a + b:03d}" if self.padded else str(a + b)) + [self.eos_id]

    def verifier(self, q: list[int], completion: list[int]) -> bool:
        """Accepts a finished answer (ending with <eos>) that makes the question a correct sum."""
        check = check_padded_addition if self.padded else check_addition
        return (len(completion) > 1 and completion[-1] == self.eos_id
                and check(self.tokenizer.decode(list(q[1:]) + list(completion[:-1]))))

    @property
    def seed_data(self) -> list[tuple[list[int], list[int]]]:
        return [(self.question(a, b), self.answer(a, b)) for a, b in self.seed_pairs]

    @property
    def test_questions(self) -> list[list[int]]:
        return [self.question(a, b) for a, b in self.test_pairs]

    def test_questions_with(self, n_carries: int) -> list[list[int]]:
        """The test questions whose sum needs ``n_carries`` carries."""
        return [self.question(a, b) for a, b in self.test_pairs if carries(a, b) == n_carries]

    @property
    def pool_questions(self) -> list[list[int]]:
        return [self.question(a, b) for a, b in self.pool_pairs]

    def accuracy(self, model: GPT, questions=None) -> float:
        """Share of (test) questions whose greedy answer the verifier accepts."""
        return verified_accuracy(model, self.test_questions if questions is None else questions, self.verifier,
                                 ANSWER_TOKENS, eos_id=self.eos_id)


def _shuffled_pairs() -> tuple[CharTokenizer, list[tuple[int, int]]]:
    tokenizer = CharTokenizer(min_freq=1).train(["0123456789+="])
    pairs = [(a, b) for a in range(100) for b in range(100)]
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0)).tolist()
    return tokenizer, [pairs[i] for i in order]


def addition_task(n_test: int = 500, n_seed: int = 500, n_pool: int = 600) -> AdditionTask:
    tokenizer, pairs = _shuffled_pairs()
    return AdditionTask(tokenizer, tokenizer.token_to_id("<eos>"), pairs[:n_test], pairs[n_test:n_test + n_seed],
                        pairs[n_test + n_seed:n_test + n_seed + n_pool])


def carry_task(n_test: int = 1000, n_seed: int = 500, n_pool: int = 600, n_seed_carry: int = 25) -> AdditionTask:
    """The fixed-width task: of the supervised examples only ``n_seed_carry`` need a carry (the first such
    questions after the test split), the others none; the pool is the next ``n_pool`` questions of every
    kind; the test split is the first ``n_test`` of the same shuffle as :func:`addition_task`."""
    n_seed_carry = check_int("n_seed_carry", n_seed_carry, 0)
    if n_seed_carry > n_seed:
        raise ValueError(f"n_seed_carry ({n_seed_carry}) cannot exceed n_seed ({n_seed})")
    tokenizer, pairs = _shuffled_pairs()
    rest = pairs[n_test:]
    seed = ([p for p in rest if carries(*p) == 0][:n_seed - n_seed_carry]
            + [p for p in rest if carries(*p) > 0][:n_seed_carry])
    chosen = set(seed)
    pool = [p for p in rest if p not in chosen][:n_pool]
    return AdditionTask(tokenizer, tokenizer.token_to_id("<eos>"), pairs[:n_test], seed, pool, padded=True)


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
    """AdamW from 3e-3, cosine-decayed to 3e-4 over ``steps`` updates (800: chapter 8's unconverged budget)."""
    return TrainConfig(max_steps=steps, lr=3e-3, min_lr=3e-4, warmup_steps=20, weight_decay=0.0, eval_interval=None,
                       seed=seed)


def train_base_model(task: AdditionTask, steps: int = 800, seed: int = 0, device="cpu", return_history: bool = False):
    """The base model: ``steps`` updates of 32 supervised examples, answer tokens only, from seed ``seed``
    (with ``return_history``: the model and the training loop's history)."""
    data = task.seed_data
    x, y = completion_batch([q + c for q, c in data], [len(q) for q, _ in data])

    def batch(i, generator):  # 32 random supervised examples
        rows = torch.randint(len(data), (32,), generator=generator)
        return x[rows], y[rows]

    set_seed(seed)
    model = GPT(model_config(task)).to(device)
    history = train(AnswerLoss(model), batch, base_train_config(steps, seed), device=device)
    return (model.eval(), history) if return_history else model.eval()


__all__ = ["ANSWER_TOKENS", "AdditionTask", "AnswerLoss", "addition_task", "base_train_config", "carries", "carry_task",
           "check_padded_addition", "model_config", "train_base_model"]
