"""Weights trained once by a recipe, shipped with the package, and reproducible (随书附带的预训练权重).

Two results of the book need more computation than a chapter can spend in about 90 s on one CPU
core: a GPT only beats the Kneser–Ney 5-gram after several passes over the reviews (chapter 6), and
masked-LM pretraining only helps fine-tuning once it has run for a while (chapter 7). Each chapter
trains the short run itself, in front of the reader, and then loads weights that :func:`build`
produced with the *same* model, data and training loop, for longer:

    python -m llmcourse.book.pretrained list            # the recipes and what they cost
    python -m llmcourse.book.pretrained build gpt-reviews   # retrain (minutes on a CPU), rewrite the file
    python -m llmcourse.book.pretrained verify all      # retrain into a temporary folder and compare

Nothing is downloaded: the files live in ``llmcourse/book/weights/``. Recipes train on one CPU thread: a
rebuild on the same CPU and torch version gives the same weights bit for bit; elsewhere the floating-point
sums run in another order, and :func:`verify` then compares the recorded metrics instead.

A weights file (format ``llmcourse.pretrained/2``) is a dict written atomically with ``torch.save`` and
read with ``weights_only=True``: the model's ``state_dict``, the metadata :func:`load` reports
(:data:`METADATA_FIELDS`: name, model class and config, training config and history, metrics,
``built_with``) and ``sha256``, digests that :func:`read` and :func:`load` recompute before they hand
anything out:

* ``sha256["tensors"]``: :func:`~llmcourse.core.checkpoint.tensor_sha256` of the state dict (the names
  sorted; dtype, shape and raw bytes of each tensor). A changed byte of any weight is refused.
* ``sha256["vocabulary"]``: of the id -> token list the recipe's tokenizer made for the build (as
  JSON). :func:`load` recomputes it from today's data and tokenizer: if either changed, every id would
  now stand for another character and the model would read scrambled text with no error at all.
* ``sha256["metadata"]``: one digest per metadata field (canonical JSON: sorted keys, no spaces), so an
  edited field is refused by name and ``.metrics`` never reports numbers the weights do not have.

The shipped files' bytes are also listed in ``weights/SHA256SUMS``, but that list only knows the
shipped paths: ``load(name, path)`` of a copy, a download or a test build was never checked against it,
which is why the digests live inside the file. They catch corruption, stale files and hand edits, not
forgery (anyone can recompute them). A file in format ``llmcourse.pretrained/1`` (no digests) is
refused: rebuild it with ``python -m llmcourse.book.pretrained build NAME``.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import platform
import reprlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
import torch.nn as nn

from llmcourse import models
from llmcourse.data import corpus
from llmcourse.data.batching import LMBatcher
from llmcourse.evaluate import lm_perplexity, review_lm_data
from llmcourse.data.masking import BertVocab, MLMBatcher
from llmcourse.data.tokenizers import CharTokenizer
from llmcourse.train import TrainConfig, estimate_loss, train
from llmcourse.core.runtime import set_seed
from llmcourse.core.checkpoint import CheckpointError, atomic_torch_save, checked_torch_load, tensor_sha256

FORMAT = "llmcourse.pretrained/2"
# what `load` reports besides the model; each field has its own digest in the file
METADATA_FIELDS = ("name", "model_class", "model_config", "train_config", "history", "metrics", "built_with")
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
METRIC_RTOL = 0.02  # another CPU or torch: the rebuilt metrics must agree within 2 %


# ---- the recipes ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def review_tokenizer() -> CharTokenizer:
    """The book's character tokenizer (``min_freq=2`` on the training reviews), which both recipes use."""
    return CharTokenizer(min_freq=2).train(corpus.review_texts("train"))


def gpt_reviews_config(vocab_size: int) -> models.GPTConfig:
    """Chapter 6's GPT: 2 pre-LN blocks, 4 heads, 128 wide, 64 characters of context."""
    return models.GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=128, dropout=0.0,
                     head_bias=True)


GPT_REVIEWS_BATCH = 16
GPT_REVIEWS_TRAIN = TrainConfig(max_steps=6000, lr=6e-3, min_lr=6e-4, warmup_steps=300, weight_decay=0.0,
                                betas=(0.9, 0.99), eval_interval=500, eval_steps=10, seed=0)


