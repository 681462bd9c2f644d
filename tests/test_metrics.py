"""Tests for fedrag_flower.evaluation.metrics."""

from __future__ import annotations

import math

import pytest

from fedrag_flower.evaluation import exact_match, mean, normalize_answer, recall_at_k, token_f1


def test_normalize_answer_lowercases_strips_punctuation_articles_and_spaces():
    assert normalize_answer("The  Cat, sat on AN old mat!") == "cat sat on old mat"
    assert normalize_answer("  a.  ") == ""
    # articles only as whole words
    assert normalize_answer("Theory and anthem") == "theory and anthem"


def test_token_f1_hand_computed():
    # pred tokens: cat sat on mat (4); ref: cat sat (2); common 2 -> P=1/2, R=1, F1=2/3
    assert token_f1("The cat sat on the mat", "a cat sat") == pytest.approx(2 / 3)
    # pred: red red blue (3); ref: red green (2); common 1 -> P=1/3, R=1/2, F1=0.4
    assert token_f1("red red blue", "red green") == pytest.approx(0.4)
    # counts are clipped: ref has red twice, pred once -> common 1, P=1, R=1/2, F1=2/3
    assert token_f1("red", "red red") == pytest.approx(2 / 3)


def test_token_f1_identical_disjoint_and_empty():
    assert token_f1("Ten weeks.", "ten weeks") == 1.0
    assert token_f1("yes", "no") == 0.0
    assert token_f1("", "the") == 1.0  # both normalise to nothing
    assert token_f1("", "answer") == 0.0
    assert token_f1("answer", "") == 0.0


def test_exact_match_ignores_case_punctuation_and_articles():
    assert exact_match("The answer: 10 weeks!", "answer 10 weeks") == 1.0
    assert exact_match("10 weeks", "20 weeks") == 0.0
    assert isinstance(exact_match("a", "a"), float)


def test_recall_at_k_counts_any_gold_in_first_k_and_skips_queries_without_gold():
    retrieved = [["a", "b", "c"], ["x", "y", "g"], ["p"], ["q", "r"]]
    gold = [["b"], ["g", "h"], [], ["z"]]
    assert recall_at_k(retrieved, gold, 1) == 0.0
    assert recall_at_k(retrieved, gold, 2) == pytest.approx(1 / 3)
    assert recall_at_k(retrieved, gold, 3) == pytest.approx(2 / 3)
    assert recall_at_k(retrieved, gold, 10) == pytest.approx(2 / 3)


def test_recall_at_k_is_nan_without_gold_ids_and_checks_arguments():
    assert math.isnan(recall_at_k([["a"]], [[]], 1))
    assert math.isnan(recall_at_k([], [], 5))
    with pytest.raises(ValueError, match="k must be at least 1"):
        recall_at_k([["a"]], [["a"]], 0)
    with pytest.raises(ValueError, match="2 queries but gold_ids has 1"):
        recall_at_k([["a"], ["b"]], [["a"]], 1)


def test_mean():
    assert mean([1.0, 2.0, 4.0]) == pytest.approx(7 / 3)
    assert mean(x for x in [True, False]) == 0.5
    assert math.isnan(mean([]))
