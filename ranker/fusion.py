"""Fuse a ranker's scores with two signals that sampling gives for free.

For the K candidates of one query:
- `mean_logprob` (K,): each candidate's mean token log-probability, captured while sampling,
  like the hidden states. On its own it is the "max mean log-prob" baseline.
- `vote_share` (K,): the share of the K candidates whose answer key (`ranker.tasks.voting`)
  equals the candidate's own; 0 for a candidate without a key. On its own it is majority vote
  (self-consistency). It is a property of the candidate set, so it is computed from the
  candidates actually being ranked, never from a larger pool.

The hidden-state ranker sees different evidence from both. The fused score is

    fused_k = a * s_k + b * mean_logprob_k + c * vote_share_k        s: (K,) ranker scores

(a, b, c) are the `weights`, in absolute units, so that fusing does not depend on which other
candidates are in the list. They are fitted by cross-fitting, so that they are not fooled by a
ranker that has memorised its own training data:
1. split the training queries into `folds` parts (seeded);
2. train a ranker on all parts but one and score the held-out part, for every part, giving
   out-of-fold scores for every training query;
3. fit (a, b, c) by listwise logistic regression on those out-of-fold scores: softmax over each
   query's candidates of the fused score, cross-entropy against a uniform distribution over the
   candidates with the query's best label (queries whose labels are all equal carry no signal
   and are left out), plus `l2` * |weights|^2 on features scaled to unit within-query spread;
4. keep the fit only if its out-of-fold best-of-N is at least the ranker's alone; otherwise the
   weights are {"ranker": 1.0} (fusion off).

A signal that some training query lacks (no log-probs, no answer keys) is not fused, and neither
is one that never varies within a query.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

import torch
from torch import Tensor

from ranker.data import QueryLike

SIGNALS = ("mean_logprob", "vote_share")
RANKER_ONLY = {"ranker": 1.0}


def vote_shares(vote_keys: Sequence[Hashable | None]) -> Tensor:
    """(K,) share of the K candidates that give each candidate's answer key; 0 where the key is None.

    E.g. ["7", "8", "7", None] -> [0.5, 0.25, 0.5, 0.0].
    """
    keys = list(vote_keys)
    if not keys:
        return torch.zeros(0)
    counts = Counter(key for key in keys if key is not None)
    return torch.tensor([counts[key] / len(keys) if key is not None else 0.0 for key in keys], dtype=torch.float32)


def query_signals(query: QueryLike) -> dict[str, Tensor]:
    """The free signals a query carries, each (K,): "mean_logprob" and/or "vote_share"."""
    signals = {}
    mean_logprob = getattr(query, "mean_logprob", None)
    if mean_logprob is not None:
        signals["mean_logprob"] = torch.as_tensor(mean_logprob, dtype=torch.float32).flatten()
    vote_keys = getattr(query, "vote_keys", None)
    if vote_keys is not None:
        signals["vote_share"] = vote_shares(vote_keys)
    return signals


def fold_indices(num_queries: int, folds: int, seed: int) -> list[list[int]]:
    """A seeded split of range(num_queries) into `folds` parts of near-equal size."""
    if folds < 2:
        raise ValueError(f"fusion needs at least 2 folds, got {folds}")
    if num_queries < folds:
        raise ValueError(f"cannot cross-fit {num_queries} queries in {folds} folds")
    order = torch.randperm(num_queries, generator=torch.Generator().manual_seed(seed)).tolist()
    return [sorted(order[f::folds]) for f in range(folds)]


def fuse(scores: Tensor, weights: Mapping[str, float], mean_logprob: Tensor | None = None,
         vote_keys: Sequence[Hashable | None] | None = None) -> Tensor:
    """The fused (K,) scores from ranker scores (K,); `scores` itself when the weights are ranker-only.

    mean_logprob (K,) is required when weights["mean_logprob"] != 0, and vote_keys (K answer keys,
    None for "no answer") when weights["vote_share"] != 0; ValueError otherwise.
    """
    weights = dict(weights) or RANKER_ONLY
    if all(weights.get(name, 0.0) == 0.0 for name in SIGNALS) and weights.get("ranker", 1.0) == 1.0:
        return scores
    fused = weights.get("ranker", 1.0) * scores
    K = scores.shape[0]
    if weights.get("mean_logprob", 0.0) != 0.0:
        if mean_logprob is None:
            raise ValueError(
                f"this ranker fuses its scores with the candidates' mean log-prob (weight {weights['mean_logprob']:.4g}); "
                "pass mean_logprob, a (K,) tensor"
            )
        mean_logprob = torch.as_tensor(mean_logprob, dtype=scores.dtype, device=scores.device).flatten()
        if mean_logprob.shape != scores.shape:
            raise ValueError(f"mean_logprob has shape {tuple(mean_logprob.shape)}, expected {tuple(scores.shape)}")
        fused = fused + weights["mean_logprob"] * mean_logprob
    if weights.get("vote_share", 0.0) != 0.0:
        if vote_keys is None:
            raise ValueError(
                f"this ranker fuses its scores with the candidates' vote share (weight {weights['vote_share']:.4g}); "
                "pass vote_keys, one answer key per candidate (ranker.tasks.voting; None where a candidate has no answer)"
            )
        if len(vote_keys) != K:
            raise ValueError(f"got {len(vote_keys)} vote_keys for {K} candidates")
        fused = fused + weights["vote_share"] * vote_shares(vote_keys).to(scores.device, scores.dtype)
    return fused


def _within_spread(values: Sequence[Tensor]) -> float:
    """Mean over queries of the within-query standard deviation (0 if nothing varies)."""
    stds = [v.double().std(unbiased=False) for v in values if v.numel() > 1]
    return float(torch.stack(stds).mean()) if stds else 0.0


def _best_of_n(scores: Sequence[Tensor], labels: Sequence[Tensor]) -> float:
    return sum(float(y[torch.argmax(s)] == y.max()) for s, y in zip(scores, labels)) / max(len(labels), 1)


def fit_weights(oof_scores: Sequence[Tensor], signals: Sequence[Mapping[str, Tensor]], labels: Sequence[Tensor],
                l2: float = 0.01) -> tuple[dict[str, float], dict]:
    """The fusion weights from out-of-fold ranker scores (see the module docstring, steps 3 and 4).

    oof_scores, labels: one (K_q,) tensor per query; signals: one {name: (K_q,)} per query.
    Returns (weights, report). weights has "ranker" plus every fused signal, in absolute units;
    report has the signals used, the standardised weights and the out-of-fold best-of-N of the
    ranker alone and fused.
    """
    if not len(oof_scores) == len(signals) == len(labels):
        raise ValueError(f"got {len(oof_scores)} scores, {len(signals)} signal sets and {len(labels)} label sets")
    columns = {"ranker": list(oof_scores)}
    for name in SIGNALS:
        if signals and all(name in s for s in signals):
            columns[name] = [s[name] for s in signals]
    spreads = {name: _within_spread(values) for name, values in columns.items()}
    used = [name for name in columns if spreads[name] > 0.0]
    ranker_alone = _best_of_n(oof_scores, labels)
    report = {"signals": [n for n in used if n != "ranker"], "l2": l2, "oof_best_of_n_ranker": ranker_alone}
    keep = [q for q, y in enumerate(labels) if y.numel() > 1 and bool((y != y.max()).any())]
    if "ranker" not in used or len(used) < 2 or not keep:
        report.update(oof_best_of_n_fused=ranker_alone, standardised={}, kept=False)
        return dict(RANKER_ONLY), report

    # (Q, K_max, F) standardised features, padded; pad candidates get -inf logits.
    K_max = max(labels[q].numel() for q in keep)
    X = torch.zeros(len(keep), K_max, len(used), dtype=torch.float64)
    target = torch.zeros(len(keep), K_max, dtype=torch.float64)
    pad = torch.ones(len(keep), K_max, dtype=torch.bool)
    for row, q in enumerate(keep):
        K = labels[q].numel()
        for f, name in enumerate(used):
            X[row, :K, f] = columns[name][q].double() / spreads[name]
        best = (labels[q] == labels[q].max()).double()
        target[row, :K] = best / best.sum()
        pad[row, :K] = False
    w = torch.zeros(len(used), dtype=torch.float64)
    w[0] = 1.0  # start from the ranker alone
    w.requires_grad_(True)
    optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = (X @ w).masked_fill(pad, float("-inf"))
        log_p = torch.log_softmax(logits, dim=1).masked_fill(pad, 0.0)
        loss = -(target * log_p).sum(1).mean() + l2 * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    standardised = {name: float(value) for name, value in zip(used, w.detach())}
    weights = {name: standardised[name] / spreads[name] for name in used}
    fused = [sum(weights[name] * columns[name][q].double() for name in used) for q in range(len(labels))]
    fused_accuracy = _best_of_n(fused, labels)
    kept = fused_accuracy >= ranker_alone
    report.update(oof_best_of_n_fused=fused_accuracy, standardised=standardised, kept=kept)
    return (weights if kept else dict(RANKER_ONLY)), report
