"""Tests for llmcourse.data.batching: LM streams, random windows, exact evaluation windows, padding."""
import pytest
import torch

from llmcourse.data.batching import (
    IGNORE_INDEX, EvalWindows, LMBatcher, classification_batches, encode_texts, eval_windows, lm_stream,
    num_batches, random_batches,
)

EOS = 3


class FakeTokenizer:
    """Any object with encode(text) -> list[int] will do (here: code points mod 50, shifted past specials)."""

    def encode(self, text):
        return [4 + ord(c) % 50 for c in text]


# ---- lm_stream ------------------------------------------------------------------------------------
def test_lm_stream_layout_by_hand():
    assert lm_stream([[5, 6], [7]], EOS).tolist() == [3, 5, 6, 3, 7, 3]
    assert lm_stream([[5, 6], [7]], EOS, leading_eos=False).tolist() == [5, 6, 3, 7, 3]
    assert lm_stream([torch.tensor([5, 6]), []], EOS).tolist() == [3, 5, 6, 3, 3]
    assert lm_stream([[5]], EOS).dtype == torch.long


def test_stream_targets_follow_the_shared_convention():
    texts = ["这本书很好", "差", "还行吧"]
    tok = FakeTokenizer()
    stream = lm_stream(encode_texts(texts, tok), EOS)
    targets = stream[1:]  # what a model is scored on
    assert len(targets) == sum(len(t) + 1 for t in texts)  # every character plus one <eos> per review
    assert int((targets == EOS).sum()) == len(texts)
    assert stream[0] == EOS  # the first character also has a context


def test_lm_stream_errors():
    with pytest.raises(ValueError, match="empty corpus"):
        lm_stream([], EOS)
    with pytest.raises(TypeError):
        lm_stream("abc", EOS)
    with pytest.raises(TypeError, match="sequence 1"):
        lm_stream([[1], "ab"], EOS)
    with pytest.raises(ValueError, match=">= 0"):
        lm_stream([[1, -2]], EOS)
    with pytest.raises(ValueError):
        lm_stream([[1]], -1)
    with pytest.raises(TypeError, match="encode"):
        encode_texts(["a"], object())
    with pytest.raises(TypeError, match="single str"):
        encode_texts("abc", FakeTokenizer())


# ---- random windows -------------------------------------------------------------------------------
def test_random_batches_are_shifted_slices_of_the_stream():
    stream = torch.arange(100, 160)
    x, y = random_batches(stream, 8, 5, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8) and x.dtype == y.dtype == torch.long
    starts = torch.randint(60 - 8, (5,), generator=torch.Generator().manual_seed(0))  # the same draws
    for b, s in enumerate(starts.tolist()):  # reference: plain Python slicing
        assert x[b].tolist() == stream[s : s + 8].tolist()
        assert y[b].tolist() == stream[s + 1 : s + 9].tolist()


def test_random_batches_reach_the_last_token_and_are_reproducible():
    stream = torch.arange(10)
    x, y = random_batches(stream, 9, 50, torch.Generator().manual_seed(1))
    assert int(y.max()) == 9 and int(x.min()) == 0  # both possible windows appear
    a = random_batches(stream, 3, 4, torch.Generator().manual_seed(7))
    b = random_batches(stream, 3, 4, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_lm_batcher_is_a_get_batch():
    stream = torch.arange(50)
    get_batch = LMBatcher(stream, 6, 4)
    x, y = get_batch(0, torch.Generator().manual_seed(3))
    rx, ry = random_batches(stream, 6, 4, torch.Generator().manual_seed(3))
    assert torch.equal(x, rx) and torch.equal(y, ry)


def test_random_batches_errors():
    stream = torch.arange(10)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="block_size"):
        random_batches(stream, 0, 2, g)
    with pytest.raises(ValueError, match="block_size \\+ 1"):
        random_batches(stream, 10, 2, g)
    with pytest.raises(TypeError, match="Generator"):
        random_batches(stream, 4, 2, 0)
    with pytest.raises(ValueError, match="1-D"):
        random_batches(stream.view(2, 5), 2, 2, g)
    with pytest.raises(TypeError, match="integer"):
        random_batches(stream.float(), 2, 2, g)
    with pytest.raises(TypeError):
        random_batches([1, 2, 3], 1, 1, g)
    with pytest.raises(ValueError, match="empty"):
        LMBatcher(torch.tensor([], dtype=torch.long), 2, 2)


