"""Train and run a reward model: `train_reward_model`, the reward model's batches and loss on the
shared loop, and batched scoring.

The loop is the rankers' loop (`ranker.core.training_loop.run_training`) with text in place of
features: the same `TrainProgress` callback, `TrainResult` record, optimiser groups, LR schedules,
seeded dropout, thread handling, and the rankers' losses (ranker.rankers.losses), so that the
baselines and the rankers are trained and reported alike.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from ranker.core.training_loop import LoopConfig, TrainProgress, TrainResult, run_training
from ranker.evaluation.metrics import RankingMetrics, ranking_metrics
from ranker.rankers.losses import bradley_terry_loss, mse_loss, pointwise_bce_loss
from ranker.reward.reward_config import RewardTrainConfig
from ranker.reward.reward_networks import EncoderRewardModel, LoraRewardModel
from ranker.reward.text_data import RewardData, TextBatch, plan_batches

RewardNet = Union[LoraRewardModel, EncoderRewardModel]


def batch_loss(model: RewardNet, batch: TextBatch, loss: str) -> Tensor:
    """The loss of one step: BCE or MSE on B examples, or Bradley-Terry on B (winner, loser) pairs."""
    scores = model(**model.tokenize(batch.prompts, batch.candidates))  # (B,) or (2B,)
    if batch.labels is None:
        pairs = batch.num_pairs
        return bradley_terry_loss(scores[:pairs], scores[pairs:])
    labels = batch.labels.to(scores.device)[None]  # (1, B): the losses take (groups, K)
    return pointwise_bce_loss(scores[None], labels) if loss == "bce" else mse_loss(scores[None], labels)


def train_reward_model(
    model: RewardNet,
    data: RewardData,
    config: RewardTrainConfig | None = None,
    val_data: RewardData | None = None,
    progress: Callable[[TrainProgress], None] | str | None = None,
) -> TrainResult:
    """Train `model`'s trainable weights in place on `data`; evaluate on `val_data` if given.

    progress: a callable receiving a `TrainProgress` after every step, or "tqdm" for a progress bar.
    Same config.seed, same initial weights and data give the same weights on CPU. Leaves the model in eval mode.
    """
    config = config or RewardTrainConfig()
    started = time.perf_counter()
    data.check_labels(config.loss)
    generator = torch.Generator().manual_seed(config.seed)
    batches = plan_batches(data, config.loss, config.batch_size, config.epochs, config.max_pairs_per_prompt, generator)
    if config.loss == "bt":
        per_epoch = {"pairs_per_epoch": sum(b.num_pairs for b in batches) // config.epochs}
    else:
        per_epoch = {"examples_per_epoch": sum(len(b.prompts) for b in batches) // config.epochs}

    def evaluate() -> RankingMetrics:
        return evaluate_reward_model(model, val_data, config.eval_batch_size)

    result = run_training(model, batches, lambda batch: batch_loss(model, batch, config.loss), LoopConfig.of(config),
                          model.device, evaluate if val_data is not None else None, progress, desc="train reward model")
    result.loss_name, result.data_summary = config.loss, {**data.summary(), **per_epoch}
    result.wall_time_s = time.perf_counter() - started
    return result


@torch.no_grad()
def score_texts(model: RewardNet, prompts: Sequence[str], candidates: Sequence[str], batch_size: int = 32) -> Tensor:
    """Scores of M (prompt, candidate) pairs -> (M,) float32 on CPU, in eval mode (no dropout).

    Pairs are batched by length (less padding); padding is masked, so a score does not depend on its batch.
    """
    was_training = model.training
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(candidates[i]))
    scores = torch.empty(len(prompts))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        inputs = model.tokenize([prompts[i] for i in rows], [candidates[i] for i in rows])
        scores[rows] = model(**inputs).float().cpu()
    model.train(was_training)
    return scores


def score_groups(model: RewardNet, data: RewardData, batch_size: int = 32) -> list[Tensor]:
    """Scores of every group's candidates: a list of (K_g,) tensors, one per prompt."""
    prompts, candidates, _ = data.examples()
    flat = score_texts(model, prompts, candidates, batch_size)
    return list(flat.split([len(g.candidates) for g in data.groups]))


def evaluate_reward_model(model: RewardNet, data: RewardData, batch_size: int = 32) -> RankingMetrics:
    """Best-of-N, random and oracle accuracy, and AUROC of the model's scores on labelled `data`."""
    return ranking_metrics(score_groups(model, data, batch_size), [g.labels for g in data.groups])
