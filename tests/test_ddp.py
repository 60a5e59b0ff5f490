"""Data-parallel training under torchrun: two CPU processes (gloo) make the same updates as one process
on the combined batch, with the calling code unchanged — at the first update already, parameter by
parameter, the gradient each process hands to AdamW is the one-process gradient of the whole batch;
checkpoints come from rank 0 and resume."""
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

from llmcourse.chapters.engineering import compare_gradients, gradients_at_first_update
from llmcourse.models import GPT, GPTConfig
from llmcourse.train import TrainConfig, train

SCRIPT = textwrap.dedent('''
    import sys, torch
    from llmcourse.chapters.engineering import gradients_at_first_update
    from llmcourse.models import GPT, GPTConfig
    from llmcourse.train import TrainConfig, train

    def get_batch(i, generator):  # 8 rows: each of 2 processes trains on 4 of them
        x = torch.randint(0, 40, (8, 12), generator=generator)
        return x, x.roll(-1, dims=1)

    out, steps, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=32))
    cfg = TrainConfig(max_steps=steps, lr=3e-3, warmup_steps=2, eval_interval=None, seed=3,
                      checkpoint_path=out + ".ckpt", grad_accum_steps=2)
    rows = []  # the batch rows each forward pass of this process sees
    model.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    with gradients_at_first_update(model) as grads:  # all-reduced and clipped, just before update 0
        history = train(model, get_batch, cfg, stop_at=stop)
    if stop < steps:  # an interruption, then a resume in the same processes
        history = train(model, get_batch, cfg, resume=True)
    import torch.distributed as dist
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.save(rows, out + f".rows{rank}")
    torch.save(grads, out + f".grads{rank}")
    if rank == 0:
        torch.save({"state": model.state_dict(), "loss": history["train_loss"]}, out)
''')


def get_batch(i, generator):
    x = torch.randint(0, 40, (8, 12), generator=generator)
    return x, x.roll(-1, dims=1)


def single_process(steps):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=32))
    cfg = TrainConfig(max_steps=steps, lr=3e-3, warmup_steps=2, eval_interval=None, seed=3, grad_accum_steps=2)
    with gradients_at_first_update(model) as grads:
        history = train(model, get_batch, cfg)
    return model.state_dict(), history["train_loss"], grads


def run_torchrun(tmp_path, steps, stop):
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ddp_result.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), str(out), str(steps), str(stop)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [torch.load(f"{out}.rows{rank}", weights_only=True) for rank in range(2)]
    grads = [torch.load(f"{out}.grads{rank}", weights_only=True) for rank in range(2)]
    return torch.load(out, weights_only=True), rows, grads


@pytest.mark.parametrize("stop", [5, 3], ids=["straight", "interrupted-and-resumed"])
def test_two_processes_equal_one_process_on_the_combined_batch(tmp_path, stop):
    steps = 5
    ddp, rows, grads = run_torchrun(tmp_path, steps, stop)
    # each process computed on its half (4 of 8 rows) of every micro-batch: 2 micro-batches per update
    assert all(r == [4] * (2 * steps) for r in rows), rows
    state, losses, reference = single_process(steps)
    # update 0, parameter by parameter: both processes hold the same all-reduced gradient, and it is the
    # one-process gradient of the whole batch up to float32 rounding of the different summation order
    assert set(grads[0]) == set(reference) == {n for n, p in GPT(GPTConfig(vocab_size=40, block_size=12, n_layer=2,
                                                                           n_head=2, n_embd=32)).named_parameters()}
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in reference)
    differences = compare_gradients(grads[0], reference)
    assert differences[0].rel < 1e-5, differences[0]
    assert all(d.reference_max > 0 for d in differences)  # every parameter had a gradient to compare
    assert len(ddp["loss"]) == steps
    torch.testing.assert_close(torch.tensor(ddp["loss"]), torch.tensor(losses), atol=1e-5, rtol=1e-5)
    for name, value in state.items():
        torch.testing.assert_close(ddp["state"][name], value, atol=1e-5, rtol=1e-4, msg=name)
    # and training did something: the weights moved away from their initial values
    torch.manual_seed(0)
    initial = GPT(GPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=32)).state_dict()
    assert (ddp["state"]["transformer.h.0.mlp.c_fc.weight"] - initial["transformer.h.0.mlp.c_fc.weight"]).abs().max() > 1e-3


def test_batch_not_divisible_by_processes_is_a_clear_error():
    from llmcourse.train import _shard

    with pytest.raises(ValueError, match="divisible by the number of processes"):
        _shard((torch.zeros(5, 3), torch.zeros(5, 3)), rank=0, world=2)
    x = torch.arange(8).view(4, 2)
    assert torch.equal(_shard((x, x), 1, 2)[0], x[2:])
    assert torch.equal(_shard({"input_ids": x, "n": 3}, 0, 2)["input_ids"], x[:2])
