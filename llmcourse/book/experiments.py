"""Experiments too long for a chapter, run once by a recipe and shipped as results (随书附带的实验结果).

Chapter 7's comparison fine-tunes five models with five paired seeds at two label budgets: about 19
minutes of one CPU core, more than ten times a chapter's budget; chapter 6 trains its GPT with three
arrangements of the layer norm, three seeds each (``ch6-block-order``, about 7 minutes); chapter 8 trains
from a verifier four ways over five seeds (``ch8-verifiable-rl``, :mod:`llmcourse.book.experiment_ch8`), does
it again from converged base models on fixed-width sums that rarely need a carry in the supervised data
(``ch8-carries``, :mod:`llmcourse.book.experiment_ch8_carries`) and
repeats the articles' loop and its model-collapse generations over five seeds (``ch8-loops``,
:mod:`llmcourse.book.experiment_ch8_loops`) and runs RAFT with chapter 9's reward model as its verifier
(``ch8-raft``, :mod:`llmcourse.book.experiment_raft`);
chapter 9 measures reward against KL for PPO, DPO and best-of-n, against a proxy and a gold reward, over
three seeds (``ch9-frontier``, :mod:`llmcourse.book.experiment_ch9`).
Like the shipped weights (:mod:`llmcourse.book.pretrained`), each experiment is a recipe with a
rebuild-and-verify command, and its chapter reruns one seed in front of the reader and compares:

    python -m llmcourse.book.experiments list
    python -m llmcourse.book.experiments build ch7-finetune    # about 19 minutes on one CPU thread
    python -m llmcourse.book.experiments build ch6-block-order # about 7 minutes
    python -m llmcourse.book.experiments build ch8-verifiable-rl # a few minutes (llmcourse.book.experiment_ch8)
    python -m llmcourse.book.experiments build ch8-carries     # (experiment_ch8_carries)
    python -m llmcourse.book.experiments build ch8-loops       # 9 minutes, beside a test run (experiment_ch8_loops)
    python -m llmcourse.book.experiments build ch8-raft        # (experiment_raft)
    python -m llmcourse.book.experiments build ch9-frontier    # 81 minutes here, beside a second build (experiment_ch9)
    python -m llmcourse.book.experiments verify ch7-finetune   # rebuild in a temporary file and compare

A results file (format ``llmcourse.experiment/1``, JSON, written atomically) holds the recipe's
``setup`` (every setting, and the SHA-256 of the shipped weights files it started from), the
``results`` (test accuracy per budget, model and seed), ``built_with`` and ``sha256``, the digest of the
rest as canonical JSON. :func:`load` refuses a file whose digest does not match (an edited number), whose
setup is not the one the recipe has today, or whose weights were rebuilt since: each would report results
the code no longer produces.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from llmcourse.book import (experiment_ch8, experiment_ch8_carries, experiment_ch8_loops, experiment_ch9,
                            experiment_raft, pretrained)
from llmcourse.chapters.transformer import BLOCK_ORDERS, set_block_order
from llmcourse.chapters.finetune import classification_logits, finetune_classifier, gpt_classifier_ids, labelled_subset
from llmcourse.core.runtime import set_seed
from llmcourse.data import corpus
from llmcourse.data.batching import LMBatcher
from llmcourse.data.masking import BertVocab, MLMBatcher
from llmcourse.evaluate import accuracy, review_lm_data
from llmcourse.models import GPT, BertConfig, BertForMaskedLM, BertForSequenceClassification, GPTForSequenceClassification
from llmcourse.models.bow import BowLogisticRegression
from llmcourse.train import TrainConfig, train

FORMAT = "llmcourse.experiment/1"
RESULTS_DIR = Path(__file__).with_name("results")
SEEDS = (0, 1, 2, 3, 4)
# label budgets: name -> (labelled training reviews or None for all of them, fine-tuning updates)
BUDGETS = {"1000": (1000, 150), "all": (None, 870)}  # 150 x 32 = 4.8 passes; 870 x 32 = 2 passes over 13,909
MODELS = ("from scratch", "pretrained 1,000 updates", "pretrained 12,000 updates", "GPT, last token", "bag of words")
ALL_LABELS_MODELS = ("from scratch", "pretrained 12,000 updates", "GPT, last token", "bag of words")


# ---- the recipe's settings: the chapter builds the same objects and checks they are equal ---------------
def as_stored(config) -> dict:
    """A dataclass config as a results file stores it (JSON: tuples become lists), to compare with ``setup``."""
    return json.loads(json.dumps(asdict(config)))


def short_mlm_config() -> TrainConfig:
    """Chapter 7's one-minute pretraining: 1,000 MLM updates of 32 reviews."""
    return TrainConfig(max_steps=1000, lr=3e-3, min_lr=3e-4, warmup_steps=50, weight_decay=0.01,
                       eval_interval=100, eval_steps=10, seed=0)


