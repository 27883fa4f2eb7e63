"""How good a ranker's choices and scores are. Plain torch; no model code here.

- Best-of-N accuracy: the mean label of the candidate each query's selection picks (for 0/1 labels,
  the fraction of queries answered correctly). Beside it, `random` (the expected label of a uniformly
  random pick, i.e. first-sample accuracy in expectation) and `oracle` (a correct candidate exists).
- AUROC: how well scores separate correct from incorrect candidates, pooled over all candidates.
  Ties count one half. Undefined (nan) without both classes.
- ECE: expected calibration error of probabilities in [0, 1] against 0/1 labels, with equal-width bins.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import Tensor


def best_candidates(scores: Tensor) -> Tensor:
    """The best-of-N pick: index of the highest score along the last axis, the first one on ties.

    (K,) -> a 0-d int64 tensor (use int()); (P, K) -> (P,). The one selection rule of every
    scorer (rankers, reward models, fused scores): `torch.argmax` returns the first maximum.
    """
    scores = torch.as_tensor(scores)
    if scores.dim() == 0 or scores.shape[-1] == 0:
        raise ValueError(f"need at least one candidate score along the last axis, got shape {tuple(scores.shape)}")
    return torch.argmax(scores, dim=-1)


def selection_accuracy(selected: Sequence[int], labels: Sequence[Tensor]) -> float:
    """Mean of labels[q][selected[q]] over queries."""
    if len(selected) != len(labels):
        raise ValueError(f"{len(selected)} selections for {len(labels)} queries")
    if len(labels) == 0:
        raise ValueError("need at least one query")
    return sum(float(y[int(s)]) for s, y in zip(selected, labels)) / len(labels)


def best_of_n_accuracy(scores: Sequence[Tensor], labels: Sequence[Tensor]) -> float:
    """Accuracy of picking each query's highest-scoring candidate (first one on ties)."""
    return selection_accuracy([int(best_candidates(s)) for s in scores], labels)


def random_accuracy(labels: Sequence[Tensor]) -> float:
    """Expected accuracy of a uniformly random pick: mean over queries of each query's mean label."""
    return sum(float(y.float().mean()) for y in labels) / len(labels)


def oracle_accuracy(labels: Sequence[Tensor]) -> float:
    """Accuracy of a perfect selector: mean over queries of each query's best label."""
    return sum(float(y.max()) for y in labels) / len(labels)


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve of `scores` (N,) as a predictor of `labels` (N,) in {0, 1}.

    Mann-Whitney form: the probability that a random positive outscores a random negative,
    ties counting 1/2. Returns nan when one class is missing.
    """
    scores, labels = scores.flatten().double(), labels.flatten()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} differ in shape")
    positive = labels > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # Average ranks (1-based), so tied scores share the mean of their ranks.
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    first_rank = counts.cumsum(0) - counts + 1  # rank of the first element of each tie block
    ranks = (first_rank + (counts - 1) / 2.0)[inverse]
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def reliability_bins(probs: Tensor, labels: Tensor, num_bins: int = 10) -> list[dict]:
    """A reliability diagram's data: per equal-width bin of probability, its `lower` and `upper` edges,
    `count`, `mean_probability` and `observed` (mean label); empty bins are left out. (N,), (N,) -> rows.
    """
    probs, labels = probs.flatten().double(), labels.flatten().double()
    if probs.shape != labels.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and labels {tuple(labels.shape)} differ in shape")
    if probs.numel() == 0:
        raise ValueError("need at least one prediction")
    if probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"probs must lie in [0, 1], got range [{float(probs.min())}, {float(probs.max())}]")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    bins = (probs * num_bins).long().clamp(max=num_bins - 1)  # p = 1.0 goes in the last bin
    rows = []
    for b in range(num_bins):
        in_bin = bins == b
        if in_bin.any():
            rows.append({"lower": b / num_bins, "upper": (b + 1) / num_bins, "count": int(in_bin.sum()),
                         "mean_probability": float(probs[in_bin].mean()), "observed": float(labels[in_bin].mean())})
    return rows


def expected_calibration_error(probs: Tensor, labels: Tensor, num_bins: int = 10) -> float:
    """Sum over equal-width bins of (bin share) * |mean label - mean probability|. (N,), (N,) -> float."""
    return ece_of_bins(reliability_bins(probs, labels, num_bins))


def ece_of_bins(rows: list[dict]) -> float:
    """ECE from `reliability_bins` rows: the count-weighted mean gap between observed and predicted."""
    total = sum(row["count"] for row in rows)
    return sum(row["count"] / total * abs(row["observed"] - row["mean_probability"]) for row in rows)


@dataclass
class RankingMetrics:
    """Quality of a ranker on a set of queries (all of each query's candidates scored together)."""

    best_of_n: float  # mean label of the top-scored candidate
    random: float  # expected mean label of a random pick (first-sample accuracy in expectation)
    oracle: float  # mean best label: the ceiling for any selector
    auroc: float  # pooled AUROC of scores against labels > 0.5 (nan without both classes)
    num_queries: int

    def to_dict(self) -> dict:
        return asdict(self)


def ranking_metrics(scores: Sequence[Tensor], labels: Sequence[Tensor]) -> RankingMetrics:
    """All of the above for per-query `scores[q]` (K_q,) and `labels[q]` (K_q,)."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} score vectors for {len(labels)} label vectors")
    return RankingMetrics(
        best_of_n=best_of_n_accuracy(scores, labels),
        random=random_accuracy(labels),
        oracle=oracle_accuracy(labels),
        auroc=auroc(torch.cat([s.flatten() for s in scores]), torch.cat([y.flatten() for y in labels])),
        num_queries=len(labels),
    )
