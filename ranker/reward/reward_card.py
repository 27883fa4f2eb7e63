"""Save and load a reward model as a card folder (ranker.core.cards): its weights + `card.json`.

    RM (base):  adapter.safetensors (LoRA + head)                     + card.json
    RM (small): encoder/ (save_pretrained) + head.safetensors         + card.json

The card's own fields: model_config, train_config, base_model (the LLM's ModelFingerprint, RM base)
or encoder (the id it started from, RM small), training_data (prompts, candidates, families),
metrics, parameters (trainable, loaded); the shared format adds format, format_version, created
(UTC, ISO 8601) and library_version, and writes the folder atomically behind the overwrite guard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ranker.capture.fingerprint import ModelFingerprint
from ranker.core.cards import CardFormat, read_card_folder, write_card_folder
from ranker.reward.reward_config import RewardModelConfig, RewardTrainConfig

FORMAT = CardFormat("language-ranker-reward-model", 1, card="reward model card", folder="reward model folder")
CARD_OBJECTS = ("model_config", "train_config", "base_model", "training_data", "metrics", "parameters")


@dataclass
class RewardCard:
    """The contents of a reward model's card.json (the format header aside)."""

    model_config: RewardModelConfig
    train_config: RewardTrainConfig | None = None
    base_model: ModelFingerprint | None = None  # RM (base): the LLM the adapter belongs to
    encoder: str | None = None  # RM (small): the encoder id or folder it was fine-tuned from
    training_data: dict = field(default_factory=dict)  # RewardData.summary()
    metrics: dict = field(default_factory=dict)  # loss, wall time, validation metrics
    parameters: dict = field(default_factory=dict)  # {"trainable": n, "loaded": n}
    created: str = ""  # stamped on write
    library_version: str = "unknown"  # stamped on write

    def to_dict(self) -> dict:
        """The card's own fields, in card order (`write_card_folder` adds the header and the stamps)."""
        return {
            "model_config": self.model_config.to_dict(),
            "train_config": self.train_config.to_dict() if self.train_config else None,
            "base_model": self.base_model.to_dict() if self.base_model else None,
            "encoder": self.encoder,
            "training_data": self.training_data,
            "metrics": self.metrics,
            "parameters": self.parameters,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "RewardCard":
        return cls(
            model_config=RewardModelConfig.from_dict(data["model_config"]),
            train_config=RewardTrainConfig.from_dict(data["train_config"]) if data.get("train_config") else None,
            base_model=ModelFingerprint.from_dict(data["base_model"]) if data.get("base_model") else None,
            encoder=data.get("encoder"),
            training_data=data.get("training_data") or {},
            metrics=data.get("metrics") or {},
            parameters=data.get("parameters") or {},
            created=data.get("created", ""),
            library_version=data.get("library_version", "unknown"),
        )


def write_reward_folder(path: str | os.PathLike, card: RewardCard, write_weights: Callable[[Path], None]) -> Path:
    """Write `card` and, through `write_weights(folder)`, the weights to the folder `path`, atomically.

    Refuses (ValueError) to replace a non-empty folder without a card.
    """
    return write_card_folder(path, FORMAT, card.to_dict(), write_weights)


def read_reward_card(path: str | os.PathLike) -> RewardCard:
    """The card of the reward model folder `path`, without loading weights."""
    return read_card_folder(path, FORMAT, RewardCard.from_dict, CARD_OBJECTS)