def finetune_config(updates: int, seed: int) -> TrainConfig:
    """The fine-tuning recipe, the same for every neural model: AdamW at 1e-3, 10-step warm-up, cosine."""
    return TrainConfig(max_steps=updates, lr=1e-3, min_lr=1e-4, warmup_steps=10, weight_decay=0.01,
                       eval_interval=None, seed=seed)


def classifier_config(vocab: BertVocab) -> BertConfig:
    """The encoder as a classifier: the pretraining's architecture and initialisation (init std 0.1),
    mean pooling, dropout 0.1 on the hidden states and none on the attention weights."""
    return replace(pretrained.bert_reviews_config(vocab.vocab_size, vocab.pad_id), dropout=0.1,
                   attention_dropout=0.0, pooling="mean")


@functools.lru_cache(maxsize=1)
def _data():
    tok = pretrained.review_tokenizer()
    vocab = BertVocab.from_tokenizer(tok)
    reviews = {split: corpus.load_reviews(split) for split in ("train", "val", "test")}
    gpt_len = pretrained.gpt_reviews_config(len(tok)).block_size
    return tok, vocab, reviews, gpt_len


def setup() -> dict:
    """Every setting of the ch7-finetune recipe, as plain data (what :func:`load` compares)."""
    tok, vocab, reviews, gpt_len = _data()
    return {"seeds": list(SEEDS), "budgets": {k: list(v) for k, v in BUDGETS.items()}, "models": list(MODELS),
            "all_labels_models": list(ALL_LABELS_MODELS), "bert_max_len": pretrained.BERT_MAX_LEN, "gpt_max_len": gpt_len,
            "classifier": asdict(classifier_config(vocab)),
            "finetune": {budget: asdict(finetune_config(updates, 0)) for budget, (_, updates) in BUDGETS.items()},
            "short_mlm": asdict(short_mlm_config()), "n_train": len(reviews["train"]), "n_test": len(reviews["test"]),
            "weights_sha256": {name: pretrained.read_manifest()[f"{name}.pt"] for name in ("bert-mlm-reviews", "gpt-reviews")}}


# ---- running it -------------------------------------------------------------------------------------
def pretrain_short() -> BertForMaskedLM:
    """The chapter's one-minute encoder: seed 0, the shipped encoder's architecture, 1,000 updates."""
    _, vocab, reviews, _ = _data()
    seqs = {split: [vocab.encode(r.text, pretrained.BERT_MAX_LEN) for r in reviews[split]] for split in ("train", "val")}
    set_seed(0)
    model = BertForMaskedLM(pretrained.bert_reviews_config(vocab.vocab_size, vocab.pad_id))
    train(model, MLMBatcher(seqs["train"], vocab, pretrained.MLM_BATCH), short_mlm_config(), device="cpu",
          val_batch=MLMBatcher(seqs["val"], vocab, pretrained.MLM_BATCH))  # as the chapter: the same validation draws
    return model.eval()


def run_one(name: str, budget: str, seed: int, encoders: dict) -> float:
    """Test accuracy of model ``name`` trained on budget ``budget``'s labels at ``seed``. ``encoders``
    maps the pretrained models' names to their MLM model (or, for the GPT, the language model)."""
    _, _, reviews, _ = _data()
    return accuracy(test_predictions(name, budget, seed, encoders), [r.label for r in reviews["test"]])


