"""How a ranker is trained (`TrainConfig`), stored in every checkpoint card.

A config module of its own, so that the checkpoint can read a card without importing the
training code. The fusion settings are not training settings: they are `FusionConfig`
(ranker.rankers.fusion), saved in the card under their own key.

How the defaults were chosen: a sweep of optimiser, learning rate, epochs and ranker kind on
synthetic queries (`ranker.rankers.synthetic`; the README's "Design checks on synthetic data").
The ranker is robust to the optimiser and the learning rate; what matters is enough steps, so the
paper's single epoch, which suits its many candidates per query, under-trains on fewer.
"""

from __future__ import annotations

from dataclasses import dataclass

from ranker.core.cards import CardEntry
from ranker.core.training_loop import LoopConfig
from ranker.rankers.losses import LOSSES


@dataclass
class TrainConfig(CardEntry):
    """How to train a ranker. Stored in every checkpoint card."""

    optimizer: str = "adamw"  # "adamw" or "sgd"
    lr: float = 3e-3  # peak learning rate
    momentum: float = 0.9  # SGD momentum (ignored by AdamW)
    weight_decay: float = 1e-4  # the paper's value; applied to weight matrices only, not norms/biases/scales
    batch_size: int = 64  # groups per step (listwise) or candidates per step (pointwise)
    epochs: int = 10  # passes over the data; listwise groups are redrawn every epoch
    steps: int | None = None  # if set, train exactly this many steps instead of `epochs` passes
    schedule: str = "cosine"  # "constant" or "cosine" (decays to 0 at the last step)
    group_size: int = 8  # K, candidates drawn per listwise group
    groups_per_query: int = 4  # listwise groups drawn per query per epoch
    loss: str = "auto"  # "auto" (kl for list, bce for point; mse for real labels) or one of "kl", "bce", "mse", "bt"
    grad_clip: float | None = 1.0  # max gradient norm; None disables clipping
    seed: int = 0  # seeds the initial weights, group sampling, batch order and dropout: same seed, same weights
    device: str = "cpu"  # where to train ("cpu", "cuda", ...)
    # torch CPU threads while training (restored after; see ranker.core.training_loop). The setting is
    # process-wide: use None (leave as is) when other torch work runs in parallel in this process.
    num_threads: int | None = 1
    eval_every: int = 0  # evaluate on val_queries every this many steps; 0 = only after the last step

    def __post_init__(self) -> None:
        LoopConfig.of(self)  # checks optimizer, lr, weight_decay, schedule, grad_clip, num_threads, eval_every
        if self.loss != "auto" and self.loss not in LOSSES:
            raise ValueError(f"loss must be 'auto' or one of {LOSSES}, got {self.loss!r}")
        for name in ("batch_size", "epochs", "group_size", "groups_per_query"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {self.group_size}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"steps must be None or a positive int, got {self.steps!r}")
