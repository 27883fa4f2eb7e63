"""Voting rules and the training-free confidence selectors, on examples worked out by hand."""

import numpy as np
import pandas as pd
import pytest
import torch

from ranker.evaluation.methods import FREE_BASELINES, METHOD_LABELS, method_label
from ranker.evaluation.selection import evaluate_selection, free_signal_picks
from ranker.evaluation.voting_rules import (
    LOGPROB_VOTE_BETA,
    borda_vote,
    borda_weights,
    filtered_vote,
    logprob_vote,
    weighted_vote,
)
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
                             probability_store=lambda s, index=None, scores=None: torch.sigmoid(
                                 ranker.score_store(s, index) if scores is None else scores))
    result = evaluate_store(store, {"mine": ranker})
    assert result["accuracy"]["mine"] == pytest.approx(0.5)  # candidate 0: wrong, right
    # vote weighted by sigmoid(score): "5" = 0.95 beats "6" = 0.05 + 0.05 (wrong); "2" = 1.5 beats "1" = 0.88 (wrong)
    assert result["accuracy"]["mine_vote"] == pytest.approx(0.0)


# Six candidates: weights exp(lp - max lp) = exp(lp + 0.1): "a" = {0: e^-0.9 = 0.4066, 2: e^-0.5 = 0.6065} = 1.0131,
# "b" = {1: e^-2.4, 3: e^-2.9, 5: e^-2.7} = 0.0907 + 0.0550 + 0.0672 = 0.2129, "c" = {4: e^0 = 1.0}. "a" is the
# heaviest answer, its best log-prob candidate 2. Majority vote takes "b" (3 votes: candidate 1), max log-prob candidate 4.
KEYS, LOGPROBS = ["a", "b", "a", "b", "c", "b"], [-1.0, -2.5, -0.6, -3.0, -0.1, -2.8]


def test_logprob_vote_by_hand():
    assert LOGPROB_VOTE_BETA == 1.0
    assert logprob_vote(KEYS, LOGPROBS) == 2
    assert weighted_vote(KEYS) == 1 and int(np.argmax(LOGPROBS)) == 4  # it differs from both majority and max log-prob
    # beta 0 is majority vote; a large beta is max log-prob
    assert logprob_vote(KEYS, LOGPROBS, beta=0.0) == 1  # "b" (3 votes), the best log-prob of its candidates 1, 3, 5
    assert logprob_vote(KEYS, LOGPROBS, beta=50.0) == 4
    # A keyless candidate is an answer of its own: e^0 = 1 beats "x" = 2 e^-0.9 = 0.81
    assert logprob_vote([None, "x", "x"], [-0.1, -1.0, -1.0]) == 0
    assert logprob_vote([None, "x", "x"], [-0.1, -0.5, -0.6]) == 1  # "x" = e^-0.4 + e^-0.5 = 1.28 > 1; candidate 1 first
    assert logprob_vote([None, None, None], [-2.0, -0.5, -1.0]) == 1  # no answers at all: max mean log-prob
    # Equal totals: the answer holding the best log-prob, then the first candidate
    assert logprob_vote(["p", "q", "q"], [0.0, np.log(0.5), np.log(0.5)]) == 0
    assert logprob_vote(["p", "p"], [-1.0, -1.0]) == 0
    with pytest.raises(ValueError, match="one mean log-prob per candidate"):
        logprob_vote(["a", "b"], [-1.0])
    with pytest.raises(ValueError, match="finite"):
        logprob_vote(["a"], [float("nan")])


def test_free_signal_picks_add_the_logprob_vote_given_mean_logprob():
    signals = {"self_certainty": np.zeros((1, 6)), "lowest_group_confidence": np.ones((1, 6))}
    assert "logprob_vote" not in free_signal_picks([KEYS], signals)
    picks = free_signal_picks([KEYS], {**signals, "mean_logprob": np.array([LOGPROBS])})
    assert picks["logprob_vote"].tolist() == [2]


def test_evaluate_selection_reports_the_logprob_vote_with_the_confidence_baselines():
    labels = [[1, 0, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0]]  # "a" is right in problem 0; candidates 1 and 2 in problem 1
    store = make_store(labels=labels, vote_keys=[KEYS, ["u", "v", "v", None, None, None]],
                       mean_logprobs=[LOGPROBS, [-0.2, -1.0, -0.9, -3.0, -3.0, -3.0]])
    assert "logprob_vote" not in evaluate_selection(store)  # reported with the confidence baselines only
    store = with_signals(store, certainty=np.zeros((2, 6)), confidence=np.ones((2, 6)))
    result = evaluate_selection(store)
    # problem 0: candidate 2 (right). problem 1: "u" = e^0 = 1, "v" = e^-0.8 + e^-0.7 = 0.4493 + 0.4966 = 0.9459,
    # each None e^-2.8 = 0.06: "u", candidate 0 (wrong)
    assert result["logprob_vote"] == pytest.approx(0.5)
    assert result["majority"] == pytest.approx(0.5)  # "b" (wrong); "v", candidate 1 (right)
    assert result["max_logprob"] == pytest.approx(0.0)  # candidate 4 (wrong); candidate 0 (wrong)


def test_the_logprob_vote_is_a_labelled_free_baseline():
    assert "logprob_vote" in FREE_BASELINES and method_label("logprob_vote") == "log-prob-weighted majority vote"
    order = list(METHOD_LABELS)
    assert order.index("point_ranker_vote") < order.index("logprob_vote") < order.index("deepconf_high")
