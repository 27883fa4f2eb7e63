"""Train a ranker: `train_ranker`, the ranker's batches and loss on the shared loop, plus scoring helpers.

What is the rankers' own: the feature pool (ranker.rankers.training_groups), listwise groups
redrawn every epoch or pointwise candidates, all drawn up front from a generator seeded with
`TrainConfig.seed` (so the schedule knows the step count), and the ranking loss of each batch.
The loop itself (optimiser groups, schedule, clipping, seeded dropout, threads, evaluation and
progress) is `ranker.core.training_loop.run_training`, shared with the reward models.

Streaming: `train_ranker` also takes a `StorePool` (ranker.rankers.training_groups), a store's
problems whose response features stay in the store; each batch then reads only its own prompts.
Its groups, batches and scores are those of the in-memory pool of the same store, so the same
seed gives the same weights; only the input normalisation of a store whose responses exceed
`NORM_FIT_BYTES` is fitted on a sample of its prompts instead of all.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ranker.core.training_loop import LoopConfig, TrainProgress, TrainResult, run_training
from ranker.evaluation.metrics import RankingMetrics, ranking_metrics
from ranker.rankers.losses import default_loss, get_loss
from ranker.rankers.networks import Ranker
from ranker.rankers.train_config import TrainConfig
from ranker.rankers.training_groups import (
    FeaturePool,
    GroupIndex,
    QueryLike,
    StorePool,
    collate,
    pad_queries,
    pointwise_examples,
    sample_groups,
)


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
    pool: FeaturePool | StorePool, config: TrainConfig, listwise: bool, contrast: bool, generator: torch.Generator
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


SCORE_BYTES = 64 << 20  # float32 response features per chunk when `score_pool` scores a store


@torch.no_grad()
def score_pool(model: Ranker, pool: StorePool, batch_size: int = 256) -> Tensor:
    """(Q, N) float32 CPU scores of every candidate of a StorePool, reading `batch_size` prompts at a time.

    The chunks are those of `score_queries` (fewer prompts per chunk only where `batch_size` of
    them would exceed SCORE_BYTES), so a small store's scores equal those of its queries.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    per_prompt = pool.num_candidates * pool.hidden_size * 4
    batch_size = max(1, min(batch_size, SCORE_BYTES // per_prompt))
    out = torch.empty(pool.num_queries, pool.num_candidates)
    for start in range(0, pool.num_queries, batch_size):
        queries = np.arange(start, min(start + batch_size, pool.num_queries))
        instruction, responses = pool.features(queries)
        mask = torch.ones(responses.shape[:2], dtype=torch.bool, device=device)
        out[start : start + len(queries)] = model(instruction.to(device, dtype), responses.to(device, dtype), mask).float().cpu()
    model.train(was_training)
    return out


def evaluate_ranker(model: Ranker, queries: Sequence[QueryLike] | StorePool) -> RankingMetrics:
    """Best-of-N accuracy, random and oracle accuracy, and AUROC on `queries` (or every query of a StorePool)."""
    if isinstance(queries, StorePool):
        return ranking_metrics(list(score_pool(model, queries)), queries.label_rows())
    return ranking_metrics(score_queries(model, queries), [q.labels.float().cpu() for q in queries])


def train_ranker(
    model: Ranker,
    train_queries: Sequence[QueryLike] | StorePool,
    config: TrainConfig | None = None,
    val_queries: Sequence[QueryLike] | StorePool | None = None,
    progress: Callable[[TrainProgress], None] | str | None = None,
) -> TrainResult:
    """Train `model` in place on `train_queries`; evaluate on `val_queries` if given.

    Either may be a StorePool instead of queries: training then streams (module docstring).

    progress: a callable receiving a `TrainProgress` after every step, or "tqdm" for a progress bar.
    Same config.seed, same initial weights and same data give identical final weights on CPU.
    The model is left in eval mode on `config.device`.
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    loss_name, listwise, contrast = resolve_loss(config, model.config.kind, model.config.label_type)
    loss_fn = get_loss(loss_name)
    pool = train_queries if isinstance(train_queries, StorePool) else FeaturePool.from_queries(train_queries)
    if pool.hidden_size != model.config.hidden_size:
        raise ValueError(
            f"training features have hidden size {pool.hidden_size}, but the ranker expects {model.config.hidden_size}"
        )
    generator = torch.Generator().manual_seed(config.seed)
    batches, groups_per_epoch = _plan_batches(pool, config, listwise, contrast, generator)  # on CPU
    summary = {**pool.summary(), "listwise": listwise, "groups_per_epoch": groups_per_epoch}
    pool = pool.to(config.device)  # features move once; each batch is then one gather on the device

    model.to(config.device).train()
    if model.input_norm.needs_fit:  # only the first time: refitting would shift a trained model's inputs
        model.input_norm.fit(*pool.norm_fit_features())

    def batch_loss(groups: GroupIndex) -> Tensor:
        batch = collate(pool, groups)
        scores = model(batch.instruction, batch.responses, batch.mask)  # (B, K)
        return loss_fn(scores, batch.labels, batch.mask)

    evaluate = (lambda: evaluate_ranker(model, val_queries)) if val_queries else None
    result = run_training(model, batches, batch_loss, LoopConfig.of(config), config.device, evaluate, progress,
                          desc="train ranker")
    result.loss_name, result.data_summary = loss_name, summary
    result.wall_time_s = time.perf_counter() - started
    return result
