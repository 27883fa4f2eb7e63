"""What identifies the features a ranker was trained on.

A ranker only makes sense on hidden states from the same base model, at the same
layer, with the same width. `ModelFingerprint` names the model; `FeatureFingerprint`
adds the layer. Checkpoints store the latter and refuse to load on a mismatch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import ranker


@dataclass(frozen=True)
class ModelFingerprint:
    """Identity of a loaded base model."""

    model_id: str  # hub id, local folder name, or "gguf:<file name>"
    revision: str  # sha256 of the GGUF file, hub commit hash, or a hash of the local weights
    num_layers: int  # number of decoder blocks (hidden_states has num_layers + 1 entries)
    hidden_size: int  # width of every hidden state

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelFingerprint":
        return cls(
            model_id=str(data["model_id"]),
            revision=str(data["revision"]),
            num_layers=int(data["num_layers"]),
            hidden_size=int(data["hidden_size"]),
        )


@dataclass(frozen=True)
class FeatureFingerprint:
    """A base model plus the hidden-state layer its features come from."""

    model: ModelFingerprint
    layer: int  # index into hidden_states: 0 = embeddings, num_layers = after the final norm
    library_version: str = ranker.__version__

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "layer": self.layer, "library_version": self.library_version}

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureFingerprint":
        return cls(
            model=ModelFingerprint.from_dict(data["model"]),
            layer=int(data["layer"]),
            library_version=str(data.get("library_version", "unknown")),
        )

    def check_compatible(self, other: "FeatureFingerprint", what: str = "ranker") -> None:
        """Raise ValueError, saying why, unless `other` (the loaded model) matches this one.

        The library version is recorded but not compared: it does not change the features.
        """
        mine, theirs = self.model, other.model
        problems = []
        if (mine.model_id, mine.revision) != (theirs.model_id, theirs.revision):
            problems.append(
                f"it was trained on {mine.model_id} (revision {mine.revision[:12]}), "
                f"but the loaded model is {theirs.model_id} (revision {theirs.revision[:12]})"
            )
        if mine.hidden_size != theirs.hidden_size:
            problems.append(f"hidden size {mine.hidden_size} != loaded model's {theirs.hidden_size}")
        if mine.num_layers != theirs.num_layers:
            problems.append(f"{mine.num_layers} layers != loaded model's {theirs.num_layers}")
        if self.layer != other.layer:
            problems.append(f"it reads layer {self.layer}, but features were captured at layer {other.layer}")
        if problems:
            raise ValueError(f"This {what} does not match the base model's features: " + "; ".join(problems) + ".")
