"""Voting rules and the training-free confidence selectors, on examples worked out by hand."""

import numpy as np
import pandas as pd
import pytest
import torch

from ranker.evaluation.selection import evaluate_selection, free_signal_picks
from ranker.evaluation.voting_rules import borda_vote, borda_weights, filtered_vote, weighted_vote
from tests.ranker.evaluation.test_selection import make_store


def test_weighted_vote():
    keys = ["a", "b", "b", None, "a"]
    assert weighted_vote(keys) == 0  # a and b have 2 votes each: a was seen first, and candidate 0 gave it
    assert weighted_vote(["b", "a", "a", "b"]) == 0  # the same tie, b first
    assert weighted_vote(keys, [0.1, 0.5, 0.5, 9.0, 0.1]) == 1  # b: 1.0, a: 0.2; the None vote counts nothing
    assert weighted_vote([None, None]) is None
    with pytest.raises(ValueError, match="non-negative"):
        weighted_vote(["a"], [-1.0])
    with pytest.raises(ValueError, match="one value per candidate"):
        weighted_vote(["a", "b"], [1.0])


def test_weighted_vote_majority_of_keys():
    assert weighted_vote(["a", "b", "b", None, "a", "b"]) == 1


def test_borda_weights_and_vote():
    # scores 0.2, 0.9, 0.5, 0.9 -> ranks (stable on ties) 4, 1, 3, 2 of n = 4 -> votes (5 - r) ** p
    assert borda_weights([0.2, 0.9, 0.5, 0.9], power=1.0).tolist() == [1.0, 4.0, 2.0, 3.0]
    assert borda_weights([0.2, 0.9, 0.5, 0.9], power=0.5) == pytest.approx([1.0, 2.0, 2**0.5, 3**0.5])
    # p = 1: x = candidates 0 and 2 (1 + 2 = 3), y = candidate 1 (4), z = candidate 3 (3) -> y
    assert borda_vote(["x", "y", "x", "z"], [0.2, 0.9, 0.5, 0.9], power=1.0) == 1
    # with p = 0.5: x = 1 + 1.414 = 2.414, y = 2, z = 1.732 -> x, first given by candidate 0
    assert borda_vote(["x", "y", "x", "z"], [0.2, 0.9, 0.5, 0.9], power=0.5) == 0
    # p = 0 is majority vote
    assert borda_vote(["x", "y", "y"], [9.0, 0.0, 0.0], power=0.0) == 1


def test_filtered_vote_keeps_the_most_confident():
    keys = ["a", "a", "a", "b", "b"]
    confidences = [1.0, 1.0, 1.0, 5.0, 4.0]
    assert filtered_vote(keys, confidences, keep=1.0) == 3  # all kept: a = 3, b = 9
    # keep 10%: the 90th percentile of [1, 1, 1, 5, 4] is 4.6, so only candidate 3 (5.0) is kept
    assert filtered_vote(["a", "a", "a", "a", "b"], [1.0, 1.0, 1.0, 4.0, 5.0], keep=0.1) == 4
    # keep 90%: the 10th percentile is 1.0, everything is kept: a = 7 beats b = 5
    assert filtered_vote(["a", "a", "a", "a", "b"], [1.0, 1.0, 1.0, 4.0, 5.0], keep=0.9) == 0
    assert filtered_vote([None, None], [1.0, 2.0], keep=0.5) is None
    with pytest.raises(ValueError, match="keep"):
        filtered_vote(["a"], [1.0], keep=0.0)


