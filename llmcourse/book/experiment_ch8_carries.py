"""Chapter 8's shipped experiment ``ch8-carries``: self-training done properly, on a task the model rarely solves.

Section 8.8's ``ch8-verifiable-rl`` starts from base models that are not converged, on a format in which
answers of different lengths sit at different positions. This experiment removes both confounds:

* the task is :func:`llmcourse.chapters.addition.carry_task`: the same sums written at a fixed width
  (``07+58=065``), so every question and answer occupies the same positions; of the 500 supervised
  examples only 25 need a carry, so the base model meets the carry questions (about seven in ten of all
  questions) having seen them rarely: its pass@k there is small but not zero;
* the base model is trained to convergence (:data:`BASE_STEPS` updates, the learning rate decayed to a
  tenth; its training loss over the last 100 updates is stored beside the one before them);
* then chapter 8's four arms at the same budget of 9,600 sampled answers (supervised only, RFT continued,
  RFT restarted from the base every round, GRPO), from :mod:`llmcourse.book.experiment_ch8`;
* and the control for "it amplifies, it does not invent": a base model trained on 500 examples none of
  which needs a carry, then RFT continued. Its pass@k on carry questions is zero, so the verifier has
  nothing to accept.

Every model is measured on the 1,000 test questions by the number of carries their sum needs (0, 1, 2):
greedy accuracy, pass@1 and pass@8 from 8 answers at temperature 1, KL(π ‖ base) per answer. Seed ``s``
trains both base models and runs every arm with seed ``s``.
"""
from __future__ import annotations

from dataclasses import asdict

from llmcourse.book import experiment_ch8 as ch8
from llmcourse.chapters import addition
from llmcourse.chapters.selffeedback import verified_accuracy

SEEDS = (0, 1, 2, 3, 4)
BASE_STEPS = 3000
N_SEED_CARRY = 25
CLASSES = (0, 1, 2)
ARMS = ch8.ARMS
CONTROL = "no carries supervised, RFT"
METRICS = ("greedy", "pass@1", "pass@8", "kl")


def tasks() -> tuple[addition.AdditionTask, addition.AdditionTask]:
    """(the task with 25 carry examples, the control's task with none): same test split and pool."""
    return addition.carry_task(n_seed_carry=N_SEED_CARRY), addition.carry_task(n_seed_carry=0)


def measure(model, base, task: addition.AdditionTask, seed: int) -> dict:
    """``{f"{metric} c{n}": value}`` for every carry class ``n``."""
    row = {}
    for n in CLASSES:
        questions = task.test_questions_with(n)
        row[f"greedy c{n}"] = verified_accuracy(model, questions, task.verifier, addition.ANSWER_TOKENS,
                                                eos_id=task.eos_id)
        for key, value in ch8.sampled_metrics(model, base, task, seed, questions).items():
            row[f"{key} c{n}"] = value
    return row


def train_base(task: addition.AdditionTask, seed: int):
    """The converged base model and its mean training loss over the last 100 and the 100 before."""
    model, history = addition.train_base_model(task, steps=BASE_STEPS, seed=seed, return_history=True)
    loss, n = history["train_loss"], 100
    return model, {"loss_last_100": sum(loss[-n:]) / n, "loss_previous_100": sum(loss[-2 * n:-n]) / n}


def run(progress=print) -> dict:
    """``{arm: {key: [value per seed]}}`` for ``base``, the arms and the control (``control base`` too),
    plus ``convergence`` (the base models' mean training losses over their last 100 updates and the 100
    before)."""
    task, control_task = tasks()
    names = ("base", *ARMS, "control base", CONTROL)
    results: dict = {name: {} for name in names}
    results["convergence"] = {}

    def add(name, row):
        for key, value in row.items():
            results[name].setdefault(key, []).append(value)

    for seed in SEEDS:
        base, loss = train_base(task, seed)
        add("convergence", loss)
        add("base", measure(base, base, task, seed))
        for arm in ARMS:
            add(arm, measure(ch8.run_arm(arm, base, task, seed), base, task, seed))
        control_base, _ = train_base(control_task, seed)
        add("control base", measure(control_base, control_base, control_task, seed))
        add(CONTROL, measure(ch8.run_arm("RFT, continued", control_base, control_task, seed), control_base,
                             control_task, seed))
        progress(f"seed {seed}: greedy on one carry " + ", ".join(
            f"{name} {results[name]['greedy c1'][-1]:.3f}" for name in names))
    return results


def setup() -> dict:
    task, _ = tasks()
    return {"seeds": list(SEEDS), "arms": list(ARMS), "control": CONTROL, "classes": list(CLASSES),
            "base_steps": BASE_STEPS, "n_seed_carry": N_SEED_CARRY, "eval_samples": ch8.EVAL_SAMPLES,
            "model": asdict(addition.model_config(task)), "base_train": asdict(addition.base_train_config(BASE_STEPS)),
            "rft": asdict(ch8.rft_config(0)), "grpo": asdict(ch8.grpo_config(0)),
            "split": [len(task.test_pairs), len(task.seed_pairs), len(task.pool_pairs)],
            "test_by_class": [len(task.test_questions_with(n)) for n in CLASSES]}


def summary(results: dict) -> dict:
    """Every (arm, accuracy metric, class)'s mean over the seeds, in points."""
    return {f"{name} / {key}": 100 * sum(v) / len(v) for name, table in results.items() if name != "convergence"
            for key, v in table.items() if not key.startswith("kl")}


# A rebuild with torch's AVX2 kernels on the building machine moved a mean by up to 7.6 points (RFT continued,
# greedy, one carry): training on the few carry questions is chaotic across floating-point paths, as between
# seeds. The band is twice that; the chapter's comparisons are within one build, paired by seed.
RECIPE = {"chapter": 8, "run": run, "setup": setup, "summary": summary, "tolerance": 15.0,
          "description": "chapter 8: a converged base model on fixed-width sums with 25 carry examples; "
                         "supervised only, RFT continued and restarted, GRPO, and a no-carry control, 5 seeds"}

__all__ = ["ARMS", "BASE_STEPS", "CLASSES", "CONTROL", "METRICS", "RECIPE", "SEEDS", "measure", "run", "setup",
           "summary", "tasks", "train_base"]
