"""Train a ranker: one readable function, `train_ranker`, plus scoring and evaluation helpers.

How the defaults (`TrainConfig()`) were chosen: a sweep of optimiser, learning rate, epochs and
ranker kind on `make_synthetic_queries(signal=4, generic_signal=0.5)` at H = 576 (see the
README's "Design checks on synthetic data"). The ranker is robust to the optimiser and
learning rate (as the paper finds); what matters is enough steps. The paper's single epoch suits
its 100 candidates per query; with 16 it under-trains.

Threads: the ranker is tiny, so a step is many small ops, and torch's intra-op threads only add
synchronisation. A second thread was a little faster on an idle machine but many times slower
while other processes were busy (see the README's "Design checks on synthetic data"). Hence
`num_threads=1` by default, set only for the duration of training.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Sequence

import torch
from torch import Tensor

from ranker.evaluation.metrics import RankingMetrics, ranking_metrics
from ranker.rankers.fusion import SIGNALS
from ranker.rankers.losses import LOSSES, default_loss, get_loss
from ranker.rankers.networks import Ranker
from ranker.rankers.training_groups import (
    FeaturePool,
    GroupIndex,
    QueryLike,
    collate,
    pad_queries,
    pointwise_examples,
    sample_groups,
)


@dataclass
class TrainConfig:
    """How to train a ranker. Stored in every checkpoint card."""

    optimizer: str = "adamw"  # "adamw" or "sgd"
    lr: float = 3e-3  # peak learning rate; AdamW on synthetic data: 1e-3 under-trains in 10 epochs, 3e-3 ~ 1e-2
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
    seed: int = 0  # seeds group sampling, batch order and dropout: same seed, same weights
    device: str = "cpu"  # where to train ("cpu", "cuda", ...)
    # torch CPU threads while training (restored after; see the module docstring). The setting is
    # process-wide: use None (leave as is) when other torch work runs in parallel in this process.
    num_threads: int | None = 1
    eval_every: int = 0  # evaluate on val_queries every this many steps; 0 = only after the last step
    # Fuse scores with the candidates' mean log-prob and vote share, weights cross-fitted
    # (ranker.rankers.fusion), each signal only when every training query carries it; False is the
    # paper's hidden-state-only ranker.
    fusion: bool = True
    fusion_folds: int = 4  # cross-fitting folds for the fusion weights
    fusion_l2: float = 0.01  # ridge penalty of the fusion weights' logistic regression (unit-spread signals)
    fusion_signals: tuple[str, ...] = SIGNALS  # which free signals (ranker.rankers.fusion) may be fused
    # Candidate numbers of instruction clusters, each with its own fusion weights; the count is
    # chosen by cross-validation on the out-of-fold scores (ranker.rankers.fusion.fit_fusion). (1,): global weights.
    fusion_clusters: tuple[int, ...] = (1, 2, 4, 8)

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.loss != "auto" and self.loss not in LOSSES:
            raise ValueError(f"loss must be 'auto' or one of {LOSSES}, got {self.loss!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        for name in ("batch_size", "epochs", "group_size", "groups_per_query"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {self.group_size}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"steps must be None or a positive int, got {self.steps!r}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"num_threads must be None or a positive int, got {self.num_threads!r}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every!r}")
        if not isinstance(self.fusion_folds, int) or self.fusion_folds < 2:
            raise ValueError(f"fusion_folds must be an int >= 2, got {self.fusion_folds!r}")
        if not self.fusion_l2 >= 0:
            raise ValueError(f"fusion_l2 must be >= 0, got {self.fusion_l2!r}")
        self.fusion_clusters = tuple(self.fusion_clusters)
        if not self.fusion_clusters or any(not isinstance(k, int) or k < 1 for k in self.fusion_clusters):
            raise ValueError(f"fusion_clusters must be positive ints, got {self.fusion_clusters!r}")
        self.fusion_signals = tuple(self.fusion_signals)
        unknown = [name for name in self.fusion_signals if name not in SIGNALS]
        if unknown or not self.fusion_signals:
            raise ValueError(f"fusion_signals must be a non-empty subset of {SIGNALS}, got {self.fusion_signals!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        if "logprob_fusion" in data:  # cards written before the vote share was fused
            data.setdefault("fusion", data.pop("logprob_fusion"))
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


@dataclass
class TrainProgress:
    """What the progress callback receives after every step."""

    step: int  # 1-based
    total_steps: int
    loss: float
    lr: float
    val_metrics: dict | None = None  # set on steps where validation ran


@dataclass
class TrainResult:
    """What `train_ranker` returns."""

    losses: list[float]  # training loss after every step
    val_history: list[dict] = field(default_factory=list)  # {"step": s, **RankingMetrics} per evaluation
    val_metrics: dict | None = None  # the last evaluation (None without val_queries)
    wall_time_s: float = 0.0  # seconds spent in train_ranker
    num_steps: int = 0
    loss_name: str = ""  # the loss actually used ("kl", "bce", "mse" or "bt")
    data_summary: dict = field(default_factory=dict)  # counts of queries, candidates, groups

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_loss(config: TrainConfig, kind: str, label_type: str) -> tuple[str, bool, bool]:
    """(loss name, listwise data?, drop groups without contrast?) for this ranker and config.

    ListRanker always trains on groups (that is what lets candidates interact); a PointRanker does
    too under the group losses kl and bt. Groups without contrast are dropped only for kl and bt on
    binary labels, where an all-0 or all-1 group carries no ranking signal.
    """
    name = default_loss(kind, label_type) if config.loss == "auto" else config.loss
    listwise = kind == "list" or name in ("kl", "bt")
    return name, listwise, name in ("kl", "bt") and label_type == "binary"


def _plan_batches(
    pool: FeaturePool, config: TrainConfig, listwise: bool, contrast: bool, generator: torch.Generator
) -> tuple[list[GroupIndex], list[int]]:
    """All batches of the run, drawn up front so the schedule knows the step count. Also groups per epoch."""
    batches: list[GroupIndex] = []
    per_epoch: list[int] = []
    wanted = config.steps
    while (wanted is None and len(per_epoch) < config.epochs) or (wanted is not None and len(batches) < wanted):
        if listwise:
            groups = sample_groups(pool, config.group_size, config.groups_per_query, generator, contrast)
        else:
            groups = pointwise_examples(pool)
        if len(groups) == 0:
            raise ValueError(
                "no training groups: every listwise group lacked a positive or a negative "
                f"({pool.num_queries} queries, mean label {float(pool.labels.mean()):.3f})"
            )
        per_epoch.append(len(groups))
        order = torch.randperm(len(groups), generator=generator)
        batches += [groups.select(idx) for idx in order.split(config.batch_size)]
    return (batches[:wanted] if wanted is not None else batches), per_epoch


def _make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # As in nanoGPT: decay weight matrices only; norms, biases and the relevance scale keep their size.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


@torch.no_grad()
def score_queries(model: Ranker, queries: Sequence[QueryLike], batch_size: int = 256) -> list[Tensor]:
    """Scores of every candidate of every query, all of a query's candidates in one group.

    Returns a list of (K_q,) float32 CPU tensors. Queries are padded in chunks of `batch_size`;
    the mask keeps padding out of attention, so results do not depend on the chunking.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out: list[Tensor] = []
    for start in range(0, len(queries), batch_size):
        batch = pad_queries(queries[start : start + batch_size], dtype=dtype)
        scores = model(batch.instruction.to(device), batch.responses.to(device), batch.mask.to(device))
        out += [s[m].float().cpu() for s, m in zip(scores, batch.mask.to(device))]
    model.train(was_training)
    return out


