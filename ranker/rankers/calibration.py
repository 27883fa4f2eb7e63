"""Turn a ranker's scores into probabilities of being correct (Platt scaling)."""

from __future__ import annotations

import torch


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
