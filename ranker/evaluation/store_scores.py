"""Score a feature store's candidates with fitted rankers, and how good those scores are.

This stage knows no ranker class: a ranker here is anything with `score_store(store, index=None)`
-> (P, n) scores and `probability_store(store, index=None, scores=None)` -> (P, n) P(correct)
(`ranker.rankers.estimator.LanguageRanker`),
and a reward model anything with `score_store(store)` -> (P, N) (`ranker.reward`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ranker.capture.feature_store import FeatureStore
from ranker.evaluation.metrics import auroc, expected_calibration_error
from ranker.evaluation.selection import evaluate_selection


def subset_scorer(ranker, store: FeatureStore) -> Callable[[np.ndarray], torch.Tensor]:
    """A scorer for `ranker.evaluation.selection.evaluate_selection`: (P, n) candidate indices -> (P, n) scores.

    Each drawn subset is scored on its own (`ranker.score_store(store, index)`), because the
    ListRanker and the fused vote share depend on which candidates are in the list.
    """
    return lambda index: ranker.score_store(store, index)


def subset_probability(ranker, store: FeatureStore) -> Callable[[np.ndarray], torch.Tensor]:
    """Like `subset_scorer`, but the calibrated P(correct) of each drawn candidate: the weights of a
    confidence-weighted majority vote (`evaluate_selection(..., vote_weights=...)`)."""
    return lambda index: ranker.probability_store(store, index)


def correctness_metrics(probabilities: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """AUROC of raw `scores` and ECE of `probabilities` (both any shape, like `labels`) as predictors of correctness."""
    value = auroc(scores.flatten(), labels.flatten())
    ece = expected_calibration_error(probabilities.flatten(), labels.flatten())
    return {"auroc": value, "ece": ece}  # auroc is nan when the labels hold one class only


def evaluate_store(store: FeatureStore, rankers: dict, n: int | None = None, draws: int = 5, seed: int = 0,
                   reward_models: dict | None = None) -> dict:
    """Accuracy of every method at N = n, plus AUROC and ECE on all candidates.

    rankers: name -> a fitted, calibrated ranker; its ECE uses its calibration, and its P(correct)
    also weighs a majority vote, reported as `<name>_vote`. The training-free baselines
    (ranker.evaluation.selection) come with every store; the confidence ones with a store that has
    the signals. reward_models:
    name -> a fitted reward model whose `score_store` gives (P, N) scores over the same candidates;
    its ECE uses sigmoid(score), its BCE-trained probability.
    """
    scores = {name: ranker.score_store(store) for name, ranker in rankers.items()}  # all N, for AUROC and ECE
    scorers = {name: subset_scorer(ranker, store) for name, ranker in rankers.items()}
    votes = {f"{name}_vote": subset_probability(ranker, store) for name, ranker in rankers.items() if ranker.calibrated}
    rm_scores = {name: rm.score_store(store) for name, rm in (reward_models or {}).items()}
    accuracy = evaluate_selection(store, {**scorers, **rm_scores}, n=n, draws=draws, seed=seed, vote_weights=votes)
    result = {"accuracy": accuracy, "correctness": {}}
    labels = store.labels()
    for name, ranker in rankers.items():
        probabilities = ranker.probability_store(store, scores=scores[name])
        result["correctness"][name] = correctness_metrics(probabilities, scores[name], labels)
    for name, value in rm_scores.items():
        result["correctness"][name] = correctness_metrics(torch.sigmoid(value), value, labels)
    return result
