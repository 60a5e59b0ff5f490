"""The B/M/E/S tagger: tag conversions, Viterbi against brute force, shapes, repeatable training."""
import itertools

import pytest
import torch

import llmcourse
from llmcourse.data import corpus
from llmcourse import evaluate
from llmcourse.chapters.tagger import (TAGS, ConvTagger, Segmenter, is_valid_tag_sequence, pad_with_lengths, tags_to_words,
                              train_segmenter, viterbi, words_to_tags)


def test_words_to_tags_hand_example():
    assert words_to_tags(["我", "喜欢", "吃", "苹果"]) == list("SBESBE")
    assert words_to_tags(["一九九八年"]) == list("BMMME")
    assert words_to_tags([]) == []


@pytest.mark.parametrize("n_sentences", [50])
def test_tags_round_trip_on_gold_sentences(n_sentences):
    for words in corpus.load_segmentation("val")[:n_sentences]:
        tags = words_to_tags(words)
        assert len(tags) == len("".join(words))
        assert is_valid_tag_sequence(tags)
        assert tags_to_words("".join(words), tags) == words


def test_tags_to_words_is_lenient_on_invalid_sequences():
    assert tags_to_words("abcd", list("BBME")) == ["a", "bcd"]
    assert tags_to_words("abc", list("MES")) == ["ab", "c"]
    assert not is_valid_tag_sequence(list("BBME"))
    assert not is_valid_tag_sequence(list("SB"))


def test_tag_conversion_errors():
    with pytest.raises(TypeError, match="single str"):
        words_to_tags("我喜欢")
    with pytest.raises(ValueError, match="non-empty"):
        words_to_tags(["我", ""])
    with pytest.raises(ValueError, match="3 characters but 2 tags"):
        tags_to_words("abc", ["B", "E"])
    with pytest.raises(ValueError, match="unknown tag 'X'"):
        tags_to_words("ab", ["B", "X"])


def brute_force_best(log_probs):
    """Best valid tag sequence by trying all 4^T of them."""
    T = log_probs.shape[0]
    best, best_score = None, -float("inf")
    for seq in itertools.product(range(4), repeat=T):
        if is_valid_tag_sequence([TAGS[k] for k in seq]):
            score = float(sum(log_probs[t, k] for t, k in enumerate(seq)))
            if score > best_score:
                best, best_score = list(seq), score
    return best


def test_viterbi_equals_brute_force():
    torch.manual_seed(0)
    for T in range(1, 7):
        lp = torch.log_softmax(torch.randn(3, T, 4) * 3, dim=-1)
        paths = viterbi(lp)
        for b in range(3):
            assert paths[b] == brute_force_best(lp[b])


def test_viterbi_respects_lengths_in_a_padded_batch():
    torch.manual_seed(1)
    lp = torch.log_softmax(torch.randn(2, 6, 4), dim=-1)
    paths = viterbi(lp, lengths=[6, 3])
    assert paths[1] == brute_force_best(lp[1, :3])
    assert paths[0] == brute_force_best(lp[0])
    assert viterbi(lp, lengths=[0, 1])[0] == []
    with pytest.raises(ValueError, match="lengths"):
        viterbi(lp, lengths=[7, 1])
    with pytest.raises(ValueError, match="shape"):
        viterbi(torch.zeros(2, 3, 5))


def test_model_shapes_and_padding():
    model = ConvTagger(vocab_size=30, emb_dim=8, channels=16, kernel_size=3)
    ids, lengths = pad_with_lengths([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths == [3, 1]
    assert model(ids).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="odd"):
        ConvTagger(vocab_size=30, kernel_size=4)
    with pytest.raises(ValueError, match="batch, time"):
        model(torch.zeros(5, dtype=torch.long))


@pytest.fixture(scope="module")
def small_corpus():
    return corpus.load_segmentation("train")[:300]


def test_training_is_repeatable_under_set_seed(small_corpus):
    runs = []
    for _ in range(2):
        llmcourse.set_seed(0)
        seg = train_segmenter(small_corpus, epochs=1, batch_chars=2048)
        runs.append(seg)
    assert runs[0].losses == runs[1].losses
    for p, q in zip(runs[0].model.parameters(), runs[1].model.parameters()):
        assert torch.equal(p, q)
    llmcourse.set_seed(1)
    other = train_segmenter(small_corpus, epochs=1, batch_chars=2048)
    assert other.losses != runs[0].losses


def test_training_learns_and_segments(small_corpus):
    llmcourse.set_seed(0)
    seg = train_segmenter(small_corpus, epochs=3, batch_chars=1024)
    assert isinstance(seg, Segmenter)
    assert sum(seg.losses[-5:]) / 5 < seg.losses[0]  # the loss went down
    texts = ["".join(w) for w in small_corpus[:40]]
    predicted = seg.segment_many(texts)
    assert ["".join(p) for p in predicted] == texts  # a segmentation always spells the text
    # on its own training sentences it beats cutting every character apart
    single_chars = [list(t) for t in texts]
    gold = small_corpus[:40]
    assert evaluate.segmentation_prf(predicted, gold)["f1"] > evaluate.segmentation_prf(single_chars, gold)["f1"] + 0.2
    assert seg.segment("") == []
    assert "".join(seg.segment("我喜欢吃苹果")) == "我喜欢吃苹果"
    with pytest.raises(TypeError, match="list of texts"):
        seg.tag("我喜欢")
    with pytest.raises(ValueError, match="non-empty list"):
        train_segmenter([])
