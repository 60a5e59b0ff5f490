"""Chapter 8's addition task as a library object: the split, the verifier, the base model's recipe."""
import pytest
import torch

from llmcourse.chapters import addition as A


def test_the_split_is_disjoint_and_seeded():
    task = A.addition_task()
    test, seed, pool = (set(p) for p in (task.test_pairs, task.seed_pairs, task.pool_pairs))
    assert (len(test), len(seed), len(pool)) == (500, 500, 600)
    assert not (test & seed) and not (test & pool) and not (seed & pool)
    assert A.addition_task().test_pairs == task.test_pairs  # the same shuffle every time


def test_the_verifier_accepts_only_finished_correct_sums():
    task = A.addition_task()
    q = task.question(23, 58)
    assert task.tokenizer.decode(q[1:]) == "23+58="
    assert task.verifier(q, task.answer(23, 58))
    assert not task.verifier(q, task.tokenizer.encode("71") + [task.eos_id])  # wrong
    assert not task.verifier(q, task.tokenizer.encode("81"))  # not finished
    assert task.seed_data[0] == (task.question(*task.seed_pairs[0]), task.answer(*task.seed_pairs[0]))


def test_the_base_model_trains_on_answer_tokens_and_is_scored_greedily():
    task = A.addition_task(n_test=20, n_seed=50, n_pool=10)
    model = A.train_base_model(task, steps=30, seed=0)
    again = A.train_base_model(task, steps=30, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert 0.0 <= task.accuracy(model) <= 1.0 and not model.training


def test_carries_counts_the_column_carries_and_refuses_three_digits():
    assert [A.carries(12, 34), A.carries(23, 58), A.carries(57, 68), A.carries(95, 5), A.carries(0, 99)] == [0, 1, 2, 2, 0]
    assert A.carries(45, 63) == 1  # the tens carry into the hundreds
    with pytest.raises(ValueError, match="0..99"):
        A.carries(100, 1)


def test_the_padded_check_accepts_only_the_fixed_width_sum():
    assert A.check_padded_addition("07+58=065")
    for wrong in ("07+58=65", "7+58=065", "07+58=066", "07+58=0650", "07+58=065+0"):
        assert not A.check_padded_addition(wrong), wrong


def test_the_carry_task_has_fixed_positions_and_few_supervised_carries():
    task = A.carry_task()
    test, seed, pool = (set(p) for p in (task.test_pairs, task.seed_pairs, task.pool_pairs))
    assert (len(test), len(seed), len(pool)) == (1000, 500, 600)
    assert not (test & seed) and not (test & pool) and not (seed & pool)
    assert task.test_pairs == A.addition_task(n_test=1000).test_pairs  # the same shuffle
    assert sum(A.carries(a, b) > 0 for a, b in task.seed_pairs) == 25
    assert sum(A.carries(a, b) > 0 for a, b in A.carry_task(n_seed_carry=0).seed_pairs) == 0
    assert sum(A.carries(a, b) > 0 for a, b in task.pool_pairs) > 300  # the pool is mostly carry questions
    q = task.question(7, 58)
    assert task.tokenizer.decode(q[1:]) == "07+58=" and task.tokenizer.decode(task.answer(7, 58)[:-1]) == "065"
    assert {len(task.question(a, b)) + len(task.answer(a, b)) for a, b in task.test_pairs} == {11}  # fixed positions
    assert task.verifier(q, task.answer(7, 58))
    assert not task.verifier(q, task.tokenizer.encode("65") + [task.eos_id])  # unpadded
    by_class = [task.test_questions_with(n) for n in (0, 1, 2)]
    assert sum(map(len, by_class)) == 1000 and all(by_class)
    with pytest.raises(ValueError, match="cannot exceed"):
        A.carry_task(n_seed=10, n_seed_carry=11)


def test_the_base_model_returns_its_history_on_request():
    task = A.carry_task(n_test=20, n_seed=40, n_pool=10, n_seed_carry=2)
    model, history = A.train_base_model(task, steps=25, seed=0, return_history=True)
    assert len(history["train_loss"]) == 25 and not model.training
