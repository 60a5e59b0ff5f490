import pytest

from llmcourse.chapters import milestones
import torch

from llmcourse.chapters.milestones import M, Milestone, format_params
from llmcourse.models import GPT, BertConfig, BertForMaskedLM, GPTConfig


# The architectures the papers describe (layers, width, vocabulary, context), built on the meta device
# (no memory) with the book's own GPT and BERT: the table's published sizes must be what they count.
ARCHITECTURES = {
    ("GPT-1", 0): ("gpt", dict(n_layer=12, n_embd=768, n_head=12, vocab_size=40478, block_size=512)),
    ("GPT-2", -1): ("gpt", dict(n_layer=48, n_embd=1600, n_head=25, vocab_size=50257, block_size=1024)),
    ("GPT-3", -1): ("gpt", dict(n_layer=96, n_embd=12288, n_head=96, vocab_size=50257, block_size=2048)),
    ("BERT", 0): ("bert", dict(n_layer=12, n_embd=768, n_head=12, vocab_size=30522, max_position=512)),
    ("BERT", -1): ("bert", dict(n_layer=24, n_embd=1024, n_head=16, vocab_size=30522, max_position=512)),
}


def test_published_context_windows_are_the_architectures():
    # the sizes above are counted with these windows (position embeddings), so the table must agree
    for (name, _), (_, config) in ARCHITECTURES.items():
        window = config.get("block_size", config.get("max_position"))
        assert milestones.by_name(name).context == window, name


def count_params(kind: str, config: dict) -> int:
    with torch.device("meta"):
        model = GPT(GPTConfig(**config)) if kind == "gpt" else BertForMaskedLM(BertConfig(**config))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("key", ARCHITECTURES, ids=[f"{n}[{i}]" for n, i in ARCHITECTURES])
def test_published_sizes_match_the_architectures(key):
    name, which = key
    published = {m.name: m for m in milestones.MILESTONES}[name].params[which]
    computed = count_params(*ARCHITECTURES[key])
    assert abs(computed - published) / published < 0.02, f"{name}: table {published:,}, architecture {computed:,}"


def test_timeline_is_ordered_and_split_in_two():
    years = [m.year for m in milestones.MILESTONES]
    assert years == sorted(years)
    assert len(milestones.with_parameters()) + len(milestones.without_parameters()) == len(milestones.MILESTONES)


@pytest.mark.parametrize("count, text", [(117 * M, "117M"), (1_500 * M, "1.5B"), (175_000 * M, "175B"), (65 * M, "65M")])
def test_format_params(count, text):
    assert format_params(count) == text


def test_rule_based_era_is_on_the_timeline():
    rules = [m for m in milestones.MILESTONES if m.era == "rules"]
    assert [(m.name, m.year) for m in rules] == [("Georgetown–IBM experiment", 1954), ("ELIZA", 1966)]
    assert all(not m.params for m in rules)  # rules have no parameters to count
    assert milestones.ERAS.index("rules") < milestones.ERAS.index("statistical")
    assert "Weizenbaum" in milestones.by_name("ELIZA").citation


def test_markov_counts_are_consistent():
    mk = milestones.MARKOV_1913
    assert mk["vowels"] + mk["consonants"] == mk["letters"]
    # A two-state chain's long-run vowel share, derived by hand: pi_v = p(v|c) / (p(v|c) + 1 - p(v|v)).
    # Markov's two published conditional frequencies must reproduce his vowel count (to their 3 decimals).
    p_vv, p_vc = mk["p_vowel_after_vowel"], mk["p_vowel_after_consonant"]
    stationary = p_vc / (p_vc + 1 - p_vv)
    assert abs(stationary - mk["vowels"] / mk["letters"]) < 1e-3


def test_by_name():
    assert milestones.by_name("GPT-3").largest == 175_000 * M
    with pytest.raises(KeyError, match="no milestone named"):
        milestones.by_name("GPT-5")


def test_bad_milestones_and_counts_are_refused():
    with pytest.raises(ValueError, match="unknown era"):
        Milestone("x", 2000, "medieval", "", "")
    with pytest.raises(ValueError, match="sorted"):
        Milestone("x", 2000, "neural", "", "", params=(2, 1))
    with pytest.raises(ValueError, match="context"):
        Milestone("x", 2000, "neural", "", "", context=0)
    with pytest.raises(ValueError, match="positive int"):
        format_params(0)
