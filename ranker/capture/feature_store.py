"""A feature store: sampled candidates for a set of problems, their labels and their features.

Built once by sampling (`ranker.capture.store_builder`), then read many times by training, evaluation and
the experiments, so that no experiment re-runs the LLM. On disk, a folder:

- `features.safetensors`: `instruction` (P, L, H) and `responses` (P, N, L, H), float16
  (float32 if a value would overflow float16: `ranker.core.tensors.storage_dtype`), L = number of recorded layers;
- `candidates.parquet`: one row per (problem, candidate): text, finish reason, length,
  log-probs, `correct` (the checker's label) and `vote_key` (for majority vote);
- `problems.jsonl`: the problems (prompt, answer, checker, tests, family);
- `card.json`: model fingerprint, layers, sampling config, what was built, timings.

`save` is atomic (`ranker.core.file_io.atomic_folder`); `load` raises ValueError naming the file and the
fault when a file is missing, truncated or corrupt, or when the features do not fit the card's model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file

import ranker
from ranker.capture.fingerprint import FeatureFingerprint, ModelFingerprint
from ranker.capture.sampling import SamplingConfig
from ranker.core.cards import read_json, read_tensors
from ranker.core.file_io import atomic_folder
from ranker.core.tensors import storage_dtype
from ranker.tasks import Problem


@dataclass
class FeatureStore:
    """N candidates for each of P problems, labelled, with features at L layers."""

    problems: list[Problem]
    candidates: pd.DataFrame  # P * N rows ordered by (problem_index, candidate_index)
    instruction: torch.Tensor  # (P, L, H) float32
    responses: torch.Tensor  # (P, N, L, H) float32
    layers: tuple[int, ...]  # hidden_states indices (ranker.capture.hidden_states)
    model: ModelFingerprint
    sampling: SamplingConfig
    info: dict = field(default_factory=dict)  # what was built and how long it took

    def __post_init__(self) -> None:
        num_problems, n = self.responses.shape[:2]
        if len(self.problems) != num_problems or self.instruction.shape[0] != num_problems:
            raise ValueError(f"store has {len(self.problems)} problems but features for {num_problems}")
        if len(self.candidates) != num_problems * n:
            raise ValueError(f"store has {len(self.candidates)} candidate rows, expected {num_problems} x {n}")

    @property
    def num_candidates(self) -> int:
        return self.responses.shape[1]

    @property
    def families(self) -> list[str]:
        return [p.family for p in self.problems]

    def labels(self) -> torch.Tensor:
        """(P, N) float: 1.0 where the checker accepted the candidate."""
        return torch.tensor(self.candidates["correct"].to_numpy(dtype="float32")).view(len(self.problems), -1)

    def column(self, name: str) -> list[list]:
        """A candidates column as P lists of N values; missing values (NaN after a parquet round trip) are None.

        Missing must be None, not NaN: pandas hands back one shared NaN object for every missing
        vote key, and a Counter would count those as one answer that they all voted for.
        """
        series = self.candidates[name]
        values = series.astype(object).where(series.notna(), None).tolist()
        n = self.num_candidates
        return [values[i * n : (i + 1) * n] for i in range(len(self.problems))]

    def features(self, layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(instruction (P, H), responses (P, N, H)) at one recorded layer (default: the first)."""
        if layer is None:
            slot = 0
        elif layer in self.layers:
            slot = self.layers.index(layer)
        else:
            raise ValueError(f"layer {layer} is not in this store; it has layers {list(self.layers)}")
        return self.instruction[:, slot], self.responses[:, :, slot]

    def family_summary(self) -> pd.DataFrame:
        """Per family: prompts, per-sample accuracy and oracle@N (any candidate correct)."""
        labels = self.labels()
        frame = pd.DataFrame({"family": self.families, "per_sample": labels.mean(dim=1).numpy(),
                              "oracle": labels.max(dim=1).values.numpy()})
        summary = frame.groupby("family", sort=False).agg(prompts=("per_sample", "size"), per_sample=("per_sample", "mean"),
                                                          oracle=("oracle", "mean"))
        return summary.rename(columns={"oracle": f"oracle@{self.num_candidates}"})

    def feature_fingerprint(self, layer: int | None = None) -> FeatureFingerprint:
        return FeatureFingerprint(model=self.model, layer=self.layers[0] if layer is None else layer)

    def subset(self, indices: list[int]) -> "FeatureStore":
        """The store restricted to some problems, in the given order (problem_index renumbered)."""
        n = self.num_candidates
        rows = [i * n + k for i in indices for k in range(n)]
        index = torch.tensor(indices, dtype=torch.long)
        candidates = self.candidates.iloc[rows].reset_index(drop=True)
        candidates["problem_index"] = [position for position in range(len(indices)) for _ in range(n)]
        return FeatureStore(
            problems=[self.problems[i] for i in indices],
            candidates=candidates,
            instruction=self.instruction[index],
            responses=self.responses[index],
            layers=self.layers,
            model=self.model,
            sampling=self.sampling,
            info=dict(self.info),
        )

    def first_per_family(self, k: int | None) -> "FeatureStore":
        """The first k problems of every family, in store order (the whole store when k is None)."""
        if k is None:
            return self
        if k < 1:
            raise ValueError(f"k must be at least 1 (or None for all problems), got {k}")
        seen: dict[str, int] = {}
        chosen = []
        for index, family in enumerate(self.families):
            if seen.get(family, 0) < k:
                seen[family] = seen.get(family, 0) + 1
                chosen.append(index)
        return self.subset(chosen)

    def first_candidates(self, k: int) -> "FeatureStore":
        """The same problems with only their first k candidates (in sampling order, so still i.i.d.)."""
        if not 1 <= k <= self.num_candidates:
            raise ValueError(f"k must be in [1, {self.num_candidates}], got {k}")
        candidates = self.candidates[self.candidates["candidate_index"] < k].reset_index(drop=True)
        return FeatureStore(self.problems, candidates, self.instruction, self.responses[:, :k].contiguous(), self.layers,
                            self.model, self.sampling, dict(self.info))

    def select_layers(self, layers: list[int]) -> "FeatureStore":
        """The same store with only some of its recorded layers (e.g. to ship a small fixture)."""
        slots = [self.layers.index(layer) if layer in self.layers else None for layer in layers]
        if None in slots:
            raise ValueError(f"layers {layers} are not all in this store; it has {list(self.layers)}")
        return FeatureStore(self.problems, self.candidates.copy(), self.instruction[:, slots], self.responses[:, :, slots],
                            tuple(layers), self.model, self.sampling, dict(self.info))

    def save(self, path: str | Path) -> Path:
        """Write the store folder atomically (a crash never leaves half a store)."""
        target = Path(path)
        with atomic_folder(target) as staging:
            dtype = storage_dtype(self.instruction, self.responses)
            save_file(
                {"instruction": self.instruction.to(dtype).contiguous(), "responses": self.responses.to(dtype).contiguous()},
                staging / "features.safetensors",
            )
            self.candidates.to_parquet(staging / "candidates.parquet", index=False)
            with open(staging / "problems.jsonl", "w", encoding="utf-8") as handle:
                for problem in self.problems:
                    record = {"prompt": problem.prompt, "answer": problem.answer, "checker": problem.checker,
                              "tests": list(problem.tests), "family": problem.family}
                    handle.write(json.dumps(record) + "\n")
            card = {
                "model": self.model.to_dict(),
                "layers": list(self.layers),
                "sampling": self.sampling.to_dict(),
                "num_problems": len(self.problems),
                "num_candidates": self.num_candidates,
                "feature_dtype": str(dtype).replace("torch.", ""),
                "library_version": ranker.__version__,
                "info": self.info,
            }
            (staging / "card.json").write_text(json.dumps(card, indent=2))
        return target

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStore":
        """Read a store folder; ValueError naming the file and the fault when any file is missing or corrupt."""
        folder = Path(path)
        card_path = folder / "card.json"
        if not card_path.is_file():
            raise ValueError(f"{str(folder)!r} is not a feature store (no card.json); build one with `python -m ranker build`.")
        card = read_json(card_path, "feature store card")
        try:
            layers = tuple(int(layer) for layer in card["layers"])
            model = ModelFingerprint.from_dict(card["model"])
            sampling = SamplingConfig(**card["sampling"])
        except (KeyError, TypeError, ValueError) as error:
            detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
            raise ValueError(f"{card_path} is not a valid feature store card: {detail}") from None
        features_path = folder / "features.safetensors"
        tensors = read_tensors(features_path, "the store's features")
        for name, dims in (("instruction", 3), ("responses", 4)):
            tensor = tensors.get(name)
            if tensor is None or tensor.dim() != dims:
                shape = None if tensor is None else tuple(tensor.shape)
                raise ValueError(f"{features_path} must hold {name!r} with {dims} dimensions, got shape {shape}")
            # The card names the model and layers the features came from; features of another model do not fit it.
            if tensor.shape[-2:] != (len(layers), model.hidden_size):
                raise ValueError(
                    f"{features_path}: {name!r} has {tensor.shape[-2]} layers of width {tensor.shape[-1]}, but {card_path} "
                    f"says layers {list(layers)} of {model.model_id} (hidden size {model.hidden_size}); wrong card or features"
                )
        problems = _read_problems(folder / "problems.jsonl")
        candidates_path = folder / "candidates.parquet"
        if not candidates_path.is_file():
            raise ValueError(f"{candidates_path} not found: the store's candidates are missing")
        try:
            candidates = pd.read_parquet(candidates_path)
        except Exception as error:  # pyarrow's errors do not name the file
            raise ValueError(f"{candidates_path} is not a readable parquet file (truncated or corrupt?): {error}") from None
        try:
            return cls(
                problems=problems,
                candidates=candidates,
                instruction=tensors["instruction"].float(),
                responses=tensors["responses"].float(),
                layers=layers,
                model=model,
                sampling=sampling,
                info=card.get("info", {}),
            )
        except ValueError as error:
            raise ValueError(f"feature store {str(folder)!r} is inconsistent: {error}") from None


def _read_problems(path: Path) -> list[Problem]:
    """problems.jsonl as Problems; ValueError naming the file and line of the first bad record."""
    if not path.is_file():
        raise ValueError(f"{path} not found: the store's problems are missing")
    problems = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    record = json.loads(line)
                    problems.append(Problem(record["prompt"], record["answer"], record["checker"], tuple(record["tests"]),
                                            record["family"]))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                    detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
                    raise ValueError(f"{path} line {number} is not a valid problem record: {detail}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not readable: {error}") from None
    return problems
