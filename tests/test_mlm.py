"""BERT's masking rule and the BERT batches: statistics on a large sample, specials never selected,
labels, determinism, and errors."""
import pytest
import torch

from llmcourse.data.masking import (
    IGNORE_INDEX,
    BertVocab,
    ClassificationBatcher,
    MLMBatcher,
    mask_tokens,
    pad_with_mask,
)
from llmcourse.data.tokenizers import CharTokenizer

V, MASK = 50, 49
SPECIAL = (0, 2, 3, 47, 48, 49)  # pad, bos, eos, [CLS], [SEP], [MASK]


def sample(n=200_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 47, (n,), generator=g)  # ordinary tokens (and <unk> = 1 below)
    ids[::10] = 0  # padding
    ids[1::10] = 47  # [CLS]
    ids[2::10] = 48  # [SEP]
    ids[3::20] = 1  # <unk> is text, not special
    return ids


def test_proportions_follow_the_15_80_10_10_rule():
    ids = sample()
    inputs, labels = mask_tokens(ids, V, MASK, SPECIAL, torch.Generator().manual_seed(1))
    ordinary = ~torch.isin(ids, torch.tensor(SPECIAL))
    selected = labels != IGNORE_INDEX
    n_sel = int(selected.sum())
    assert abs(n_sel / int(ordinary.sum()) - 0.15) < 0.005
    became_mask = (inputs == MASK) & selected
    unchanged = (inputs == ids) & selected
    random = selected & ~became_mask & ~unchanged
    # a random draw equals the original with probability 1/43 (43 ordinary ids), counted as unchanged
    assert abs(int(became_mask.sum()) / n_sel - 0.8) < 0.01
    assert abs(int(random.sum()) / n_sel - 0.1 * 42 / 43) < 0.01
    assert abs(int(unchanged.sum()) / n_sel - (0.1 + 0.1 / 43)) < 0.01


def test_specials_are_never_selected_and_unselected_tokens_are_untouched():
    ids = sample(50_000)
    inputs, labels = mask_tokens(ids, V, MASK, SPECIAL, torch.Generator().manual_seed(2), mlm_prob=0.5)
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert (labels[special] == IGNORE_INDEX).all()
    assert torch.equal(inputs[labels == IGNORE_INDEX], ids[labels == IGNORE_INDEX])
    assert (labels[ids == 1] != IGNORE_INDEX).any()  # <unk> can be selected


def test_labels_are_the_original_ids_and_random_tokens_are_ordinary():
    ids = sample(50_000)
    inputs, labels = mask_tokens(ids, V, MASK, SPECIAL, torch.Generator().manual_seed(3))
    selected = labels != IGNORE_INDEX
    assert torch.equal(labels[selected], ids[selected])
    replaced = selected & (inputs != MASK) & (inputs != ids)
    assert replaced.any()
    # random replacements never produce a special token ([MASK], padding, [CLS] ...)
    assert not torch.isin(inputs[replaced], torch.tensor(SPECIAL)).any()
    assert inputs.shape == ids.shape and inputs.dtype == ids.dtype


def test_deterministic_with_a_seeded_generator_and_different_with_another_seed():
    ids = sample(10_000).view(100, 100)  # any shape works
    a = mask_tokens(ids, V, MASK, SPECIAL, torch.Generator().manual_seed(7))
    b = mask_tokens(ids, V, MASK, SPECIAL, torch.Generator().manual_seed(7))
    c = mask_tokens(ids, V, MASK, SPECIAL, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert a[0].shape == (100, 100)


def test_mask_tokens_rejects_bad_input():
    ids = torch.tensor([[4, 5, 6]])
    g = torch.Generator().manual_seed(0)
    with pytest.raises(TypeError, match="Generator"):
        mask_tokens(ids, V, MASK, SPECIAL, None)
    with pytest.raises(ValueError, match="mlm_prob"):
        mask_tokens(ids, V, MASK, SPECIAL, g, mlm_prob=1.5)
    with pytest.raises(ValueError, match="mask_id"):
        mask_tokens(ids, V, V, SPECIAL, g)
    with pytest.raises(ValueError, match="outside"):
        mask_tokens(torch.tensor([[4, V]]), V, MASK, SPECIAL, g)
    with pytest.raises(TypeError, match="integer torch tensor"):
        mask_tokens([[4, 5]], V, MASK, SPECIAL, g)
    with pytest.raises(ValueError, match="replace_probs"):
        mask_tokens(ids, V, MASK, SPECIAL, g, replace_probs=(0.9, 0.2))


@pytest.fixture(scope="module")
def vocab():
    return BertVocab.from_tokenizer(CharTokenizer(min_freq=1).train(["这本书很好", "很差"]))


def test_bert_vocab_appends_cls_sep_mask_after_the_tokenizer(vocab):
    base = len(vocab.tokenizer)
    assert (vocab.cls_id, vocab.sep_id, vocab.mask_id, vocab.vocab_size) == (base, base + 1, base + 2, base + 3)
    ids = vocab.encode("很好")
    assert ids[0] == vocab.cls_id and ids[-1] == vocab.sep_id
    assert ids[1:-1] == vocab.tokenizer.encode("很好")  # the tokenizer's ids are unchanged
    assert vocab.decode(ids + [0]) == ["[CLS]", "很", "好", "[SEP]"]
    assert len(vocab.encode("这本书很好很好", max_len=5)) == 5
    assert set(vocab.special_ids) == {0, 2, 3, base, base + 1, base + 2}
    with pytest.raises(ValueError, match="max_len"):
        vocab.encode("很好", max_len=2)


def test_pad_batch():
    ids, mask = pad_with_mask([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="empty"):
        pad_with_mask([[5], []])


def test_batchers_are_reproducible_and_well_formed(vocab):
    seqs = [vocab.encode(t) for t in ["这本书很好", "很差", "好书", "书很差很差"]]
    mlm = MLMBatcher(seqs, vocab, batch_size=8)
    a = mlm(0, torch.Generator().manual_seed(0))
    b = mlm(0, torch.Generator().manual_seed(0))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["input_ids"].shape == a["labels"].shape == a["attention_mask"].shape
    assert (a["labels"][a["attention_mask"] == 0] == IGNORE_INDEX).all()
    clf = ClassificationBatcher(seqs, [1, 0, 1, 0], batch_size=6)
    c = clf(0, torch.Generator().manual_seed(0))
    assert c["labels"].shape == (6,) and c["input_ids"].shape[0] == 6
    with pytest.raises(ValueError, match="labels"):
        ClassificationBatcher(seqs, [1, 0], batch_size=2)
