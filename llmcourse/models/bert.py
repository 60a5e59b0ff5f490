"""BERT (Devlin et al., 2018): a bidirectional Transformer encoder, pretrained as a masked language
model and fine-tuned as a classifier, in one readable file.

The architecture is BERT's:

* embeddings: token + learned position + segment (句子类型) embeddings, summed, then LayerNorm and
  dropout;
* ``n_layer`` *post*-LayerNorm encoder blocks, as in the original Transformer and BERT
  (``x = LN(x + attn(x))`` then ``x = LN(x + ffn(x))``; GPT-2 and :mod:`llmcourse.models.gpt` normalise
  *before* each sub-layer instead);
* bidirectional self-attention: every token attends to every real token of its sequence, left *and*
  right; only padding is masked (``F.scaled_dot_product_attention`` with a boolean mask);
* GELU (the exact, erf-based one, as BERT) in the feed-forward network.

Two heads sit on the same encoder (:class:`BertModel`, always the attribute ``.bert``, so a pretrained
encoder moves from one to the other with ``load_state_dict``):

* :class:`BertForMaskedLM`: dense + GELU + LayerNorm, then a decoder that shares its weight with the
  token embedding (weight tying) plus a bias; the loss is the cross-entropy on positions whose label
  is not :data:`IGNORE_INDEX` (-100).
* :class:`BertForSequenceClassification`: the *pooler* (dense + tanh on the [CLS] position), dropout,
  and a linear classifier; cross-entropy on the labels.

Both have ``forward(input_ids, attention_mask=None, labels=None, token_type_ids=None) -> (logits, loss)``,
so :func:`llmcourse.train.train` can call them with dict batches (``model(**batch)``).

:func:`bert_from_hf` copies the weights of a Hugging Face ``BertForMaskedLM`` /
``BertForSequenceClassification`` into these classes; the tests check that both compute the same
numbers.

Shapes: ``B`` batch, ``T`` sequence length, ``C`` = ``n_embd``, ``H`` = ``n_head``, ``D`` = ``C // H``,
``V`` = ``vocab_size``, ``K`` = ``num_labels``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.core.checks import IGNORE_INDEX, check_targets, check_token_ids, model_device, reads_values


@dataclass
class BertConfig:
    """Hyper-parameters of the BERT models. The defaults are a tiny encoder that trains on a CPU.

    ``intermediate_size=None`` means ``4 * n_embd`` (BERT's ratio). ``layer_norm_eps`` is BERT's 1e-12.
    ``pad_id`` is the id of the padding token (its embedding row gets no gradient, as in BERT).
    ``num_labels`` is only used by :class:`BertForSequenceClassification`. ``dropout`` applies to the
    embeddings, the sub-layer outputs and the classifier; ``attention_dropout`` to the attention weights
    (Hugging Face's ``hidden_dropout_prob`` and ``attention_probs_dropout_prob``); ``None`` means the
    same as ``dropout``. On a CPU, attention dropout makes ``scaled_dot_product_attention`` fall back to
    its unfused kernel, which almost triples the cost of a fine-tuning update at 128 tokens.
    """

    vocab_size: int = 256
    max_position: int = 128  # the longest sequence the model accepts ([CLS] and [SEP] included)
    type_vocab_size: int = 2  # segments A and B (sentence pairs); single texts use segment 0 only
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    intermediate_size: int | None = None
    dropout: float = 0.1
    attention_dropout: float | None = None
    layer_norm_eps: float = 1e-12
    pad_id: int = 0
    num_labels: int = 2
    init_std: float = 0.02
    pooling: str = "cls"  # classifier input: "cls" (BERT) or "mean" (average of the real tokens' states)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_position", "type_vocab_size", "n_layer", "n_head", "n_embd", "num_labels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BertConfig.{name} must be a positive int, got {value!r}")
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.n_embd
        if isinstance(self.intermediate_size, bool) or not isinstance(self.intermediate_size, int) or self.intermediate_size < 1:
            raise ValueError(f"BertConfig.intermediate_size must be a positive int or None, got {self.intermediate_size!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                "each head gets n_embd // n_head dimensions"
            )
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BertConfig.dropout must be a float in [0, 1), got {self.dropout!r}")
        # None stays None (it follows dropout), so replace(config, dropout=p) moves both
        if self.attention_dropout is not None and (isinstance(self.attention_dropout, bool) or not isinstance(
                self.attention_dropout, (int, float)) or not 0.0 <= self.attention_dropout < 1.0):
            raise ValueError(f"BertConfig.attention_dropout must be a float in [0, 1) or None, got {self.attention_dropout!r}")
        if not isinstance(self.layer_norm_eps, (int, float)) or not self.layer_norm_eps > 0:
            raise ValueError(f"BertConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if isinstance(self.pad_id, bool) or not isinstance(self.pad_id, int) or not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"BertConfig.pad_id must be an id in [0, vocab_size={self.vocab_size}), got {self.pad_id!r}")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"BertConfig.pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if not isinstance(self.init_std, (int, float)) or not self.init_std > 0:
            raise ValueError(f"BertConfig.init_std must be > 0, got {self.init_std!r}")


# ---- the encoder ----------------------------------------------------------------------------------
class BertSelfAttention(nn.Module):
    """Multi-head self-attention without a causal mask: ``softmax(Q K^T / sqrt(D) + pad_mask) V``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        # on the attention weights, as in BERT
        self.dropout = config.dropout if config.attention_dropout is None else config.attention_dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)  # queries, keys, values of all heads at once
        self.proj = nn.Linear(config.n_embd, config.n_embd)  # mixes the heads

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """``x`` (B, T, C); ``keep`` (B, 1, 1, T) bool, True where the key is a real token (or None)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        # Bidirectional: no is_causal. The boolean mask broadcasts over heads and query positions, so
        # every query (padding queries too) attends to the real tokens of its own sequence only.
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout_p)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.proj(y)


class BertLayer(nn.Module):
    """One encoder block, post-LayerNorm as in BERT: transform, add to the residual, then normalise."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attn = BertSelfAttention(config)
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.fc = nn.Linear(config.n_embd, config.intermediate_size)
        self.gelu = nn.GELU()  # exact (erf) GELU, BERT's "gelu"
        self.proj = nn.Linear(config.intermediate_size, config.n_embd)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        x = self.ln_1(x + self.drop(self.attn(x, keep)))  # (B, T, C): tokens exchange information
        x = self.ln_2(x + self.drop(self.proj(self.gelu(self.fc(x)))))  # (B, T, C): each token on its own
        return x


class BertModel(nn.Module):
    """The BERT encoder: ``(input_ids, attention_mask, token_type_ids) -> hidden states (B, T, C)``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        if not isinstance(config, BertConfig):
            raise TypeError(f"expected a BertConfig, got {type(config).__name__}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd, padding_idx=config.pad_id)
        self.pos_emb = nn.Embedding(config.max_position, config.n_embd)
        self.seg_emb = nn.Embedding(config.type_vocab_size, config.n_embd)
        self.emb_ln = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([BertLayer(config) for _ in range(config.n_layer)])

    def check_inputs(self, input_ids, attention_mask=None, token_type_ids=None) -> None:
        """Clear errors for tensors the model cannot take (wrong type, shape, length or ids)."""
        cfg = self.config
        check_token_ids(input_ids, cfg.vocab_size, "input_ids", cfg.max_position,
                        "truncate the inputs (e.g. keep [CLS] + the first max_position - 2 tokens + [SEP])",
                        "max_position")
        check_values = reads_values(input_ids)  # value checks: CPU only, not under torch.compile (core.checks)
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
            if t.shape != input_ids.shape:
                raise ValueError(f"{name} must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(t.shape)}")
        if attention_mask is not None and check_values:
            if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
                raise ValueError("attention_mask must hold 1 for real tokens and 0 for padding, nothing else")
            if not bool((attention_mask != 0).any(dim=1).all()):
                raise ValueError("attention_mask has a sequence with no real token (all zeros): nothing to attend to")
        if token_type_ids is not None and check_values:
            if int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= cfg.type_vocab_size:
                raise ValueError(f"token_type_ids must lie in [0, type_vocab_size={cfg.type_vocab_size})")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``input_ids`` (B, T); ``attention_mask`` (B, T), 1 = real token, 0 = padding -> (B, T, C)."""
        self.check_inputs(input_ids, attention_mask, token_type_ids)
        T = input_ids.size(1)
        pos = torch.arange(T, device=input_ids.device)  # (T,)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # one text: every token in segment 0
        x = self.tok_emb(input_ids) + self.pos_emb(pos) + self.seg_emb(token_type_ids)  # (B, T, C)
        x = self.drop(self.emb_ln(x))
        keep = None
        if attention_mask is not None:
            keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): which keys may be attended to
        for layer in self.layers:
            x = layer(x, keep)  # (B, T, C)
        return x


