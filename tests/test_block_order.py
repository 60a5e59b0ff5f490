"""The three arrangements of the layer norm (chapter 6) against the formulas written out."""
import pytest
import torch
import torch.nn.functional as F

from llmcourse.chapters.transformer import BLOCK_ORDERS, set_block_order
from llmcourse.models.gpt import GPT, GPTConfig


def model_and_input():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=2, n_head=2, n_embd=16)).eval()
    return model, torch.randint(30, (2, 8), generator=torch.Generator().manual_seed(1))


def by_formula(model, idx, order):
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(idx.shape[1]))
    for b in model.transformer.h:
        if order == "pre-LN":
            x = x + b.attn(b.ln_1(x))
            x = x + b.mlp(b.ln_2(x))
        elif order == "post-LN":
            x = F.layer_norm(x + b.attn(x), (16,), b.ln_1.weight, b.ln_1.bias)
            x = F.layer_norm(x + b.mlp(x), (16,), b.ln_2.weight, b.ln_2.bias)
        else:  # as drawn: attention, feed-forward, then one add & norm
            x = F.layer_norm(x + b.mlp(b.attn(x)), (16,), b.ln_2.weight, b.ln_2.bias)
    return model.lm_head(model.transformer.ln_f(x))


@pytest.mark.parametrize("order", BLOCK_ORDERS)
def test_each_order_is_its_formula(order):
    model, idx = model_and_input()
    with torch.no_grad():
        torch.testing.assert_close(set_block_order(model, order)(idx)[0], by_formula(model, idx, order), rtol=1e-6, atol=1e-6)


def test_switching_back_restores_the_model_and_the_orders_differ():
    model, idx = model_and_input()
    with torch.no_grad():
        original = model(idx)[0]
        outputs = {order: set_block_order(model, order)(idx)[0] for order in BLOCK_ORDERS}
        assert torch.equal(set_block_order(model, "pre-LN")(idx)[0], original)
    assert torch.equal(outputs["pre-LN"], original)
    assert (outputs["post-LN"] - original).abs().max() > 1e-3 and (outputs["as drawn"] - original).abs().max() > 1e-3


def test_bad_arguments():
    model, _ = model_and_input()
    with pytest.raises(ValueError, match="unknown block order 'pre'.*'pre-LN', 'post-LN', 'as drawn'"):
        set_block_order(model, "pre")
    with pytest.raises(TypeError, match="llmcourse GPT"):
        set_block_order(torch.nn.Linear(2, 2), "pre-LN")
