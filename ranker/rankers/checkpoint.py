"""Save and load a trained ranker as a folder: `model.safetensors` + `card.json`, plus
`extra.safetensors` when the fitted ranker holds tensors outside the network (the fusion's
instruction centroids).

The card holds everything needed to rebuild and to judge the ranker:
    format, format_version, ranker_config, train_config, fingerprint (FeatureFingerprint.to_dict()),
    training_data (counts), metrics, created (UTC, ISO 8601), library_version.
Loading rebuilds the model from `ranker_config` and, given the fingerprint of the features it will
be fed, refuses (ValueError saying why) when they come from another base model or layer.

Writes are atomic (`ranker.core.file_io.atomic_folder`): all files go to a temporary folder next to the
target, which then replaces the target. A reader sees the old checkpoint or the new one, never half
of one; a read-only or full disk raises an OSError saying so, and the old checkpoint stays.

Loading never shows a raw safetensors/json/torch traceback: a missing, truncated or corrupt file,
a malformed card, or weights that do not fit the card raise ValueError naming the file and the fault.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import ranker
from ranker.capture.fingerprint import FeatureFingerprint
from ranker.core.file_io import atomic_folder
from ranker.rankers.networks import Ranker, RankerConfig, build_ranker
from ranker.rankers.training import TrainConfig

WEIGHTS_NAME = "model.safetensors"
EXTRA_NAME = "extra.safetensors"
CARD_NAME = "card.json"
FORMAT = "language-ranker"
FORMAT_VERSION = 1


@dataclass
class RankerCard:
    """The contents of card.json."""

    ranker_config: RankerConfig
    train_config: TrainConfig | None = None
    fingerprint: FeatureFingerprint | None = None  # features the ranker was trained on (None = unknown)
    training_data: dict = field(default_factory=dict)  # e.g. FeaturePool.summary() plus group counts
    metrics: dict = field(default_factory=dict)  # e.g. validation RankingMetrics
    created: str = ""  # UTC time of saving, ISO 8601
    library_version: str = ranker.__version__

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "ranker_config": self.ranker_config.to_dict(),
            "train_config": self.train_config.to_dict() if self.train_config else None,
            "fingerprint": self.fingerprint.to_dict() if self.fingerprint else None,
            "training_data": _json_safe(self.training_data),
            "metrics": _json_safe(self.metrics),
            "created": self.created,
            "library_version": self.library_version,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "RankerCard":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a ranker card: format is {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("format_version") != FORMAT_VERSION:
            version = data.get("format_version")
            raise ValueError(f"card format_version {version!r} is not supported (only {FORMAT_VERSION})")
        for name in ("ranker_config", "train_config", "fingerprint", "training_data", "metrics"):
            if data.get(name) is not None and not isinstance(data[name], dict):
                raise ValueError(f"card field {name!r} must be a JSON object, got {data[name]!r:.80}")
        return cls(
            ranker_config=RankerConfig.from_dict(data["ranker_config"]),
            train_config=TrainConfig.from_dict(data["train_config"]) if data.get("train_config") else None,
            fingerprint=FeatureFingerprint.from_dict(data["fingerprint"]) if data.get("fingerprint") else None,
            training_data=data.get("training_data") or {},
            metrics=data.get("metrics") or {},
            created=data.get("created", ""),
            library_version=data.get("library_version", "unknown"),
        )


def _json_safe(value):
    """nan/inf -> None (JSON has no such numbers); tuples -> lists; recursive."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def save_checkpoint(
    path: str | os.PathLike,
    model: Ranker,
    *,
    train_config: TrainConfig | None = None,
    fingerprint: FeatureFingerprint | None = None,
    training_data: dict | None = None,
    metrics: dict | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write `model` and its card to the folder `path` atomically; returns the folder.

    extra_tensors: named tensors that belong to the fitted ranker but not to the network (the
    fusion's instruction centroids), written to EXTRA_NAME; read them with `load_extra_tensors`.

    Overwrites an existing checkpoint folder; refuses (ValueError) to replace a non-empty folder
    that is not a checkpoint.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / CARD_NAME).exists())):
        raise ValueError(f"{path} exists and is not a ranker checkpoint folder; refusing to overwrite it")
    card = RankerCard(
        ranker_config=model.config,
        train_config=train_config,
        fingerprint=fingerprint,
        training_data=training_data or {},
        metrics=metrics or {},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    with atomic_folder(path) as staging:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, staging / WEIGHTS_NAME, metadata={"format": "pt"})
        if extra_tensors:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in extra_tensors.items()}, staging / EXTRA_NAME)
        (staging / CARD_NAME).write_text(json.dumps(card.to_dict(), indent=2, allow_nan=False) + "\n")
    return path


def read_json(path: str | os.PathLike, what: str) -> dict:
    """The JSON object in the file `path`; ValueError naming the file (and `what` it should be) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} not found: {what} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable {what} (corrupt or truncated JSON?): {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a valid {what}: expected a JSON object, got {type(data).__name__}")
    return data


def read_tensors(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """The tensors in the safetensors file `path`, on CPU; ValueError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} not found: {what} is missing")
    try:
        return load_file(path, device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError (no ValueError) on a bad file
        raise ValueError(f"{path} is not a readable safetensors file of {what} (truncated or corrupt?): {error}") from None


def load_extra_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The extra tensors saved with the checkpoint at `path` ({} when it has none)."""
    extra = Path(path) / EXTRA_NAME
    return read_tensors(extra, "the ranker's extra tensors") if extra.exists() else {}


def read_card(path: str | os.PathLike) -> RankerCard:
    """The card of the checkpoint folder `path`, without loading weights."""
    card_path = Path(path) / CARD_NAME
    if not card_path.is_file():
        raise ValueError(f"{path} is not a ranker checkpoint: {CARD_NAME} not found")
    data = read_json(card_path, "ranker card")
    try:
        return RankerCard.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
        raise ValueError(f"{card_path} is not a valid ranker card: {detail}") from None


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
        if card.fingerprint is None:
            raise ValueError(
                f"ranker at {path} records no feature fingerprint, so it cannot be checked against "
                f"{expected_fingerprint.model.model_id} layer {expected_fingerprint.layer}; refusing to load it"
            )
        card.fingerprint.check_compatible(expected_fingerprint, what=f"ranker at {path}")
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
