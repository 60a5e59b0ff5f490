"""A neural word segmenter: tag every character B/M/E/S (字标注分词) with a small convolutional network.

Word segmentation (分词) becomes sequence labelling (序列标注) once each character gets one of four tags
(Xue, 2003)::

    B  begins a word of two or more characters     我/S 喜/B 欢/E 吃/S 苹/B 果/E
    M  is inside one                                ->  我 | 喜欢 | 吃 | 苹果
    E  ends one
    S  is a single-character word

The tagger is ``characters -> embeddings -> 1-D convolutions -> linear -> 4 tag scores`` per character;
each convolution looks at ``kernel_size`` neighbours, so two layers of width 5 see 4 characters either
side. Decoding picks the best tag sequence that obeys the tag grammar (B/M must be followed by M/E,
E/S by B/S) with the Viterbi algorithm. Usage::

    seg = train_segmenter(data.load_segmentation("train"))
    seg.segment("我喜欢吃苹果")    # ['我', '喜欢', '吃', '苹果'] (if it learnt well)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.core.checks import IGNORE_INDEX, eval_mode, id_tensor, model_device
from llmcourse.data.tokenizers import PAD_ID, CharTokenizer

TAGS: tuple[str, ...] = ("B", "M", "E", "S")
TAG_TO_ID = {t: i for i, t in enumerate(TAGS)}


# ---- words <-> tags -------------------------------------------------------------------------------
def words_to_tags(words: Sequence[str]) -> list[str]:
    """One tag per character: ``['我', '喜欢'] -> ['S', 'B', 'E']``."""
    if isinstance(words, str):
        raise TypeError("words_to_tags expects a list of words, got a single str; e.g. ['我', '喜欢']")
    tags = []
    for word in words:
        if not isinstance(word, str) or not word:
            raise ValueError(f"every word must be a non-empty str, got {word!r}")
        tags += ["S"] if len(word) == 1 else ["B"] + ["M"] * (len(word) - 2) + ["E"]
    return tags


def tags_to_words(chars: Sequence[str] | str, tags: Sequence[str]) -> list[str]:
    """Cut ``chars`` into words by ``tags``. Lenient: a word starts at B or S, or after E or S,
    so even an ill-formed sequence (``B B``, ``M`` first) gives a segmentation that spells the text."""
    if len(chars) != len(tags):
        raise ValueError(f"{len(chars)} characters but {len(tags)} tags; expected one tag per character")
    words: list[str] = []
    previous = "S"
    for ch, tag in zip(chars, tags):
        if tag not in TAG_TO_ID:
            raise ValueError(f"unknown tag {tag!r}; expected one of {TAGS}")
        if tag in ("B", "S") or previous in ("E", "S") or not words:
            words.append(ch)
        else:
            words[-1] += ch
        previous = tag
    return words


def is_valid_tag_sequence(tags: Sequence[str]) -> bool:
    """Does ``tags`` obey the grammar: starts with B/S, B/M -> M/E, E/S -> B/S, ends with E/S?"""
    if not tags:
        return True
    ids = [TAG_TO_ID[t] for t in tags]
    return (bool(START[ids[0]]) and bool(END[ids[-1]])
            and all(bool(ALLOWED[a, b]) for a, b in zip(ids, ids[1:])))


# allowed[previous, next] for B, M, E, S
ALLOWED = torch.tensor([[0, 1, 1, 0],   # B -> M | E
                        [0, 1, 1, 0],   # M -> M | E
                        [1, 0, 0, 1],   # E -> B | S
                        [1, 0, 0, 1]],  # S -> B | S
                       dtype=torch.bool)
START = torch.tensor([1, 0, 0, 1], dtype=torch.bool)  # a sentence starts with B or S
END = torch.tensor([0, 0, 1, 1], dtype=torch.bool)    # and ends with E or S


def viterbi(log_probs: torch.Tensor, lengths: Sequence[int] | None = None) -> list[list[int]]:
    """Best *valid* tag-id sequence of each sentence (max sum of log-probabilities, grammar enforced).

    log_probs: (B, T, 4) per-character tag log-probabilities; ``lengths[b]`` real characters in row b.
    """
    if log_probs.dim() != 3 or log_probs.size(-1) != len(TAGS):
        raise ValueError(f"log_probs must have shape (batch, time, {len(TAGS)}), got {tuple(log_probs.shape)}")
    B, T, K = log_probs.shape
    lengths = [T] * B if lengths is None else list(lengths)
    if len(lengths) != B or any(not 0 <= n <= T for n in lengths):
        raise ValueError(f"lengths must be {B} numbers in 0 .. {T}, got {lengths}")
    lp = log_probs.detach().double().cpu().numpy()
    trans = np.where(ALLOWED.numpy(), 0.0, -np.inf)               # (K, K)
    score = np.where(START.numpy(), lp[:, 0], -np.inf) if T else np.zeros((B, K))  # (B, K)
    back = np.zeros((B, max(T, 1), K), dtype=np.int64)
    length_arr = np.asarray(lengths)
    for t in range(1, T):
        cand = score[:, :, None] + trans[None]                   # (B, K_prev, K_next)
        arg = cand.argmax(axis=1)                                # (B, K)
        best = np.take_along_axis(cand, arg[:, None, :], axis=1)[:, 0]
        active = (t < length_arr)[:, None]
        score = np.where(active, best + lp[:, t], score)         # finished rows keep their score
        back[:, t] = arg
    score = np.where(END.numpy(), score, -np.inf)
    paths = []
    for b, n in enumerate(lengths):
        if n == 0:
            paths.append([])
            continue
        tag = int(score[b].argmax())
        path = [tag]
        rows = back[b]
        for t in range(n - 1, 0, -1):
            tag = int(rows[t, tag])
            path.append(tag)
        paths.append(path[::-1])
    return paths


# ---- the model ------------------------------------------------------------------------------------
class ConvTagger(nn.Module):
    """Character ids (B, T) -> tag scores (B, T, 4): embedding, ``num_layers`` same-length 1-D
    convolutions with ReLU, then a linear layer per position."""

    def __init__(self, vocab_size: int, emb_dim: int = 64, channels: int = 64, kernel_size: int = 5,
                 num_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd so the output keeps the input length, got {kernel_size}")
        self.embed = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD_ID)
        layers, width = [], emb_dim
        for _ in range(num_layers):
            layers += [nn.Conv1d(width, channels, kernel_size, padding=kernel_size // 2), nn.ReLU(), nn.Dropout(dropout)]
            width = channels
        self.convs = nn.Sequential(*layers)
        self.out = nn.Linear(width, len(TAGS))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2:
            raise ValueError(f"ids must have shape (batch, time), got {tuple(ids.shape)}")
        x = self.embed(ids)                          # (B, T, E)
        x = self.convs(x.transpose(1, 2))            # (B, C, T): Conv1d wants channels second
        return self.out(x.transpose(1, 2))           # (B, T, 4)


@dataclass
class Segmenter:
    """A trained tagger with its character vocabulary; :meth:`segment` turns text into words."""

    model: ConvTagger
    tokenizer: CharTokenizer
    losses: list[float] = field(default_factory=list)

    def tag(self, texts: Sequence[str], batch_size: int = 64) -> list[list[str]]:
        """Viterbi tags for each text."""
        if isinstance(texts, str):
            raise TypeError("tag() expects a list of texts; use segment(text) for one")
        out: list[list[str] | None] = [None] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        device = model_device(self.model)
        with eval_mode(self.model):
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                ids, lengths = pad_with_lengths([self.tokenizer.encode(texts[i]) for i in idx])
                log_probs = F.log_softmax(self.model(ids.to(device)), dim=-1)
                for i, path in zip(idx, viterbi(log_probs, lengths)):
                    out[i] = [TAGS[k] for k in path]
        return out  # type: ignore[return-value]

    def segment_many(self, texts: Sequence[str]) -> list[list[str]]:
        """Words of each text."""
        return [tags_to_words(text, tags) for text, tags in zip(texts, self.tag(texts))]

    def segment(self, text: str) -> list[str]:
        """Words of one text."""
        if not isinstance(text, str):
            raise TypeError(f"segment() expects a str, got {type(text).__name__}")
        return self.segment_many([text])[0] if text else []


def pad_with_lengths(sequences: Sequence[Sequence[int]], value: int = PAD_ID) -> tuple[torch.Tensor, list[int]]:
    """Right-pad id lists into a (B, T) tensor; also return the true lengths."""
    lengths = [len(s) for s in sequences]
    batch = torch.full((len(sequences), max(lengths, default=0)), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        batch[row, :len(seq)] = id_tensor(seq, f"sequence {row}")
    return batch, lengths


def train_segmenter(sentences: Sequence[Sequence[str]], *, epochs: int = 2, batch_chars: int = 2048,
                    lr: float = 3e-3, min_freq: int = 2, max_len: int = 200, device: str | torch.device = "cpu",
                    **model_kwargs) -> Segmenter:
    """Train a :class:`ConvTagger` on gold-segmented ``sentences`` (lists of words) with Adam.

    Long sentences are cut into pieces of at most ``max_len`` characters; pieces of similar length are
    batched together (about ``batch_chars`` characters a batch) and batches are visited in a random order
    drawn from torch's global generator, so :func:`llmcourse.set_seed` makes training repeatable.
    """
    if isinstance(sentences, str) or not len(sentences):
        raise ValueError("train_segmenter needs a non-empty list of sentences, each a list of words")
    if epochs < 1 or batch_chars < 1 or max_len < 1:
        raise ValueError(f"epochs, batch_chars and max_len must be >= 1, got {epochs}, {batch_chars}, {max_len}")
    texts = ["".join(words) for words in sentences]
    tokenizer = CharTokenizer(min_freq=min_freq).train(texts)
    pieces = []  # (char ids, tag ids) of at most max_len characters
    for words, text in zip(sentences, texts):
        ids, tags = tokenizer.encode(text), [TAG_TO_ID[t] for t in words_to_tags(words)]
        for s in range(0, len(ids), max_len):
            pieces.append((ids[s:s + max_len], tags[s:s + max_len]))
    pieces.sort(key=lambda p: len(p[0]))
    batches, current, longest = [], [], 0
    for piece in pieces:
        longest = max(longest, len(piece[0]))
        if current and longest * (len(current) + 1) > batch_chars:
            batches.append(current)
            current, longest = [], len(piece[0])
        current.append(piece)
    batches.append(current)

    model = ConvTagger(tokenizer.vocab_size, **model_kwargs).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(epochs):
        for b in torch.randperm(len(batches)).tolist():
            ids, _ = pad_with_lengths([p[0] for p in batches[b]])
            tags, _ = pad_with_lengths([p[1] for p in batches[b]], value=IGNORE_INDEX)
            logits = model(ids.to(device))                                         # (B, T, 4)
            loss = F.cross_entropy(logits.reshape(-1, len(TAGS)), tags.to(device).reshape(-1), ignore_index=IGNORE_INDEX)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    return Segmenter(model, tokenizer, losses)


__all__ = ["TAGS", "TAG_TO_ID", "words_to_tags", "tags_to_words", "is_valid_tag_sequence", "viterbi",
           "ConvTagger", "Segmenter", "pad_with_lengths", "train_segmenter"]
