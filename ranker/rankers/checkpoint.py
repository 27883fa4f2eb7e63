"""Save and load a trained ranker as a card folder (ranker.core.cards): `model.safetensors` + `card.json`,
plus `extra.safetensors` when the fitted ranker holds tensors outside the network (the fusion's
instruction centroids, its fallback's support centroids).

The card holds everything needed to rebuild and to judge the ranker:
    format, format_version, ranker_config, train_config, fusion_config, fingerprint
    (FeatureFingerprint.to_dict()), fusion (the fitted weights per instruction cluster, and the
    fallback to free-signal weights for unfamiliar instructions),
    calibration (Platt a, b and their source), training_data (counts), metrics, created, library_version.
Loading rebuilds the model from `ranker_config` and, given the fingerprint of the features it will
be fed, refuses (ValueError saying why) when they come from another base model or layer.

Writes are atomic and guarded (`ranker.core.cards.write_card_folder`); loading never shows a raw
safetensors/json/torch traceback: a missing, truncated or corrupt file, a malformed card, or
weights that do not fit the card raise ValueError naming the file and the fault.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from ranker.capture.fingerprint import FeatureFingerprint
from ranker.core.cards import CardFormat, read_card_folder, read_tensors, write_card_folder
from ranker.rankers.calibration import PlattCalibration
from ranker.rankers.fusion import RANKER_ONLY, Fusion, FusionConfig
from ranker.rankers.networks import Ranker, RankerConfig, build_ranker
from ranker.rankers.train_config import TrainConfig

WEIGHTS_NAME = "model.safetensors"
EXTRA_NAME = "extra.safetensors"
FORMAT = CardFormat("language-ranker", 2, card="ranker card", folder="ranker checkpoint")
CARD_OBJECTS = ("ranker_config", "train_config", "fusion_config", "fingerprint", "fusion", "calibration",
                "training_data", "metrics")  # the card fields that hold JSON objects


@dataclass
class RankerCard:
    """The contents of a ranker's card.json (the format header aside)."""

    ranker_config: RankerConfig
    train_config: TrainConfig | None = None
    fusion_config: FusionConfig | None = None
    fingerprint: FeatureFingerprint | None = None  # features the ranker was trained on (None = unknown)
    fusion: Fusion = field(default_factory=lambda: Fusion([dict(RANKER_ONLY)]))  # its centroids live in EXTRA_NAME
    calibration: PlattCalibration | None = None
    training_data: dict = field(default_factory=dict)  # e.g. FeaturePool.summary() plus group counts
    metrics: dict = field(default_factory=dict)  # e.g. validation RankingMetrics
    created: str = ""  # UTC time of saving, ISO 8601 (stamped on write)
    library_version: str = "unknown"  # the library that wrote it (stamped on write)

    def to_dict(self) -> dict:
        """The card's own fields, in card order (`write_card_folder` adds the header and the stamps)."""
        optional = lambda value: value.to_dict() if value is not None else None  # noqa: E731
        return {
            "ranker_config": self.ranker_config.to_dict(),
            "train_config": optional(self.train_config),
            "fusion_config": optional(self.fusion_config),
            "fingerprint": optional(self.fingerprint),
            "fusion": self.fusion.to_dict(),
            "calibration": optional(self.calibration),
            "training_data": self.training_data,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, data: dict, tensors: dict[str, torch.Tensor] | None = None) -> "RankerCard":
        parse = lambda kind, name: kind.from_dict(data[name]) if data.get(name) is not None else None  # noqa: E731
        return cls(
            ranker_config=RankerConfig.from_dict(data["ranker_config"]),
            train_config=parse(TrainConfig, "train_config"),
            fusion_config=parse(FusionConfig, "fusion_config"),
            fingerprint=parse(FeatureFingerprint, "fingerprint"),
            fusion=Fusion.from_dict(data["fusion"], tensors),
            calibration=parse(PlattCalibration, "calibration"),
            training_data=data.get("training_data") or {},
            metrics=data.get("metrics") or {},
            created=data.get("created", ""),
            library_version=data.get("library_version", "unknown"),
        )


def _cpu_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_checkpoint(path: str | os.PathLike, model: Ranker, card: RankerCard | None = None) -> Path:
    """Write `model` and its card to the folder `path` atomically; returns the folder.

    card: everything but the weights (default: a card with the model's config only); its fusion
    centroids, if any, go to EXTRA_NAME. Overwrites an existing checkpoint folder; refuses
    (ValueError) to replace a non-empty folder that is not a checkpoint.
    """
    card = card or RankerCard(ranker_config=model.config)
    if card.ranker_config != model.config:
        raise ValueError(f"the card describes {card.ranker_config}, but the model is {model.config}")

    def write_weights(staging: Path) -> None:
        save_file(_cpu_tensors(model.state_dict()), staging / WEIGHTS_NAME, metadata={"format": "pt"})
        if card.fusion.tensors():
            save_file(_cpu_tensors(card.fusion.tensors()), staging / EXTRA_NAME)

    return write_card_folder(path, FORMAT, card.to_dict(), write_weights)


def read_card(path: str | os.PathLike) -> RankerCard:
    """The card of the checkpoint folder `path` (with the fusion's tensors), without loading the network."""
    extra = Path(path) / EXTRA_NAME
    tensors = read_tensors(extra, "the ranker's extra tensors") if extra.exists() else {}
    return read_card_folder(path, FORMAT, lambda data: RankerCard.from_dict(data, tensors), CARD_OBJECTS)


def load_checkpoint(
    path: str | os.PathLike,
    expected_fingerprint: FeatureFingerprint | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Ranker, RankerCard]:
    """Rebuild the ranker saved at `path`; returns (model in eval mode, card).

    expected_fingerprint: the fingerprint of the features the ranker will score (the loaded base
    model and layer). When given, a mismatch with the card raises ValueError naming the difference,
    and so does a card that records no fingerprint (it cannot be checked).
    """
    card = read_card(path)
    if expected_fingerprint is not None:
        FeatureFingerprint.check_recorded(card.fingerprint, expected_fingerprint, what=f"ranker at {path}")
    weights = Path(path) / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"{path} is not a ranker checkpoint: {WEIGHTS_NAME} not found")
    state = read_tensors(weights, "ranker weights")
    model = build_ranker(card.ranker_config)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # missing/unexpected keys or other shapes: weights of another ranker
        config = card.ranker_config
        detail = " ".join(str(error).split())
        raise ValueError(
            f"{weights} does not fit the ranker its card describes ({config.kind}, hidden size {config.hidden_size}); "
            f"weights from another ranker or model? {detail[:500]}"
        ) from None
    return model.to(device).eval(), card
