"""Build a feature store: sample N candidates per problem, label them with the checker, keep features.

The unit of work is a **chunk**: chunk c is problems [c*k, (c+1)*k) with k = prompts per chunk,
sampled in one `generate` call with seed `sampling.seed + c`. Chunks are fixed by prompt
position, so a build that splits them across processes (`ranker.capture.distributed_build`)
draws exactly the candidates of `build_store`, which builds them one after the other in memory.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from ranker.capture.base_model import BaseModel
from ranker.capture.feature_store import FeatureStore
from ranker.capture.sampling import SamplingConfig, sample_candidates_batch
from ranker.tasks import VERIFIABLE_CHECKERS, Problem, check_many
from ranker.tasks.voting import answer_key

Progress = Callable[[int, int], None]  # (problems done, problems total)


def check_buildable(problems: Sequence[Problem]) -> None:
    """ValueError unless there are problems and every one has a checker that can label candidates."""
    if not problems:
        raise ValueError("no problems to build a store from")
    for problem in problems:
        if problem.checker not in VERIFIABLE_CHECKERS:
            raise ValueError(f"problem {problem.prompt[:40]!r} has checker {problem.checker!r}, which cannot label candidates")


def chunk_range(chunk: int, num_problems: int, prompts_per_chunk: int) -> range:
    """The problem positions of chunk `chunk`: [chunk*k, (chunk+1)*k), cut at the end."""
    if prompts_per_chunk < 1:
        raise ValueError(f"prompts per chunk must be at least 1, got {prompts_per_chunk}")
    return range(chunk * prompts_per_chunk, min((chunk + 1) * prompts_per_chunk, num_problems))


def num_chunks(num_problems: int, prompts_per_chunk: int) -> int:
    if prompts_per_chunk < 1:
        raise ValueError(f"prompts per chunk must be at least 1, got {prompts_per_chunk}")
    return -(-num_problems // prompts_per_chunk)


def build_chunk(
    base: BaseModel,
    problems: Sequence[Problem],
    sampling: SamplingConfig,
    layers: int | float | Sequence,
    chunk: int,
    *,
    prompts_per_chunk: int = 8,
    lane: contextlib.AbstractContextManager | None = None,
) -> FeatureStore:
    """Chunk `chunk` of `problems` (all of them, not just the chunk's), sampled in one call, as a store of its own.

    The seed is `sampling.seed + chunk` (None stays None: the global RNG). The store's
    `problem_index` counts from 0 within the chunk, its `sampling` is the build's config (the
    seed of chunk 0), and `info` records the chunk, its seed and its timings.
    """
    start = time.perf_counter()
    part = _sample_chunk(base, problems, sampling, layers, chunk, prompts_per_chunk, lane)
    return FeatureStore(
        problems=part.problems,
        candidates=pd.DataFrame(part.rows),
        instruction=part.instruction,
        responses=part.responses,
        layers=part.layers,
        model=base.fingerprint,
        sampling=sampling,
        info={"chunk": chunk, "chunk_seed": part.seed, "build_seconds": round(time.perf_counter() - start, 2),
              "generation_seconds": round(part.generation_seconds, 2)},
    )


def build_store(
    base: BaseModel,
    problems: Sequence[Problem],
    sampling: SamplingConfig,
    layers: int | float | Sequence = 0.6,
    *,
    prompts_per_call: int = 8,
    progress: Progress | None = None,
    lane: contextlib.AbstractContextManager | None = None,
) -> FeatureStore:
    """Sample `sampling.num_candidates` answers for every problem and record everything, in memory.

    Problems are sampled `prompts_per_call` at a time, one chunk per call (`build_chunk`), so the
    result equals a sharded build (`ranker.capture.distributed_build`) with the same seed and chunk size.

    lane: a context manager held around each sampling call (the app's `ModelLane`), so other
    users of the same model get their turn between calls; None holds nothing.
    """
    check_buildable(problems)
    start = time.perf_counter()
    parts = []
    for chunk in range(num_chunks(len(problems), prompts_per_call)):
        parts.append(_sample_chunk(base, problems, sampling, layers, chunk, prompts_per_call, lane))
        if progress:
            progress(chunk_range(chunk, len(problems), prompts_per_call).stop, len(problems))
    # One frame from all rows, as a single chunk would make it (a column's dtype is inferred once).
    rows = [{**row, "problem_index": row["problem_index"] + chunk * prompts_per_call}
            for chunk, part in enumerate(parts) for row in part.rows]
    return FeatureStore(
        problems=list(problems),
        candidates=pd.DataFrame(rows),
        instruction=torch.cat([part.instruction for part in parts]),
        responses=torch.cat([part.responses for part in parts]),
        layers=parts[0].layers,
        model=base.fingerprint,
        sampling=sampling,
        info={"build_seconds": round(time.perf_counter() - start, 2),
              "generation_seconds": round(sum(part.generation_seconds for part in parts), 2)},
    )


@dataclass
class _SampledChunk:
    problems: list[Problem]
    rows: list[dict]  # one per (problem, candidate); problem_index counts from 0 within the chunk
    instruction: torch.Tensor  # (p, L, H)
    responses: torch.Tensor  # (p, N, L, H)
    layers: tuple[int, ...]
    seed: int | None
    generation_seconds: float


def _sample_chunk(base: BaseModel, problems: Sequence[Problem], sampling: SamplingConfig, layers: int | float | Sequence,
                  chunk: int, prompts_per_chunk: int, lane: contextlib.AbstractContextManager | None) -> _SampledChunk:
    positions = chunk_range(chunk, len(problems), prompts_per_chunk)
    if not positions:
        raise ValueError(f"chunk {chunk} is empty: {len(problems)} problems make {num_chunks(len(problems), prompts_per_chunk)} "
                         f"chunks of {prompts_per_chunk}")
    part = [problems[i] for i in positions]
    check_buildable(part)
    n = sampling.num_candidates
    seed = None if sampling.seed is None else sampling.seed + chunk
    with lane or contextlib.nullcontext():
        results = sample_candidates_batch(base, [p.prompt for p in part], SamplingConfig(**{**sampling.to_dict(), "seed": seed}),
                                          layers, max_rows=len(part) * n)
    rows = []
    for offset, (problem, result) in enumerate(zip(part, results)):
        labels = check_many(problem, [c.text for c in result.candidates])
        for candidate, correct in zip(result.candidates, labels):
            rows.append({
                "problem_index": offset,
                "family": problem.family,
                "candidate_index": candidate.index,
                "text": candidate.text,
                "finish_reason": candidate.finish_reason,
                "num_tokens": candidate.num_tokens,
                "sum_logprob": candidate.sum_logprob,
                "mean_logprob": candidate.mean_logprob,
                "self_certainty": candidate.self_certainty,
                "lowest_group_confidence": candidate.lowest_group_confidence,
                "bottom_group_confidence": candidate.bottom_group_confidence,
                "tail_confidence": candidate.tail_confidence,
                "token_confidences": candidate.token_confidences,
                "correct": bool(correct),
                "vote_key": answer_key(problem, candidate.text),
            })
    return _SampledChunk(part, rows, torch.stack([r.instruction_features for r in results]),
                         torch.stack([r.response_features for r in results]), results[0].layers, seed,
                         results[0].generation_seconds)