def test_predictions(name: str, budget: str, seed: int, encoders: dict) -> list[int]:
    """The predicted label (0/1) of every test review, in ``corpus.load_reviews("test")`` order, of model
    ``name`` trained as :func:`run_one` trains it."""
    tok, vocab, reviews, gpt_len = _data()
    n_labels, updates = BUDGETS[budget]
    subset = reviews["train"] if n_labels is None else labelled_subset(reviews["train"], n_labels, seed=seed)
    texts, labels = [r.text for r in subset], [r.label for r in subset]
    test_texts = [r.text for r in reviews["test"]]
    if name == "bag of words":  # the full texts; every feature at 1,000 labels, those seen twice with all
        bow = BowLogisticRegression(min_freq=1 if n_labels is not None else 2).fit(texts, labels)
        return bow.predict(test_texts)
    set_seed(seed)  # the same head initialisation for every neural model at this seed
    if name == "GPT, last token":
        model, encode = GPTForSequenceClassification.from_lm(encoders[name]), lambda t: gpt_classifier_ids(tok, t, gpt_len)
    else:
        model = BertForSequenceClassification(classifier_config(vocab))
        if name != "from scratch":
            model.load_encoder(encoders[name])
        encode = lambda t: vocab.encode(t, pretrained.BERT_MAX_LEN)  # noqa: E731
    finetune_classifier(model, [encode(t) for t in texts], labels, finetune_config(updates, seed),
                        pad_id=vocab.pad_id, device="cpu")
    return classification_logits(model, [encode(t) for t in test_texts], vocab.pad_id).argmax(1).tolist()


def run(progress=print) -> dict:
    """All budgets, models and seeds: ``{budget: {model: [accuracy per seed]}}``."""
    encoders = {"pretrained 1,000 updates": pretrain_short(),
                "pretrained 12,000 updates": pretrained.load("bert-mlm-reviews").model,
                "GPT, last token": pretrained.load("gpt-reviews").model}
    results = {}
    for budget in BUDGETS:
        names = MODELS if budget == "1000" else ALL_LABELS_MODELS
        results[budget] = {name: [] for name in names}
        for seed in SEEDS:
            for name in names:
                results[budget][name].append(run_one(name, budget, seed, encoders))
            progress(f"budget {budget}, seed {seed}: " + ", ".join(f"{n} {results[budget][n][-1]:.4f}" for n in names))
    return results


# ---- chapter 11: the book's classifiers item by item, for paired tests against the practitioners' bar ----
CH11_MODELS = ("pretrained 12,000 updates", "GPT, last token")


def ch11_setup() -> dict:
    _, _, reviews, _ = _data()
    test_texts = json.dumps([r.text for r in reviews["test"]], ensure_ascii=False)
    return {"seeds": list(SEEDS), "models": list(CH11_MODELS), "budget": "all", "recipe": "ch7-finetune",
            "ch7_setup": setup(), "test_sha256": hashlib.sha256(test_texts.encode("utf-8")).hexdigest()}


def run_ch11_sentiment(progress=print) -> dict:
    """``{model: ["0110…" per seed]}``: chapter 7's all-label fine-tunes, every test prediction kept."""
    encoders = {"pretrained 12,000 updates": pretrained.load("bert-mlm-reviews").model,
                "GPT, last token": pretrained.load("gpt-reviews").model}
    results = {name: [] for name in CH11_MODELS}
    for seed in SEEDS:
        for name in CH11_MODELS:
            results[name].append("".join(map(str, test_predictions(name, "all", seed, encoders))))
        progress(f"seed {seed}: done")
    return results


def ch11_summary(results: dict) -> dict:
    """ch11-sentiment: each model's mean test accuracy over the seeds, in points."""
    labels = [r.label for r in _data()[2]["test"]]
    return {name: 100 * sum(accuracy([int(c) for c in p], labels) for p in preds) / len(preds)
            for name, preds in results.items()}


# ---- chapter 6: the layer norm's place, trained ------------------------------------------------------
BLOCK_ORDER_SEEDS = (0, 1, 2)
CH6_BATCH = 16


def ch6_train_config(seed: int) -> TrainConfig:
    """Chapter 6's GPT run on the small preset: 600 updates, AdamW at 6e-3, 60 warm-up updates, cosine."""
    return TrainConfig(max_steps=600, lr=6e-3, min_lr=6e-4, warmup_steps=60, weight_decay=0.0, betas=(0.9, 0.99),
                       eval_interval=60, eval_steps=10, seed=seed)


