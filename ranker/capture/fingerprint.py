"""What identifies the features a ranker was trained on.

A ranker only makes sense on hidden states from the same base model, at the same
layer, with the same width. `ModelFingerprint` names the model; `FeatureFingerprint`
adds the layer. Checkpoints store the latter and refuse to load on a mismatch.

Every comparison of fingerprints goes through `mismatches` (what differs, in words), and every
refusal through `check_compatible` (a ValueError naming both sides), so that a ranker, a reward
model, a feature store and a label are all held to the same rule.
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

    def describe(self) -> str:
        """E.g. "tiny-llm (revision aaaaaaaaaaaa, 4 layers, hidden size 32)"."""
        return f"{self.model_id} (revision {self.revision[:12]}, {self.num_layers} layers, hidden size {self.hidden_size})"

    def mismatches(self, loaded: "ModelFingerprint") -> list[str]:
        """What differs between this (recorded) model and the `loaded` one, in words; [] when they match."""
        problems = []
        if (self.model_id, self.revision) != (loaded.model_id, loaded.revision):
            problems.append(
                f"it was trained on {self.model_id} (revision {self.revision[:12]}), "
                f"but the loaded model is {loaded.model_id} (revision {loaded.revision[:12]})"
            )
        if self.hidden_size != loaded.hidden_size:
            problems.append(f"hidden size {self.hidden_size} != loaded model's {loaded.hidden_size}")
        if self.num_layers != loaded.num_layers:
            problems.append(f"{self.num_layers} layers != loaded model's {loaded.num_layers}")
        return problems

    def matches(self, loaded: "ModelFingerprint") -> bool:
        return not self.mismatches(loaded)

    def check_compatible(self, loaded: "ModelFingerprint", what: str) -> None:
        """Raise ValueError, naming both models, unless `loaded` is this (recorded) model.

        what: who needs this model, e.g. "RM (base) at rm/" or "--beam on this store".
        """
        if not self.matches(loaded):
            raise ValueError(f"{what} needs the base model {self.describe()}, but the loaded base model is "
                             f"{loaded.describe()}; load the base model it was made with")

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

    def mismatches(self, loaded: "FeatureFingerprint") -> list[str]:
        """What differs between these (recorded) features and the `loaded` ones; [] when they match.

        The library version is recorded but not compared: it does not change the features.
        """
        problems = self.model.mismatches(loaded.model)
        if self.layer != loaded.layer:
            problems.append(f"it reads layer {self.layer}, but features were captured at layer {loaded.layer}")
        return problems

    def check_compatible(self, loaded: "FeatureFingerprint", what: str = "ranker") -> None:
        """Raise ValueError, saying why, unless `loaded` (the loaded model's features) matches this one."""
        problems = self.mismatches(loaded)
        if problems:
            raise ValueError(f"This {what} does not match the base model's features: " + "; ".join(problems) + ".")

    @staticmethod
    def check_recorded(recorded: "FeatureFingerprint | None", loaded: "FeatureFingerprint", what: str) -> None:
        """`recorded.check_compatible(loaded)`, and a ValueError too when nothing was recorded (it cannot be checked)."""
        if recorded is None:
            raise ValueError(
                f"{what} records no feature fingerprint, so it cannot be checked against "
                f"{loaded.model.model_id} layer {loaded.layer}; refusing to load it"
            )
        recorded.check_compatible(loaded, what=what)
