"""Training losses for rankers. All take padded groups: scores, labels, mask of shape (B, K).

| name | data      | labels | loss                                                   |
|------|-----------|--------|--------------------------------------------------------|
| kl   | listwise  | binary | KL(pi_y || softmax(s)), pi_y = y / sum(y) within a group |
| bce  | pointwise | binary | BCE(sigmoid(s), y)                                     |
| mse  | either    | real   | mean (s - y)^2                                         |
| bt   | listwise  | any    | Bradley-Terry: -log sigmoid(s_w - s_l) for y_w > y_l   |

Padded positions (mask False) never contribute. Each loss is a mean, so its size does not
depend on batch size or group size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ("kl", "bce", "mse", "bt")


def _default_mask(scores: Tensor, mask: Tensor | None) -> Tensor:
    return torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.bool()


def listwise_kl_loss(scores: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over groups of KL(pi_y || softmax(s)), with pi_y = y / sum(y) over the real candidates.

    scores, labels, mask: (B, K). Groups whose labels sum to 0 have no target distribution and are
    skipped (the data pipeline drops them already). 0 * log 0 counts as 0. Returns a scalar.
    """
    mask = _default_mask(scores, mask)
    y = labels.to(scores.dtype).masked_fill(~mask, 0.0)
    total = y.sum(dim=1, keepdim=True)  # (B, 1)
    valid = total.squeeze(1) > 0  # (B,)
    if not valid.any():
        return scores.sum() * 0.0  # keeps the graph, so backward() still works
    target = y / total.clamp_min(1e-12)  # (B, K), rows sum to 1 where valid
    log_probs = F.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
    # target * (log target - log p) with 0 * anything = 0 (torch.xlogy does the 0 log 0 part).
    pointwise_kl = torch.xlogy(target, target) - target * log_probs.masked_fill(~mask, 0.0)
    return pointwise_kl.sum(dim=1)[valid].mean()


def pointwise_bce_loss(scores: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean binary cross-entropy of sigmoid(scores) against labels over real candidates. (B, K) -> scalar."""
    mask = _default_mask(scores, mask)
    losses = F.binary_cross_entropy_with_logits(scores, labels.to(scores.dtype), reduction="none")
    return losses[mask].mean()


def mse_loss(scores: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error between scores and real-valued labels over real candidates. (B, K) -> scalar."""
    mask = _default_mask(scores, mask)
    return ((scores - labels.to(scores.dtype)) ** 2)[mask].mean()


def bradley_terry_loss(winner_scores: Tensor, loser_scores: Tensor) -> Tensor:
    """Mean of -log sigmoid(s_w - s_l) over paired scores of any matching shape (N,) -> scalar."""
    return F.softplus(loser_scores - winner_scores).mean()  # softplus(-x) = -log sigmoid(x), stably


def pairwise_bt_loss(scores: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Bradley-Terry over every ordered pair (w, l) in a group with y_w > y_l. (B, K) -> scalar.

    Every such pair in the batch counts once (a group with more pairs weighs more). A group whose
    labels are all equal has no pairs and contributes nothing.
    """
    mask = _default_mask(scores, mask)
    y = labels.to(scores.dtype)
    # (B, K, K): entry [b, w, l] is a pair when both are real and y_w > y_l.
    pairs = (y[:, :, None] > y[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    if not pairs.any():
        return scores.sum() * 0.0
    margin = scores[:, :, None] - scores[:, None, :]  # s_w - s_l
    return F.softplus(-margin)[pairs].mean()


LOSS_FUNCTIONS = {"kl": listwise_kl_loss, "bce": pointwise_bce_loss, "mse": mse_loss, "bt": pairwise_bt_loss}


def default_loss(kind: str, label_type: str) -> str:
    """The paper's pairing: listwise KL / pointwise BCE for binary labels, MSE for real labels."""
    if label_type == "real":
        return "mse"
    return "kl" if kind == "list" else "bce"


def get_loss(name: str):
    """The loss function called `name` (one of LOSSES)."""
    if name not in LOSS_FUNCTIONS:
        raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")
    return LOSS_FUNCTIONS[name]