def evaluate_ranker(model: Ranker, queries: Sequence[QueryLike]) -> RankingMetrics:
    """Best-of-N accuracy, random and oracle accuracy, and AUROC on `queries`."""
    return ranking_metrics(score_queries(model, queries), [q.labels.float().cpu() for q in queries])


def _lr_factor(schedule: str, total_steps: int) -> Callable[[int], float]:
    if schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def train_ranker(
    model: Ranker,
    train_queries: Sequence[QueryLike],
    config: TrainConfig | None = None,
    val_queries: Sequence[QueryLike] | None = None,
    progress: Callable[[TrainProgress], None] | str | None = None,
) -> TrainResult:
    """Train `model` in place on `train_queries`; evaluate on `val_queries` if given.

    progress: a callable receiving a `TrainProgress` after every step, or "tqdm" for a progress bar.
    Same config.seed, same initial weights and same data give identical final weights on CPU.
    The model is left in eval mode on `config.device`.
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    loss_name, listwise, contrast = resolve_loss(config, model.config.kind, model.config.label_type)
    loss_fn = get_loss(loss_name)
    pool = FeaturePool.from_queries(train_queries)
    if pool.hidden_size != model.config.hidden_size:
        raise ValueError(
            f"training features have hidden size {pool.hidden_size}, but the ranker expects {model.config.hidden_size}"
        )
    generator = torch.Generator().manual_seed(config.seed)
    batches, groups_per_epoch = _plan_batches(pool, config, listwise, contrast, generator)  # on CPU
    total = len(batches)
    summary = {**pool.summary(), "listwise": listwise, "groups_per_epoch": groups_per_epoch}
    pool = pool.to(config.device)  # features move once; each batch is then one gather on the device

    model.to(config.device).train()
    if model.input_norm.needs_fit:  # only the first time: refitting would shift a trained model's inputs
        model.input_norm.fit(pool.instructions, pool.responses)
    optimizer = _make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config.schedule, total))
    if progress == "tqdm":
        progress = _tqdm_progress(total)
    result = TrainResult(losses=[], loss_name=loss_name, num_steps=total)
    result.data_summary = summary

    # Dropout draws from torch's global RNG: seed it, but inside fork_rng so the caller's RNG is untouched.
    device = torch.device(config.device)
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), _num_threads(config.num_threads):
        torch.manual_seed(config.seed)
        for step, groups in enumerate(batches, start=1):
            batch = collate(pool, groups)
            scores = model(batch.instruction, batch.responses, batch.mask)  # (B, K)
            loss = loss_fn(scores, batch.labels, batch.mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            result.losses.append(loss.item())

            val = None
            if val_queries and (step == total or (config.eval_every and step % config.eval_every == 0)):
                val = {"step": step, **evaluate_ranker(model, val_queries).to_dict()}
                result.val_history.append(val)
            if progress is not None:
                progress(TrainProgress(step, total, result.losses[-1], lr, val))
    model.eval()
    result.val_metrics = result.val_history[-1] if result.val_history else None
    result.wall_time_s = time.perf_counter() - started
    return result


@contextlib.contextmanager
def _num_threads(n: int | None):
    """Temporarily set torch's CPU thread count (a process-wide setting, hence the restore)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tqdm_progress(total: int, desc: str = "train ranker") -> Callable[[TrainProgress], None]:
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