def _init_bert_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: N(0, std) for matrices and embeddings, zero biases, unit LayerNorm gains."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class BertBase(nn.Module):
    """What both heads share: the encoder ``self.bert``, parameter counts, and encoder transfer."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        if not isinstance(config, BertConfig):
            raise TypeError(f"{type(self).__name__} expects a BertConfig, got {type(config).__name__}")
        self.config = config
        self.bert = BertModel(config)

    def num_params(self) -> int:
        """Number of parameters (a tied matrix counted once)."""
        return sum(p.numel() for p in self.parameters())

    def load_encoder(self, source: "BertBase | BertModel") -> "BertBase":
        """Copy the encoder weights of ``source`` (another BERT model, e.g. a pretrained
        :class:`BertForMaskedLM`) into this model's encoder; the head keeps its own weights."""
        encoder = source.bert if isinstance(source, BertBase) else source
        if not isinstance(encoder, BertModel):
            raise TypeError(f"load_encoder expects a BERT model or BertModel, got {type(source).__name__}")
        self.bert.load_state_dict(encoder.state_dict())
        return self


class BertForMaskedLM(BertBase):
    """BERT with the masked-language-model head.

    ``forward(input_ids, attention_mask=None, labels=None, token_type_ids=None) -> (logits, loss)``:

    * without ``labels``: logits (B, T, V) at every position, loss ``None``;
    * with ``labels`` (B, T) (the original id at the positions to predict, :data:`IGNORE_INDEX`
      elsewhere): the head runs only on the N labelled positions, so logits are (N, V), in the order
      of ``labels[labels != IGNORE_INDEX]``, and the loss is their mean cross-entropy. Skipping the
      other 85 % of positions saves most of the output layer's work (fairseq does the same).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.head_dense = nn.Linear(config.n_embd, config.n_embd)
        self.head_gelu = nn.GELU()
        self.head_ln = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.decoder_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.apply(lambda m: _init_bert_weights(m, config.init_std))
        # Weight tying: the score of token v is the dot product with v's input embedding.
        self.decoder.weight = self.bert.tok_emb.weight

    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        """MLM head: hidden states (..., C) -> vocabulary logits (..., V)."""
        h = self.head_ln(self.head_gelu(self.head_dense(hidden)))
        return self.decoder(h) + self.decoder_bias

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None):
        if labels is not None:
            check_targets(labels, self.config.vocab_size, getattr(input_ids, "shape", None), "labels")
        hidden = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        if labels is None:
            return self.predict(hidden), None  # (B, T, V)
        labels = labels.long()
        selected = labels != IGNORE_INDEX  # (B, T)
        logits = self.predict(hidden[selected])  # (N, V): only the positions to predict
        return logits, F.cross_entropy(logits, labels[selected])


class BertForSequenceClassification(BertBase):
    """BERT with a classification head on the [CLS] position (position 0), or on the mean of the
    real tokens' final states with ``config.pooling == "mean"``.

    ``forward(input_ids, attention_mask=None, labels=None, token_type_ids=None) -> (logits (B, K), loss)``,
    the loss being the mean cross-entropy against ``labels`` (B,) (``None`` without labels).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.pooler = nn.Linear(config.n_embd, config.n_embd)  # BERT's pooler: dense + tanh on [CLS]
        self.drop = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.n_embd, config.num_labels)
        self.apply(lambda m: _init_bert_weights(m, config.init_std))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None):
        if labels is not None:
            B = input_ids.shape[0] if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2 else None
            if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != B:
                shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
                raise ValueError(f"labels must be a 1-D tensor with one class id per sequence (batch {B}), got {shape}")
            check_targets(labels, self.config.num_labels, (B,), "labels", "classes (num_labels)")
        hidden = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        if self.config.pooling == "cls":
            summary = hidden[:, 0]  # (B, C): the [CLS] position summarises the text (BERT)
        else:  # "mean": average over real tokens; MLM pretraining trains every position, not [CLS]
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            w = attention_mask.to(hidden.dtype)[:, :, None]  # (B, T, 1)
            summary = (hidden * w).sum(1) / w.sum(1)  # (B, C)
        pooled = torch.tanh(self.pooler(summary))  # (B, C)
        logits = self.classifier(self.drop(pooled))  # (B, K)
        loss = F.cross_entropy(logits, labels.long()) if labels is not None else None
        return logits, loss


