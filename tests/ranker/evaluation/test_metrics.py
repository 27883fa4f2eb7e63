import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from ranker.evaluation.metrics import (
    auroc,
    best_of_n_accuracy,
    expected_calibration_error,
    oracle_accuracy,
    random_accuracy,
    ranking_metrics,
    selection_accuracy,
)

T = torch.tensor


def test_best_of_n_picks_argmax_per_query():
    scores = [T([0.1, 0.9, 0.3]), T([0.8, 0.2]), T([0.5, 0.5])]
    labels = [T([0.0, 1.0, 0.0]), T([0.0, 1.0]), T([1.0, 0.0])]
    # picks 1 (right), 0 (wrong), 0 on a tie (right)
    assert best_of_n_accuracy(scores, labels) == pytest.approx(2 / 3)
    assert selection_accuracy([2, 1, 1], labels) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="2 selections for 3 queries"):
        selection_accuracy([0, 0], labels)


def test_random_and_oracle_accuracy():
    labels = [T([1.0, 0.0, 0.0, 0.0]), T([0.0, 0.0]), T([1.0, 1.0])]
    assert random_accuracy(labels) == pytest.approx((0.25 + 0.0 + 1.0) / 3)
    assert oracle_accuracy(labels) == pytest.approx(2 / 3)


def test_auroc_hand_cases():
    labels = T([0.0, 0.0, 1.0, 1.0])
    assert auroc(T([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert auroc(T([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert auroc(T([0.5, 0.5, 0.5, 0.5]), labels) == 0.5  # ties count one half
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 0.35 beats 1 of 2, 0.8 beats 2 of 2 -> 3/4
    assert auroc(T([0.1, 0.4, 0.35, 0.8]), labels) == pytest.approx(0.75)
    assert math.isnan(auroc(T([0.1, 0.2]), T([1.0, 1.0])))


def test_auroc_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 10, (300,), generator=g).float()  # many ties
    labels = (torch.rand(300, generator=g) < 0.4).float()
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)


def test_ece_hand_cases():
    # bin [0.9, 1.0): confidence 0.9, accuracy 0.5 -> 0.4; bin [0.1, 0.2): 0.1 vs 0.0 -> 0.1; each half the data
    probs = T([0.9, 0.9, 0.1, 0.1])
    labels = T([1.0, 0.0, 0.0, 0.0])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert expected_calibration_error(T([0.25, 0.25, 0.25, 0.25]), T([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.0)
    assert expected_calibration_error(T([1.0, 1.0]), T([1.0, 1.0])) == pytest.approx(0.0)  # p=1 lands in the last bin
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(T([1.5]), T([1.0]))


def test_ranking_metrics_bundle():
    scores = [T([0.1, 0.9]), T([0.7, 0.3])]
    labels = [T([0.0, 1.0]), T([0.0, 1.0])]
    m = ranking_metrics(scores, labels)
    assert (m.best_of_n, m.random, m.oracle, m.num_queries) == (0.5, 0.5, 1.0, 2)
    # pooled: positives 0.9, 0.3 vs negatives 0.1, 0.7 -> (2 + 1) / 4
    assert m.auroc == pytest.approx(0.75)
    assert set(m.to_dict()) == {"best_of_n", "random", "oracle", "auroc", "num_queries"}
