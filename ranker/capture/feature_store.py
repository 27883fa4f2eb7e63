"""A feature store: sampled candidates for a set of problems, their labels and their features.

Built once by sampling (`ranker.capture.store_builder`), then read many times by training, evaluation and
the experiments, so that no experiment re-runs the LLM. P problems, N candidates each, features at
L recorded layers of width H (`hidden_states` indices: `ranker.capture.hidden_states`).

On disk, a folder (format version 2):

- `card.json`: one JSON object:
  - `format_version`: 2 (a card without it is version 1: one `features.safetensors`, no `shards`);
  - `shards`: list of `{"file", "start", "stop", "dtype"}`, in prompt order: the shard file (relative to
    the folder) holds prompts `start` to `stop - 1`; the ranges tile [0, P) without gaps or overlaps;
  - `model`: the base model's fingerprint (`model_id`, `revision`, `num_layers`, `hidden_size`);
  - `layers`: the L recorded `hidden_states` indices, in the order of the tensors' layer axis;
  - `sampling`: the `SamplingConfig` of the build (`num_candidates`, `temperature`, `top_p`, `top_k`,
    `max_new_tokens`, `seed`);
  - `num_problems` (P), `num_candidates` (N), `feature_dtype` ("float16", "float32", or "mixed" when
    the shards differ), `library_version`;
  - `info`: what was built and how long it took (`build_seconds`, `generation_seconds`; a merged store
    also keeps its `parts`' infos).
- the shards, safetensors files, each holding a contiguous run of p prompts:
  - `instruction` (p, L, H): the hidden state of each prompt's last token;
  - `responses` (p, N, L, H): the hidden state of each candidate's last token;

  float16, or float32 where a value would overflow float16 (`ranker.core.tensors.storage_dtype`).
  A store that fits in one shard keeps it at `features.safetensors`; a larger or merged one has
  `features/00000.safetensors`, `features/00001.safetensors`, ...
- `candidates.parquet`: P * N rows ordered by (problem_index, candidate_index): `problem_index`,
  `family`, `candidate_index` (sampling order), `text`, `finish_reason` ("eos"/"length"), `num_tokens`,
  `sum_logprob`, `mean_logprob` (under the raw, untempered distribution), `correct` (the checker's
  label), `vote_key` (the extracted answer for majority vote; null when none). Stores built since
  the confidence signals also have `self_certainty`, `lowest_group_confidence`,
  `bottom_group_confidence`, `tail_confidence` and `token_confidences` (a list per candidate; see
  `ranker.capture.confidence`); `has_signals` says whether a store has them.
- `problems.jsonl`: one problem a line, in store order: `prompt`, `answer`, `checker`, `tests`, `family`.

Why this layout. The features are fixed-shape float tensors, almost all of a store's bytes:
safetensors is a JSON header and the raw little-endian array, so a shard is memory-mapped as it is
(no decoding, no per-row overhead) and a merged build reuses its parts' files as shards, hard-linked,
without copying a byte. The candidates are a ragged table of text and numbers, which is what
parquet (Arrow) is for; it is small next to the features and read whole.

Why `save` keeps writing `features.safetensors` for a store that fits in one shard: it is the
one-shard case of version 2, so the shipped stores (`assets/task_data`, the test fixtures, all
version 1) stay valid as they are, with nothing to convert, and a store written now still reads
with an older library. Only what does not fit in one shard is split into `features/`.

Reading. `load` memory-maps every shard and reads none of its features: a store larger than RAM
opens at once. `instruction`, `responses` and `features(layer)` materialise float32 tensors of the
whole store (cached; fine for the small stores of tests and experiments); `feature_rows` and
`iter_problem_batches` read only the prompts asked for, in bounded memory, for training that streams.
`subset`, `first_candidates` and `select_layers` of a memory-mapped store stay memory-mapped. Values
are float32 either way, float16 on disk upcast exactly.

`save` and `merge_parts` are atomic (`ranker.core.file_io.atomic_folder`); `load` raises ValueError naming
the file and the fault when a file is missing, truncated or corrupt, or when the features do not fit the
card's model.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import shutil
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

import ranker
from ranker.capture.fingerprint import FeatureFingerprint, ModelFingerprint
from ranker.capture.sampling import SamplingConfig
from ranker.core.cards import read_json
from ranker.core.file_io import atomic_folder
from ranker.core.tensors import storage_dtype
from ranker.tasks import Problem

FORMAT_VERSION = 2  # 1: one features.safetensors and no shard list; 2: the card lists the shards
SINGLE_FILE = "features.safetensors"  # the shard of a one-shard store
SHARDS_FOLDER = "features"  # the shards of a larger store
SHARD_BYTES = 256 << 20  # `save` starts a new shard past this many bytes of features (bounds its memory too)
_SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_FEATURES = "the store's features"
LIST_COLUMNS = ("token_confidences",)  # candidate columns holding one list per candidate
CONFIDENCE_COLUMNS = ("self_certainty", "lowest_group_confidence", "bottom_group_confidence", "tail_confidence")


@dataclass
class ProblemBatch:
    """Some problems of a store at one layer, as `FeatureStore.iter_problem_batches` yields them."""

    problem_indices: list[int]  # (p,) positions in the store
    instruction: torch.Tensor  # (p, H) float32
    responses: torch.Tensor  # (p, N, H) float32
    labels: torch.Tensor  # (p, N) float32, 1.0 where the checker accepted the candidate


@dataclass(frozen=True)
class _Shard:
    """One shard file, memory-mapped: prompts [start, stop) of the store it was loaded with."""

    path: Path
    start: int
    stop: int
    instruction: torch.Tensor  # (p, L, H) in the file's dtype, a view of the mapping (nothing read yet)
    responses: torch.Tensor  # (p, N, L, H)
    mapping: mmap.mmap | None  # None for a file without data

    def release(self) -> None:
        """Drop the pages read so far from this process (they stay in the page cache): reading stays bounded in RSS."""
        if self.mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
            self.mapping.madvise(mmap.MADV_DONTNEED)


@dataclass(frozen=True)
class _MappedFeatures:
    """The features of a loaded store, read from its shards through a view (prompts, candidates, layers)."""

    shards: tuple[_Shard, ...]
    rows: np.ndarray  # (P,) int64: the view's prompts, as prompt numbers of the shards
    num_candidates: int  # the view keeps the first k candidates of each prompt
    slots: tuple[int, ...]  # the shards' layer slots of the view's layers, in order

    @property
    def hidden_size(self) -> int:
        return int(self.shards[0].instruction.shape[-1])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(P, N, L, H) of the view's responses."""
        return len(self.rows), self.num_candidates, len(self.slots), self.hidden_size

    def is_whole(self) -> bool:
        """True when the view is every shard as it is (so the files can be reused unchanged)."""
        first = self.shards[0].responses
        return (np.array_equal(self.rows, np.arange(self.shards[-1].stop)) and self.num_candidates == first.shape[1]
                and self.slots == tuple(range(first.shape[2])))

    def view(self, rows: np.ndarray | None = None, num_candidates: int | None = None,
             slots: Sequence[int] | None = None) -> "_MappedFeatures":
        """A narrower view: rows index this view's prompts, slots this view's layers."""
        return _MappedFeatures(self.shards, self.rows if rows is None else self.rows[rows],
                               self.num_candidates if num_candidates is None else num_candidates,
                               self.slots if slots is None else tuple(self.slots[s] for s in slots))

    def read(self, positions: np.ndarray, slots: Sequence[int], instruction: bool = True,
             responses: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """float32 (instruction (p, len(slots), H), responses (p, N, len(slots), H)) of the view's prompts `positions`.

        Only those prompts' rows are read; a part not asked for is None.
        """
        rows = self.rows[positions]
        layers = [self.slots[s] for s in slots]
        p, k, h = len(rows), self.num_candidates, self.hidden_size
        out_instruction = torch.empty((p, len(layers), h)) if instruction else None
        out_responses = torch.empty((p, k, len(layers), h)) if responses else None
        starts = np.array([shard.start for shard in self.shards])
        which = np.searchsorted(starts, rows, side="right") - 1
        for number in np.unique(which):
            shard = self.shards[number]
            where = np.flatnonzero(which == number)  # ascending: the output rows this shard fills
            local = rows[where] - shard.start  # the shard's rows that go there
            # One layer at a time, so that only that layer's bytes are read and no (p, N, L, H) copy is made.
            for j, layer in enumerate(layers):
                if out_instruction is not None:
                    _gather(out_instruction[:, j], where, shard.instruction[:, layer], local)
                if out_responses is not None:
                    _gather(out_responses[:, :, j], where, shard.responses[:, :k, layer], local)
            shard.release()
        return out_instruction, out_responses


def _gather(out: torch.Tensor, where: np.ndarray, source: torch.Tensor, rows: np.ndarray) -> None:
    """out[where] = source[rows] as float32; where ascending. A run of rows is copied straight from the mapping."""
    if _is_run(where) and _is_run(rows):
        out[int(where[0]) : int(where[-1]) + 1].copy_(source[int(rows[0]) : int(rows[-1]) + 1])
    else:
        out.index_copy_(0, torch.from_numpy(where), source.index_select(0, torch.from_numpy(rows)).float())


def _is_run(values: np.ndarray) -> bool:
    """True when `values` are consecutive ascending integers (a slice)."""
    return len(values) > 0 and int(values[-1]) - int(values[0]) + 1 == len(values) and bool(np.all(np.diff(values) == 1))


class FeatureStore:
    """N candidates for each of P problems, labelled, with features at L layers.

    Built from tensors (in memory) or by `load` (memory-mapped shards, read on demand); both
    answer every method the same way.
    """

    def __init__(self, problems: list[Problem], candidates: pd.DataFrame, instruction: torch.Tensor,
                 responses: torch.Tensor, layers: Sequence[int], model: ModelFingerprint, sampling: SamplingConfig,
                 info: dict | None = None):
        self.problems = problems
        self.candidates = candidates  # P * N rows ordered by (problem_index, candidate_index)
        self._instruction: torch.Tensor | None = instruction  # (P, L, H) float32
        self._responses: torch.Tensor | None = responses  # (P, N, L, H) float32
        self._mapped: _MappedFeatures | None = None  # set for a loaded store: where the tensors are read from
        self.layers = tuple(layers)  # hidden_states indices (ranker.capture.hidden_states)
        self.model = model
        self.sampling = sampling
        self.info = {} if info is None else info  # what was built and how long it took
        self._check()

    @classmethod
    def _from_mapped(cls, problems: list[Problem], candidates: pd.DataFrame, mapped: _MappedFeatures,
                     layers: Sequence[int], model: ModelFingerprint, sampling: SamplingConfig, info: dict) -> "FeatureStore":
        store = cls.__new__(cls)
        store.problems, store.candidates, store.layers = problems, candidates, tuple(layers)
        store.model, store.sampling, store.info = model, sampling, info
        store._instruction = store._responses = None
        store._mapped = mapped
        store._check()
        return store

    def _check(self) -> None:
        num_problems, n = self._shape()[:2]
        instruction_rows = len(self._mapped.rows) if self._instruction is None else self._instruction.shape[0]
        if len(self.problems) != num_problems or instruction_rows != num_problems:
            raise ValueError(f"store has {len(self.problems)} problems but features for {num_problems}")
        if len(self.candidates) != num_problems * n:
            raise ValueError(f"store has {len(self.candidates)} candidate rows, expected {num_problems} x {n}")

    def _shape(self) -> tuple[int, ...]:
        """(P, N, L, H) of the responses, without reading them."""
        return tuple(self._responses.shape) if self._responses is not None else self._mapped.shape

    def __repr__(self) -> str:
        where = "memory-mapped" if self.is_memory_mapped else "in memory"
        p, n, _, h = self._shape()
        return f"FeatureStore({p} problems x {n} candidates, layers {list(self.layers)}, hidden size {h}, {where})"

    # --- the features -----------------------------------------------------------------------------

    @property
    def is_memory_mapped(self) -> bool:
        """True while the features are read from the store's files (a loaded store whose tensors were not replaced)."""
        return self._mapped is not None

    @property
    def instruction(self) -> torch.Tensor:
        """(P, L, H) float32, the whole store's (read from the shards on first use, then kept)."""
        if self._instruction is None:
            self._instruction, _ = self._mapped.read(np.arange(len(self.problems)), range(len(self.layers)), responses=False)
        return self._instruction

    @instruction.setter
    def instruction(self, value: torch.Tensor) -> None:
        self._detach_files()
        self._instruction = value

    @property
    def responses(self) -> torch.Tensor:
        """(P, N, L, H) float32, the whole store's (read from the shards on first use, then kept)."""
        if self._responses is None:
            _, self._responses = self._mapped.read(np.arange(len(self.problems)), range(len(self.layers)), instruction=False)
        return self._responses

    @responses.setter
    def responses(self, value: torch.Tensor) -> None:
        self._detach_files()
        self._responses = value

    def _detach_files(self) -> None:
        """Materialise both tensors and stop reading the files: the caller is about to replace one of them."""
        if self._mapped is not None:
            self._instruction, self._responses = self.instruction, self.responses
            self._mapped = None

    @property
    def num_candidates(self) -> int:
        return self._shape()[1]

    @property
    def families(self) -> list[str]:
        return [p.family for p in self.problems]

    def labels(self) -> torch.Tensor:
        """(P, N) float: 1.0 where the checker accepted the candidate."""
        return torch.tensor(self.candidates["correct"].to_numpy(dtype="float32")).view(len(self.problems), -1)

    @property
    def has_signals(self) -> bool:
        """Whether the candidates carry the confidence signals (stores built before them do not)."""
        return all(column in self.candidates for column in CONFIDENCE_COLUMNS)

    def column(self, name: str) -> list[list]:
        """A candidates column as P lists of N values; missing values (NaN after a parquet round trip) are None.

        Missing must be None, not NaN: pandas hands back one shared NaN object for every missing
        vote key, and a Counter would count those as one answer that they all voted for.
        """
        series = self.candidates[name]
        values = series.astype(object).where(series.notna(), None).tolist()
        n = self.num_candidates
        return [values[i * n : (i + 1) * n] for i in range(len(self.problems))]

    def _slot(self, layer: int | None) -> int:
        if layer is None:
            return 0
        if layer in self.layers:
            return self.layers.index(layer)
        raise ValueError(f"layer {layer} is not in this store; it has layers {list(self.layers)}")

    def features(self, layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(instruction (P, H), responses (P, N, H)) at one recorded layer (default: the first), the whole store's."""
        slot = self._slot(layer)
        return self.instruction[:, slot], self.responses[:, :, slot]

    def feature_rows(self, layer: int | None, problem_indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(instruction (p, H), responses (p, N, H)) float32 of the problems `problem_indices` (store positions, any order).

        Reads only those problems' rows from the shards (memory O(p N L H), however large the
        store), or indexes the tensors already in memory. Equal to `features(layer)` at those rows.
        """
        slot = self._slot(layer)
        positions = np.asarray(problem_indices, dtype=np.int64).reshape(-1)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self.problems)):
            bad = positions[(positions < 0) | (positions >= len(self.problems))][0]
            raise ValueError(f"problem index {int(bad)} is out of range: the store has {len(self.problems)} problems")
        index = torch.from_numpy(positions)
        need_instruction, need_responses = self._instruction is None, self._responses is None
        instruction = responses = None
        if need_instruction or need_responses:
            instruction, responses = self._mapped.read(positions, [slot], need_instruction, need_responses)
        instruction = instruction[:, 0] if need_instruction else self._instruction[index, slot]
        responses = responses[:, :, 0] if need_responses else self._responses[index, :, slot]
        return instruction, responses

    def iter_problem_batches(self, layer: int | None, batch_problems: int,
                             order: Sequence[int] | None = None) -> Iterator[ProblemBatch]:
        """The store's problems at one layer, `batch_problems` at a time, in `order` (default: store order).

        Each batch is read when it is reached (`feature_rows`), so memory stays that of one batch.
        """
        if not isinstance(batch_problems, int) or batch_problems < 1:
            raise ValueError(f"batch_problems must be a positive integer, got {batch_problems!r}")
        order = list(range(len(self.problems))) if order is None else [int(i) for i in order]
        labels = self.labels()
        for first in range(0, len(order), batch_problems):
            chosen = order[first : first + batch_problems]
            instruction, responses = self.feature_rows(layer, chosen)
            yield ProblemBatch(chosen, instruction, responses, labels[chosen])

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

    # --- narrower stores (a memory-mapped store's stay memory-mapped) -------------------------------

    def _with(self, problems: list[Problem], candidates: pd.DataFrame, layers: Sequence[int],
              tensors: tuple[torch.Tensor, torch.Tensor] | None, mapped: _MappedFeatures | None) -> "FeatureStore":
        if tensors is not None:
            return FeatureStore(problems, candidates, *tensors, layers, self.model, self.sampling, dict(self.info))
        return FeatureStore._from_mapped(problems, candidates, mapped, layers, self.model, self.sampling, dict(self.info))

    def subset(self, indices: list[int]) -> "FeatureStore":
        """The store restricted to some problems, in the given order (problem_index renumbered)."""
        n = self.num_candidates
        rows = [i * n + k for i in indices for k in range(n)]
        candidates = self.candidates.iloc[rows].reset_index(drop=True)
        candidates["problem_index"] = [position for position in range(len(indices)) for _ in range(n)]
        problems = [self.problems[i] for i in indices]
        if self.is_memory_mapped:
            return self._with(problems, candidates, self.layers, None, self._mapped.view(rows=np.asarray(indices, dtype=np.int64)))
        index = torch.tensor(indices, dtype=torch.long)
        return self._with(problems, candidates, self.layers, (self.instruction[index], self.responses[index]), None)

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
        if self.is_memory_mapped:
            return self._with(self.problems, candidates, self.layers, None, self._mapped.view(num_candidates=k))
        return self._with(self.problems, candidates, self.layers, (self.instruction, self.responses[:, :k].contiguous()), None)

    def select_layers(self, layers: list[int]) -> "FeatureStore":
        """The same store with only some of its recorded layers (e.g. to ship a small fixture)."""
        slots = [self.layers.index(layer) if layer in self.layers else None for layer in layers]
        if None in slots:
            raise ValueError(f"layers {layers} are not all in this store; it has {list(self.layers)}")
        if self.is_memory_mapped:
            return self._with(self.problems, self.candidates.copy(), layers, None, self._mapped.view(slots=slots))
        return self._with(self.problems, self.candidates.copy(), layers,
                          (self.instruction[:, slots], self.responses[:, :, slots]), None)

    # --- files --------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the store folder atomically (a crash never leaves half a store).

        One `features.safetensors` when the features fit in SHARD_BYTES, else shards in `features/`.
        A memory-mapped store is written shard by shard without materialising it; one saved whole
        reuses its shard files (hard links). float16 unless a value needs float32 (`storage_dtype`;
        a memory-mapped store keeps float32 wherever a shard of it has float32).
        """
        target = Path(path)
        with atomic_folder(target) as staging:
            shards = self._write_features(staging)
            self.candidates.to_parquet(staging / "candidates.parquet", index=False)
            with open(staging / "problems.jsonl", "w", encoding="utf-8") as handle:
                for problem in self.problems:
                    record = {"prompt": problem.prompt, "answer": problem.answer, "checker": problem.checker,
                              "tests": list(problem.tests), "family": problem.family}
                    handle.write(json.dumps(record) + "\n")
            card = _card(shards, self.model.to_dict(), list(self.layers), self.sampling.to_dict(), len(self.problems),
                         self.num_candidates, self.info)
            (staging / "card.json").write_text(json.dumps(card, indent=2))
        return target

    def _write_features(self, staging: Path) -> list[dict]:
        """Write the shard files into `staging`; returns the card's shard records."""
        num_problems, n, num_layers, hidden = self._shape()
        if self.is_memory_mapped and self._mapped.is_whole():
            return _link_shards(self._mapped.shards, staging, 0, single=len(self._mapped.shards) == 1)
        if self.is_memory_mapped:
            wide = any(shard.responses.dtype != torch.float16 for shard in self._mapped.shards)
            dtype = torch.float32 if wide else torch.float16
        else:
            dtype = storage_dtype(self.instruction, self.responses)
        per_problem = (1 + n) * num_layers * hidden * dtype.itemsize
        chunk = max(1, SHARD_BYTES // per_problem)
        ranges = [(start, min(start + chunk, num_problems)) for start in range(0, num_problems, chunk)] or [(0, 0)]
        records = []
        if len(ranges) > 1:
            (staging / SHARDS_FOLDER).mkdir()
        for number, (start, stop) in enumerate(ranges):
            if self.is_memory_mapped:
                instruction, responses = self._mapped.read(np.arange(start, stop), range(num_layers))
            else:
                instruction, responses = self.instruction[start:stop], self.responses[start:stop]
            name = SINGLE_FILE if len(ranges) == 1 else f"{SHARDS_FOLDER}/{number:05d}.safetensors"
            save_file({"instruction": instruction.to(dtype).contiguous(), "responses": responses.to(dtype).contiguous()},
                      staging / name)
            records.append({"file": name, "start": start, "stop": stop, "dtype": _dtype_name(dtype)})
        return records

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStore":
        """Open a store folder, memory-mapping its shards (no feature is read until used).

        ValueError naming the file and the fault when any file is missing, truncated or corrupt, or
        the features do not fit the card.
        """
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
        shards = tuple(_map_shard(folder, record, layers, model, card_path, card.get("num_candidates"))
                       for record in _card_shards(card, card_path))
        _check_tiling(shards, card_path)
        problems = _read_problems(folder / "problems.jsonl")
        candidates = _read_candidates(folder / "candidates.parquet")
        mapped = _MappedFeatures(shards, np.arange(shards[-1].stop, dtype=np.int64), int(shards[0].responses.shape[1]),
                                 tuple(range(len(layers))))
        try:
            return cls._from_mapped(problems, candidates, mapped, layers, model, sampling, card.get("info", {}))
        except ValueError as error:
            raise ValueError(f"feature store {str(folder)!r} is inconsistent: {error}") from None

    @classmethod
    def merge_parts(cls, parts: Sequence[str | Path], out: str | Path) -> Path:
        """Write one store at `out` that reads as the concatenation of the store folders `parts`.

        parts: stores saved by `save` (or merged), each holding a contiguous run of prompts, in prompt
        order. They must agree on the model, layers, N, hidden size and sampling config (all but
        the seed; the merged store keeps parts[0]'s config); a mismatch is a ValueError naming the
        part and the field. Features are never loaded: every part's shard file is hard-linked into
        `out/features/` (copied where a link cannot cross file systems). Written atomically.
        """
        if not parts:
            raise ValueError("merge_parts needs at least one part, got none")
        folders = [Path(part) for part in parts]
        cards = [_read_part_card(folder) for folder in folders]
        first = cards[0]
        for folder, card in zip(folders[1:], cards[1:]):
            for name, mine, theirs in _build_fields(card, first):
                if mine != theirs:
                    raise ValueError(f"part {folder} has {name} {mine!r}, but part {folders[0]} has {theirs!r}; "
                                     "only parts of one build (one model, layers, N and sampling config) can be merged")
        target = Path(out)
        layers, model = tuple(int(layer) for layer in first["layers"]), ModelFingerprint.from_dict(first["model"])
        records, frames, offset = [], [], 0
        with atomic_folder(target) as staging:
            (staging / SHARDS_FOLDER).mkdir()
            with open(staging / "problems.jsonl", "w", encoding="utf-8") as problems_out:
                for folder, card in zip(folders, cards):
                    num_problems = int(card["num_problems"])
                    lines = _problem_lines(folder / "problems.jsonl")
                    if len(lines) != num_problems:
                        raise ValueError(f"part {folder}: problems.jsonl has {len(lines)} problems, but its card says "
                                         f"num_problems {num_problems}")
                    problems_out.writelines(lines)
                    frame = _read_candidates(folder / "candidates.parquet")
                    if len(frame) != num_problems * int(card["num_candidates"]):
                        raise ValueError(f"part {folder}: candidates.parquet has {len(frame)} rows, expected "
                                         f"{num_problems} x {card['num_candidates']}")
                    frame["problem_index"] = frame["problem_index"] + offset
                    frames.append(frame)
                    # Map each shard (its header only) so that a broken part fails here, not when the merged store is read.
                    shards = [_map_shard(folder, record, layers, model, folder / "card.json", card["num_candidates"])
                              for record in _card_shards(card, folder / "card.json")]
                    _check_tiling(shards, folder / "card.json", num_problems)
                    records += _link_shards(shards, staging, offset, len(records))
                    offset += num_problems
            if not records:
                raise ValueError(f"the parts {[str(f) for f in folders]} hold no prompts; there is nothing to merge")
            pd.concat(frames, ignore_index=True).to_parquet(staging / "candidates.parquet", index=False)
            infos = [card.get("info", {}) for card in cards]
            info = {key: round(sum(float(i.get(key, 0.0)) for i in infos), 2) for key in ("build_seconds", "generation_seconds")}
            card = _card(records, first["model"], first["layers"], first["sampling"], offset, first["num_candidates"],
                         {**info, "parts": infos})
            (staging / "card.json").write_text(json.dumps(card, indent=2))
        return target


# --- the card and the shard files -------------------------------------------------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _card(shards: list[dict], model: dict, layers: list, sampling: dict, num_problems: int, num_candidates: int,
          info: dict) -> dict:
    dtypes = {shard["dtype"] for shard in shards}
    return {
        "format_version": FORMAT_VERSION,
        "shards": shards,
        "model": model,
        "layers": list(layers),
        "sampling": sampling,
        "num_problems": num_problems,
        "num_candidates": num_candidates,
        "feature_dtype": dtypes.pop() if len(dtypes) == 1 else "mixed",
        "library_version": ranker.__version__,
        "info": info,
    }


def _read_part_card(folder: Path) -> dict:
    card_path = folder / "card.json"
    if not card_path.is_file():
        raise ValueError(f"part {str(folder)!r} is not a feature store (no card.json)")
    card = read_json(card_path, "feature store card")
    for name in ("model", "layers", "sampling", "num_problems", "num_candidates"):
        if name not in card:
            raise ValueError(f"{card_path} is not a valid feature store card: missing field {name!r}")
    return card


def _build_fields(card: dict, reference: dict) -> list[tuple[str, object, object]]:
    """(field, card's value, reference's value) for every field that parts of one build share: all but the seed."""
    fields = [("layers", card["layers"], reference["layers"]), ("num_candidates", card["num_candidates"], reference["num_candidates"])]
    for group in ("model", "sampling"):
        mine, theirs = card[group], reference[group]
        if not isinstance(mine, dict) or not isinstance(theirs, dict):
            fields.append((group, mine, theirs))
            continue
        fields += [(f"{group} {key}", mine.get(key), theirs.get(key)) for key in sorted(set(mine) | set(theirs)) if key != "seed"]
    return fields


def _card_shards(card: dict, card_path: Path) -> list[dict]:
    """The card's shard records; a version-1 card (no list) has the one shard features.safetensors."""
    version = card.get("format_version", 1)
    if version not in (1, FORMAT_VERSION):
        raise ValueError(f"{card_path} has format_version {version!r}; this library reads versions 1 and {FORMAT_VERSION}")
    shards = card.get("shards")
    if shards is None:
        return [{"file": SINGLE_FILE, "start": 0, "stop": None}]  # stop: the file's own prompt count
    valid = isinstance(shards, list) and shards and all(
        isinstance(s, dict) and isinstance(s.get("file"), str) and isinstance(s.get("start"), int)
        and isinstance(s.get("stop"), int) and not Path(s["file"]).is_absolute() and ".." not in Path(s["file"]).parts
        for s in shards)
    if not valid:
        raise ValueError(f"{card_path} is not a valid feature store card: 'shards' must be a non-empty list of "
                         f"{{file (relative path), start, stop}} objects, got {shards!r}")
    return shards


def _check_tiling(shards: Sequence[_Shard], card_path: Path, num_problems: int | None = None) -> None:
    """The shards' ranges must follow each other from prompt 0 (to num_problems when given)."""
    end = 0
    for shard in shards:
        if shard.start != end:
            raise ValueError(f"{card_path}: shard {shard.path.name} starts at prompt {shard.start}, expected {end} "
                             "(the shards must tile the prompts in order, without gaps or overlaps)")
        end = shard.stop
    if num_problems is not None and end != num_problems:
        raise ValueError(f"{card_path}: the shards hold {end} prompts, but the card says num_problems {num_problems}")


def _map_shard(folder: Path, record: dict, layers: tuple[int, ...], model: ModelFingerprint, card_path: Path,
               num_candidates: int | None) -> _Shard:
    """The shard `record` of the card, memory-mapped and checked against the card's layers, model and N."""
    path = folder / record["file"]
    tensors, mapping = map_safetensors(path, _FEATURES)
    for name, dims in (("instruction", 3), ("responses", 4)):
        tensor = tensors.get(name)
        if tensor is None or tensor.dim() != dims:
            shape = None if tensor is None else tuple(tensor.shape)
            raise ValueError(f"{path} must hold {name!r} with {dims} dimensions, got shape {shape}")
        # The card names the model and layers the features came from; features of another model do not fit it.
        if tensor.shape[-2:] != (len(layers), model.hidden_size):
            raise ValueError(
                f"{path}: {name!r} has {tensor.shape[-2]} layers of width {tensor.shape[-1]}, but {card_path} "
                f"says layers {list(layers)} of {model.model_id} (hidden size {model.hidden_size}); wrong card or features"
            )
    instruction, responses = tensors["instruction"], tensors["responses"]
    start = record["start"]
    stop = start + responses.shape[0] if record["stop"] is None else record["stop"]
    if not instruction.shape[0] == responses.shape[0] == stop - start:
        raise ValueError(f"{path} holds {instruction.shape[0]} instructions and {responses.shape[0]} responses, but "
                         f"{card_path} says it holds prompts {start} to {stop - 1} ({stop - start})")
    if num_candidates is not None and responses.shape[1] != num_candidates:
        raise ValueError(f"{path} holds {responses.shape[1]} candidates per prompt, but {card_path} says "
                         f"num_candidates {num_candidates}")
    return _Shard(path, start, stop, instruction, responses, mapping)


def map_safetensors(path: str | Path, what: str) -> tuple[dict[str, torch.Tensor], mmap.mmap | None]:
    """The tensors of the safetensors file `path` as views of a private memory mapping of it, and the mapping.

    Only the header is read; a tensor's bytes are read from the file when they are used. The
    mapping is copy-on-write (the file is never written). ValueError naming the file when it is
    missing, truncated or corrupt, or holds a dtype other than float16/bfloat16/float32/float64.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} not found: {what} is missing")
    fault = f"{path} is not a readable safetensors file of {what} (truncated or corrupt?)"
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 8:
                raise ValueError(f"{fault}: {size} bytes, less than its 8-byte header length")
            (header_size,) = struct.unpack("<Q", handle.read(8))
            if header_size > size - 8:
                raise ValueError(f"{fault}: a header of {header_size} bytes in a file of {size}")
            header = json.loads(handle.read(header_size))
            data_start = 8 + header_size
            mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY) if size > data_start else None
    except OSError as error:
        raise ValueError(f"{path} is not readable: {error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{fault}: its header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{fault}: its header is not a JSON object")
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
            shape = [int(d) for d in entry["shape"]]
            begin, end = (int(offset) for offset in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{fault}: tensor {name!r} has an entry this store cannot read: {entry!r}") from None
        count = math.prod(shape)
        if begin < 0 or end - begin != count * dtype.itemsize or data_start + end > size:
            raise ValueError(f"{fault}: tensor {name!r} {shape} needs data bytes {begin} to {end}, "
                             f"the file holds {size - data_start}")
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        elif (data_start + begin) % dtype.itemsize:  # an unaligned tensor (very old writers): read it once, aligned
            tensors[name] = torch.frombuffer(bytearray(mapping[data_start + begin : data_start + end]), dtype=dtype).view(shape)
        else:
            tensors[name] = torch.frombuffer(mapping, dtype=dtype, count=count, offset=data_start + begin).view(shape)
    return tensors, mapping


def _link_shards(shards: Sequence[_Shard], staging: Path, offset: int, first_number: int = 0,
                 single: bool = False) -> list[dict]:
    """Hard-link the shards' files into `staging`, their ranges moved by `offset`; returns their card records.

    single: the one shard of the store, kept at features.safetensors; else features/NNNNN.safetensors.
    Empty shards (a rank that got no prompts) are left out.
    """
    records = []
    for shard in shards:
        if shard.stop == shard.start and not single:
            continue
        name = SINGLE_FILE if single else f"{SHARDS_FOLDER}/{first_number + len(records):05d}.safetensors"
        (staging / name).parent.mkdir(exist_ok=True)
        _link_or_copy(shard.path, staging / name)
        records.append({"file": name, "start": offset + shard.start, "stop": offset + shard.stop,
                        "dtype": _dtype_name(shard.responses.dtype)})
    return records


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link `source` at `target` (no bytes copied); copy where a link cannot be made (another file system)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


# --- the problems and candidates ----------------------------------------------------------------------


def _problem_lines(path: Path) -> list[str]:
    """problems.jsonl's records as lines (each checked, as `_read_problems` does)."""
    _read_problems(path)
    with open(path, encoding="utf-8") as handle:
        return [line if line.endswith("\n") else line + "\n" for line in handle if line.strip()]


def _read_candidates(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"{path} not found: the store's candidates are missing")
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow's errors do not name the file
        raise ValueError(f"{path} is not a readable parquet file (truncated or corrupt?): {error}") from None
    for column in LIST_COLUMNS:
        if column in frame:  # parquet gives arrays back; the builder writes lists
            frame[column] = frame[column].map(lambda values: values.tolist())
    return frame


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