# ---- Hugging Face conversion ----------------------------------------------------------------------
def _hf_to_ours_names(n_layer: int) -> dict[str, str]:
    """Our parameter name for every Hugging Face BERT name except query/key/value (concatenated)."""
    names = {
        "bert.embeddings.word_embeddings.weight": "bert.tok_emb.weight",
        "bert.embeddings.position_embeddings.weight": "bert.pos_emb.weight",
        "bert.embeddings.token_type_embeddings.weight": "bert.seg_emb.weight",
        "bert.embeddings.LayerNorm.weight": "bert.emb_ln.weight",
        "bert.embeddings.LayerNorm.bias": "bert.emb_ln.bias",
        "cls.predictions.transform.dense.weight": "head_dense.weight",
        "cls.predictions.transform.dense.bias": "head_dense.bias",
        "cls.predictions.transform.LayerNorm.weight": "head_ln.weight",
        "cls.predictions.transform.LayerNorm.bias": "head_ln.bias",
        "cls.predictions.bias": "decoder_bias",
        "bert.pooler.dense.weight": "pooler.weight",
        "bert.pooler.dense.bias": "pooler.bias",
        "classifier.weight": "classifier.weight",
        "classifier.bias": "classifier.bias",
    }
    for i in range(n_layer):
        hf, ours = f"bert.encoder.layer.{i}.", f"bert.layers.{i}."
        for suffix in ("weight", "bias"):
            names[f"{hf}attention.output.dense.{suffix}"] = f"{ours}attn.proj.{suffix}"
            names[f"{hf}attention.output.LayerNorm.{suffix}"] = f"{ours}ln_1.{suffix}"
            names[f"{hf}intermediate.dense.{suffix}"] = f"{ours}fc.{suffix}"
            names[f"{hf}output.dense.{suffix}"] = f"{ours}proj.{suffix}"
            names[f"{hf}output.LayerNorm.{suffix}"] = f"{ours}ln_2.{suffix}"
    return names