def test_free_signal_picks_by_hand():
    keys = [["1", "2", "2", None]]
    signals = {"self_certainty": np.array([[3.0, 1.0, 2.0, 4.0]]), "lowest_group_confidence": np.array([[2.0, 1.0, 1.5, 0.5]])}
    picks = {name: int(pick[0]) for name, pick in free_signal_picks(keys, signals).items()}
    assert picks["max_self_certainty"] == 3
    # Borda, p = 0.5, ranks by certainty: cand 3 (r1, vote 2), 0 (r2, 1.732), 2 (r3, 1.414), 1 (r4, 1)
    # answers: "1" = 1.732, "2" = 1.414 + 1 = 2.414; candidate 3 has no answer -> "2", first given by 1
    assert picks["self_certainty_borda"] == 1
    assert picks["max_group_confidence"] == 0
    assert picks["deepconf_vote"] == 1  # "1" = 2.0, "2" = 1.0 + 1.5 = 2.5
    # keep 10% of the voting three [2, 1, 1.5]: the 90th percentile is 1.9 -> only candidate 0
    assert picks["deepconf_low"] == 0
    # keep 90%: the 10th percentile is 1.1, so candidates 0 and 2 are kept: "1" = 2.0 beats "2" = 1.5
    assert picks["deepconf_high"] == 0


def with_signals(store, certainty, confidence):
    frame = store.candidates.copy()
    frame["self_certainty"] = np.asarray(certainty, dtype=float).flatten()
    for column in ("lowest_group_confidence", "bottom_group_confidence", "tail_confidence"):
        frame[column] = np.asarray(confidence, dtype=float).flatten()
    frame["token_confidences"] = [[value] for value in frame["tail_confidence"]]
    store.candidates = frame
    return store


def test_evaluate_selection_reports_the_free_signal_methods_and_weighted_votes():
    store = make_store(labels=[[0, 1, 1, 0], [1, 0, 0, 0]], vote_keys=[["5", "6", "6", None], ["1", "2", "2", "2"]],
                       mean_logprobs=[[-1, -2, -0.5, -3], [-0.1, -2, -3, -4]])
    assert "max_self_certainty" not in evaluate_selection(store)  # a store without the signals
    store = with_signals(store, certainty=[[5, 1, 0, 9], [0, 1, 2, 3]], confidence=[[1, 2, 3, 4], [9, 1, 1, 1]])
    result = evaluate_selection(store, vote_weights={"weighted": torch.tensor([[1.0, 0.1, 0.1, 0.0], [3.0, 0.5, 0.5, 0.5]])})
    assert result["max_self_certainty"] == 0.0  # candidate 3 (wrong), candidate 3 (wrong)
    assert result["max_group_confidence"] == pytest.approx(0.5)  # candidate 3 (wrong), candidate 0 (right)
    assert result["deepconf_vote"] == pytest.approx(1.0)  # "6" = 5 vs "5" = 1; "1" = 9 vs "2" = 3
    assert result["weighted"] == pytest.approx(0.5)  # "5" = 1.0 beats "6" = 0.2 (wrong); "1" = 3 beats "2" = 1.5 (right)


def test_evaluate_store_adds_each_calibrated_rankers_weighted_vote():
    from types import SimpleNamespace

    from ranker.evaluation.store_scores import evaluate_store

    store = make_store(labels=[[0, 1, 1, 0], [1, 0, 0, 0]], vote_keys=[["5", "6", "6", None], ["1", "2", "2", "2"]],
                       mean_logprobs=[[-1, -2, -0.5, -3], [-0.1, -2, -3, -4]])
    scores = torch.tensor([[3.0, -3.0, -3.0, 0.0], [2.0, 0.0, 0.0, 0.0]])  # the ranker's top pick: candidate 0 of each
    ranker = SimpleNamespace(calibrated=True, score_store=lambda s, index=None: scores if index is None else scores[np.arange(2)[:, None], index],
                             probability_correct=torch.sigmoid)
    result = evaluate_store(store, {"mine": ranker})
    assert result["accuracy"]["mine"] == pytest.approx(0.5)  # candidate 0: wrong, right
    # vote weighted by sigmoid(score): "5" = 0.95 beats "6" = 0.05 + 0.05 (wrong); "2" = 1.5 beats "1" = 0.88 (wrong)
    assert result["accuracy"]["mine_vote"] == pytest.approx(0.0)