def train_block_order(order: str, seed: int, stop_at: int | None = None) -> dict:
    """Chapter 6's GPT (same config, data, initialisation and schedule) with its blocks in ``order``;
    returns the training history (``stop_at`` ends it early, the schedule unchanged)."""
    lm = review_lm_data(pretrained.review_tokenizer())
    config = pretrained.gpt_reviews_config(len(lm.tokenizer))
    set_seed(seed)
    model = set_block_order(GPT(config), order)
    model.init_output_bias(torch.bincount(lm.train, minlength=config.vocab_size))
    batches = dict(block_size=config.block_size, batch_size=CH6_BATCH)
    return train(model, LMBatcher(lm.train, **batches), ch6_train_config(seed), device="cpu", stop_at=stop_at,
                 val_batch=LMBatcher(lm.val, **batches))


def block_order_setup() -> dict:
    return {"orders": list(BLOCK_ORDERS), "seeds": list(BLOCK_ORDER_SEEDS), "batch_size": CH6_BATCH,
            "model": asdict(pretrained.gpt_reviews_config(len(pretrained.review_tokenizer()))),
            "train": asdict(ch6_train_config(0))}


def run_block_orders(progress=print) -> dict:
    """``{"val_loss": {order: [[validation estimate at every eval step] per seed]}, "val_step": [...]}``."""
    curves, steps = {order: [] for order in BLOCK_ORDERS}, None
    for seed in BLOCK_ORDER_SEEDS:
        for order in BLOCK_ORDERS:
            history = train_block_order(order, seed)
            curves[order].append([float(v) for v in history["val_loss"]])
            steps = list(history["val_step"])
        progress(f"seed {seed}: final validation loss " + ", ".join(f"{o} {curves[o][-1][-1]:.4f}" for o in BLOCK_ORDERS))
    return {"val_loss": curves, "val_step": steps}


# ---- the file ---------------------------------------------------------------------------------------
def results_path(name: str = "ch7-finetune") -> Path:
    if name not in RECIPES:
        raise KeyError(f"unknown experiment {name!r}; known: {sorted(RECIPES)}")
    return RESULTS_DIR / f"{name}.json"


def _digest(content: dict) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build(name: str = "ch7-finetune", path: Path | str | None = None, progress=print) -> Path:
    """Run the recipe on one CPU thread (results repeat bit for bit on one CPU at one thread count) and
    write its results file atomically; returns the path."""
    path = Path(path) if path is not None else results_path(name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        results = RECIPES[name]["run"](progress)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    content = {"format": FORMAT, "name": name, "setup": RECIPES[name]["setup"](), "results": results,
               "built_with": {**pretrained.machine_info(), "threads": 1, "seconds": round(seconds, 1)}}
    text = json.dumps({**content, "sha256": _digest(content)}, indent=1, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def read(path: Path | str, name: str = "ch7-finetune") -> dict:
    """A results file's contents, checked: format, fields and the digest of its contents."""
    fix = f"rebuild it with `python -m llmcourse.book.experiments build {name}`"
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no results file {str(path)!r}: {fix}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"results file {str(path)!r} is not valid JSON ({e}); restore it with git checkout or {fix}") from None
    fields = ("format", "name", "setup", "results", "built_with", "sha256")
    if not isinstance(state, dict) or set(state) != set(fields) or state["format"] != FORMAT:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"results file {str(path)!r} is not a {FORMAT} file (fields {found}); {fix}")
    content = {k: state[k] for k in fields if k != "sha256"}
    if _digest(content) != state["sha256"]:
        raise ValueError(f"results file {str(path)!r} was edited or corrupted: its contents do not match the SHA-256 "
                         f"stored in it; restore it with git checkout or {fix}")
    return state


