"""Convert :class:`~llmcourse.models.gpt.GPT` to and from Hugging Face's ``GPT2LMHeadModel``.

Our parameter names are GPT-2's, so the conversion is a name-for-name copy with one twist: Hugging
Face's GPT-2 stores the attention and MLP projections in ``Conv1D`` layers, whose weight is
``(in, out)`` and computes ``x @ W + b``, while ``nn.Linear`` stores ``(out, in)`` and computes
``x @ W.T + b``. The four such matrices per block (``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``,
``mlp.c_proj``) are therefore transposed on the way in and on the way out.

``transformers`` is only needed here and is imported lazily.
"""
from __future__ import annotations

import torch

from llmcourse.core.checks import model_device
from llmcourse.models.gpt import GPT, GPTConfig

# Weights stored by Hugging Face's Conv1D as (in, out): transposed relative to nn.Linear.
_CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Causal-mask buffers that older transformers versions keep in the state dict; not weights.
_HF_BUFFERS = (".attn.bias", ".attn.masked_bias")


def _transformers():
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "converting to or from Hugging Face needs the 'transformers' package: "
            "pip install 'transformers>=4.40' (or pip install 'llmcourse[test]')"
        ) from err
    return transformers


def _is_conv1d(name: str) -> bool:
    return name.endswith(_CONV1D_SUFFIXES)


def gpt_to_hf(model: GPT):
    """A ``transformers.GPT2LMHeadModel`` computing the same function as ``model``.

    The copy is float32, on ``model``'s device, in ``model``'s train/eval mode. A model built with
    ``bias=False`` becomes one whose biases are zero (Hugging Face's GPT-2 always has biases).
    """
    if not isinstance(model, GPT):
        raise TypeError(f"gpt_to_hf expects an llmcourse GPT, got {type(model).__name__}")
    tf = _transformers()
    cfg = model.config
    if cfg.head_bias:
        raise ValueError("GPT-2 has no output-layer bias: a model built with head_bias=True cannot be converted")
    hf_config = tf.GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=None,  # 4 * n_embd, as ours
        activation_function="gelu_new",  # the tanh approximation of GELU
        layer_norm_epsilon=1e-5,  # nn.LayerNorm's default
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        tie_word_embeddings=True,
        # GPT-2's defaults (50256) lie outside a small vocabulary; ours has no special tokens.
        bos_token_id=None,
        eos_token_id=None,
    )
    hf = tf.GPT2LMHeadModel(hf_config)
    ours = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    hf_sd = hf.state_dict()
    new_sd = {}
    for name, target in hf_sd.items():
        if name.endswith(_HF_BUFFERS):
            new_sd[name] = target  # keep HF's own mask buffers
        elif name in ours:
            w = ours[name]
            new_sd[name] = w.t().contiguous() if _is_conv1d(name) else w
        elif name.endswith(".bias"):
            new_sd[name] = torch.zeros_like(target)  # our model has bias=False: a zero bias is the same
        else:
            raise KeyError(f"no weight in the llmcourse GPT for Hugging Face parameter {name!r}")
        if new_sd[name].shape != target.shape:
            raise ValueError(f"{name}: shape {tuple(new_sd[name].shape)} but Hugging Face expects {tuple(target.shape)}")
    hf.load_state_dict(new_sd)
    device = model_device(model)
    return hf.to(device).train(model.training)


def gpt_from_hf(hf_model) -> GPT:
    """An llmcourse :class:`GPT` computing the same function as a ``GPT2LMHeadModel``.

    Raises ``ValueError`` for GPT-2 variants our model does not implement (another activation,
    untied output layer, another LayerNorm epsilon, ...). The copy is float32, on the Hugging Face
    model's device, in its train/eval mode.
    """
    tf = _transformers()
    if not isinstance(hf_model, tf.GPT2LMHeadModel):
        raise TypeError(f"gpt_from_hf expects a transformers.GPT2LMHeadModel, got {type(hf_model).__name__}")
    c = hf_model.config
    problems = []
    if c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation_function={c.activation_function!r} (expected 'gelu_new')")
    if c.n_inner not in (None, 4 * c.n_embd):
        problems.append(f"n_inner={c.n_inner} (expected None or 4 * n_embd = {4 * c.n_embd})")
    if abs(c.layer_norm_epsilon - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon={c.layer_norm_epsilon} (expected 1e-5)")
    if not getattr(c, "scale_attn_weights", True) or getattr(c, "scale_attn_by_inverse_layer_idx", False):
        problems.append("non-standard attention scaling (expected 1/sqrt(head_dim) only)")
    if getattr(c, "add_cross_attention", False):
        problems.append("cross-attention layers (expected a decoder-only model)")
    if not (c.resid_pdrop == c.embd_pdrop == c.attn_pdrop):
        problems.append(f"different dropouts resid/embd/attn = {c.resid_pdrop}/{c.embd_pdrop}/{c.attn_pdrop}")
    sd = {k: v.detach().float().cpu() for k, v in hf_model.state_dict().items()}
    if "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"], sd["transformer.wte.weight"]):
        problems.append("lm_head is not tied to the token embedding (our GPT always ties them)")
    if problems:
        raise ValueError("cannot convert this GPT2LMHeadModel: " + "; ".join(problems))

    config = GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.n_positions,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_embd=c.n_embd,
        dropout=float(c.resid_pdrop),
        bias=True,
    )
    model = GPT(config)
    new_sd = {}
    for name in model.state_dict():
        if name not in sd:
            raise KeyError(f"Hugging Face model has no parameter {name!r}")
        w = sd[name]
        new_sd[name] = w.t().contiguous() if _is_conv1d(name) else w
    model.load_state_dict(new_sd)
    device = model_device(hf_model)
    return model.to(device).train(hf_model.training)
