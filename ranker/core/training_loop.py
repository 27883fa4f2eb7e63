"""The one training loop of the rankers and the reward models: `run_training`.

Both train a small set of weights with AdamW (or SGD), a constant or cosine learning-rate
schedule, gradient clipping and a periodic evaluation, and report their progress alike. Each
side keeps only what differs: how its batches are drawn and what a batch's loss is
(`ranker.rankers.training.train_ranker`, `ranker.reward.reward_training.train_reward_model`).

Determinism: the batches are drawn by the caller before the loop (so the schedule knows the step
count); inside it, dropout draws from torch's global RNG, seeded with `LoopConfig.seed` in
`ranker.core.seeding.seeded`, so the same seed, weights and batches give the same weights on CPU
and the caller's RNG is untouched.

Threads: a step of a small model is many small ops, and torch's intra-op threads then mostly add
synchronisation, the more so on a busy machine. `LoopConfig.num_threads` sets torch's (process-wide)
CPU thread count for the duration of the loop only, and restores it after.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

import torch
from torch import Tensor

from ranker.core.seeding import seeded

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine")
Batch = TypeVar("Batch")


@dataclass
class LoopConfig:
    """The settings the loop reads; `TrainConfig` and `RewardTrainConfig` each build one (`loop_config()`)."""

    optimizer: str = "adamw"  # "adamw" or "sgd"
    lr: float = 3e-3  # peak learning rate
    momentum: float = 0.9  # SGD momentum (ignored by AdamW)
    weight_decay: float = 1e-4  # on weight matrices only, not on norms, biases or scales
    schedule: str = "cosine"  # "constant" or "cosine" (decays to 0 at the last step)
    grad_clip: float | None = 1.0  # max gradient norm; None disables clipping
    seed: int = 0  # seeds dropout (torch's global RNG) inside the loop
    num_threads: int | None = None  # torch CPU threads during the loop (restored after); None leaves the setting
    eval_every: int = 0  # evaluate every this many steps; 0 = only after the last step

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be None or > 0, got {self.grad_clip!r}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"num_threads must be None or a positive int, got {self.num_threads!r}")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"eval_every must be an int >= 0, got {self.eval_every!r}")

    @classmethod
    def of(cls, config: Any) -> "LoopConfig":
        """The loop settings among the fields of `config` (a dataclass); the ones it lacks keep their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{f.name: getattr(config, f.name) for f in fields(config) if f.name in names})


@dataclass
class TrainProgress:
    """What the progress callback receives after every step."""

    step: int  # 1-based
    total_steps: int
    loss: float
    lr: float  # the learning rate this step used
    val_metrics: dict | None = None  # set on steps where validation ran


@dataclass
class TrainResult:
    """What a training run returns (the rankers' and the reward models')."""

    losses: list[float]  # training loss after every step
    val_history: list[dict] = field(default_factory=list)  # {"step": s, **RankingMetrics} per evaluation
    val_metrics: dict | None = None  # the last evaluation (None without validation data)
    wall_time_s: float = 0.0  # seconds of the whole training call, batch drawing included
    num_steps: int = 0
    loss_name: str = ""  # the loss actually used
    data_summary: dict = field(default_factory=dict)  # counts of the training data (prompts, candidates, groups)

    def to_dict(self) -> dict:
        return asdict(self)


def make_optimizer(parameters: Sequence[torch.nn.Parameter], config: LoopConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over `parameters`, in two groups: weight decay on weight matrices only.

    As in nanoGPT: decaying norms, biases and scales (dim < 2) would only pull them towards 0.
    """
    groups = [{"params": [p for p in parameters if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def lr_factor(schedule: str, total_steps: int) -> Callable[[int], float]:
    """The multiplier of the peak learning rate at each step: 1, or a cosine from 1 to 0 over `total_steps`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Set torch's CPU thread count to `n` for the block (a process-wide setting, hence the restore); None: leave it."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tqdm_progress(total: int, desc: str = "train") -> Callable[[TrainProgress], None]:
    """A progress callback that drives a tqdm bar and closes it after the last step."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step")

    def update(p: TrainProgress) -> None:
        shown = {"loss": f"{p.loss:.4f}"}
        if p.val_metrics:
            shown["val_best_of_n"] = f"{p.val_metrics['best_of_n']:.3f}"
        bar.set_postfix(shown)
        bar.update(1)
        if p.step == p.total_steps:
            bar.close()

    return update


def run_training(
    model: torch.nn.Module,
    batches: Sequence[Batch],
    batch_loss: Callable[[Batch], Tensor],
    config: LoopConfig,
    device: str | torch.device,
    evaluate: Callable[[], Any] | None = None,
    progress: Callable[[TrainProgress], None] | str | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train `model`'s trainable parameters in place, one optimizer step per batch; returns the losses.

    batch_loss(batch) -> scalar loss of one batch; evaluate() -> metrics with `to_dict()`, run after
    the last step and every `config.eval_every` steps (None: never). progress: a callable receiving
    a `TrainProgress` after every step, or "tqdm" for a progress bar (titled `desc`). device: where
    the model trains, for the seeded RNG. The model is left in eval mode; `wall_time_s` counts the loop.
    """
    started = time.perf_counter()
    total = len(batches)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config.schedule, total))
    if progress == "tqdm":
        progress = tqdm_progress(total, desc)
    result = TrainResult(losses=[], num_steps=total)
    with seeded(config.seed, device), num_threads(config.num_threads):
        model.train()
        for step, batch in enumerate(batches, start=1):
            loss = batch_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            result.losses.append(loss.item())

            val = None
            if evaluate is not None and (step == total or (config.eval_every and step % config.eval_every == 0)):
                val = {"step": step, **evaluate().to_dict()}
                result.val_history.append(val)
                model.train()  # evaluation scores in eval mode
            if progress is not None:
                progress(TrainProgress(step, total, result.losses[-1], lr, val))
    model.eval()
    result.val_metrics = result.val_history[-1] if result.val_history else None
    result.wall_time_s = time.perf_counter() - started
    return result