def load(name: str = "ch7-finetune", path: Path | str | None = None) -> dict:
    """The checked results of experiment ``name`` that belong to today's code: ``{budget: {model: [acc]}}``
    plus the setup, in a dict with keys ``results``, ``setup`` and ``built_with``."""
    state = read(path if path is not None else results_path(name), name)
    now = json.loads(json.dumps(RECIPES[name]["setup"]()))  # as stored: tuples become lists
    if state["name"] != name or state["setup"] != now:
        changed = sorted(k for k in set(now) | set(state["setup"]) if now.get(k) != state["setup"].get(k))
        raise ValueError(f"results file of {name!r} was built with another setup (changed: {changed}); the code or "
                         f"the shipped weights changed since: rebuild it with "
                         f"`python -m llmcourse.book.experiments build {name}`")
    return {k: state[k] for k in ("results", "setup", "built_with")}


def accuracy_summary(results: dict) -> dict:
    """ch7-finetune: every (budget, model)'s mean test accuracy, in points."""
    return {f"{b} / {m}": 100 * sum(accs) / len(accs) for b, table in results.items() for m, accs in table.items()}


def block_order_summary(results: dict) -> dict:
    """ch6-block-order: every arrangement's mean final validation perplexity."""
    return {order: sum(math.exp(curve[-1]) for curve in curves) / len(curves) for order, curves in results["val_loss"].items()}


def verify(name: str = "ch7-finetune", progress=print) -> dict:
    """Rebuild in a temporary file and compare: identical on the machine that built the shipped file,
    else every summary number within the recipe's ``tolerance`` (declared bands: the chapters' reruns,
    compared by nbval on three floating-point paths, are the measured checks)."""
    recipe = RECIPES[name]
    shipped = read(results_path(name), name)
    with tempfile.TemporaryDirectory() as tmp:
        rebuilt = read(build(name, Path(tmp) / "rebuilt.json", progress), name)
    same_machine = pretrained.built_on_same_machine(shipped["built_with"], rebuilt["built_with"])
    before, after = recipe["summary"](shipped["results"]), recipe["summary"](rebuilt["results"])
    gaps = {k: abs(before[k] - after[k]) for k in before}
    identical = shipped["results"] == rebuilt["results"]
    ok = identical if same_machine else all(g <= recipe["tolerance"] for g in gaps.values())
    return {"same_machine": same_machine, "identical": identical, "largest_gap": max(gaps.values()), "ok": ok}


RECIPES = {"ch7-finetune": {"chapter": 7, "run": run, "setup": setup, "summary": accuracy_summary, "tolerance": 1.0,
                            "description": "chapter 7's comparison: 5 models x 5 paired seeds at 1,000 and all 13,909 labels"},
           "ch6-block-order": {"chapter": 6, "run": run_block_orders, "setup": block_order_setup,
                               "summary": block_order_summary, "tolerance": 2.0,
                               "description": "chapter 6's GPT with pre-LN, post-LN and the articles' block, 3 seeds each"},
           "ch8-verifiable-rl": experiment_ch8.RECIPE, "ch8-loops": experiment_ch8_loops.RECIPE,
           "ch8-carries": experiment_ch8_carries.RECIPE, "ch8-raft": experiment_raft.RECIPE,
           "ch9-frontier": experiment_ch9.RECIPE,
           "ch11-sentiment": {"chapter": 11, "run": run_ch11_sentiment, "setup": ch11_setup, "summary": ch11_summary,
                              "tolerance": 2.0, "description": "chapter 7's fine-tuned encoder and GPT classifier at "
                              "all labels, 5 seeds, every test prediction (chapter 11's paired tests)"}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.book.experiments", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["list", "build", "verify"])
    parser.add_argument("names", nargs="*", help="experiment names, or 'all'")
    args = parser.parse_args(argv)
    names = sorted(RECIPES) if args.names in ([], ["all"]) else args.names
    status = 0
    for name in names:
        results_path(name)  # unknown names fail before any work
        if args.command == "list":
            path = results_path(name)
            built = f" | built in {read(path, name)['built_with']['seconds']} s" if path.exists() else " | not built"
            print(f"{name} (chapter {RECIPES[name]['chapter']}): {RECIPES[name]['description']}{built}")
        elif args.command == "build":
            print(f"{name}: wrote {build(name)}")
        else:
            report = verify(name)
            print(f"{name}: {'OK' if report['ok'] else 'MISMATCH'} {report}")
            status |= not report["ok"]
    return status


if __name__ == "__main__":
    raise SystemExit(main())
