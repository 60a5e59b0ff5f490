"""The shipped experiment results: they belong to today's code and weights, edits are refused, a cheap
cell re-measures, and build/read/verify work (on a stand-in recipe, since the real one takes minutes)."""
import json

import pytest

from llmcourse.book import experiments, pretrained
from llmcourse.chapters import rlhf


def test_the_shipped_results_belong_to_todays_setup_and_weights():
    shipped = experiments.load("ch7-finetune")
    setup = shipped["setup"]
    assert setup["weights_sha256"] == {n: pretrained.read_manifest()[f"{n}.pt"] for n in ("bert-mlm-reviews", "gpt-reviews")}
    assert set(shipped["results"]) == set(experiments.BUDGETS)
    for budget, models in (("1000", experiments.MODELS), ("all", experiments.ALL_LABELS_MODELS)):
        table = shipped["results"][budget]
        assert tuple(table) == models
        assert all(len(accs) == len(experiments.SEEDS) and all(0.4 < a < 1.0 for a in accs) for accs in table.values())


def test_a_cheap_cell_re_measures():
    """The bag of words of seed 0 at 1,000 labels (deterministic up to floating-point order): within 2 of
    the 1,800 test reviews on any CPU. The neural cells are re-run by chapter 7 and compared by nbval."""
    shipped = experiments.load("ch7-finetune")["results"]["1000"]["bag of words"][0]
    again = experiments.run_one("bag of words", "1000", 0, encoders={})
    assert abs(again - shipped) <= 2 / 1800, (again, shipped)


def fake_recipe(monkeypatch, results):
    monkeypatch.setitem(experiments.RECIPES, "fake", {"chapter": 0, "description": "a stand-in", "tolerance": 1.0,
                                                     "run": lambda progress: results, "setup": lambda: {"x": 1},
                                                     "summary": experiments.accuracy_summary})


