"""Under torchrun on GPUs each process selects its own GPU before NCCL starts (llmcourse.train)."""
import torch
import torch.distributed as dist

from llmcourse import train


def fake_process_group(monkeypatch, rank: int) -> list:
    """Two torchrun processes without a real group: the calls that set a GPU or start the group, in order."""
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", str(d))))
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **k: calls.append(("init", backend)))
    monkeypatch.setattr(dist, "get_rank", lambda: rank)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    return calls


def test_each_process_sets_its_gpu_before_the_nccl_group_starts(monkeypatch):
    calls = fake_process_group(monkeypatch, rank=1)
    device = train._local_device(torch.device("cuda"), 2)
    assert device == torch.device("cuda", 1)
    assert train._distributed(device) == (1, 2)
    assert calls == [("set_device", "cuda:1"), ("init", "nccl")]


def test_on_the_cpu_the_group_is_gloo_and_no_gpu_is_touched(monkeypatch):
    calls = fake_process_group(monkeypatch, rank=0)
    assert train._distributed(torch.device("cpu")) == (0, 2)
    assert calls == [("init", "gloo")]
