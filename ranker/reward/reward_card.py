"""Save and load a reward model as a folder: its weights + `card.json`, written atomically.

    RM (base):  adapter.safetensors (LoRA + head)                     + card.json
    RM (small): encoder/ (save_pretrained) + head.safetensors         + card.json

The card mirrors a ranker's (ranker.rankers.checkpoint): format, format_version, model_config,
train_config, base_model (the LLM's ModelFingerprint, RM base) or encoder (the id it started from,
RM small), training_data (prompts, candidates, families), metrics, parameters (trainable, loaded),
created (UTC, ISO 8601), library_version.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import ranker
from ranker.capture.fingerprint import ModelFingerprint
from ranker.core.file_io import atomic_folder
from ranker.rankers.checkpoint import _json_safe
from ranker.reward.reward_config import RewardModelConfig, RewardTrainConfig

CARD_NAME = "card.json"
FORMAT = "language-ranker-reward-model"
FORMAT_VERSION = 1


@dataclass
class RewardCard:
    """The contents of a reward model's card.json."""

    model_config: RewardModelConfig
    train_config: RewardTrainConfig | None = None
    base_model: ModelFingerprint | None = None  # RM (base): the LLM the adapter belongs to
    encoder: str | None = None  # RM (small): the encoder id or folder it was fine-tuned from
    training_data: dict = field(default_factory=dict)  # RewardData.summary()
    metrics: dict = field(default_factory=dict)  # loss, wall time, validation metrics
    parameters: dict = field(default_factory=dict)  # {"trainable": n, "loaded": n}
    created: str = ""
    library_version: str = ranker.__version__

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_config": self.model_config.to_dict(),
            "train_config": self.train_config.to_dict() if self.train_config else None,
            "base_model": self.base_model.to_dict() if self.base_model else None,
            "encoder": self.encoder,
            "training_data": _json_safe(self.training_data),
            "metrics": _json_safe(self.metrics),
            "parameters": self.parameters,
            "created": self.created,
            "library_version": self.library_version,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "RewardCard":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a reward model card: format is {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"reward card format_version {data.get('format_version')!r} is not supported (only {FORMAT_VERSION})")
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

    Everything goes to a temporary folder beside the target, which then replaces it (`os.replace`),
    so a reader never sees half a model. Refuses (ValueError) to replace a non-empty folder without a card.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / CARD_NAME).exists())):
        raise ValueError(f"{path} exists and is not a reward model folder; refusing to overwrite it")
    card.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with atomic_folder(path) as staging:
        write_weights(staging)
        (staging / CARD_NAME).write_text(json.dumps(card.to_dict(), indent=2, allow_nan=False) + "\n")
    return path


def read_reward_card(path: str | os.PathLike) -> RewardCard:
    """The card of the reward model folder `path`, without loading weights."""
    card_path = Path(path) / CARD_NAME
    if not card_path.is_file():
        raise ValueError(f"{path} is not a reward model folder: {CARD_NAME} not found")
    return RewardCard.from_dict(json.loads(card_path.read_text()))
