"""Chapter 6 writes the GPT, its training loop and its sampling loop in cells; the package's GPT and
``llmcourse.train.train`` must compute exactly what that code computes."""
import math
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse import generate
from llmcourse.chapters.optim import warmup_cosine_lr
from llmcourse.core.checks import IGNORE_INDEX
from llmcourse.data.batching import LMBatcher
from llmcourse.models import GPTConfig
from llmcourse.models import gpt as package_gpt
from llmcourse.train import TrainConfig, estimate_loss, param_groups, train

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "06_transformer_gpt.ipynb"
NAMES = ("CausalSelfAttention", "MLP", "Block", "GPT", "train_gpt", "generate_tokens")


def chapter_code() -> dict:
    """The chapter's definitions of NAMES, executed in a namespace with the chapter's imports."""
    import ast

    namespace = dict(math=math, torch=torch, nn=nn, F=F, IGNORE_INDEX=IGNORE_INDEX, package_gpt=package_gpt,
                     param_groups=param_groups, estimate_loss=estimate_loss, warmup_cosine_lr=warmup_cosine_lr,
                     device=torch.device("cpu"))
    found = set()
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.parse(cell.source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in NAMES and node.name not in found:
                exec(compile(ast.Module(body=[node], type_ignores=[]), str(NOTEBOOK), "exec"), namespace)
                found.add(node.name)
    missing = set(NAMES) - found
    assert not missing, f"the chapter no longer defines {sorted(missing)}"
    return namespace


CH = chapter_code()


@pytest.mark.parametrize("bias, head_bias", [(True, True), (True, False), (False, False)])
def test_chapter_gpt_has_the_package_weights_and_logits(bias, head_bias):
    cfg = GPTConfig(vocab_size=37, block_size=12, n_layer=3, n_head=2, n_embd=16, bias=bias, head_bias=head_bias)
    torch.manual_seed(3)
    ours = CH["GPT"](cfg)
    torch.manual_seed(3)
    theirs = package_gpt.GPT(cfg)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    for name in ours_sd:
        assert torch.equal(ours_sd[name], theirs_sd[name]), f"{name}: another initial value"
    idx = torch.randint(0, 37, (4, 12), generator=torch.Generator().manual_seed(0))
    y = idx.roll(-1, 1)
    y[0, :5] = IGNORE_INDEX
    (a, loss_a), (b, loss_b) = ours(idx, y), theirs(idx, y)
    assert torch.equal(a, b) and torch.equal(loss_a, loss_b)
    if head_bias:
        counts = torch.bincount(idx.flatten(), minlength=37)
        ours.init_output_bias(counts)
        theirs.init_output_bias(counts)
        assert torch.equal(ours.lm_head.bias, theirs.lm_head.bias)


def test_chapter_layers_equal_the_package_layers():
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=4, n_embd=32)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(1))
    for name in ("CausalSelfAttention", "MLP", "Block"):
        torch.manual_seed(0)
        ours = CH[name](cfg).eval()
        theirs = getattr(package_gpt, name)(cfg).eval()
        theirs.load_state_dict(ours.state_dict())
        assert torch.equal(ours(x), theirs(x)), name


def test_chapter_training_loop_is_the_package_loop():
    cfg = GPTConfig(vocab_size=40, block_size=8, n_layer=2, n_head=2, n_embd=16, head_bias=True)
    stream = torch.randint(0, 40, (2000,), generator=torch.Generator().manual_seed(0))
    batches, val = LMBatcher(stream[:1500], 8, 4), LMBatcher(stream[1500:], 8, 4)
    torch.manual_seed(0)
    ours = CH["GPT"](cfg)
    torch.manual_seed(0)
    theirs = package_gpt.GPT(cfg)
    history = CH["train_gpt"](ours, batches, val, 12, lr=3e-3, min_lr=3e-4, warmup=3, weight_decay=0.1,
                              eval_interval=5)
    reference = train(theirs, batches, TrainConfig(max_steps=12, lr=3e-3, min_lr=3e-4, warmup_steps=3, weight_decay=0.1,
                                                   eval_interval=5, eval_steps=10, seed=0, betas=(0.9, 0.99),
                                                   progress=False), val_batch=val)
    for name, p in ours.state_dict().items():
        assert torch.equal(p, theirs.state_dict()[name]), f"{name} differs after training"
    assert history["train_loss"] == reference["train_loss"]
    assert history["val_step"] == reference["val_step"] and history["val_loss"] == reference["val_loss"]


def test_chapter_sampling_loop_is_generate_sample():
    cfg = GPTConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(0)
    model = package_gpt.GPT(cfg)
    for prompt, n, temperature in [([1, 2, 3], 15, 0.8), ([4], 3, 1.0)]:
        ours = CH["generate_tokens"](model, prompt, n, temperature=temperature, seed=5)
        assert ours == generate.sample(model, prompt, n, temperature=temperature, seed=5, use_cache=False)
