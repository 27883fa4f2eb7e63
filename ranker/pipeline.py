"""Train, calibrate and score rankers on feature stores: the glue the CLI and the app share."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ranker.data import queries_from_tensors
from ranker.estimator import LanguageRanker
from ranker.evaluation import evaluate_selection
from ranker.metrics import auroc, expected_calibration_error
from ranker.store import FeatureStore


def store_queries(store: FeatureStore, layer: int | None = None, index=None) -> list:
    """The store's problems as ranking queries at one layer (ids "family/index").

    index: optional (P, n) candidate indices per problem (e.g. `ranker.evaluation.subsets`), to
    make queries of those n candidates only; default: all N. Each query carries its candidates'
    mean log-probs and answer keys (ranker.tasks.voting) for score fusion.
    """
    instruction, responses = store.features(layer)
    ids = [f"{p.family}/{i}" for i, p in enumerate(store.problems)]
    mean_logprobs = torch.tensor(store.column("mean_logprob"), dtype=torch.float32)
    labels, vote_keys = store.labels(), store.column("vote_key")
    if index is not None:
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        if index.dim() != 2 or index.shape[0] != len(store.problems):
            raise ValueError(f"index must be (P, n) = ({len(store.problems)}, n), got {tuple(index.shape)}")
        rows = torch.arange(len(store.problems))[:, None]
        responses, labels, mean_logprobs = responses[rows, index], labels[rows, index], mean_logprobs[rows, index]
        vote_keys = [[keys[k] for k in picked] for keys, picked in zip(vote_keys, index.tolist())]
    return queries_from_tensors(instruction, responses, labels, ids, mean_logprobs, vote_keys)


def fit_platt(scores: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> tuple[float, float]:
    """Platt scaling: (a, b) such that sigmoid(a * score + b) estimates P(correct). (M,), (M,) -> floats.

    The listwise ranker is trained with a softmax over each group, so its raw scores are only
    comparable within a query; a one-dimensional logistic fit on the training candidates
    turns them into probabilities that can be shown to users and checked with ECE.
    """
    scores, labels = scores.flatten().double(), labels.flatten().double()
    a = torch.ones((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([a, b], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(a * scores + b, labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(a.detach()), float(b.detach())


def train_on_store(store: FeatureStore, layer: int | None = None, kind: str = "list", val_store: FeatureStore | None = None,
                   progress=None, **hyperparams) -> LanguageRanker:
    """Fit a ranker on a store's features at `layer`, then a Platt calibration on the same data."""
    layer = store.layers[0] if layer is None else layer
    queries = store_queries(store, layer)
    val_queries = store_queries(val_store, layer) if val_store is not None else None
    ranker = LanguageRanker(kind=kind, **hyperparams).fit(
        queries, val_queries=val_queries, fingerprint=store.feature_fingerprint(layer), progress=progress
    )
    scores = torch.cat(ranker.score_queries(queries))
    a, b = fit_platt(scores, store.labels().flatten())
    ranker.metrics_ = {"platt": [a, b]}
    ranker.training_data_ = {"store_problems": len(store.problems), "candidates_per_problem": store.num_candidates,
                             "families": sorted(set(store.families)), "layer": layer}
    return ranker


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
    """A scorer for `ranker.evaluation.evaluate_selection`: (P, n) candidate indices -> (P, n) scores."""
    return lambda index: score_store(ranker, store, index)


def probabilities(ranker: LanguageRanker, scores: torch.Tensor) -> torch.Tensor:
    """Calibrated P(correct) for scores; uses the Platt fit saved with the ranker."""
    platt = getattr(ranker, "metrics_", {}).get("platt")
    if platt is None:
        raise ValueError("this ranker has no calibration; train it with ranker.pipeline.train_on_store")
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
