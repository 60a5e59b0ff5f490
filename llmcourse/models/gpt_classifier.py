"""A GPT read as a classifier: a linear layer on the last real token's final state (GPT 作分类器).

A causal model's state at position ``t`` has read everything up to ``t`` and nothing after it, so the
one state that has read a whole text is the last one. Radford et al. (2018) fine-tuned GPT this way,
and Hugging Face's ``GPT2ForSequenceClassification`` does the same: ``score`` is a bias-free linear
layer from the final hidden state (after ``ln_f``) of each sequence's last real token to the class
scores. Sequences are padded on the right, so the last real token of row ``b`` sits at
``attention_mask[b].sum() - 1``; the causal mask already keeps the padding after it from reaching it.

``forward(input_ids, attention_mask=None, labels=None) -> (logits (B, K), loss or None)``, the same
interface as :class:`~llmcourse.models.bert.BertForSequenceClassification`, so the book's fine-tuning
loop and accuracy helpers take either model. The body converts to Hugging Face as any GPT does
(:func:`~llmcourse.models.hf_convert.gpt_to_hf`), and with the same ``score`` weight a
``GPT2ForSequenceClassification`` gives the same logits (``tests/test_gpt_classifier.py``). The
body's output layer is not used; its bias, if any, gets no gradient and AdamW leaves it alone.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.core.checks import check_targets
from llmcourse.models.gpt import GPT, GPTConfig


class GPTForSequenceClassification(nn.Module):
    """A :class:`GPT` body and a linear ``score`` layer on the last real token (GPT-2's classifier)."""

    def __init__(self, config: GPTConfig, num_labels: int = 2) -> None:
        super().__init__()
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
            raise ValueError(f"num_labels must be an int >= 2 (the number of classes), got {num_labels!r}")
        self.config, self.num_labels = config, num_labels
        self.body = GPT(config)  # checks the config; its output layer stays unused
        self.score = nn.Linear(config.n_embd, num_labels, bias=False)
        nn.init.normal_(self.score.weight, mean=0.0, std=0.02)  # GPT-2's init for a new layer

    @classmethod
    def from_lm(cls, lm: GPT, num_labels: int = 2) -> "GPTForSequenceClassification":
        """A classifier whose body is a copy of the language model ``lm`` (``lm`` itself is untouched)
        and whose ``score`` layer is new (drawn from the current random state)."""
        if not isinstance(lm, GPT):
            raise TypeError(f"lm must be a llmcourse GPT, got {type(lm).__name__}")
        model = cls(lm.config, num_labels)
        model.body.load_state_dict(lm.state_dict())
        return model

    def last_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B,) position of each row's last real token; the mask must be ones, then zeros (right padding)."""
        B, T = input_ids.shape
        if attention_mask is None:
            return torch.full((B,), T - 1, dtype=torch.long, device=input_ids.device)
        if attention_mask.shape != (B, T):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected {(B, T)} like input_ids")
        mask = attention_mask.long()
        lengths = mask.sum(1)  # (B,)
        right_padded = torch.equal(mask, (torch.arange(T, device=mask.device) < lengths[:, None]).long())
        if not right_padded or bool((lengths == 0).any()):
            raise ValueError("attention_mask must mark each row's real tokens as ones followed by padding zeros "
                             "(right padding, at least one real token); the classifier reads the last real token")
        return lengths - 1

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None):
        hidden = self.body.hidden_states(input_ids)  # (B, T, C); checks the ids and the length
        last = self.last_positions(input_ids, attention_mask)  # (B,)
        summary = hidden[torch.arange(input_ids.shape[0], device=hidden.device), last]  # (B, C)
        logits = self.score(summary)  # (B, K)
        loss = None
        if labels is not None:
            check_targets(labels, self.num_labels, (input_ids.shape[0],), "labels", "classes (num_labels)")
            loss = F.cross_entropy(logits, labels.long())
        return logits, loss


__all__ = ["GPTForSequenceClassification"]