def _gpt_reviews(train_config: TrainConfig, stop_at: int | None = None):
    lm = review_lm_data(review_tokenizer())
    config = gpt_reviews_config(len(lm.tokenizer))
    set_seed(train_config.seed)
    model = models.GPT(config)
    model.init_output_bias(torch.bincount(lm.train, minlength=config.vocab_size))
    batches = dict(block_size=config.block_size, batch_size=GPT_REVIEWS_BATCH)
    history = train(model, LMBatcher(lm.train, **batches), train_config, val_batch=LMBatcher(lm.val, **batches),
                    device="cpu", stop_at=stop_at)
    model.eval()
    return model, history, {} if stop_at else _gpt_reviews_metrics(model, ("val", "test"))


def _gpt_reviews_metrics(model: nn.Module, splits) -> dict:
    lm = review_lm_data(review_tokenizer())
    return {f"{split}_ppl": lm_perplexity(model, getattr(lm, split), model.config.block_size) for split in splits}


BERT_MAX_LEN = 128  # [CLS] + up to 126 characters + [SEP]: about 82 % of the reviews whole


def bert_reviews_config(vocab_size: int, pad_id: int) -> models.BertConfig:
    """Chapter 7's encoder as pretrained: 2 layers, 4 heads, 64 wide, no dropout, init std 0.1."""
    return models.BertConfig(vocab_size=vocab_size, max_position=BERT_MAX_LEN, pad_id=pad_id, n_layer=2, n_head=4,
                      n_embd=64, dropout=0.0, attention_dropout=0.0, init_std=0.1)


MLM_BATCH = 32
MLM_REVIEWS_TRAIN = TrainConfig(max_steps=12000, lr=3e-3, min_lr=3e-4, warmup_steps=50, weight_decay=0.01,
                                eval_interval=1000, eval_steps=10, seed=1)


def _mlm_sequences(split: str) -> tuple[BertVocab, list]:
    vocab = BertVocab.from_tokenizer(review_tokenizer())
    return vocab, [vocab.encode(text, BERT_MAX_LEN) for text in corpus.review_texts(split)]


def _bert_mlm_reviews(train_config: TrainConfig, stop_at: int | None = None):
    vocab, train_seqs = _mlm_sequences("train")
    _, val_seqs = _mlm_sequences("val")
    set_seed(train_config.seed)
    model = models.BertForMaskedLM(bert_reviews_config(vocab.vocab_size, vocab.pad_id))
    history = train(model, MLMBatcher(train_seqs, vocab, MLM_BATCH), train_config,
                    val_batch=MLMBatcher(val_seqs, vocab, MLM_BATCH), device="cpu", stop_at=stop_at)
    model.eval()
    return model, history, {} if stop_at else _bert_mlm_metrics(model)


def _bert_mlm_metrics(model: nn.Module, splits=("val",)) -> dict:
    vocab, val_seqs = _mlm_sequences("val")
    return {"val_mlm_loss": estimate_loss(model, MLMBatcher(val_seqs, vocab, MLM_BATCH), steps=50)}


@dataclass(frozen=True)
class Recipe:
    name: str
    chapter: int
    description: str
    model_class: str
    train_config: TrainConfig
    run: Callable[..., tuple[nn.Module, dict, dict]]  # (TrainConfig, stop_at=None) -> (model, history, metrics)
    config: Callable[[], object]  # the model config the recipe builds, without training
    vocabulary: Callable[[], list[str]]  # the id -> token list the model reads (today's data and tokenizer)
    metrics: Callable[[nn.Module, tuple], dict]  # (model, splits) -> the metrics `build` records
    guard_metric: str  # the metric the fast test re-measures (see GUARD_* below)


def _gpt_config_now() -> models.GPTConfig:
    return gpt_reviews_config(len(review_tokenizer()))


def _bert_config_now() -> models.BertConfig:
    vocab = BertVocab.from_tokenizer(review_tokenizer())
    return bert_reviews_config(vocab.vocab_size, vocab.pad_id)


def _gpt_vocabulary() -> list[str]:
    tokenizer = review_tokenizer()
    return [tokenizer.id_to_token(i) for i in range(len(tokenizer))]


def _bert_vocabulary() -> list[str]:
    vocab = BertVocab.from_tokenizer(review_tokenizer())  # the tokenizer's ids, then [CLS] [SEP] [MASK]
    return [vocab.token(i) for i in range(vocab.vocab_size)]