def test_build_read_and_refusals(tmp_path, monkeypatch):
    fake_recipe(monkeypatch, {"b": {"m": [0.5, 0.6]}})
    path = experiments.build("fake", tmp_path / "fake.json", progress=lambda s: None)
    assert experiments.load("fake", path)["results"] == {"b": {"m": [0.5, 0.6]}}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    state = json.loads(path.read_text(encoding="utf-8"))
    state["results"]["b"]["m"][0] = 0.9  # a hand-edited number
    path.write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(ValueError, match="was edited or corrupted.*experiments build fake"):
        experiments.load("fake", path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        experiments.load("fake", path)
    path.write_text(json.dumps({"format": "other"}), encoding="utf-8")
    with pytest.raises(ValueError, match="is not a llmcourse.experiment/1 file"):
        experiments.load("fake", path)
    with pytest.raises(FileNotFoundError, match="no results file.*experiments build fake"):
        experiments.load("fake", tmp_path / "missing.json")
    with pytest.raises(KeyError, match="unknown experiment 'nope'"):
        experiments.results_path("nope")


def test_results_of_another_setup_are_refused(tmp_path, monkeypatch):
    fake_recipe(monkeypatch, {"b": {"m": [0.5, 0.6]}})
    path = experiments.build("fake", tmp_path / "fake.json", progress=lambda s: None)
    monkeypatch.setitem(experiments.RECIPES["fake"], "setup", lambda: {"x": 2})
    with pytest.raises(ValueError, match=r"another setup \(changed: \['x'\]\).*experiments build fake"):
        experiments.load("fake", path)


def test_verify_compares_a_rebuild(tmp_path, monkeypatch):
    fake_recipe(monkeypatch, {"b": {"m": [0.5, 0.6]}})
    monkeypatch.setattr(experiments, "RESULTS_DIR", tmp_path)
    experiments.build("fake", progress=lambda s: None)
    assert experiments.verify("fake", progress=lambda s: None) == {
        "same_machine": True, "identical": True, "largest_gap": 0.0, "ok": True}
    fake_recipe(monkeypatch, {"b": {"m": [0.5, 0.61]}})  # the same machine must repeat the results exactly
    report = experiments.verify("fake", progress=lambda s: None)
    assert not report["ok"] and report["largest_gap"] == pytest.approx(0.5)


def test_the_first_updates_of_the_drawn_block_replay():
    """ch6-block-order: the first 60 updates of the articles' block (seed 0) give the stored validation
    estimates. On another path (ATEN_CPU_CAPABILITY=default, 2 threads, against the 1-thread AVX-512 build)
    the estimate at update 60 moved by 4.1e-7 relative; the bound is 1e-5. (Pre-LN seed 0 is chapter 6's own
    run, compared by nbval.)"""
    stored = experiments.load("ch6-block-order")["results"]
    history = experiments.train_block_order("as drawn", 0, stop_at=61)  # evaluated before update 60
    assert history["val_step"] == stored["val_step"][:2] == [0, 60]
    for again, shipped in zip(history["val_loss"], stored["val_loss"]["as drawn"][0][:2]):
        assert abs(again - shipped) / shipped < 1e-5, (again, shipped)


def test_the_shipped_block_orders_belong_to_todays_setup():
    shipped = experiments.load("ch6-block-order")
    assert set(shipped["results"]["val_loss"]) == set(experiments.BLOCK_ORDERS)
    assert all(len(runs) == len(experiments.BLOCK_ORDER_SEEDS) and all(len(c) == len(shipped["results"]["val_step"]) for c in runs)
               for runs in shipped["results"]["val_loss"].values())


def test_the_shipped_verifiable_rl_results_belong_to_todays_setup():
    from llmcourse.book import experiment_ch8
    from llmcourse.chapters import addition
    shipped = experiments.load("ch8-verifiable-rl")["results"]
    assert set(shipped) == set(experiment_ch8.METRICS)
    for metric, table in shipped.items():
        assert tuple(table) == ("base", *experiment_ch8.ARMS)
        assert all(len(v) == len(experiment_ch8.SEEDS) for v in table.values())
    assert shipped["kl"]["base"] == [0.0] * len(experiment_ch8.SEEDS)
    # No cell is re-trained here: the 800-update base models are chaotic across thread counts (seed 1 scored
    # 0.538 at the build's 1 thread and 0.632 in a 2-worker test run), so chapter 8's rerun of seed 0,
    # compared by nbval within tolerances measured on three paths, is the check.
    task = addition.addition_task()
    assert [len(task.test_pairs), len(task.seed_pairs), len(task.pool_pairs)] == experiments.load("ch8-verifiable-rl")["setup"]["split"]


def test_the_shipped_frontier_belongs_to_todays_setup():
    from llmcourse.book import experiment_ch9 as f
    shipped = experiments.load("ch9-frontier")
    assert shipped["setup"]["weights_sha256"] == {"gpt-reviews": pretrained.read_manifest()["gpt-reviews.pt"]}
    r, n = shipped["results"], len(f.SEEDS)
    assert set(r) == {"judges", "sft", "sft_positive", "ppo", "dpo", "bon"}
    assert list(r["ppo"]) == [str(b) for b in f.PPO_BETAS] and set(r["dpo"]) == set(f.DPO_SOURCES)
    checkpoints = f.PPO_ITERATIONS // f.CHECK_EVERY
    for table in r["ppo"].values():
        assert set(table) == set(f.METRICS) and all(len(v) == n and all(len(c) == checkpoints for c in v) for v in table.values())
    for table in [r["sft"], r["sft_positive"], *r["bon"].values(), *(t for d in r["dpo"].values() for t in d.values())]:
        assert set(table) == set(f.METRICS) and all(len(v) == n for v in table.values())
    assert r["sft"]["kl"] == [0.0] * n  # the SFT model is the reference
    assert [r["bon"][str(k)]["kl"][0] for k in f.BON_NS] == [pytest.approx(rlhf.best_of_n_kl_bound(k)) for k in f.BON_NS]
    assert all(0.5 < r["judges"][k] < 1.0 for k in ("proxy", "gold"))


def test_the_shipped_loops_belong_to_todays_setup():
    from llmcourse.book import experiment_ch8_loops as loops
    r = experiments.load("ch8-loops")["results"]
    assert set(r) == {"greedy", "collapse"}
    assert list(r["greedy"]) == list(loops.GREEDY_ARMS) and list(r["collapse"]) == list(loops.COLLAPSE_ARMS)
    for part, steps in (("greedy", loops.ITERATIONS), ("collapse", loops.GENERATIONS)):
        for runs in r[part].values():
            assert len(runs) == len(loops.SEEDS)
            assert all(set(h) == set(loops.METRICS) and all(len(v) == steps + 1 for v in h.values()) for h in runs)
    # every arm of a seed starts from that seed's base model: the same numbers before the loop
    for seed in range(len(loops.SEEDS)):
        starts = {h[seed]["ppl"][0] for arms in r.values() for h in arms.values()}
        assert len(starts) == 1
    assert len({r["greedy"]["λ=1"][s]["ppl"][0] for s in range(len(loops.SEEDS))}) == len(loops.SEEDS)


def test_the_shipped_raft_belongs_to_todays_setup_and_pairs_with_the_frontier():
    from llmcourse.book import experiment_raft as raft
    shipped = experiments.load("ch8-raft")
    assert shipped["setup"]["weights_sha256"] == {"gpt-reviews": pretrained.read_manifest()["gpt-reviews.pt"]}
    assert shipped["setup"]["seeds"] == experiments.load("ch9-frontier")["setup"]["seeds"]
    assert raft.ROUNDS * raft.PROMPTS * raft.K == experiment_ch9_budget()
    r = shipped["results"]
    assert all(len(v) == len(raft.SEEDS) and all(len(c) == raft.ROUNDS for c in v) for v in r.values())
    assert all(k > 0 for v in r["kl"] for k in v)  # fine-tuning moved every policy away from the SFT model


def experiment_ch9_budget() -> int:
    from llmcourse.book import experiment_ch9 as f
    cfg = f.ppo_config(0.1, 0)
    return cfg.iterations * cfg.batch_size


def test_the_loop_setting_matches_section_8_3():
    from llmcourse.book import experiment_ch8_loops as loops
    s = loops.Setting()
    assert len(s.val_prompts) == 32 and all(len(p) == 1 + loops.PROMPT_CHARS for p in s.val_prompts)
    assert s.targets.numel() == loops.VAL_TOKENS and not s.is_tail[[s.eos, s.unk]].any()
    assert int((~s.is_tail).sum()) == loops.N_HEAD_CHARS + 2


def test_cli_lists_every_shipped_experiment(capsys):
    assert experiments.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} (chapter {recipe['chapter']})" in out and "built in" in out
               for name, recipe in experiments.RECIPES.items())
    with pytest.raises(KeyError, match="unknown experiment"):
        experiments.main(["verify", "nope"])


