"""Data for BERT: special tokens, the masked-language-model (掩码语言模型) masking rule, and batches.

BERT reads ``[CLS] x_1 ... x_n [SEP]`` and needs three ids that the book's :class:`CharTokenizer`
does not have. :class:`BertVocab` appends them *after* the tokenizer's vocabulary, so every id the
tokenizer produces keeps its meaning (the same ids as every other chapter) and::

    [CLS] = V     [SEP] = V + 1     [MASK] = V + 2      vocab_size = V + 3

with ``V = len(tokenizer)``. ``<pad>`` (0) is the padding id; ``<unk>`` (1) is ordinary text (a rare
character) and can be masked like any other character.

:func:`mask_tokens` is BERT's rule (Devlin et al., 2018): select each ordinary token with probability
``mlm_prob`` (15 %); of the selected ones replace 80 % by ``[MASK]``, 10 % by a random token, and leave
10 % unchanged; the label is the original id at selected positions and ``-100`` (ignored) elsewhere.

:class:`MLMBatcher` and :class:`ClassificationBatcher` are ``get_batch(step, generator)`` functions
for :func:`llmcourse.train.train` returning dict batches (``input_ids``, ``attention_mask``, ``labels``).
All randomness comes from the ``torch.Generator`` passed in, so batches and masks are reproducible.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmcourse.core.checks import IGNORE_INDEX, check_generator, id_tensor

SPECIAL_NAMES = ("[CLS]", "[SEP]", "[MASK]")


def _check_id(name: str, value, vocab_size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int token id, got {type(value).__name__}")
    if not 0 <= value < vocab_size:
        raise ValueError(f"{name}={value} is outside the vocabulary [0, {vocab_size})")
    return value


# ---- the vocabulary ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BertVocab:
    """A tokenizer's vocabulary plus ``[CLS]``, ``[SEP]``, ``[MASK]`` appended at its end.

    ``special_ids`` are the ids that are never masked or drawn as random replacements: the tokenizer's
    ``<pad>``, ``<bos>``, ``<eos>`` and the three BERT tokens.
    """

    tokenizer: object
    base_size: int
    pad_id: int = 0

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "BertVocab":
        """Extend a trained tokenizer (anything with ``encode``, ``id_to_token`` and ``len``)."""
        for attr in ("encode", "id_to_token"):
            if not callable(getattr(tokenizer, attr, None)):
                raise TypeError(f"tokenizer must have an {attr}() method, got {type(tokenizer).__name__}")
        return cls(tokenizer=tokenizer, base_size=len(tokenizer), pad_id=tokenizer.token_to_id("<pad>"))

    @property
    def cls_id(self) -> int:
        return self.base_size

    @property
    def sep_id(self) -> int:
        return self.base_size + 1

    @property
    def mask_id(self) -> int:
        return self.base_size + 2

    @property
    def vocab_size(self) -> int:
        return self.base_size + 3

    @property
    def special_ids(self) -> tuple[int, ...]:
        tok = self.tokenizer
        base = tuple(tok.token_to_id(t) for t in ("<pad>", "<bos>", "<eos>"))
        return base + (self.cls_id, self.sep_id, self.mask_id)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """``[CLS] ids(text) [SEP]``; with ``max_len``, the text is cut so the whole has at most ``max_len`` ids."""
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 3):
            raise ValueError(f"max_len must be an int >= 3 ([CLS], one token, [SEP]) or None, got {max_len!r}")
        ids = self.tokenizer.encode(text)
        if max_len is not None:
            ids = ids[: max_len - 2]
        return [self.cls_id] + ids + [self.sep_id]

    def token(self, index: int) -> str:
        """The token string of an id, BERT's special tokens included."""
        if isinstance(index, int) and self.base_size <= index < self.vocab_size:
            return SPECIAL_NAMES[index - self.base_size]
        return self.tokenizer.id_to_token(int(index))

    def decode(self, ids, pad: bool = False) -> list[str]:
        """Token strings of ``ids`` (a list or 1-D tensor); padding left out unless ``pad``."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return [self.token(i) for i in ids if pad or i != self.pad_id]


# ---- masking ---------------------------------------------------------------------------------------
def mask_tokens(input_ids: torch.Tensor, vocab_size: int, mask_id: int, special_ids: Sequence[int],
                generator: torch.Generator, mlm_prob: float = 0.15,
                replace_probs: tuple[float, float] = (0.8, 0.1)) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking rule. Returns ``(inputs, labels)``, both of the shape of ``input_ids``.

    Every token whose id is not in ``special_ids`` (padding, [CLS], [SEP], ...) is *selected*
    independently with probability ``mlm_prob``. A selected token becomes ``[MASK]`` with probability
    ``replace_probs[0]`` (0.8), a random ordinary token with probability ``replace_probs[1]`` (0.1),
    and stays unchanged otherwise (0.1). ``labels`` holds the original id at selected positions and
    :data:`IGNORE_INDEX` (-100) elsewhere, so the loss counts exactly the selected positions, whatever
    they were replaced by. Random replacements are drawn uniformly from the ids that are not special
    (Hugging Face draws from the whole vocabulary, specials included); one may by chance equal the
    original token.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int32):
        raise TypeError("input_ids must be an integer torch tensor of token ids")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size!r}")
    _check_id("mask_id", mask_id, vocab_size)
    special = [_check_id("special id", int(s), vocab_size) for s in special_ids]
    if mask_id not in special:
        special.append(mask_id)  # [MASK] is never a target nor a random replacement
    check_generator(generator)
    if isinstance(mlm_prob, bool) or not isinstance(mlm_prob, (int, float)) or not 0 < mlm_prob < 1:
        raise ValueError(f"mlm_prob must be a probability in (0, 1), got {mlm_prob!r}")
    p_mask, p_random = (float(p) for p in replace_probs)
    if p_mask < 0 or p_random < 0 or p_mask + p_random > 1:
        raise ValueError(f"replace_probs must be two probabilities with sum <= 1, got {replace_probs!r}")
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise ValueError(f"input_ids holds ids outside [0, vocab_size={vocab_size})")

    device = input_ids.device
    ids = input_ids.detach().long().cpu()  # masks are drawn on the CPU: the same on every device
    special_t = torch.tensor(sorted(set(special)), dtype=torch.long)
    ordinary = torch.ones(vocab_size, dtype=torch.bool)
    ordinary[special_t] = False
    candidates = ordinary.nonzero().squeeze(1)  # ids a random replacement may take
    if candidates.numel() == 0:
        raise ValueError("every id is special: there is no ordinary token to mask or draw")

    selectable = ordinary[ids]  # (…): True for ordinary tokens
    selected = (torch.rand(ids.shape, generator=generator) < mlm_prob) & selectable
    how = torch.rand(ids.shape, generator=generator)  # one draw decides [MASK] / random / unchanged
    to_mask = selected & (how < p_mask)
    to_random = selected & (how >= p_mask) & (how < p_mask + p_random)
    random_ids = candidates[torch.randint(candidates.numel(), ids.shape, generator=generator)]

    inputs = ids.clone()
    inputs[to_mask] = mask_id
    inputs[to_random] = random_ids[to_random]
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    return inputs.to(device=device, dtype=input_ids.dtype), labels.to(device)


# ---- batches ---------------------------------------------------------------------------------------
def pad_with_mask(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to the longest: ``input_ids`` (B, L) and ``attention_mask`` (B, L) (1 = real)."""
    if isinstance(sequences, (str, torch.Tensor)) or len(sequences) == 0:
        raise ValueError("pad_with_mask needs a non-empty list of id lists")
    seqs = [id_tensor(s, f"sequence {i}") for i, s in enumerate(sequences)]
    if any(s.numel() == 0 for s in seqs):
        raise ValueError("pad_with_mask got an empty sequence; every example needs at least one token")
    lengths = torch.tensor([s.numel() for s in seqs])  # (B,)
    input_ids = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_id)  # (B, L)
    attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()  # (B, L)
    return input_ids, attention_mask