RECIPES = {
    "gpt-reviews": Recipe(
        "gpt-reviews", 6, "chapter 6's GPT trained 10x longer: 6,000 updates of 16 x 64 characters (about 6 epochs)",
        "GPT", GPT_REVIEWS_TRAIN, _gpt_reviews, _gpt_config_now, _gpt_vocabulary, _gpt_reviews_metrics, "val_ppl"),
    "bert-mlm-reviews": Recipe(
        "bert-mlm-reviews", 7, "chapter 7's encoder pretrained 12x longer: 12,000 MLM updates of 32 reviews",
        "BertForMaskedLM", MLM_REVIEWS_TRAIN, _bert_mlm_reviews, _bert_config_now, _bert_vocabulary, _bert_mlm_metrics,
        "val_mlm_loss"),
}


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"unknown pretrained weights {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[name]


def weights_path(name: str) -> str:
    _recipe(name)
    return os.path.join(WEIGHTS_DIR, f"{name}.pt")


def _rebuild(name: str | None) -> str:
    return f"`python -m llmcourse.book.pretrained build {name or 'NAME'}`"


# ---- the shipped files' bytes: SHA256SUMS, written by `build`, checked by `load(name)` ------------------
# (it only knows the shipped paths; a file anywhere is checked by the digests inside it, see `read`)
MANIFEST = os.path.join(WEIGHTS_DIR, "SHA256SUMS")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: str | None = None) -> dict[str, str]:
    """``{file name: sha256}`` of the shipped weights (``sha256sum``'s format)."""
    path = path or MANIFEST
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return {name: digest for digest, name in (line.split() for line in f if line.strip())}


def _record_in_manifest(weights_file: str) -> None:
    entries = read_manifest()
    entries[os.path.basename(weights_file)] = file_sha256(weights_file)
    text = "".join(f"{digest}  {name}\n" for name, digest in sorted(entries.items()))
    fd, tmp = tempfile.mkstemp(dir=WEIGHTS_DIR, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, MANIFEST)


def check_integrity(name: str) -> None:
    """Refuse a shipped weights file whose bytes are not the ones its recipe wrote."""
    path = weights_path(name)
    expected = read_manifest().get(os.path.basename(path))
    if expected is None:
        raise CheckpointError(f"{path!r} is not listed in {MANIFEST!r}; rebuild it with "
                              f"`python -m llmcourse.book.pretrained build {name}`")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no weights file {path!r}: create it with `python -m llmcourse.book.pretrained build {name}`")
    actual = file_sha256(path)
    if actual != expected:
        raise CheckpointError(f"weights file {path!r} is corrupt: its SHA-256 is {actual[:16]}…, the recipe wrote "
                              f"{expected[:16]}…; restore it with `git checkout {os.path.relpath(path)}` or rebuild it "
                              f"with `python -m llmcourse.book.pretrained build {name}`")


