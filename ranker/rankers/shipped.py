"""The rankers shipped in assets/rankers, and loading whichever rankers fit the loaded base model.

A ranker reads the hidden states of one base model at one layer. The CLI, the app and the
benches all take a set of ranker folders and keep those trained on the model at hand:
`load_compatible` is that one rule, `load_for_model` its single-folder form.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ranker.capture.fingerprint import FeatureFingerprint, ModelFingerprint
from ranker.core.cards import CARD_NAME
from ranker.rankers.checkpoint import read_card
from ranker.rankers.estimator import LanguageRanker

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "assets" / "rankers"
# The shipped rankers under the method names of ranker.evaluation.methods.
SHIPPED_RANKERS = {"list_ranker": SHIPPED_DIR / "default-list", "point_ranker": SHIPPED_DIR / "default-point"}


def load_for_model(path: str | os.PathLike, model: ModelFingerprint, device: str = "cpu") -> LanguageRanker:
    """The ranker saved at `path`, checked against the base model `model` at the ranker's own layer.

    ValueError (saying why) when it was trained on another model, or records no fingerprint.
    """
    recorded = read_card(path).fingerprint
    if recorded is None:
        raise ValueError(f"ranker at {path} records no feature fingerprint, so it cannot be checked against "
                         f"{model.describe()}; refusing to load it")
    return LanguageRanker.load(path, expected_fingerprint=FeatureFingerprint(model, recorded.layer), device=device)


def load_compatible(paths: Mapping[str, str | os.PathLike], model: ModelFingerprint,
                    device: str = "cpu") -> tuple[dict[str, LanguageRanker], dict[str, str]]:
    """(name -> ranker trained on `model`, name -> why the others were skipped) for the named folders.

    A folder that is missing, corrupt, or trained on another model or without a fingerprint is
    skipped with its reason (the ValueError's or OSError's message); none raises.
    """
    rankers, skipped = {}, {}
    for name, path in paths.items():
        try:
            rankers[name] = load_for_model(path, model, device)
        except (ValueError, OSError) as error:
            skipped[name] = str(error)
    return rankers, skipped


def existing_shipped() -> dict[str, Path]:
    """The shipped rankers whose folders are present (a checkout without assets has none)."""
    return {name: path for name, path in SHIPPED_RANKERS.items() if (path / CARD_NAME).is_file()}
