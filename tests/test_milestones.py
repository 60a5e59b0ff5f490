import pytest

from llmcourse.chapters import milestones
from llmcourse.chapters.milestones import M, Milestone, format_params


def test_published_sizes_of_landmark_models():
    by_name = {m.name: m for m in milestones.MILESTONES}
    assert by_name["GPT-1"].largest == 117 * M
    assert by_name["GPT-3"].largest == 175_000 * M
    assert by_name["BERT"].params == (110 * M, 340 * M)
    assert by_name["Turing test"].params == ()


def test_timeline_is_ordered_and_split_in_two():
    years = [m.year for m in milestones.MILESTONES]
    assert years == sorted(years)
    assert len(milestones.with_parameters()) + len(milestones.without_parameters()) == len(milestones.MILESTONES)


@pytest.mark.parametrize("count, text", [(117 * M, "117M"), (1_500 * M, "1.5B"), (175_000 * M, "175B"), (65 * M, "65M")])
def test_format_params(count, text):
    assert format_params(count) == text


def test_bad_milestones_and_counts_are_refused():
    with pytest.raises(ValueError, match="unknown era"):
        Milestone("x", 2000, "medieval", "", "")
    with pytest.raises(ValueError, match="sorted"):
        Milestone("x", 2000, "neural", "", "", params=(2, 1))
    with pytest.raises(ValueError, match="positive int"):
        format_params(0)