# ---- building ---------------------------------------------------------------------------------------
def _cpu_model() -> str:
    """The CPU's model name and a digest of its feature flags: two CPUs that both report AVX512 to torch
    can still differ in MKL's code paths, and only the same CPU repeats a build bit for bit."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
        model, flags = info.get("model name\t", "").strip(), info.get("flags\t\t", "").strip()
    except OSError:
        model, flags = platform.processor(), ""
    return f"{model or platform.machine()} (flags {hashlib.sha256(flags.encode()).hexdigest()[:8]})"


def machine_info() -> dict:
    return {"torch": str(torch.__version__), "machine": platform.machine(),
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability()), "cpu": _cpu_model()}


def built_on_same_machine(a: dict, b: dict) -> bool:
    """Two ``built_with`` records name the same torch, CPU and kernels (one without "cpu" counts as another)."""
    return all(a.get(k) == b.get(k) for k in ("torch", "machine", "cpu_capability", "cpu"))


def build(name: str, out_dir: str | None = None, max_steps: int | None = None) -> str:
    """Train recipe ``name`` on one CPU thread (the set-up whose results repeat bit for bit; other thread
    counts sum in another order) and write its weights file (atomically); returns the path.

    ``max_steps`` shortens the run (for tests of this function only: such a file carries valid digests,
    so :func:`load` reads it from its path, but it differs from the shipped one).
    """
    recipe = _recipe(name)
    train_config = recipe.train_config
    if max_steps is not None:
        train_config = replace(train_config, max_steps=max_steps,
                               warmup_steps=min(train_config.warmup_steps, max_steps - 1),
                               eval_interval=max(1, min(train_config.eval_interval or max_steps, max_steps)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU results repeat bit for bit at a fixed thread count, not across counts
    try:
        start = time.perf_counter()
        model, history, metrics = recipe.run(train_config)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    state = {
        "name": name,
        "model_class": recipe.model_class,
        "model_config": asdict(model.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "train_config": asdict(train_config),
        "history": {k: list(v) for k, v in history.items()},
        "metrics": {k: float(v) for k, v in metrics.items()},
        "built_with": {**machine_info(), "threads": 1, "seconds": round(seconds, 1)},
    }
    path = os.path.join(out_dir, f"{name}.pt") if out_dir is not None else weights_path(name)
    write(state, path, recipe.vocabulary())
    if out_dir is None:
        _record_in_manifest(path)
    return path


# ---- the file format: digests written by `write`, recomputed by `read` and `load` -----------------------
def _is_dict(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# field -> (what it must be, the test): checked before anything uses a field, so a hand-edited file
# is refused naming the field instead of failing with an AttributeError deep inside `load`
_FIELD_TYPES = {
    "name": ("a str", lambda v: isinstance(v, str)),
    "model_class": ("a str", lambda v: isinstance(v, str)),
    "model_config": ("a dict of settings", _is_dict),
    "train_config": ("a dict of settings", _is_dict),
    "history": ("a dict of lists", lambda v: _is_dict(v) and all(isinstance(x, list) for x in v.values())),
    "metrics": ("a dict of numbers", lambda v: _is_dict(v) and all(_is_number(x) for x in v.values())),
    "built_with": ("a dict", _is_dict),
    "state_dict": ("a dict of tensors", lambda v: _is_dict(v) and all(isinstance(x, torch.Tensor) for x in v.values())),
}


def _json_sha256(value) -> str:
    """SHA-256 of ``value`` as canonical JSON: sorted keys, no spaces, floats written exactly (repr)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def vocabulary_sha256(tokens: list[str]) -> str:
    """SHA-256 of an id -> token list (``tokens[i]`` is the token of id ``i``)."""
    return _json_sha256(list(tokens))


def digests(state: dict, vocabulary: list[str]) -> dict:
    """The ``sha256`` entry of a weights file holding ``state``, built with ``vocabulary``."""
    return {"tensors": tensor_sha256(state["state_dict"]), "vocabulary": vocabulary_sha256(vocabulary),
            "metadata": {field: _json_sha256(state[field]) for field in METADATA_FIELDS}}


def write(state: dict, path: str, vocabulary: list[str]) -> str:
    """Write ``state`` (``state_dict`` and :data:`METADATA_FIELDS`) as a weights file with its digests,
    atomically; ``vocabulary`` is the id -> token list the model was trained on. Returns ``path``."""
    state = {"format": FORMAT, **{k: state[k] for k in ("state_dict", *METADATA_FIELDS)}}
    _check_fields(path, state, state["name"])  # never write a file that `read` would refuse
    state["sha256"] = digests(state, vocabulary)
    atomic_torch_save(state, path)
    return path


def _check_fields(path: str, state: dict, name: str | None) -> None:
    for field, (expected, is_ok) in _FIELD_TYPES.items():
        value = state[field]
        if not is_ok(value):
            raise CheckpointError(f"weights file {path!r}: field {field!r} must be {expected}, found "
                                  f"{type(value).__name__} {reprlib.repr(value)}; the file was edited or not written "
                                  f"by llmcourse. Rebuild it with {_rebuild(name)}")
        if field in METADATA_FIELDS:
            try:
                _json_sha256(value)
            except (TypeError, ValueError) as e:  # a tensor or an object where plain data belongs
                raise CheckpointError(f"weights file {path!r}: field {field!r} holds more than plain data ({e}); "
                                      f"rebuild it with {_rebuild(name)}") from None


def _stored_digests(path: str, state: dict, name: str | None) -> dict:
    stored = state["sha256"]
    if not (_is_dict(stored) and isinstance(stored.get("tensors"), str) and isinstance(stored.get("vocabulary"), str)
            and _is_dict(stored.get("metadata")) and all(isinstance(stored["metadata"].get(f), str)
                                                         for f in METADATA_FIELDS)):
        raise CheckpointError(f"weights file {path!r}: its 'sha256' digests are missing or malformed; "
                              f"rebuild it with {_rebuild(name)}")
    return stored


