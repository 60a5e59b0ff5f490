"""Tokenizers against references: jieba itself, hand-derived BPE merges, and a naive BPE."""
import json
import logging
from collections import Counter

import pytest

from llmcourse.data import corpus
from llmcourse.data.tokenizers import (BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, BPETokenizer, CharTokenizer,
                                  JiebaTokenizer, Tokenizer, UnknownTokenIdError, WhitespaceTokenizer, bpe_step,
                                  count_pairs, forward_max_match, merge_pair, split_chunks)

ALL_KINDS = [WhitespaceTokenizer, CharTokenizer, JiebaTokenizer, BPETokenizer]
SENTENCES = ["我喜欢吃苹果", "这本书写得很好，推荐！", "酒店的服务 还不错 house keeping很周到", "Hello world"]


@pytest.fixture(scope="module")
def jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


@pytest.fixture(scope="module")
def reviews():
    return corpus.review_texts("train")[:300]


# ---- the shared interface -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_special_tokens_have_fixed_ids(kind):
    tok = kind().train(SENTENCES * 2)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert [tok.id_to_token(i) for i in range(4)] == ["<pad>", "<unk>", "<bos>", "<eos>"]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_round_trip_and_bos_eos(kind):
    tok = kind(min_freq=1).train(SENTENCES)
    for text in SENTENCES:
        ids = tok.encode(text, add_bos=True, add_eos=True)
        assert ids[0] == BOS_ID and ids[-1] == EOS_ID
        assert UNK_ID not in ids
        expected = " ".join(text.split()) if kind is WhitespaceTokenizer else text
        assert tok.decode(ids, skip_special_tokens=True) == expected
        assert tok.decode(ids[1:-1]) == expected


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_save_load_equality(kind, tmp_path, reviews):
    tok = kind().train(reviews)
    path = tmp_path / "tok.json"
    tok.save(path)
    for loader in (kind, Tokenizer):
        back = loader.load(path)
        assert type(back) is kind and back == tok
        assert back.vocab == tok.vocab
        assert [back.encode(t) for t in reviews[:20]] == [tok.encode(t) for t in reviews[:20]]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_empty_corpus_and_bad_texts(kind):
    with pytest.raises(ValueError, match="texts is empty"):
        kind().train([])
    with pytest.raises(ValueError, match="only empty strings"):
        kind().train(["", ""])
    with pytest.raises(TypeError, match="single str"):
        kind().train("我喜欢吃苹果")
    with pytest.raises(TypeError, match="item 1 is int"):
        kind().train(["好", 3])
    with pytest.raises(TypeError, match="str of text"):
        kind().train(["好"]).encode(None)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_an_untrained_tokenizer_refuses_to_encode(kind):
    # without a vocabulary every token would silently become <unk> (id 1)
    with pytest.raises(RuntimeError, match=r"no vocabulary yet.*call \.train\(texts\) first"):
        kind().encode("我喜欢")
    assert UNK_ID not in kind().train(SENTENCES * 2).encode(SENTENCES[0])  # trained: the same text has no <unk>


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_min_freq(kind, bad):
    with pytest.raises(ValueError, match="min_freq"):
        kind(min_freq=bad)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_decode_unknown_id_names_id_and_vocab_size(kind):
    tok = kind(min_freq=1).train(["我 喜欢"])
    n = tok.vocab_size
    for bad in (n, n + 7, -1):
        with pytest.raises(KeyError, match=rf"unknown token id {bad}: the vocabulary has {n} ids"):
            tok.decode([4, bad])
    with pytest.raises(ValueError):  # the same error is also a ValueError
        tok.id_to_token(n)
    with pytest.raises(TypeError, match="int"):
        tok.id_to_token("4")


def test_decode_accepts_tensors():
    torch = pytest.importorskip("torch")
    tok = CharTokenizer(min_freq=1).train(["我喜欢吃苹果"])
    ids = tok.encode("苹果")
    assert tok.decode(torch.tensor(ids)) == "苹果"
    assert tok.id_to_token(torch.tensor(ids[0]).numpy()[()]) == "苹"