def test_the_shipped_carry_results_belong_to_todays_setup():
    from llmcourse.book import experiment_ch8_carries as C
    shipped = experiments.load("ch8-carries")
    r, n = shipped["results"], len(C.SEEDS)
    assert tuple(r) == ("base", *C.ARMS, "control base", C.CONTROL, "convergence")
    keys = {f"{m} c{k}" for m in C.METRICS for k in C.CLASSES}
    for name in ("base", *C.ARMS, "control base", C.CONTROL):
        assert set(r[name]) == keys and all(len(v) == n for v in r[name].values())
    assert r["base"]["kl c1"] == [0.0] * n and r["control base"]["kl c2"] == [0.0] * n
    # the control's base never sees a carry: nothing to accept, nothing learnt (exact, on any machine)
    assert r["control base"]["pass@8 c1"] == [0.0] * n and r[C.CONTROL]["pass@8 c2"] == [0.0] * n
    conv = r["convergence"]  # converged: a small loss that has stopped falling (from about 2.3 nats at the start)
    assert all(last < 0.05 and last > 0.5 * before for last, before in zip(conv["loss_last_100"], conv["loss_previous_100"]))
    assert shipped["setup"]["test_by_class"] == [len(C.tasks()[0].test_questions_with(k)) for k in C.CLASSES]


def test_the_shipped_sentiment_predictions_belong_to_todays_setup_and_give_chapter_7s_accuracies():
    """ch11-sentiment keeps every test prediction of chapter 7's all-label fine-tunes; its accuracies are
    chapter 7's stored ones (the same recipe, run again: within a few test reviews of 1,800)."""
    shipped = experiments.load("ch11-sentiment")
    assert shipped["setup"]["ch7_setup"] == experiments.load("ch7-finetune")["setup"]
    results, ch7 = shipped["results"], experiments.load("ch7-finetune")["results"]["all"]
    assert tuple(results) == experiments.CH11_MODELS
    n_test = len(experiments._data()[2]["test"])
    for name, preds in results.items():
        assert len(preds) == len(experiments.SEEDS)
        assert all(len(p) == n_test and set(p) <= {"0", "1"} for p in preds)
        accs = [experiments.accuracy([int(c) for c in p], [r.label for r in experiments._data()[2]["test"]])
                for p in preds]
        assert all(abs(a - b) <= 3 / n_test for a, b in zip(accs, ch7[name])), (name, accs, ch7[name])