def _mismatch(path: str, name: str | None, what: str, why: str) -> CheckpointError:
    return CheckpointError(f"weights file {path!r} is refused: {what} do not match the SHA-256 stored in it "
                           f"({why}). Rebuild it with {_rebuild(name)}")


def _check_digests(path: str, state: dict, name: str | None) -> None:
    stored = _stored_digests(path, state, name)
    if tensor_sha256(state["state_dict"]) != stored["tensors"]:
        raise _mismatch(path, name, "its tensors", "the file is corrupt, or its weights were changed after the build")
    edited = [f for f in METADATA_FIELDS if _json_sha256(state[f]) != stored["metadata"][f]]
    if edited:
        raise _mismatch(path, name, f"its metadata fields {edited}",
                        "they were edited or corrupted after the build, and would report what the weights are not")


def _check_vocabulary(path: str, state: dict, recipe: Recipe) -> None:
    now = recipe.vocabulary()
    if vocabulary_sha256(now) != state["sha256"]["vocabulary"]:
        raise CheckpointError(
            f"weights file {path!r} was built with another tokenizer vocabulary than recipe {recipe.name!r} makes "
            f"now ({len(now)} ids, SHA-256 {vocabulary_sha256(now)[:12]}…; the file's: "
            f"{state['sha256']['vocabulary'][:12]}…): the training data or the tokenizer changed, so the ids "
            f"the model learnt now stand for other tokens. Rebuild it with {_rebuild(recipe.name)}")


# ---- loading, comparing ------------------------------------------------------------------------------
class Pretrained(NamedTuple):
    """A model loaded from a weights file, in ``eval`` mode on the CPU, with how it was made."""

    model: nn.Module
    metrics: dict  # measured when the file was built (a chapter re-measures them)
    history: dict  # the training history, as :func:`llmcourse.train.train` returns it
    train_config: dict
    built_with: dict  # torch version, CPU, threads, seconds


def read(path: str, name: str | None = None) -> dict:
    """The raw contents of a weights file, checked: its format, keys, field types, and that its tensors
    and metadata match the digests stored with them. ``name`` (the recipe) only fills in the messages."""
    state = checked_torch_load(path, FORMAT, ("state_dict", "sha256", *METADATA_FIELDS), "weights file",
                               f"create it with {_rebuild(name)}", f"Rebuild it with {_rebuild(name)}.",
                               outdated_hint=f"Rebuild it with {_rebuild(name)}.")
    _check_fields(path, state, name)
    _check_digests(path, state, name)
    return state


def load(name: str, path: str | None = None) -> Pretrained:
    """Load the shipped weights of recipe ``name`` (or the file at ``path`` built from it).

    Besides what :func:`read` checks, the file must hold recipe ``name``, have been built with the
    tokenizer vocabulary the recipe makes today, and store the model config the recipe builds today;
    otherwise the file is stale and must be rebuilt.
    """
    recipe = _recipe(name)
    if path is None:
        check_integrity(name)
        path = weights_path(name)
    state = read(path, name)
    if state["name"] != name or state["model_class"] != recipe.model_class:
        raise CheckpointError(f"{path!r} holds {state['name']!r} ({state['model_class']}), not {name!r}")
    _check_vocabulary(path, state, recipe)
    expected = asdict(recipe.config())
    if state["model_config"] != expected:
        diff = {k: (state["model_config"].get(k), v) for k, v in expected.items() if state["model_config"].get(k) != v}
        raise CheckpointError(f"{path!r} was built for another model config (stored, now): {diff}; "
                              f"rebuild it with {_rebuild(name)}")
    model = getattr(models, recipe.model_class)(type(recipe.config())(**state["model_config"]))
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"weights file {path!r} does not match {recipe.model_class}: {e}") from e
    model.eval()
    return Pretrained(model, dict(state["metrics"]), state["history"], state["train_config"], state["built_with"])


