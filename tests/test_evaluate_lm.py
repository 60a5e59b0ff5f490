"""Tests for llmcourse.evaluate: the reviews as LM streams, exact perplexity, sequence repetition."""
import math

import pytest
import torch
import torch.nn as nn

from llmcourse.data import corpus
from llmcourse.evaluate import lm_perplexity, review_lm_data, seq_repetition
from llmcourse.models import MLPLM
from llmcourse.data.tokenizers import CharTokenizer


class BigramTable(nn.Module):
    """A bigram model as a log-probability table: logits[t] = log P(. | idx[t])."""

    def __init__(self, vocab_size: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.logp = nn.Parameter(torch.randn(vocab_size, vocab_size, generator=g).log_softmax(-1))

    def forward(self, idx, targets=None):
        return self.logp[idx], None


def direct_ppl(logp_fn, stream):
    """exp(mean -log P(stream[t+1] | stream[:t+1])) over the whole stream, one token at a time."""
    total = 0.0
    with torch.no_grad():
        for t in range(len(stream) - 1):
            total -= float(logp_fn(stream[: t + 1])[stream[t + 1]])
    return math.exp(total / (len(stream) - 1))


@pytest.fixture(scope="module")
def reviews():
    return review_lm_data()


def test_streams_follow_the_convention(reviews):
    tok = reviews.tokenizer
    assert isinstance(tok, CharTokenizer) and tok.min_freq == 2
    assert len(tok) == 3724  # chapter 1's |V|: 3,720 characters seen twice + <unk>, <eos> (+ <pad>, <bos>)
    for split, stream in zip(("train", "val", "test"), reviews[1:]):
        texts = corpus.review_texts(split)
        # one leading <eos>, then every character and one <eos> per review
        assert stream.numel() == 1 + sum(len(t) for t in texts) + len(texts)
        assert int((stream == 3).sum()) == len(texts) + 1
        assert stream.dtype == torch.long
    first = corpus.review_texts("train")[0]
    assert tok.decode(reviews.train[1 : 1 + len(first)].tolist()) == "".join(
        c if c in tok.vocab else "<unk>" for c in first)


def test_lm_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    V = 17
    model = BigramTable(V)
    with torch.no_grad():
        model.logp.zero_()  # equal logits: P = 1/V for every token
    stream = torch.randint(V, (300,), generator=torch.Generator().manual_seed(1))
    assert lm_perplexity(model, stream, block_size=16) == pytest.approx(V, rel=1e-5)  # float32 softmax


@pytest.mark.parametrize("block_size,stride", [(8, None), (8, 8), (5, 2), (50, 7)])
def test_lm_perplexity_is_exact_for_a_bigram_table(block_size, stride):
    V = 11
    model = BigramTable(V)
    stream = torch.randint(V, (97,), generator=torch.Generator().manual_seed(2))
    expected = direct_ppl(lambda prefix: model.logp[prefix[-1]], stream)
    assert lm_perplexity(model, stream, block_size, stride) == pytest.approx(expected, rel=1e-6)


def test_lm_perplexity_of_an_mlp_with_full_context_stride():
    """stride = block_size - context + 1: every scored token sees its whole context inside its window."""
    torch.manual_seed(0)
    V, c = 13, 3
    model = MLPLM(V, context=c, emb_dim=4, hidden=8).eval()
    nn.init.normal_(model.head.weight)  # make the predictions far from uniform
    stream = torch.randint(4, V, (120,), generator=torch.Generator().manual_seed(3))

    def logp(prefix):  # the MLP on the last c tokens, padded with <bos> like the model pads
        ctx = ([model.pad_id] * c + prefix.tolist())[-c:]
        return model(torch.tensor([ctx]))[0][0, -1].log_softmax(-1)

    expected = direct_ppl(logp, stream)
    assert lm_perplexity(model, stream, 16, stride=16 - c + 1) == pytest.approx(expected, rel=1e-5)
    # with non-overlapping windows the first tokens of each window lose context: a different number
    assert lm_perplexity(model, stream, 16, stride=16) != pytest.approx(expected, rel=1e-5)


def test_seq_repetition_against_hand_counts():
    assert seq_repetition([1, 2, 3, 4], n=2) == 0.0
    assert seq_repetition("好好好好", n=1) == pytest.approx(0.75)  # 4 unigrams, 1 unique
    assert seq_repetition("很好很好很好", n=2) == pytest.approx(1 - 2 / 5)  # 很好 好很 很好 好很 很好
    assert seq_repetition(torch.tensor([5, 6, 5, 6, 7]), n=2) == pytest.approx(1 - 3 / 4)


def test_bad_inputs_are_refused(reviews):
    with pytest.raises(TypeError, match="tokenizer"):
        review_lm_data("char")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        lm_perplexity(lambda x: x, reviews.val, 8)
    with pytest.raises(ValueError, match="stride"):
        lm_perplexity(BigramTable(5), torch.arange(5).repeat(4), 4, stride=5)
    with pytest.raises(ValueError, match="block_size"):
        lm_perplexity(BigramTable(5), torch.arange(5), 8)
    with pytest.raises(ValueError, match="n must be"):
        seq_repetition([1, 2, 3], n=0)
    with pytest.raises(ValueError, match="fewer than n"):
        seq_repetition([1, 2], n=4)
    with pytest.raises(TypeError, match="sequence of tokens"):
        seq_repetition(42)
    with pytest.raises(ValueError, match="1-D"):
        seq_repetition(torch.zeros(2, 3, dtype=torch.long))


# ---- per-token NLL, interpolation, bits per character ----------------------------------------------
def test_token_nll_is_every_target_once_in_stream_order():
    from llmcourse.evaluate import lm_token_nll

    V = 7
    model = BigramTable(V, seed=3)
    stream = torch.randint(0, V, (53,), generator=torch.Generator().manual_seed(0))
    direct = -model.logp.detach()[stream[:-1], stream[1:]].double()  # a bigram needs one token of context
    for block_size, stride in [(8, None), (8, 8), (5, 2), (52, None)]:
        nll = lm_token_nll(model, stream, block_size, stride, batch_size=3)
        assert nll.dtype == torch.float64 and nll.shape == (52,)
        torch.testing.assert_close(nll, direct, rtol=1e-6, atol=1e-6)
        assert math.exp(nll.mean()) == pytest.approx(lm_perplexity(model, stream, block_size, stride), rel=1e-6)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        lm_token_nll(lambda x: x, stream, 8)


def test_interpolation_is_the_mixture_of_probabilities():
    from llmcourse.evaluate import interpolated_nll

    a = torch.tensor([0.1, 2.0, 5.0], dtype=torch.float64)
    b = torch.tensor([3.0, 0.5, 40.0], dtype=torch.float64)
    assert torch.equal(interpolated_nll(a, b, 1.0), a) and torch.equal(interpolated_nll(a, b, 0.0), b)
    expected = -torch.log(0.3 * torch.exp(-a) + 0.7 * torch.exp(-b))
    torch.testing.assert_close(interpolated_nll(a, b, 0.3), expected)
    # a mixture is never worse than the worse model and never better than the better one per token
    mix = interpolated_nll(a, b, 0.5)
    assert bool((mix <= torch.maximum(a, b)).all() and (mix >= torch.minimum(a, b)).all())
    with pytest.raises(ValueError, match="same tokens"):
        interpolated_nll(a, b[:2], 0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        interpolated_nll(a, b, 1.5)
    with pytest.raises(ValueError, match="finite"):
        interpolated_nll(a, b, float("nan"))


def test_bits_per_char():
    from llmcourse.evaluate import bits_per_char

    assert bits_per_char(10 * math.log(2), 10) == pytest.approx(1.0)
    assert bits_per_char(0.0, 3) == 0.0
    assert bits_per_char(10 * math.log(2), 10, spelled_bits=5.0) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="n_chars"):
        bits_per_char(1.0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        bits_per_char(-1.0, 5)


def test_ngram_token_nlls_add_up_to_the_total():
    from llmcourse.models.ngram import NGramLM

    train = [list("abcab"), list("bca"), list("aab")]
    test = [list("abc"), list("cb"), list("x")]  # x is unseen: <unk>
    for smoothing in ("add-k", "kneser-ney"):
        lm = NGramLM(3, smoothing).fit(train)
        nlls = lm.token_nlls(test)
        total, count = lm.total_nll(test)
        assert len(nlls) == count == 4 + 3 + 2
        assert sum(nlls) == pytest.approx(total, rel=1e-12)
