"""The paper's reward-model baselines with the rankers' verbs: `fit`, `score`, `select`, `save`, `load`.

    rm = BaseRewardModel(base, lora_rank=16, epochs=1).fit(train_store)   # RM (base): LoRA on the base LLM
    rm = SmallRewardModel(max_length=256).fit(train_store)                # RM (small): all-MiniLM-L6-v2
    scores = rm.score_store(test_store)                                    # (P, N), like LanguageRanker.score_store
    rm.save("reward_models/math")
    rm = BaseRewardModel.load("reward_models/math", base)                 # refuses another base model

`fit` takes a FeatureStore (its problems, candidate texts and labels: the rankers' training data),
a `RewardData`, or a list of `TextPreference`. Hyperparameters are fields of `RewardModelConfig`
(those of the class's kind) and `RewardTrainConfig`; `__init__` only stores them and `fit` validates
them. Fitted attributes: `model_`, `model_config_`, `train_config_`, `train_result_` (None after
`load`), `training_data_`, `metrics_` (add to them with `record_metrics`), `n_trainable_parameters_`,
`n_parameters_` (all loaded weights, the whole base LLM included for RM (base)).
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from ranker.capture.base_model import BaseModel
from ranker.capture.feature_store import FeatureStore
from ranker.core.seeding import seeded
from ranker.core.training_loop import TrainProgress
from ranker.evaluation.metrics import RankingMetrics, best_candidates
from ranker.rankers.estimator import NotFittedError
from ranker.reward.reward_card import RewardCard, read_reward_card, write_reward_folder
from ranker.reward.reward_config import RewardModelConfig, RewardTrainConfig
from ranker.reward.reward_networks import EncoderRewardModel, LoraRewardModel
from ranker.reward.reward_training import RewardNet, evaluate_reward_model, score_texts, train_reward_model
from ranker.reward.text_data import RewardData, TextPreference, check_candidates, check_texts

TRAIN_PARAMS = tuple(f.name for f in fields(RewardTrainConfig))
RewardInput = FeatureStore | RewardData | Sequence[TextPreference]


def as_reward_data(data: RewardInput) -> RewardData:
    """A FeatureStore, RewardData or list of TextPreference as RewardData."""
    if isinstance(data, RewardData):
        return data
    if isinstance(data, FeatureStore):
        return RewardData.from_store(data)
    if isinstance(data, (list, tuple)) and data and all(isinstance(p, TextPreference) for p in data):
        return RewardData.from_preferences(data)
    raise ValueError(f"training data must be a FeatureStore, RewardData or a non-empty list of TextPreference, got {type(data).__name__}")


class _RewardModelEstimator:
    """What both baselines share; subclasses say how to build the network and what the card records."""

    kind = ""
    model_params: tuple[str, ...] = ()  # the RewardModelConfig fields this kind accepts

    def __init__(self, **hyperparams):
        unknown = set(hyperparams) - set(self.model_params) - set(TRAIN_PARAMS)
        if unknown:
            raise ValueError(
                f"unknown hyperparameters {sorted(unknown)} for {type(self).__name__}; "
                f"accepted: {', '.join(self.model_params + TRAIN_PARAMS)}"
            )
        self.hyperparams = dict(hyperparams)

    def get_params(self, deep: bool = True) -> dict:
        return dict(self.hyperparams)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def _configs(self) -> tuple[RewardModelConfig, RewardTrainConfig]:
        model_args = {k: v for k, v in self.hyperparams.items() if k in self.model_params}
        train_args = {k: v for k, v in self.hyperparams.items() if k in TRAIN_PARAMS}
        return RewardModelConfig(kind=self.kind, **model_args), RewardTrainConfig(**train_args)

    def _build(self, model_config: RewardModelConfig, train_config: RewardTrainConfig) -> RewardNet:
        raise NotImplementedError

    def _card_source(self) -> dict:
        """The card's base_model / encoder entry."""
        raise NotImplementedError

    def _check_fitted(self) -> RewardNet:
        if getattr(self, "model_", None) is None:
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet: call fit(data) or {type(self).__name__}.load(path)")
        return self.model_

    # --- training -----------------------------------------------------------------------------

    def fit(self, data: RewardInput, val_data: RewardInput | None = None,
            progress: Callable[[TrainProgress], None] | str | None = None) -> "_RewardModelEstimator":
        """Build a fresh reward model and train it on `data`; returns self."""
        model_config, train_config = self._configs()
        data = as_reward_data(data)
        val = as_reward_data(val_data) if val_data is not None else None
        data.check_labels(train_config.loss)  # before the (possibly slow) model build
        device = self._device(train_config)
        # The head's and LoRA's initial weights come from the global RNG: seeded, without touching the caller's.
        with seeded(train_config.seed, device):
            model = self._build(model_config, train_config)
        result = train_reward_model(model, data, train_config, val, progress)
        tail = result.losses[-max(1, len(result.losses) // 10):]
        self._set_fitted(model, model_config, train_config, result.data_summary, {
            "loss": result.loss_name, "first_loss": result.losses[0], "final_loss": sum(tail) / len(tail),
            "num_steps": result.num_steps, "wall_time_s": result.wall_time_s, "val": result.val_metrics,
        })
        self.train_result_ = result
        return self

    def _device(self, train_config: RewardTrainConfig) -> torch.device:
        raise NotImplementedError

    def record_metrics(self, **metrics) -> "_RewardModelEstimator":
        """Add evaluation results (e.g. val_accuracy={...}) to `metrics_`, which `save` writes to the card. Returns self."""
        self._check_fitted()
        self.metrics_.update(metrics)
        return self

    def _set_fitted(self, model: RewardNet, model_config: RewardModelConfig, train_config: RewardTrainConfig,
                    training_data: dict, metrics: dict) -> None:
        self.model_, self.model_config_, self.train_config_ = model, model_config, train_config
        self.training_data_, self.metrics_ = training_data, metrics
        counts = model.parameter_counts()
        self.n_trainable_parameters_, self.n_parameters_ = counts["trainable"], counts["loaded"]

    # --- inference ----------------------------------------------------------------------------

    def score_texts(self, prompts: Sequence[str], candidates: Sequence[str]) -> Tensor:
        """Scores of M (prompt, candidate) pairs: prompts, candidates (M,) -> (M,) float32 on CPU. Higher is better."""
        model = self._check_fitted()
        check_texts(prompts, candidates)
        return score_texts(model, prompts, candidates, self.train_config_.eval_batch_size)

    def score(self, prompt: str, candidates: Sequence[str]) -> Tensor:
        """Scores of K candidates for one prompt -> (K,)."""
        check_candidates(candidates)
        return self.score_texts([prompt] * len(candidates), list(candidates))

    def select(self, prompt: str, candidates: Sequence[str]) -> int:
        """Index of the best candidate (the first one on ties)."""
        return int(best_candidates(self.score(prompt, candidates)))

    def score_store(self, store: FeatureStore) -> Tensor:
        """(P, N) scores of every candidate of the store, comparable with LanguageRanker.score_store."""
        data = RewardData.from_store(store)
        prompts, candidates, _ = data.examples()
        return self.score_texts(prompts, candidates).view(len(store.problems), store.num_candidates)

    def evaluate(self, data: RewardInput) -> RankingMetrics:
        """Best-of-N, random and oracle accuracy, and AUROC on labelled data."""
        return evaluate_reward_model(self._check_fitted(), as_reward_data(data), self.train_config_.eval_batch_size)

    # --- persistence --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted reward model to the folder `path` (see ranker.reward.reward_card); returns the folder."""
        model = self._check_fitted()
        card = RewardCard(
            model_config=self.model_config_, train_config=self.train_config_, training_data=self.training_data_,
            metrics=self.metrics_,
            parameters={"trainable": self.n_trainable_parameters_, "loaded": self.n_parameters_},
            **self._card_source(),
        )
        return write_reward_folder(path, card, model.save_weights)

    @classmethod
    def _from_card(cls, card: RewardCard, model: RewardNet, *args) -> "_RewardModelEstimator":
        train_config = card.train_config or RewardTrainConfig()
        model_args = {k: v for k, v in card.model_config.to_dict().items() if k in cls.model_params}
        est = cls(*args, **model_args, **train_config.to_dict())
        est._set_fitted(model.eval(), card.model_config, train_config, card.training_data, card.metrics)
        est.train_result_ = None
        return est


class BaseRewardModel(_RewardModelEstimator):
    """RM (base): the base LLM with LoRA adapters and a scalar head, trained on (prompt, candidate) text.

    The base model's weights are shared, not copied, and stay untouched: the adapters live in a
    weight-sharing copy of its decoder. Training and scoring run on the base model's device.
    """

    kind = "base"
    model_params = ("max_length", "lora_rank", "lora_alpha", "lora_dropout", "target_modules")

    def __init__(self, base: BaseModel, **hyperparams):
        super().__init__(**hyperparams)
        self.base = base

    def _device(self, train_config: RewardTrainConfig) -> torch.device:
        device = self.base.device
        if train_config.device is not None:
            wanted = torch.device(train_config.device)
            if wanted.type != device.type or (wanted.index is not None and wanted.index != device.index):
                raise ValueError(
                    f"device {train_config.device!r} differs from the base model's device {device}; "
                    "RM (base) shares the base model's weights, so it trains where they are (leave device=None)"
                )
        return device

    def _build(self, model_config: RewardModelConfig, train_config: RewardTrainConfig) -> LoraRewardModel:
        return LoraRewardModel(self.base, model_config)

    def _card_source(self) -> dict:
        return {"base_model": self.base.fingerprint}

    @classmethod
    def load(cls, path: str | os.PathLike, base: BaseModel) -> "BaseRewardModel":
        """The RM (base) saved at `path`, on `base`; ValueError naming both models when `base` is not the one it was trained on."""
        card = read_reward_card(path)
        if card.model_config.kind != cls.kind:
            raise ValueError(f"{path} holds an RM ({card.model_config.kind}), not an RM (base); load it with SmallRewardModel.load")
        if card.base_model is None:
            raise ValueError(f"RM (base) at {path} records no base model, so it cannot be checked against "
                             f"{base.fingerprint.describe()}")
        card.base_model.check_compatible(base.fingerprint, what=f"RM (base) at {path}")
        model = LoraRewardModel(base, card.model_config)
        model.load_weights(Path(path))
        return cls._from_card(card, model, base)


class SmallRewardModel(_RewardModelEstimator):
    """RM (small): a separate small encoder (default all-MiniLM-L6-v2) with a scalar head, fully fine-tuned."""

    kind = "small"
    model_params = ("max_length", "encoder")

    def _device(self, train_config: RewardTrainConfig) -> torch.device:
        if train_config.device is not None:
            return torch.device(train_config.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _build(self, model_config: RewardModelConfig, train_config: RewardTrainConfig) -> EncoderRewardModel:
        return EncoderRewardModel.from_pretrained(model_config, self._device(train_config))

    def _card_source(self) -> dict:
        return {"encoder": self.model_config_.encoder}

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> "SmallRewardModel":
        """The RM (small) saved at `path` (encoder included; nothing else needs loading)."""
        card = read_reward_card(path)
        if card.model_config.kind != cls.kind:
            raise ValueError(f"{path} holds an RM ({card.model_config.kind}), not an RM (small); load it with BaseRewardModel.load")
        train_config = card.train_config or RewardTrainConfig()
        device = device or train_config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = EncoderRewardModel.load_weights(Path(path), card.model_config, device)
        return cls._from_card(card, model)
