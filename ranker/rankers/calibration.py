"""Turn a ranker's scores into probabilities of being correct (Platt scaling), owned by the estimator.

The listwise ranker is trained with a softmax over each group, so its raw scores are only
comparable within a query; a one-dimensional logistic fit, sigmoid(a * score + b), turns them into
probabilities that can be shown to users and checked with ECE. `LanguageRanker.fit(...,
calibrate=True)` fits it and keeps it as the fitted attribute `calibration_`, saved in the card.

Which scores the fit sees is the calibration's `source`, recorded in the card:
- "out_of_fold" (what `fit` does by default): the scores that the cross-fitting rankers
  (ranker.rankers.fusion) give the training queries they were not trained on, fused with the
  fitted weights. They behave like scores of new prompts, so P(correct) is not inflated by the
  ranker having seen the very candidates it is calibrated on.
- "training": the fitted ranker's own (fused) scores on its training candidates. In-sample scores
  are more confident than the ranker is on new data; it is used only when there are too few
  queries to cross-fit, or when asked for.

**By regime.** A ranker with a fallback (ranker.rankers.fallback) scores an instruction far from
its training data with other weights: its scores there are on the fallback rule's scale (e.g. the
log share of a weighted vote), not the fused ranker's. One (a, b) fitted where the fallback hardly
applies would then be wrong exactly on the prompts that are least like the training data. So
such a ranker gets a second pair, fitted where the fallback applies, and an instruction's pair is
the same blend as its weights, by its share s of the fallback (0 near the data, 1 far away):

    P(correct) = sigmoid(((1 - s) a + s far_a) * score + (1 - s) b + s far_b)

All four are one logistic fit (`fit_platt_by_regime`) over the in-domain and out-of-domain
examples that chose the fallback (the cross-fitting folds, and instruction clusters scored by
rankers trained without them), each example with its own share: the same stand-in for an unseen
task family that the fallback's rule was chosen on. Its source is "out_of_fold" too.

**By cluster.** A fused ranker with several instruction clusters (ranker.rankers.fusion) scores
each cluster with its own weights, so the same fused score means a different P(correct) in
different clusters, and the clusters' base rates differ (a family where 6% of the candidates are
right next to one where 35% are). One near pair then over-states some clusters and under-states
others, by as much as the base rates differ. So the near regime gets, per cluster c, offsets
(da_c, db_c) to its slope and intercept:

    P(correct) = sigmoid(((1 - s)(a + da_c) + s far_a) * score + (1 - s)(b + db_c) + s far_b)

fitted in the same logistic fit, on the in-domain examples (the cross-fitting folds, which the
cluster's own weights scored); the out-of-domain ones, scored with weights fitted without them,
inform only the shared terms. A cluster with less than MIN_REGIME_WEIGHT of near weight keeps
offsets 0, and a card without offsets (`cluster_a` None) has one near pair, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ranker.core.cards import CardEntry

CALIBRATION_SOURCES = ("training", "out_of_fold")  # where the calibrated scores come from (module docstring)


@dataclass(frozen=True)
class PlattCalibration(CardEntry):
    """P(correct) = sigmoid(a * score + b), fitted on scores from `source`; by regime when far_a/far_b are set."""

    a: float
    b: float
    source: str = "training"  # one of CALIBRATION_SOURCES
    far_a: float | None = None  # the fallback regime's slope and intercept (module docstring); None: one regime
    far_b: float | None = None
    # Per fusion cluster, offsets to the near regime's slope and intercept (module docstring); None: none.
    cluster_a: tuple[float, ...] | None = None
    cluster_b: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.source not in CALIBRATION_SOURCES:
            raise ValueError(f"calibration source must be one of {CALIBRATION_SOURCES}, got {self.source!r}")
        if (self.far_a is None) != (self.far_b is None):
            raise ValueError(f"Platt far_a and far_b are set together or not at all, got {self.far_a!r} and {self.far_b!r}")
        for name in ("a", "b") + (("far_a", "far_b") if self.by_regime else ()):
            _check_finite(f"Platt {name}", getattr(self, name))
        if (self.cluster_a is None) != (self.cluster_b is None):
            raise ValueError("Platt cluster_a and cluster_b are set together or not at all, "
                             f"got {self.cluster_a!r} and {self.cluster_b!r}")
        if self.cluster_a is not None:
            if not self.by_regime:
                raise ValueError("per-cluster Platt offsets need a calibration by regime (far_a and far_b)")
            for name in ("cluster_a", "cluster_b"):
                values = getattr(self, name)
                if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
                    raise ValueError(f"Platt {name} must be a non-empty list of numbers, got {values!r:.80}")
                for value in values:
                    _check_finite(f"Platt {name} entry", value)
                object.__setattr__(self, name, tuple(float(v) for v in values))  # a card's JSON list -> tuple
            if len(self.cluster_a) != len(self.cluster_b):
                raise ValueError(f"Platt cluster_a has {len(self.cluster_a)} entries, cluster_b {len(self.cluster_b)}")

    @property
    def num_clusters(self) -> int:
        """How many fusion clusters have their own offsets (0: none)."""
        return 0 if self.cluster_a is None else len(self.cluster_a)

    @property
    def by_regime(self) -> bool:
        """True when P(correct) also depends on the instruction's share of the fallback."""
        return self.far_a is not None

    def __call__(self, scores: Tensor, shares: Tensor | float | None = None, clusters: Tensor | int | None = None) -> Tensor:
        """Calibrated P(correct) of `scores` (any shape), same shape and dtype.

        shares: the fallback's share of each score's instruction in [0, 1], broadcastable to `scores`
        (e.g. (P, 1) for (P, n) scores); needed by a calibration by regime, ignored otherwise.
        clusters: the fusion cluster of each score's instruction (integers in [0, num_clusters)),
        broadcastable like `shares`; needed when the calibration has per-cluster offsets, ignored otherwise.
        """
        if not self.by_regime:
            return torch.sigmoid(self.a * scores + self.b)
        if shares is None:
            raise ValueError("this calibration is by regime: P(correct) needs the fallback's share of each instruction")
        shares = torch.as_tensor(shares, dtype=scores.dtype, device=scores.device)
        near_a, near_b = self.a, self.b
        if self.cluster_a is not None:
            if clusters is None:
                raise ValueError("this calibration has per-cluster offsets: P(correct) needs each instruction's cluster")
            clusters = torch.as_tensor(clusters, device=scores.device)
            if clusters.dtype.is_floating_point or clusters.dtype == torch.bool or (
                    clusters.numel() and not bool(((clusters >= 0) & (clusters < self.num_clusters)).all())):
                raise ValueError(f"clusters must be integers in [0, {self.num_clusters}), got {clusters.tolist()!r:.80}")
            offsets_a = torch.tensor(self.cluster_a, dtype=scores.dtype, device=scores.device)
            offsets_b = torch.tensor(self.cluster_b, dtype=scores.dtype, device=scores.device)
            near_a, near_b = self.a + offsets_a[clusters], self.b + offsets_b[clusters]
        slope = (1 - shares) * near_a + shares * self.far_a
        return torch.sigmoid(slope * scores + (1 - shares) * near_b + shares * self.far_b)


