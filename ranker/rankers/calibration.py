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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ranker.core.cards import CardEntry

CALIBRATION_SOURCES = ("training", "out_of_fold")  # where the calibrated scores come from (module docstring)


@dataclass(frozen=True)
class PlattCalibration(CardEntry):
    """P(correct) = sigmoid(a * score + b), fitted on scores from `source`."""

    a: float
    b: float
    source: str = "training"  # one of CALIBRATION_SOURCES

    def __post_init__(self) -> None:
        if self.source not in CALIBRATION_SOURCES:
            raise ValueError(f"calibration source must be one of {CALIBRATION_SOURCES}, got {self.source!r}")
        for name in ("a", "b"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
                raise ValueError(f"Platt {name} must be a finite number, got {value!r}")

    def __call__(self, scores: Tensor) -> Tensor:
        """Calibrated P(correct) of `scores` (any shape), same shape and dtype."""
        return torch.sigmoid(self.a * scores + self.b)


def fit_platt(scores: Tensor, labels: Tensor, steps: int = 200) -> tuple[float, float]:
    """Platt scaling: (a, b) minimising the BCE of sigmoid(a * score + b) against labels. (M,), (M,) -> floats.

    Float64 L-BFGS from (1, 0): deterministic, and it needs no RNG.
    """
    scores, labels = scores.flatten().double(), labels.flatten().double()
    if scores.shape != labels.shape or scores.numel() == 0:
        raise ValueError(f"need one label per score and at least one score, "
                         f"got {scores.numel()} scores and {labels.numel()} labels")
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


def fit_calibration(scores: Tensor, labels: Tensor, source: str = "training") -> PlattCalibration:
    """The Platt calibration of `scores` (M,) against 0/1 `labels` (M,), recorded as coming from `source`."""
    if source not in CALIBRATION_SOURCES:
        raise ValueError(f"calibration source must be one of {CALIBRATION_SOURCES}, got {source!r}")
    a, b = fit_platt(scores, labels)
    return PlattCalibration(a, b, source)
