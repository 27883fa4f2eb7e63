"""Fuse a ranker's scores with each candidate's mean log-probability.

The mean token log-probability of a candidate is captured during sampling at no cost, like the
hidden states. On its own it is a strong baseline ("max mean log-prob"); the hidden-state ranker
sees different evidence. The fused score is

    fused_k = s_k + w * mean_logprob_k          s: (K,) ranker scores, mean_logprob: (K,)

`w` is chosen by cross-fitting, so that it is not fooled by a ranker that has memorised its own
training data:
1. split the training queries into `folds` parts (seeded);
2. train a ranker on all parts but one and score the held-out part, for every part, giving
   out-of-fold scores for every training query;
3. for each c in `WEIGHT_GRID`, put w = c * std(s) / std(mean_logprob) (mean within-query standard
   deviations of the out-of-fold scores), and count how often the top fused candidate has the
   best label;
4. keep the smallest c with the highest count (c = 0 turns fusion off when it does not help).

`w` is in absolute units, so fusing does not depend on which other candidates are in the list.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ranker.data import QueryLike

WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


def query_logprobs(queries: Sequence[QueryLike]) -> list[Tensor] | None:
    """Every query's (K,) mean log-probs, or None if any query lacks them."""
    values = [getattr(q, "mean_logprob", None) for q in queries]
    if not values or any(v is None for v in values):
        return None
    return [torch.as_tensor(v, dtype=torch.float32).flatten() for v in values]


def fold_indices(num_queries: int, folds: int, seed: int) -> list[list[int]]:
    """A seeded split of range(num_queries) into `folds` parts of near-equal size."""
    if folds < 2:
        raise ValueError(f"fusion needs at least 2 folds, got {folds}")
    if num_queries < folds:
        raise ValueError(f"cannot cross-fit {num_queries} queries in {folds} folds")
    order = torch.randperm(num_queries, generator=torch.Generator().manual_seed(seed)).tolist()
    return [sorted(order[f::folds]) for f in range(folds)]


def _mean_within_std(values: Sequence[Tensor]) -> float:
    stds = [v.float().std(unbiased=False) for v in values if v.numel() > 1]
    return float(torch.stack(stds).mean()) if stds else 0.0


def fuse(scores: Tensor, mean_logprob: Tensor | None, weight: float) -> Tensor:
    """scores (K,) + weight * mean_logprob (K,); the scores unchanged when weight is 0."""
    if weight == 0.0:
        return scores
    if mean_logprob is None:
        raise ValueError(
            f"this ranker fuses its scores with the candidates' mean log-prob (weight {weight:.4g}); "
            "pass mean_logprob, a (K,) tensor"
        )
    mean_logprob = torch.as_tensor(mean_logprob, dtype=scores.dtype, device=scores.device).flatten()
    if mean_logprob.shape != scores.shape:
        raise ValueError(f"mean_logprob has shape {tuple(mean_logprob.shape)}, expected {tuple(scores.shape)}")
    return scores + weight * mean_logprob


def choose_weight(oof_scores: Sequence[Tensor], logprobs: Sequence[Tensor], labels: Sequence[Tensor]) -> tuple[float, dict]:
    """The fusion weight from out-of-fold scores (see the module docstring).

    Each argument holds one (K_q,) tensor per query. Returns (w, report) where report has the
    chosen multiplier c, the two standard deviations and the accuracy at every c of the grid.
    """
    scale_s, scale_lp = _mean_within_std(oof_scores), _mean_within_std(logprobs)
    report = {"c": 0.0, "std_scores": scale_s, "std_logprob": scale_lp, "grid": {}}
    if scale_s == 0.0 or scale_lp == 0.0:
        return 0.0, report
    best_c, best_hits = 0.0, -1.0
    for c in WEIGHT_GRID:
        w = c * scale_s / scale_lp
        hits = sum(float(y[torch.argmax(s + w * lp)] == y.max()) for s, lp, y in zip(oof_scores, logprobs, labels))
        report["grid"][str(c)] = hits / len(labels)
        if hits > best_hits:
            best_c, best_hits = c, hits
    report["c"] = best_c
    return best_c * scale_s / scale_lp, report