# ---- exact evaluation windows ---------------------------------------------------------------------
@pytest.mark.parametrize("length,block,stride", [(2, 1, 1), (20, 4, 4), (20, 4, 2), (21, 5, 3), (33, 8, None), (9, 8, 1)])
def test_eval_windows_predict_every_token_exactly_once(length, block, stride):
    stream = torch.arange(1000, 1000 + length)  # distinct values: position is recoverable from the value
    w = eval_windows(stream, block, stride)
    assert isinstance(w, EvalWindows) and w.x.shape == w.y.shape and w.x.shape[1] == block
    counted = w.y[w.y != IGNORE_INDEX]  # row-major order = window order
    assert counted.tolist() == stream[1:].tolist()  # every target once, in order
    assert w.num_targets == length - 1
    # inputs are contiguous slices and each counted target is the next token after its input
    mask = w.y != IGNORE_INDEX
    assert torch.equal((w.x + 1)[mask], w.y[mask])
    assert torch.equal(w.x[:, 1:] - w.x[:, :-1], torch.ones_like(w.x[:, 1:]))


def test_eval_windows_give_each_counted_token_context():
    stream = torch.arange(1000, 1100)
    w = eval_windows(stream, 8, 2)
    mask = w.y != IGNORE_INDEX
    assert mask[0].all()  # the first window counts everything
    # later windows count only positions >= block - stride: at least 6 tokens of context each
    assert not mask[1:, :6].any()
    chunks = list(w.batches(3))
    assert [c[0].shape[0] for c in chunks[:-1]] == [3] * (len(chunks) - 1)
    assert torch.equal(torch.cat([c[0] for c in chunks]), w.x)


def test_eval_windows_errors():
    stream = torch.arange(10)
    with pytest.raises(ValueError, match="stride"):
        eval_windows(stream, 4, 5)
    with pytest.raises(ValueError, match="block_size"):
        eval_windows(stream, 0)
    with pytest.raises(ValueError, match="needs at least"):
        eval_windows(stream, 10)


# ---- classification -------------------------------------------------------------------------------
def test_classification_batches_pad_and_mask():
    ids = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14, 15]]
    batches = list(classification_batches(ids, [1, 0, 1, 0], batch_size=3, pad_id=0, max_len=4))
    assert len(batches) == num_batches(4, 3) == 2
    first = batches[0]
    assert first["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert first["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert first["labels"].tolist() == [1, 0, 1]
    assert batches[1]["input_ids"].tolist() == [[11, 12, 13, 14]]  # truncated to max_len
    assert batches[1]["attention_mask"].tolist() == [[1, 1, 1, 1]]


def test_classification_shuffle_is_seeded_permutation():
    ids = [[i + 4] * (1 + i % 3) for i in range(10)]
    labels = [i % 2 for i in range(10)]

    def run(seed):
        return list(classification_batches(ids, labels, 4, shuffle=True, generator=torch.Generator().manual_seed(seed)))

    a, b = run(0), run(0)
    firsts = torch.cat([x["input_ids"][:, 0] for x in a]).tolist()
    assert sorted(firsts) == list(range(4, 14)) and firsts != list(range(4, 14))
    assert all(torch.equal(p["input_ids"], q["input_ids"]) for p, q in zip(a, b))
    for batch in a:  # labels travel with their sequences
        assert (batch["labels"] == (batch["input_ids"][:, 0] - 4) % 2).all()


def test_classification_errors():
    with pytest.raises(ValueError, match="empty corpus"):
        list(classification_batches([], [], 2))
    with pytest.raises(ValueError, match="labels"):
        list(classification_batches([[1]], [0, 1], 2))
    with pytest.raises(TypeError, match="Generator"):
        list(classification_batches([[1]], [0], 2, shuffle=True))
    with pytest.raises(ValueError, match="empty"):
        list(classification_batches([[1], []], [0, 1], 2))
    with pytest.raises(ValueError, match="batch_size"):
        list(classification_batches([[1]], [0], 0))
