"""The number-aware comparison nbval uses: it accepts what another numerical path legitimately changes
and rejects real changes, in both directions (stored -> new and new -> stored)."""
import pytest

from llmcourse.book.numeric_compare import CLOSED_FORM, Tolerance, compare_outputs, compare_text, split_numbers

TRAINED = Tolerance(rel=0.03, abs=0.004, why="trained")


def agree(a, b, tolerance=CLOSED_FORM):
    """Both directions must give the same verdict."""
    forward, backward = compare_text(a, b, tolerance), compare_text(b, a, tolerance)
    assert bool(forward) == bool(backward), (forward, backward)
    return not forward


def test_numbers_are_found_and_text_is_kept():
    template, numbers = split_numbers("共13,909条 test ppl 92.42, lr 1e-05, x=-0.5; GPT-2 gpt2 ch6_x 3-4-2")
    assert [n.text for n in numbers] == ["13,909", "92.42", "1e-05", "-0.5", "2", "3", "4", "2"]
    assert [n.value for n in numbers][:4] == [13909, 92.42, 1e-05, -0.5]
    assert [n.is_integer for n in numbers][:4] == [True, False, False, False]
    assert numbers[1].unit == pytest.approx(0.01) and numbers[2].unit == pytest.approx(1e-5)
    assert "gpt2 ch6_x" in template and "GPT-" in template and "13" not in template


def test_identical_outputs_agree():
    assert agree("loss 0.6931\n", "loss 0.6931\n")


def test_the_last_printed_digit_may_round_either_way():
    assert agree("0.1408", "0.1407")  # the NumPy rounding boundary seen on another CPU
    assert not agree("0.1408", "0.1406")
    assert agree("0.72", "0.7201")  # a glued round(x, 4) of 0.7200 prints as 0.72
    assert not agree("0.72", "0.7231")


def test_a_changed_closed_form_number_fails():
    problems = compare_text("cross-entropy = 0.6931\n", "cross-entropy = 0.7931\n")
    assert len(problems) == 1 and "0.6931 became 0.7931" in problems[0] and "closed-form" in problems[0]
    assert not agree("cross-entropy = 0.6931\n", "cross-entropy = 0.7931\n")


def test_a_changed_word_fails_even_when_the_numbers_agree():
    problems = compare_text("the GPT beats the 5-gram: 50.64 < 54.77", "the GPT loses to the 5-gram: 50.64 < 54.77")
    assert problems and "text around the numbers changed" in problems[0]
    assert not agree("True", "False") and not agree("gpt", "bert", TRAINED)


def test_trained_results_move_within_their_tolerance_only():
    assert agree("SFT val ppl 92.42", "SFT val ppl 93.56", TRAINED)  # 1.2 %
    assert not agree("SFT val ppl 92.42", f"SFT val ppl {92.42 * 1.25:.2f}", TRAINED)
    assert not agree("SFT val ppl 92.42", "SFT val ppl 93.56")  # closed form: too far
    assert agree("accuracy 0.7230", "accuracy 0.7266", TRAINED)  # small numbers: absolute
    assert not agree("accuracy 0.7230", "accuracy 0.7300", TRAINED)


def test_integers_are_exact_unless_the_cell_says_otherwise():
    assert not agree("13909 reviews", "13910 reviews", TRAINED)
    counted = Tolerance(rel=0.03, abs=0, integers=True, why="sampled")
    assert agree("distinct bigrams: 1000", "distinct bigrams: 1020", counted)
    assert not agree("distinct bigrams: 1000", "distinct bigrams: 1040", counted)
    assert not agree("5 layers", "5.0 layers", TRAINED)  # the formatting changed


def test_column_padding_may_follow_a_number_s_width():
    assert agree("| gpt |  99.98 |", "| gpt | 100.03 |", TRAINED)
    assert not agree("| gpt |  99.98 |", "| gpt |\n100.03 |", TRAINED)


def test_a_different_count_of_numbers_is_a_text_change():
    assert not agree("scores 1.0 2.0", "scores 1.0 2.0 3.0", TRAINED)


def test_outputs_by_kind():
    stored = {"stdout": ["ppl 92.42\n"], "text/plain": ["0.5"]}
    assert compare_outputs(stored, {"stdout": ["ppl 93.00\n"], "text/plain": ["0.5"]}, TRAINED) == []
    assert "missing ['text/plain']" in compare_outputs(stored, {"stdout": ["ppl 92.42\n"]})[0]
    assert "2 outputs stored, 1 now" in compare_outputs({"stdout": ["a", "b"]}, {"stdout": ["a"]})[0]
    assert compare_outputs({"application/json": [{"a": 1}]}, {"application/json": [{"a": 2}]})


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "0.1"])
def test_a_bad_tolerance_is_refused(bad):
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        Tolerance(rel=bad)


def test_measured_slack_applies_number_by_number():
    table = "| PPO | 0.8281 | 3.2934 |\n| DPO | 0.8281 | 9.7216 |\n"
    tolerance = Tolerance(rel=1.0, abs=1.0, why="trained", slack={"stdout": [[0.05, 0.5, 0.05, 4.0]]})
    moved = table.replace("3.2934", "3.6").replace("9.7216", "13.1")
    assert compare_outputs({"stdout": [table]}, {"stdout": [moved]}, tolerance) == []
    too_far = table.replace("0.8281 | 3.2934", "0.7000 | 3.2934")
    problems = compare_outputs({"stdout": [table]}, {"stdout": [too_far]}, tolerance)
    assert len(problems) == 1 and "0.8281 became 0.7" in problems[0] and "measured for this number" in problems[0]
    # a slack measured for another shape of output is not used: the cell's rel/abs apply
    assert tolerance.slack_of("stdout", 0, 3) is None and tolerance.slack_of("stderr", 0, 4) is None