def check_id_lists(sequences, name: str = "sequences") -> list[list[int]]:
    """A non-empty list of id lists (not a str or a tensor), each as a list."""
    if isinstance(sequences, (str, torch.Tensor)) or not isinstance(sequences, Sequence) or len(sequences) == 0:
        raise ValueError(f"{name} must be a non-empty list of id lists")
    return [list(s) for s in sequences]


class MLMBatcher:
    """``get_batch(step, generator)``: ``batch_size`` random sequences, padded and masked by
    :func:`mask_tokens`, as ``{"input_ids", "attention_mask", "labels"}`` for :class:`BertForMaskedLM`."""

    def __init__(self, sequences: Sequence[Sequence[int]], vocab: BertVocab, batch_size: int, mlm_prob: float = 0.15):
        self.sequences = check_id_lists(sequences)
        if not isinstance(vocab, BertVocab):
            raise TypeError(f"vocab must be a BertVocab, got {type(vocab).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.vocab, self.batch_size, self.mlm_prob = vocab, batch_size, mlm_prob

    def __call__(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        rows = torch.randint(len(self.sequences), (self.batch_size,), generator=check_generator(generator))
        input_ids, attention_mask = pad_with_mask([self.sequences[i] for i in rows.tolist()], self.vocab.pad_id)
        v = self.vocab
        inputs, labels = mask_tokens(input_ids, v.vocab_size, v.mask_id, v.special_ids, generator, self.mlm_prob)
        return {"input_ids": inputs, "attention_mask": attention_mask, "labels": labels}


class ClassificationBatcher:
    """``get_batch(step, generator)``: ``batch_size`` random labelled sequences (drawn with
    replacement), as ``{"input_ids", "attention_mask", "labels"}`` for :class:`BertForSequenceClassification`."""

    def __init__(self, sequences: Sequence[Sequence[int]], labels: Sequence[int], batch_size: int, pad_id: int = 0):
        self.sequences = check_id_lists(sequences)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        if self.labels.shape != (len(self.sequences),):
            raise ValueError(f"{len(self.sequences)} sequences but {self.labels.numel()} labels; they must match one to one")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size, self.pad_id = batch_size, pad_id

    def __call__(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        rows = torch.randint(len(self.sequences), (self.batch_size,), generator=check_generator(generator))
        input_ids, attention_mask = pad_with_mask([self.sequences[i] for i in rows.tolist()], self.pad_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": self.labels[rows]}


__all__ = [
    "BertVocab", "ClassificationBatcher", "MLMBatcher", "check_id_lists", "mask_tokens", "pad_with_mask",
]