def fit_platt(scores: Tensor, labels: Tensor, steps: int = 200) -> tuple[float, float]:
    """Platt scaling: (a, b) minimising the BCE of sigmoid(a * score + b) against labels. (M,), (M,) -> floats.

    Float64 L-BFGS from (1, 0): deterministic, and it needs no RNG.
    """
    scores, labels = scores.flatten().double(), labels.flatten().double()
    if scores.shape != labels.shape or scores.numel() == 0:
        raise ValueError(f"need one label per score and at least one score, "
                         f"got {scores.numel()} scores and {labels.numel()} labels")
    a, b = _logistic_fit(torch.stack([scores, torch.ones_like(scores)], dim=1), labels, [1.0, 0.0], steps)
    return a, b


# A regime is fitted only with at least this much weight of examples in it (the sum of their shares,
# or of 1 - share): below it, its slope and intercept would follow a handful of candidates.
MIN_REGIME_WEIGHT = 32.0


def _check_finite(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def fit_platt_by_regime(scores: Tensor, shares: Tensor, labels: Tensor, steps: int = 200, clusters: Tensor | None = None,
                        num_clusters: int = 0) -> tuple:
    """(a, b, far_a, far_b) minimising the BCE of the blended calibration (module docstring). (M,) x 3 -> floats.

    shares: each example's share of the fallback, in [0, 1]. ValueError when either regime holds
    less than MIN_REGIME_WEIGHT of the examples' weight (it could not be fitted).
    clusters: (M,) each example's fusion cluster in [0, num_clusters), or -1 for an example that
    informs only the shared terms; with num_clusters >= 2 the result also has the per-cluster
    offsets (cluster_a, cluster_b), each a list of num_clusters floats (0 where a cluster has less
    than MIN_REGIME_WEIGHT of near weight).
    """
    scores, shares, labels = scores.flatten().double(), shares.flatten().double(), labels.flatten().double()
    if not scores.shape == shares.shape == labels.shape or scores.numel() == 0:
        raise ValueError(f"need one share and one label per score and at least one score, got {scores.numel()} "
                         f"scores, {shares.numel()} shares and {labels.numel()} labels")
    if not bool(((shares >= 0) & (shares <= 1)).all()):
        raise ValueError("fallback shares must lie in [0, 1]")
    near_weight, far_weight = float((1 - shares).sum()), float(shares.sum())
    if min(near_weight, far_weight) < MIN_REGIME_WEIGHT:
        raise ValueError(f"each regime needs a weight of at least {MIN_REGIME_WEIGHT:g} examples, "
                         f"got {near_weight:.1f} near and {far_weight:.1f} far")
    features = torch.stack([(1 - shares) * scores, 1 - shares, shares * scores, shares], dim=1)
    if clusters is None or num_clusters < 2:
        a, b, far_a, far_b = _logistic_fit(features, labels, [1.0, 0.0, 1.0, 0.0], steps)
        return a, b, far_a, far_b
    clusters = torch.as_tensor(clusters).flatten()
    if clusters.shape != scores.shape or clusters.dtype.is_floating_point or not bool(
            ((clusters >= -1) & (clusters < num_clusters)).all()):
        raise ValueError(f"need one cluster in [-1, {num_clusters}) per score, got {clusters.numel()} "
                         f"for {scores.numel()} scores")
    near = 1 - shares
    fitted = [c for c in range(num_clusters) if float((near * (clusters == c)).sum()) >= MIN_REGIME_WEIGHT]
    members = torch.stack([(clusters == c).double() * near for c in fitted], dim=1) if fitted else torch.zeros(len(scores), 0)
    features = torch.cat([features, members * scores[:, None], members], dim=1)
    weights = _logistic_fit(features, labels, [1.0, 0.0, 1.0, 0.0] + [0.0] * (2 * len(fitted)), steps)
    cluster_a, cluster_b = [0.0] * num_clusters, [0.0] * num_clusters
    for j, c in enumerate(fitted):
        cluster_a[c], cluster_b[c] = weights[4 + j], weights[4 + len(fitted) + j]
    return (*weights[:4], cluster_a, cluster_b)


def _logistic_fit(features: Tensor, labels: Tensor, start: list[float], steps: int) -> list[float]:
    """Weights w (F,) minimising the BCE of sigmoid(features (M, F) @ w) against labels (M,); float64 L-BFGS from `start`."""
    weights = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(features @ weights, labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach().tolist()


def fit_calibration(scores: Tensor, labels: Tensor, source: str = "training") -> PlattCalibration:
    """The Platt calibration of `scores` (M,) against 0/1 `labels` (M,), recorded as coming from `source`."""
    if source not in CALIBRATION_SOURCES:
        raise ValueError(f"calibration source must be one of {CALIBRATION_SOURCES}, got {source!r}")
    a, b = fit_platt(scores, labels)
    return PlattCalibration(a, b, source)


def fit_calibration_by_regime(scores: Tensor, shares: Tensor, labels: Tensor, clusters: Tensor | None = None,
                              num_clusters: int = 0) -> PlattCalibration:
    """The out-of-fold calibration by regime of `scores` (M,) with the fallback's `shares` (M,) against `labels` (M,);
    with `clusters` (M,) and num_clusters >= 2, with per-cluster offsets (`fit_platt_by_regime`)."""
    fitted = fit_platt_by_regime(scores, shares, labels, clusters=clusters, num_clusters=num_clusters)
    a, b, far_a, far_b = fitted[:4]
    offsets = (tuple(fitted[4]), tuple(fitted[5])) if len(fitted) == 6 else (None, None)
    return PlattCalibration(a, b, "out_of_fold", far_a, far_b, *offsets)
