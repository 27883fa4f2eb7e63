"""Build a feature store across processes, GPUs and nodes, resumably, through one folder per chunk.

The work is cut into the chunks of `ranker.capture.store_builder` (chunk c = problems [c*k, (c+1)*k),
one `generate` call, seed `sampling.seed + c`). Chunk c goes to process c % world_size, so the
candidates never depend on the number of processes: any world size, one process included, writes
the store of `build_store` with the same seed and chunk size. The process state comes from
`accelerate.PartialState`, so the same command runs under `torchrun` (CPUs, over gloo),
`accelerate launch --multi_gpu` (GPUs, nodes) or plain `python` (one process).

On disk, next to the store `OUT/<split>` being built:

    OUT/<split>.parts/plan.json            what every chunk shares (BuildPlan), written once by the main process
    OUT/<split>.parts/chunk-000000/        chunk 0: an ordinary store folder (FeatureStore.save, atomic)
    OUT/<split>.parts/chunk-000001/        ...

When every chunk is there, the main process merges them in order with `FeatureStore.merge_parts`
(features hard-linked, never loaded) into `OUT/<split>` and removes the parts folder.

Resume: a rerun with the same arguments keeps every chunk whose card fits the plan, builds the
others, and removes what a killed write left behind (`ranker.core.file_io.stale_staging`). A
rerun whose plan differs (other problems, chunk size, sampling, layers or model) is refused with
a ValueError naming the field. The world size may change between runs.

Processes meet once, at a barrier right after loading the model (`plan_parts` on every process,
then `wait_for_everyone`, then `write_parts`): until then no chunk is written, so each process
can list its missing chunks and the main process can check the plan while the folder is still.
After it, the main process waits for the chunk folders on disk, not at a barrier, so a slow rank
cannot trip the process group's timeout in a long build; OUT must be on a file system that every
node sees. When a rank dies, the launcher (torchrun's agent, which `accelerate launch` uses too)
stops the others. One build per OUT at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import PartialState

from ranker.capture.base_model import BaseModel, load_base_model
from ranker.capture.feature_store import FeatureStore
from ranker.capture.hidden_states import resolve_layers
from ranker.capture.sampling import SamplingConfig
from ranker.capture.store_builder import Progress, build_chunk, check_buildable, chunk_range, num_chunks
from ranker.core.cards import json_bytes, read_json
from ranker.core.file_io import atomic_write, stale_staging
from ranker.tasks import Problem

PARTS_SUFFIX = ".parts"
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class BuildPlan:
    """What every chunk of one build shares; a resumed build must match it field by field."""

    problems_sha256: str  # sha256 of the problems' records (prompt, answer, checker, tests, family), in order
    num_problems: int  # P
    prompts_per_chunk: int  # k: chunk c holds problems [c*k, (c+1)*k)
    sampling: dict  # SamplingConfig.to_dict(), seed included (chunk c samples with seed + c)
    layers: list[int]  # resolved hidden_states indices
    model: dict  # ModelFingerprint.to_dict() of the base model

    @classmethod
    def of(cls, base: BaseModel, problems: Sequence[Problem], sampling: SamplingConfig, layers: int | float | Sequence,
           prompts_per_chunk: int) -> "BuildPlan":
        records = [[p.prompt, p.answer, p.checker, list(p.tests), p.family] for p in problems]
        digest = hashlib.sha256(json.dumps(records, ensure_ascii=False).encode("utf-8")).hexdigest()
        return cls(problems_sha256=digest, num_problems=len(problems), prompts_per_chunk=prompts_per_chunk,
                   sampling=sampling.to_dict(), layers=list(resolve_layers(layers, base.num_layers)),
                   model=base.fingerprint.to_dict())

    @property
    def sha256(self) -> str:
        """A digest of the whole plan, recorded in every chunk's card."""
        return hashlib.sha256(json_bytes(self.to_dict())).hexdigest()

    @property
    def num_chunks(self) -> int:
        return num_chunks(self.num_problems, self.prompts_per_chunk)

    def chunk_size(self, chunk: int) -> int:
        return len(chunk_range(chunk, self.num_problems, self.prompts_per_chunk))

    def to_dict(self) -> dict:
        return asdict(self)

    def mismatches(self, recorded: dict) -> list[str]:
        """The fields (sampling's keys as `sampling.KEY`) where `recorded` (a plan.json) differs, in words."""
        found = []
        for name, value in self.to_dict().items():
            old = recorded.get(name)
            if name == "sampling" and isinstance(old, dict):
                found += [f"sampling.{key} (plan {old.get(key)!r}, now {value.get(key)!r})"
                          for key in sorted(set(old) | set(value)) if old.get(key) != value.get(key)]
            elif name == "problems_sha256" and old != value:
                found.append("problems (a different list of problems, or another order)")
            elif old != value:
                found.append(f"{name} (plan {old!r}, now {value!r})")
        return found


