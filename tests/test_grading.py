import numpy as np
import pytest
import torch

from llmcourse.book import grading


def reference_softmax(x):
    e = np.exp(np.asarray(x, dtype=float) - np.max(x))
    return e / e.sum()


def test_correct_function_passes():
    result = grading.check_function(reference_softmax, reference_softmax, [([1.0, 2.0],), ([0.0, 0.0, 0.0],)])
    assert result and "all 2 cases" in str(result)


def test_wrong_values_are_located():
    def off(x):
        y = reference_softmax(x)
        y[1] += 0.5
        return y
    result = grading.check_function(off, reference_softmax, [([1.0, 2.0, 3.0],)])
    assert not result
    assert "largest difference 0.5 at index (1,)" in str(result)


def test_wrong_shape_type_and_exceptions_are_explained():
    assert "shape (2, 1)" in str(grading.check_function(lambda x: np.zeros((2, 1)), reference_softmax, [([1.0, 2.0],)]))
    assert "expected an array" in str(grading.check_function(lambda x: "hi", reference_softmax, [([1.0, 2.0],)]))

    def broken(x):
        raise IndexError("list index out of range")
    assert "raised IndexError: list index out of range" in str(grading.check_function(broken, reference_softmax, [([1.0],)]))

    def todo(x):
        raise NotImplementedError
    assert "not implemented yet" in str(grading.check_function(todo, reference_softmax, [([1.0],)]))


def test_compare_handles_tensors_numbers_and_containers():
    assert grading.compare(torch.tensor([1.0, 2.0]), np.array([1.0, 2.0])) is None
    assert grading.compare(0.69314718, float(np.log(2))) is None
    assert "difference" in grading.compare(0.7, float(np.log(2)))
    assert grading.compare({"a": [1, 2]}, {"a": [1, 2]}) is None
    assert "keys" in grading.compare({"a": 1}, {"b": 1})
    assert "length 1 but expected length 2" in grading.compare([1], [1, 2])
    assert "expected a number" in grading.compare("1", 1)


def test_keyword_cases_and_check_value():
    assert grading.check_function(lambda a, b: a + b, lambda a, b: a + b, [{"a": 1, "b": 2}])
    assert grading.check_value(3.0, 3.0, name="sum")
    assert not grading.check_value([1, 2], [1, 3])


def test_bad_use_of_the_checker():
    with pytest.raises(ValueError, match="at least one"):
        grading.check_function(abs, abs, [])
    with pytest.raises(TypeError, match="function"):
        grading.check_function(42, abs, [(1,)])


def test_a_value_still_none_is_reported_as_not_implemented():
    # a student version's stub sets the answer to None: say so, not "expected a number, got NoneType"
    result = grading.check_value(None, 0.5, name="answer")
    assert not result.passed and "not implemented yet" in result.problems[0]
