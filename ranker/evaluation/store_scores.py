"""Score a feature store's candidates with fitted rankers, and how good those scores are."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ranker.capture.feature_store import FeatureStore
from ranker.evaluation.metrics import auroc, expected_calibration_error
from ranker.evaluation.selection import evaluate_selection
from ranker.rankers.estimator import LanguageRanker
from ranker.rankers.store_training import store_queries


def score_store(ranker: LanguageRanker, store: FeatureStore, index=None) -> torch.Tensor:
    """(P, n) ranker scores at the ranker's own layer: every candidate, or the (P, n) `index` ones.

    Scores depend on the candidate set (the ListRanker attends over it, the vote share counts
    it), so candidates scored as a subset are ranked among that subset only.
    """
    layer = ranker.fingerprint_.layer if ranker.fingerprint_ is not None else None
    if ranker.fingerprint_ is not None:
        ranker.fingerprint_.check_compatible(store.feature_fingerprint(layer), what="ranker")
    return torch.stack(ranker.score_queries(store_queries(store, layer, index)))


def subset_scorer(ranker: LanguageRanker, store: FeatureStore) -> Callable[[np.ndarray], torch.Tensor]:
    """A scorer for `ranker.evaluation.selection.evaluate_selection`: (P, n) candidate indices -> (P, n) scores."""
    return lambda index: score_store(ranker, store, index)


def probabilities(ranker: LanguageRanker, scores: torch.Tensor) -> torch.Tensor:
    """Calibrated P(correct) for scores; uses the Platt fit saved with the ranker."""
    platt = getattr(ranker, "metrics_", {}).get("platt")
    if platt is None:
        raise ValueError("this ranker has no calibration; train it with ranker.rankers.store_training.train_on_store")
    a, b = platt
    return torch.sigmoid(a * scores + b)


def correctness_metrics(ranker: LanguageRanker, scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """AUROC of raw scores and ECE of calibrated probabilities as predictors of correctness."""
    value = auroc(scores.flatten(), labels.flatten())
    ece = expected_calibration_error(probabilities(ranker, scores).flatten(), labels.flatten())
    return {"auroc": value, "ece": ece}  # auroc is nan when the labels hold one class only


def evaluate_store(store: FeatureStore, rankers: dict[str, LanguageRanker], n: int | None = None,
                   draws: int = 5, seed: int = 0, reward_models: dict | None = None) -> dict:
    """Accuracy of every method at N = n, plus AUROC (and ECE for rankers) on all candidates.

    reward_models: name -> a fitted reward model (ranker.reward) whose `score_store` gives (P, N)
    scores over the same candidates; its ECE uses sigmoid(score), its BCE-trained probability.
    """
    scores = {name: score_store(ranker, store) for name, ranker in rankers.items()}  # all N, for AUROC and ECE
    scorers = {name: subset_scorer(ranker, store) for name, ranker in rankers.items()}
    rm_scores = {name: rm.score_store(store) for name, rm in (reward_models or {}).items()}
    result = {"accuracy": evaluate_selection(store, {**scorers, **rm_scores}, n=n, draws=draws, seed=seed), "correctness": {}}
    labels = store.labels()
    for name, ranker in rankers.items():
        result["correctness"][name] = correctness_metrics(ranker, scores[name], labels)
    for name, value in rm_scores.items():
        result["correctness"][name] = {"auroc": auroc(value.flatten(), labels.flatten()),
                                       "ece": expected_calibration_error(torch.sigmoid(value).flatten(), labels.flatten())}
    return result
