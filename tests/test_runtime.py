import random

import numpy as np
import pytest
import torch

import llmcourse
from llmcourse.core.runtime import PRESET_ENV


def test_set_seed_makes_all_generators_repeat():
    llmcourse.set_seed(123)
    first = (random.random(), np.random.rand(), torch.rand(3))
    llmcourse.set_seed(123)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_set_seed_rejects_bad_seed(bad):
    with pytest.raises(ValueError, match="seed"):
        llmcourse.set_seed(bad)


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert llmcourse.get_device() == torch.device(expected)


def test_get_device_on_this_machine_is_usable_and_cpu_can_be_forced():
    torch.zeros(1, device=llmcourse.get_device())
    assert llmcourse.get_device("cpu") == torch.device("cpu")


def test_get_device_rejects_unknown_and_unavailable():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        llmcourse.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            llmcourse.get_device("cuda")


def test_presets_by_argument_and_environment(monkeypatch):
    monkeypatch.delenv(PRESET_ENV, raising=False)
    assert llmcourse.get_preset().name == "small"
    assert llmcourse.get_preset("full").name == "full"
    monkeypatch.setenv(PRESET_ENV, "FULL")
    assert llmcourse.get_preset().name == "full"
    assert llmcourse.get_preset("small").name == "small"  # the argument wins


def test_unknown_preset_names_the_choices(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*\['full', 'small'\]"):
        llmcourse.get_preset("huge")
    monkeypatch.setenv(PRESET_ENV, "tiny")
    with pytest.raises(ValueError, match=r"LLMCOURSE_PRESET"):
        llmcourse.get_preset()