def parts_folder(out: str | Path) -> Path:
    """`OUT/<split>.parts` for the store `OUT/<split>`."""
    out = Path(out)
    return out.with_name(out.name + PARTS_SUFFIX)


def chunk_folder(parts: Path, chunk: int) -> Path:
    return parts / f"chunk-{chunk:06d}"


def process_state() -> PartialState:
    """accelerate's process state; gloo on CPU where there is no GPU (or with ACCELERATE_USE_CPU)."""
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def load_rank_base_model(name: str | None, state: PartialState | None = None) -> BaseModel:
    """The base model for this process, on its device (`state.device`; the usual default for one process).

    Every process loads its own copy at the same time, not one after the other behind a barrier
    that a long download could time out (the Hub cache locks its files; the GGUF float cache is
    written atomically). On CPU, `OMP_NUM_THREADS` sets each process's threads (torchrun sets it
    to 1 unless it is set already); without it, each gets cores // processes on this node.
    Floating-point sums depend on the thread count, so a store is bitwise the same as another
    build's only when their processes used as many threads each.
    """
    state = state or process_state()
    if not state.use_distributed:
        return load_base_model(name)
    if state.device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
        torch.set_num_threads(max(1, cores // max(1, local_processes)))
    return load_base_model(name, device=state.device)


def write_chunk(base: BaseModel, job: "PartsJob", chunk: int) -> Path:
    """Sample chunk `chunk` and save it atomically as `parts/chunk-NNNNNN`, after clearing a killed write's leftovers."""
    folder = chunk_folder(job.parts, chunk)
    # Only this chunk's owner writes it, so its staging entries are dead (another chunk's may be live).
    _remove_staging_of(folder)
    store = build_chunk(base, job.problems, job.sampling, job.plan.layers, chunk, prompts_per_chunk=job.plan.prompts_per_chunk)
    store.info["plan_sha256"] = job.plan.sha256
    return store.save(folder)


def _remove_staging_of(target: Path) -> None:
    """Delete what a killed atomic write of `target` left beside it; only `target`'s one writer may call it."""
    for leftover in stale_staging(target.parent):
        if leftover.name.startswith(f".{target.name}."):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)


def chunk_is_complete(parts: Path, plan: BuildPlan, chunk: int) -> bool:
    """True when `parts/chunk-NNNNNN` holds a saved store of this plan's chunk (its card is read, its features are not)."""
    card_path = chunk_folder(parts, chunk) / "card.json"
    if not card_path.is_file():
        return False
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    info = card.get("info") if isinstance(card, dict) else None
    return (isinstance(info, dict) and info.get("plan_sha256") == plan.sha256 and info.get("chunk") == chunk
            and card.get("num_problems") == plan.chunk_size(chunk) and card.get("num_candidates") == plan.sampling["num_candidates"])


def settle_plan(parts: Path, plan: BuildPlan) -> None:
    """Write `parts/plan.json` if absent, else check it: ValueError naming every field that differs."""
    path = parts / PLAN_FILE
    parts.mkdir(parents=True, exist_ok=True)
    _remove_staging_of(path)
    if not path.is_file():
        atomic_write(path, json_bytes(plan.to_dict()))
        return
    differences = plan.mismatches(read_json(path, "build plan"))
    if differences:
        raise ValueError(f"{path} belongs to a different build: {'; '.join(differences)}. Rerun with the arguments it "
                         f"was made with to resume, or delete {parts} to start over")


@dataclass
class PartsJob:
    """One store to build through parts: its plan, and the chunks this process still has to write."""

    out: Path  # the merged store's folder
    problems: Sequence[Problem]
    sampling: SamplingConfig
    plan: BuildPlan
    todo: list[int]  # this process's chunks (c % world_size == rank) that are not complete yet

    @property
    def parts(self) -> Path:
        return parts_folder(self.out)


def plan_parts(base: BaseModel, problems: Sequence[Problem], sampling: SamplingConfig, layers: int | float | Sequence,
               out: str | Path, *, prompts_per_chunk: int = 8, state: PartialState | None = None) -> PartsJob:
    """What this process must do for the store `out`; the main process writes or checks `plan.json`.

    Every process must call it before the others write any chunk (`state.wait_for_everyone()`
    in between): the list of missing chunks is taken while the parts folder cannot change.
    """
    check_buildable(problems)
    state = state or process_state()
    plan = BuildPlan.of(base, problems, sampling, layers, prompts_per_chunk)
    job = PartsJob(Path(out), problems, sampling, plan, todo=[])
    job.todo = [chunk for chunk in range(state.process_index, plan.num_chunks, state.num_processes)
                if not chunk_is_complete(job.parts, plan, chunk)]
    if state.is_main_process:
        settle_plan(job.parts, plan)
    return job


def write_parts(base: BaseModel, job: PartsJob, progress: Progress | None = None) -> None:
    """Write this process's missing chunks of `job`.

    progress: called before the first chunk and after each with (problems in the chunks that all
    processes have finished, P).
    """
    for position, chunk in enumerate(job.todo):
        if progress and position == 0:
            progress(_problems_on_disk(job), job.plan.num_problems)
        write_chunk(base, job, chunk)
        if progress:
            progress(_problems_on_disk(job), job.plan.num_problems)


def _problems_on_disk(job: PartsJob) -> int:
    """Problems in the chunks that any process has finished (a saved chunk has its card; save is atomic)."""
    plan = job.plan
    return sum(plan.chunk_size(chunk) for chunk in range(plan.num_chunks) if (chunk_folder(job.parts, chunk) / "card.json").is_file())


def merge_when_complete(job: PartsJob, *, state: PartialState | None = None, poll_seconds: float = 1.0) -> Path | None:
    """Main process: wait until every chunk is on disk, merge them into `job.out`, remove the parts; returns `job.out`.

    Other processes return None at once. The wait polls the parts folder rather than meeting at a
    barrier (see the module docstring); a rank that dies makes the launcher stop this one.
    """
    state = state or process_state()
    if not state.is_main_process:
        return None
    missing = list(range(job.plan.num_chunks))
    while True:
        missing = [chunk for chunk in missing if not chunk_is_complete(job.parts, job.plan, chunk)]
        if not missing:
            break
        time.sleep(poll_seconds)
    _remove_staging_of(job.out)  # a merge killed half way
    FeatureStore.merge_parts([chunk_folder(job.parts, chunk) for chunk in range(job.plan.num_chunks)], job.out)
    shutil.rmtree(job.parts)
    return job.out


def build_store_sharded(
    base: BaseModel,
    problems: Sequence[Problem],
    sampling: SamplingConfig,
    layers: int | float | Sequence,
    out: str | Path,
    *,
    prompts_per_chunk: int = 8,
    progress: Progress | None = None,
) -> Path:
    """Build the store `out` with every process of the job (or this one alone), resuming what is there.

    Every process calls it with the same arguments. Returns `out`, which holds the merged store
    once the main process returns (on the others it may not exist yet). The store equals
    `build_store(base, problems, sampling, layers, prompts_per_call=prompts_per_chunk)` saved to `out`,
    whatever the number of processes.
    """
    state = process_state()
    job = plan_parts(base, problems, sampling, layers, out, prompts_per_chunk=prompts_per_chunk, state=state)
    state.wait_for_everyone()
    write_parts(base, job, progress if state.is_main_process else None)
    merge_when_complete(job, state=state)
    return Path(out)
