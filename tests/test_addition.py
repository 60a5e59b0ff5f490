"""Chapter 8's addition task as a library object: the split, the verifier, the base model's recipe."""
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