def bert_from_hf(hf_model) -> BertForMaskedLM | BertForSequenceClassification:
    """An llmcourse BERT computing the same function as a Hugging Face ``BertForMaskedLM`` (→
    :class:`BertForMaskedLM`) or ``BertForSequenceClassification`` (→ :class:`BertForSequenceClassification`).

    Hugging Face keeps separate query/key/value matrices; ours are concatenated into one ``qkv``
    layer. Raises ``ValueError`` for variants our model does not implement (another activation,
    relative positions, a decoder, an untied MLM decoder, regression or multi-label heads). The copy
    is float32, on the Hugging Face model's device, in its train/eval mode. ``transformers`` is only
    needed here and is imported lazily.
    """
    try:
        import transformers as tf
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("converting from Hugging Face needs the 'transformers' package: pip install transformers") from err
    kinds = {tf.BertForMaskedLM: BertForMaskedLM, tf.BertForSequenceClassification: BertForSequenceClassification}
    ours_cls = kinds.get(type(hf_model))
    if ours_cls is None:
        raise TypeError(f"bert_from_hf expects a transformers BertForMaskedLM or BertForSequenceClassification, "
                        f"got {type(hf_model).__name__}")
    c = hf_model.config
    problems = []
    if c.hidden_act != "gelu":
        problems.append(f"hidden_act={c.hidden_act!r} (expected 'gelu')")
    if getattr(c, "position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type={c.position_embedding_type!r} (expected 'absolute')")
    if getattr(c, "is_decoder", False) or getattr(c, "add_cross_attention", False):
        problems.append("a decoder / cross-attention (expected an encoder)")
    if ours_cls is BertForSequenceClassification:
        if c.num_labels < 2 or getattr(c, "problem_type", None) not in (None, "single_label_classification"):
            problems.append(f"num_labels={c.num_labels}, problem_type={getattr(c, 'problem_type', None)!r} "
                            "(expected single-label classification with num_labels >= 2)")
        if getattr(c, "classifier_dropout", None) not in (None, c.hidden_dropout_prob):
            problems.append(f"classifier_dropout={c.classifier_dropout} differs from hidden_dropout_prob")
    sd = {k: v.detach().float().cpu() for k, v in hf_model.state_dict().items()}
    if ours_cls is BertForMaskedLM and "cls.predictions.decoder.weight" in sd and not torch.equal(
            sd["cls.predictions.decoder.weight"], sd["bert.embeddings.word_embeddings.weight"]):
        problems.append("the MLM decoder is not tied to the word embeddings (ours always ties them)")
    if problems:
        raise ValueError(f"cannot convert this {type(hf_model).__name__}: " + "; ".join(problems))

    config = BertConfig(
        vocab_size=c.vocab_size, max_position=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
        n_layer=c.num_hidden_layers, n_head=c.num_attention_heads, n_embd=c.hidden_size,
        intermediate_size=c.intermediate_size, dropout=float(c.hidden_dropout_prob),
        attention_dropout=float(c.attention_probs_dropout_prob),
        layer_norm_eps=float(c.layer_norm_eps), pad_id=int(c.pad_token_id or 0),
        num_labels=int(c.num_labels) if ours_cls is BertForSequenceClassification else 2,
    )
    model = ours_cls(config)
    names = _hf_to_ours_names(config.n_layer)
    ours_sd = model.state_dict()
    new_sd = {}
    for hf_name, w in sd.items():
        if hf_name in names and names[hf_name] in ours_sd:
            new_sd[names[hf_name]] = w
    for i in range(config.n_layer):
        base = f"bert.encoder.layer.{i}.attention.self."
        for suffix in ("weight", "bias"):
            parts = [sd[f"{base}{m}.{suffix}"] for m in ("query", "key", "value")]
            new_sd[f"bert.layers.{i}.attn.qkv.{suffix}"] = torch.cat(parts, dim=0)  # (3C, C) / (3C,)
    if "decoder.weight" in ours_sd:
        new_sd["decoder.weight"] = new_sd["bert.tok_emb.weight"]  # tied
    missing = sorted(set(ours_sd) - set(new_sd))
    if missing:
        raise KeyError(f"no Hugging Face weight for our parameters {missing}")
    for name, w in new_sd.items():
        if w.shape != ours_sd[name].shape:
            raise ValueError(f"{name}: Hugging Face shape {tuple(w.shape)}, ours {tuple(ours_sd[name].shape)}")
    model.load_state_dict(new_sd)
    device = model_device(hf_model)
    return model.to(device).train(hf_model.training)


__all__ = [
    "BertConfig", "BertForMaskedLM", "BertForSequenceClassification", "BertLayer", "BertModel",
    "BertSelfAttention", "bert_from_hf",
]
