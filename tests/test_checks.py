"""The one validation layer (llmcourse.core.checks): each check refuses what would otherwise be a
silent wrong result, with a message that says what was wrong and what is expected."""
import math

import numpy as np
import pytest
import torch

from llmcourse.core.checks import (IGNORE_INDEX, check_finite, check_int, check_logits, check_targets,
                                   check_texts, check_token_ids, eval_mode, id_tensor, model_device)


def test_token_ids_refuse_floats_instead_of_truncating():
    with pytest.raises(TypeError, match="integer token ids.*floats"):
        check_token_ids(torch.tensor([[3.7, 1.0]]), vocab_size=10)
    check_token_ids(torch.tensor([[3, 1]]), vocab_size=10)  # the same ids as integers pass


@pytest.mark.parametrize("ids, message", [
    (torch.zeros(0, 3, dtype=torch.long), "no rows"),
    (torch.zeros(2, 0, dtype=torch.long), "empty along time"),
    (torch.tensor([[1, 10]]), r"ids in \[1, 10\] but the vocabulary has 10 ids"),
    (torch.tensor([[-1, 2]]), r"ids in \[-1, 2\]"),
    (torch.tensor([1, 2]), r"unsqueeze\(0\)"),
])
def test_token_ids_shape_and_range(ids, message):
    with pytest.raises((ValueError, TypeError), match=message):
        check_token_ids(ids, vocab_size=10)


def test_context_length_names_the_limit():
    with pytest.raises(ValueError, match="sequence length 5 exceeds block_size 4; crop"):
        check_token_ids(torch.zeros(1, 5, dtype=torch.long), 10, max_len=4, max_len_hint="crop")


def test_targets_all_ignored_is_its_own_error():
    # the mean loss over no target is 0/0 = NaN; training then wrongly suggested a lower learning rate
    with pytest.raises(ValueError, match="no target in this batch"):
        check_targets(torch.full((2, 3), IGNORE_INDEX), vocab_size=10)
    check_targets(torch.tensor([[IGNORE_INDEX, 9]]), vocab_size=10)  # one target is enough
    with pytest.raises(ValueError, match="same shape as the inputs"):
        check_targets(torch.tensor([[1, 2]]), 10, shape=(1, 3))
    with pytest.raises(TypeError, match="floats"):
        check_targets(torch.tensor([[1.0, 2.0]]), 10)
    with pytest.raises(ValueError, match=r"ids in \[10, 10\].*IGNORE_INDEX"):
        check_targets(torch.tensor([[10]]), 10)


def test_value_checks_read_no_values_off_the_cpu():
    # Meta tensors have no values: a check that read one (a host synchronisation on CUDA) would raise.
    ids = torch.zeros(2, 3, dtype=torch.long, device="meta")
    check_token_ids(ids, vocab_size=10)
    check_targets(ids, vocab_size=10, shape=(2, 3))
    check_logits(torch.zeros(2, 5, device="meta"))
    with pytest.raises(TypeError, match="floats"):  # dtype and shape are still checked
        check_token_ids(torch.zeros(2, 3, device="meta"), vocab_size=10)


def test_id_tensor_refuses_floats_and_negative_ids():
    assert id_tensor([1, np.int64(2)]).tolist() == [1, 2]
    with pytest.raises(TypeError, match="never rounded"):
        id_tensor([1.5, 2])
    with pytest.raises(ValueError, match=">= 0"):
        id_tensor([3, -1])


def test_logits_refuse_nan_and_plus_inf_but_allow_banned_tokens():
    check_logits(torch.tensor([[0.0, -math.inf]]))  # -inf: a token a decoder must never pick
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="NaN or \\+inf"):
            check_logits(torch.tensor([[0.0, bad]]))


def test_eval_mode_restores_the_mode_even_when_the_body_raises():
    model = torch.nn.Dropout(0.5).train()
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            assert not model.training and not torch.is_grad_enabled()
            raise RuntimeError("boom")
    assert model.training
    with eval_mode(model.eval(), no_grad=False):
        assert torch.is_grad_enabled()
    assert not model.training  # an eval-mode model stays in eval mode


def test_model_device_and_plain_values():
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.Identity()) == torch.device("cpu")  # no parameters
    assert check_int("k", np.int64(2), 1) == 2 and type(check_int("k", np.int64(2))) is int
    for bad in (True, 2.0, "2"):
        with pytest.raises(TypeError, match="k must be an int"):
            check_int("k", bad)
    with pytest.raises(ValueError, match=">= 1"):
        check_int("k", 0, 1)
    with pytest.raises(ValueError, match="finite"):
        check_finite("length_penalty", math.nan)
    with pytest.raises(TypeError, match="single str"):
        check_texts("我喜欢")