def test_load_rejects_corrupt_and_wrong_kind(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="invalid JSON"):
        CharTokenizer.load(bad_json)
    not_tok = tmp_path / "list.json"
    not_tok.write_text("[1, 2, 3]", encoding="utf-8")
    with pytest.raises(ValueError, match="not a tokenizer file"):
        Tokenizer.load(not_tok)
    char_file = tmp_path / "char.json"
    CharTokenizer(min_freq=1).train(["我喜欢吃苹果"]).save(char_file)
    with pytest.raises(ValueError, match="holds a CharTokenizer, not a BPETokenizer"):
        BPETokenizer.load(char_file)
    state = json.loads(char_file.read_text(encoding="utf-8"))
    for change, message in [({"kind": "Foo"}, "unknown tokenizer kind"),
                            ({"vocab": ["<unk>", "<pad>", "<bos>", "<eos>", "我"]}, "starting with"),
                            ({"vocab": ["<pad>", "<unk>", "<bos>", "<eos>", "我", "我"]}, "distinct"),
                            ({"config": {"min_freq": 0}}, "min_freq")]:
        broken = tmp_path / "broken.json"
        broken.write_text(json.dumps({**state, **change}), encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            Tokenizer.load(broken)
    bpe_file = tmp_path / "bpe.json"
    BPETokenizer(min_freq=1).train(["苹果苹果"]).save(bpe_file)
    state = json.loads(bpe_file.read_text(encoding="utf-8"))
    broken = tmp_path / "broken_bpe.json"
    broken.write_text(json.dumps({**state, "merges": [["苹", "梨"]]}), encoding="utf-8")
    with pytest.raises(ValueError, match="missing from the vocabulary"):
        BPETokenizer.load(broken)


# ---- whitespace and characters --------------------------------------------------------------------
def test_whitespace_is_str_split_and_fails_on_chinese():
    tok = WhitespaceTokenizer()
    assert tok.tokenize("  the cat\tsat\n") == "  the cat\tsat\n".split() == ["the", "cat", "sat"]
    assert tok.tokenize("我喜欢吃苹果") == ["我喜欢吃苹果"]  # no spaces in Chinese: one token


def test_char_tokenizer_min_freq_and_ids():
    tok = CharTokenizer().train(["我爱你", "我爱", "我"])  # default min_freq=2: 你 is seen once
    assert tok.min_freq == 2
    # by frequency: 我 (3), 爱 (2); 你 (1) is dropped
    assert tok.vocab == {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, "我": 4, "爱": 5}
    assert tok.encode("你爱我") == [UNK_ID, 5, 4]
    assert tok.decode(tok.encode("你爱我")) == "<unk>爱我"
    assert tok.token_to_id("你") == UNK_ID


def test_char_tokenizer_follows_the_perplexity_convention(reviews):
    counts = Counter(ch for text in reviews for ch in text)
    tok = CharTokenizer().train(reviews)
    assert tok.vocab_size == 4 + sum(c >= 2 for c in counts.values())


# ---- jieba ----------------------------------------------------------------------------------------
def test_jieba_precise_equals_jieba_lcut(jieba, reviews):
    tok = JiebaTokenizer()
    for text in SENTENCES + reviews[:50]:
        assert tok.tokenize(text) == jieba.lcut(text)
        assert tok.tokenize(text, mode="full") == jieba.lcut(text, cut_all=True)
        assert tok.tokenize(text, mode="search") == jieba.lcut_for_search(text)
    assert tok.tokenize("我喜欢吃苹果") == ["我", "喜欢", "吃", "苹果"]


def test_jieba_encode_uses_precise_mode(jieba, reviews):
    tok = JiebaTokenizer().train(reviews)
    for text in reviews[:20]:
        assert tok.encode(text) == [tok.token_to_id(w) for w in jieba.lcut(text)]
        assert tok.decode(tok.encode(text)) == text
    with pytest.raises(ValueError, match="unknown jieba mode"):
        tok.tokenize("我喜欢吃苹果", mode="accurate")


# ---- BPE ------------------------------------------------------------------------------------------
def test_split_chunks_cuts_at_space_and_punctuation():
    text = "酒店不错，服务好!  iPhone15 很棒"
    assert split_chunks(text) == ["酒店不错", "，", "服务好", "!", "  ", "iPhone15", " ", "很棒"]
    assert "".join(split_chunks(text)) == text


def test_bpe_hand_worked_chinese_example():
    # chunks: 苹果汁 x3, 苹果 x2, 果汁 x1 (and '，', ' ').
    # pairs: 苹果 3+2 = 5, 果汁 3+1 = 4 -> merge 苹+果; then 苹果+汁 3, 果+汁 1 -> merge 苹果+汁;
    # then only 果汁 (count 1) is left: stop.
    bpe = BPETokenizer(num_merges=10, min_freq=1).train(["苹果汁，苹果汁，苹果汁", "苹果 苹果", "果汁"])
    assert bpe.merges == [("苹", "果"), ("苹果", "汁")]
    # alphabet by frequency 果 6, 苹 5, 汁 4, '，' 2, ' ' 1; then the merged tokens in merge order
    assert bpe.vocab == {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, "果": 4, "苹": 5, "汁": 6, "，": 7,
                         " ": 8, "苹果": 9, "苹果汁": 10}
    assert bpe.encode("苹果汁") == [10]
    assert bpe.tokenize("果汁，苹果") == ["果", "汁", "，", "苹果"]
    assert bpe.encode("苹果梨") == [9, UNK_ID]


def test_bpe_hand_worked_ties_sennrich_example():
    # Sennrich et al.'s toy vocabulary: low x5, lower x2, newest x6, widest x3 (no end-of-word marker).
    # Counts, derived by hand; ties go to the pair that sorts first:
    #  es 9 = st 9 -> (e,s); (es,t) 9; lo 7 = ow 7 -> (l,o); (lo,w) 7; ne = ew = w·est 6 -> (e,w);
    #  (ew,est) 6 < (n,ew); (n,ewest) 6; then widest's three 3s: (d,est), (i,dest), (w,idest);
    #  then lower's 2s: (e,r), (low,er).
    corpus = ["low " * 5 + "lower " * 2 + "newest " * 6 + "widest " * 3]
    bpe = BPETokenizer(num_merges=50, min_freq=1).train(corpus)
    assert bpe.merges == [("e", "s"), ("es", "t"), ("l", "o"), ("lo", "w"), ("e", "w"), ("ew", "est"),
                          ("n", "ewest"), ("d", "est"), ("i", "dest"), ("w", "idest"), ("e", "r"), ("low", "er")]
    assert bpe.tokenize("lowest newer") == ["low", "est", " ", "n", "ew", "er"]
    assert BPETokenizer(num_merges=3, min_freq=1).train(corpus).merges == bpe.merges[:3]


def naive_bpe(texts, num_merges, min_freq):
    """Textbook BPE: recount every pair of the whole corpus before each merge (slow, obviously right)."""
    chunks = Counter(c for t in texts for c in split_chunks(t))
    chars = Counter()
    for chunk, n in chunks.items():
        for ch in chunk:
            chars[ch] += n
    words = Counter({tuple(ch if chars[ch] >= min_freq else "<unk>" for ch in chunk): n
                     for chunk, n in chunks.items()})
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                if "<unk>" not in pair:
                    pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        new_words = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += n
        words = new_words
    return merges, words


def test_fast_bpe_equals_naive_bpe_on_reviews(reviews):
    texts = reviews[:150]
    merges, final_words = naive_bpe(texts, num_merges=150, min_freq=2)
    bpe = BPETokenizer(num_merges=150, min_freq=2).train(texts)
    assert bpe.merges == merges
    assert len(merges) == 150
    # encoding by merge rank reproduces the segmentation that training ended with
    for word in list(final_words)[:300]:
        chunk = "".join(ch if ch != "<unk>" else "\x00" for ch in word)
        if "\x00" not in chunk:
            assert tuple(bpe.tokenize(chunk)) == word


def test_bpe_round_trip_truncation_and_vocab(reviews):
    bpe = BPETokenizer(num_merges=300).train(reviews)
    assert bpe.vocab_size == 4 + len(bpe.alphabet) + len({a + b for a, b in bpe.merges})
    for text in reviews[:100]:
        if all(ch in bpe.vocab for ch in text):
            assert bpe.decode(bpe.encode(text)) == text
    small = bpe.truncated(50)
    assert small.merges == bpe.merges[:50]
    assert small == BPETokenizer(num_merges=50).train(reviews)
    assert bpe.truncated(0).encode(reviews[0]) == CharTokenizer().train(reviews).encode(reviews[0])
    # more merges, fewer tokens
    lengths = [sum(len(bpe.truncated(k).encode(t)) for t in reviews[:50]) for k in (0, 100, 300)]
    assert lengths[0] > lengths[1] > lengths[2]
    with pytest.raises(ValueError, match="num_merges"):
        bpe.truncated(301)
    with pytest.raises(ValueError, match="num_merges"):
        BPETokenizer(num_merges=-1)


def test_bpe_rare_characters_never_merge():
    bpe = BPETokenizer(num_merges=10, min_freq=2).train(["甲乙", "甲乙", "丙丁"])
    assert bpe.merges == [("甲", "乙")]  # 丙丁 is seen once; 丙 and 丁 are <unk> anyway
    assert bpe.encode("丙甲乙") == [UNK_ID, bpe.token_to_id("甲乙")]


def test_bpe_step_helpers_match_the_tokenizer():
    words = {tuple("苹果汁"): 3, tuple("苹果"): 2, tuple("果汁"): 1}
    pair, words = bpe_step(words)
    assert pair == ("苹", "果")
    assert words == {("苹果", "汁"): 3, ("苹果",): 2, ("果", "汁"): 1}
    assert count_pairs(words) == Counter({("苹果", "汁"): 3, ("果", "汁"): 1})
    pair, words = bpe_step(words)
    assert pair == ("苹果", "汁")
    assert bpe_step({("a",): 4}) == (None, {("a",): 4})
    assert merge_pair({tuple("aaaa"): 1}, ("a", "a")) == {("aa", "aa"): 1}
    with pytest.raises(ValueError, match="two symbols"):
        merge_pair(words, "ab")


def test_forward_max_match_hand_examples():
    vocab = {"研究", "研究生", "生命", "命", "的", "起源"}
    # the classic failure of greedy matching: 研究生 | 命 instead of 研究 | 生命
    assert forward_max_match("研究生命的起源", vocab) == ["研究生", "命", "的", "起源"]
    assert forward_max_match("研究生命的起源", vocab, max_len=2) == ["研究", "生命", "的", "起源"]
    assert forward_max_match("我喜欢吃苹果", ["喜欢", "苹果"]) == ["我", "喜欢", "吃", "苹果"]
    assert forward_max_match("", vocab) == []
    with pytest.raises(ValueError, match="max_len"):
        forward_max_match("abc", vocab, max_len=0)


# ---- byte-level BPE and normalisation -------------------------------------------------------------
from llmcourse.data.tokenizers import (BYTE_SYMBOLS, ByteBPETokenizer, learn_merges, normalize_text,  # noqa: E402
                                       symbols_to_bytes, to_byte_symbols, to_simplified)

ODD_TEXTS = ["😀👍🏻 emoji", "龘靐齉 rare", "\x00\x7f\t\n  tabs", "ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ１２３", "<pad><unk> e\u0301", "繁體字測試"]


def test_byte_symbols_are_a_bijection_of_visible_characters():
    assert len(set(BYTE_SYMBOLS.values())) == 256
    assert all(s.isprintable() and not s.isspace() for s in BYTE_SYMBOLS.values())
    assert to_byte_symbols("A") == ("A",)
    assert len(to_byte_symbols("中")) == 3 and symbols_to_bytes("".join(to_byte_symbols("中"))) == "中".encode("utf-8")
    with pytest.raises(ValueError, match="no byte"):
        symbols_to_bytes("中")


def test_byte_bpe_equals_textbook_bpe_step_on_byte_symbols(reviews):
    texts = reviews[:120]
    chunks = Counter(c for t in texts for c in split_chunks(t))
    words = {}
    for c, n in chunks.items():
        w = tuple(BYTE_SYMBOLS[b] for b in c.encode("utf-8"))
        words[w] = words.get(w, 0) + n
    reference = []
    for _ in range(120):  # the textbook loop: recount every pair, merge the best, stop below 2
        pair, new_words = bpe_step(words)
        if pair is None or count_pairs(words)[pair] < 2:
            break
        reference.append(pair)
        words = new_words
    tok = ByteBPETokenizer(num_merges=120).train(texts)
    assert tok.merges == reference and len(reference) == 120
    assert learn_merges([("a", "b", "a", "b")], [3], 5) == [("a", "b"), ("ab", "ab")]  # 3 ab-ab words: ab, then ab+ab


def test_byte_bpe_round_trips_everything_without_unk(reviews, tmp_path):
    tok = ByteBPETokenizer(num_merges=300).train(reviews[:200])
    assert tok.vocab_size == len(SPECIAL_TOKENS) + 256 + len(tok.merges)
    for text in list(reviews) + ODD_TEXTS + corpus.review_texts("test")[:200]:
        ids = tok.encode(text, add_bos=True, add_eos=True)
        assert UNK_ID not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert b"".join(tok.token_bytes(i) for i in ids[1:-1]) == text.encode("utf-8")
    # before any merge a Chinese character is three byte tokens
    assert len(tok.truncated(0).encode("中")) == 3
    assert tok.truncated(0).decode(tok.truncated(0).encode("中")[:2]) == "\ufffd"  # a cut character: U+FFFD
    assert tok.decode([BOS_ID] + tok.encode("好")) == "<bos>好"
    path = tmp_path / "bbpe.json"
    tok.save(path)
    again = Tokenizer.load(path)
    assert isinstance(again, ByteBPETokenizer) and again == tok
    assert again.encode(reviews[0]) == tok.encode(reviews[0])
    with pytest.raises(ValueError, match="BPETokenizer"):
        BPETokenizer.load(path)


def test_byte_bpe_truncation_is_a_prefix_and_bad_input(reviews):
    big = ByteBPETokenizer(num_merges=200).train(reviews[:100])
    small = ByteBPETokenizer(num_merges=50).train(reviews[:100])
    assert big.truncated(50) == small
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="num_merges"):
            ByteBPETokenizer(num_merges=bad)
    with pytest.raises(RuntimeError, match="train"):
        ByteBPETokenizer().encode("好")
    with pytest.raises(TypeError):
        big.encode(b"bytes")
    # "<" and ">" are chunks of their own, so no merge can spell a special token's text
    assert ByteBPETokenizer(num_merges=50).train(["<pad>"] * 5).encode("<pad>") != [PAD_ID]


def test_normalisation_width_and_script():
    assert normalize_text("ＡＢＣ１２３，") == "ABC123,"
    assert normalize_text("ＡＢＣ", width=False) == "ＡＢＣ"
    assert to_simplified("繁體字測試，這個") == "繁体字测试，这个"
    assert to_simplified("余著乾") == "余著乾"  # simplified characters that snownlp would change stay
    assert normalize_text("這個ＯＫ", simplified=False) == "這個OK"
    assert len(to_simplified("乾隆皇帝")) == 4  # character by character: the length never changes
    with pytest.raises(TypeError):
        normalize_text(3)