def compare_rebuild(shipped: dict, rebuilt: dict) -> dict:
    """How a rebuilt weights file compares with the shipped one (both as :func:`read` returns them):
    ``{"same_machine", "same_vocabulary", "identical", "metrics": {name: (shipped, rebuilt)}, "ok"}``.
    Both must come from the same tokenizer vocabulary. On the machine and torch that built the shipped
    file the weights must then be identical bit for bit; elsewhere the metrics must agree within 2 %."""
    same_machine = built_on_same_machine(shipped["built_with"], rebuilt["built_with"])
    same_vocabulary = shipped["sha256"]["vocabulary"] == rebuilt["sha256"]["vocabulary"]
    a, b = shipped["state_dict"], rebuilt["state_dict"]
    identical = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = {k: (shipped["metrics"][k], rebuilt["metrics"].get(k, math.nan)) for k in shipped["metrics"]}
    close = all(math.isclose(s, r, rel_tol=METRIC_RTOL) for s, r in metrics.values())
    return {"same_machine": same_machine, "same_vocabulary": same_vocabulary, "identical": identical,
            "metrics": metrics, "ok": same_vocabulary and (identical if same_machine else close)}


# ---- the fast guard `make test` runs (the full rebuild is `make verify-weights`) ------------------------
# Re-measure one stored metric and replay the first GUARD_UPDATES updates of the recipe, on any CPU
# and thread count. GUARD_RTOL is sized from measurement: `python -m llmcourse.book.pretrained guard all`
# on another CPU than the one that built the files (AVX-512, 1 thread), there with torch's AVX2
# kernels + MKL_CBWR=AVX2, torch's scalar kernels (ATEN_CPU_CAPABILITY=default) and 2 threads, moved
# the metric and the replayed losses by at most GUARD_MEASURED (relative, over both recipes); the
# tolerance is 3x that (the book's multiple, as in notebooks/tolerances.json).
GUARD_UPDATES = 200
GUARD_MEASURED = {"metric": 2.6e-7, "losses": 2.4e-7}
GUARD_RTOL = {k: max(3 * v, 1e-6) for k, v in GUARD_MEASURED.items()}


def replay(name: str, updates: int = GUARD_UPDATES) -> list[float]:
    """The training losses of the first ``updates`` updates of recipe ``name`` (the full schedule,
    stopped early), to compare with the history stored in the shipped file."""
    recipe = _recipe(name)
    _, history, _ = recipe.run(recipe.train_config, stop_at=updates)
    return list(history["train_loss"])


def guard(name: str) -> dict:
    """How far the shipped file's guard metric and its first losses move here: relative deviations."""
    recipe = _recipe(name)
    shipped = load(name)
    stored = shipped.metrics[recipe.guard_metric]
    split = recipe.guard_metric.split("_")[0]
    remeasured = recipe.metrics(shipped.model, (split,))[recipe.guard_metric]
    losses = replay(name)
    stored_losses = shipped.history["train_loss"][:len(losses)]
    worst = max(abs(a - b) / abs(a) for a, b in zip(stored_losses, losses))
    return {"metric": (stored, remeasured, abs(remeasured - stored) / abs(stored)),
            "losses": (len(losses), worst)}


def verify(name: str) -> dict:
    """Rebuild recipe ``name`` in a temporary folder and :func:`compare_rebuild` it with the shipped file."""
    shipped = read(weights_path(name), name)
    with tempfile.TemporaryDirectory() as tmp:
        rebuilt = read(build(name, out_dir=tmp), name)
    return compare_rebuild(shipped, rebuilt)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.book.pretrained", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["list", "build", "verify", "guard"])
    parser.add_argument("names", nargs="*", help="recipe names, or 'all'")
    args = parser.parse_args(argv)
    names = sorted(RECIPES) if args.names in ([], ["all"]) else args.names
    for name in names:
        _recipe(name)
    status = 0
    for name in names:
        recipe = RECIPES[name]
        if args.command == "list":
            built = ""
            if os.path.exists(weights_path(name)):
                info = read(weights_path(name), name)
                built = f" | built in {info['built_with'].get('seconds')} s, {info['metrics']}"
            print(f"{name} (chapter {recipe.chapter}): {recipe.description}{built}")
        elif args.command == "build":
            path = build(name)
            print(f"{name}: wrote {path} {read(path, name)['metrics']}")
        elif args.command == "guard":
            report = guard(name)
            print(f"{name}: {recipe.guard_metric} stored {report['metric'][0]:.6f}, re-measured "
                  f"{report['metric'][1]:.6f} (rel {report['metric'][2]:.2e}); first {report['losses'][0]} "
                  f"losses: largest rel deviation {report['losses'][1]:.2e}")
        else:
            report = verify(name)
            print(f"{name}: {'OK' if report['ok'] else 'MISMATCH'} {report}")
            status |= not report["ok"]
    return status


if __name__ == "__main__":
    raise SystemExit(main())
