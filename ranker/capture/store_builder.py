"""Build a feature store: sample N candidates per problem, label them with the checker, keep features."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

import pandas as pd
import torch

from ranker.capture.base_model import BaseModel
from ranker.capture.feature_store import FeatureStore
from ranker.capture.sampling import SamplingConfig, sample_candidates_batch
from ranker.tasks import VERIFIABLE_CHECKERS, Problem, check_many
from ranker.tasks.voting import answer_key

Progress = Callable[[int, int], None]  # (problems done, problems total)


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
    """Sample `sampling.num_candidates` answers for every problem and record everything.

    Problems are sampled `prompts_per_call` at a time; the seed is offset per call so that
    calls differ but the whole build is reproducible.

    lane: a context manager held around each sampling call (the app's `ModelLane`), so other
    users of the same model get their turn between calls; None holds nothing.
    """
    for problem in problems:
        if problem.checker not in VERIFIABLE_CHECKERS:
            raise ValueError(f"problem {problem.prompt[:40]!r} has checker {problem.checker!r}, which cannot label candidates")
    if not problems:
        raise ValueError("no problems to build a store from")
    n = sampling.num_candidates
    rows, instructions, responses = [], [], []
    generation_seconds, start = 0.0, time.perf_counter()
    for call, first in enumerate(range(0, len(problems), prompts_per_call)):
        chunk = list(problems[first : first + prompts_per_call])
        seed = None if sampling.seed is None else sampling.seed + call
        config = SamplingConfig(**{**sampling.to_dict(), "seed": seed})
        with lane or contextlib.nullcontext():
            results = sample_candidates_batch(base, [p.prompt for p in chunk], config, layers, max_rows=len(chunk) * n)
        generation_seconds += results[0].generation_seconds
        for offset, (problem, result) in enumerate(zip(chunk, results)):
            texts = [c.text for c in result.candidates]
            labels = check_many(problem, texts)
            for candidate, correct in zip(result.candidates, labels):
                rows.append({
                    "problem_index": first + offset,
                    "family": problem.family,
                    "candidate_index": candidate.index,
                    "text": candidate.text,
                    "finish_reason": candidate.finish_reason,
                    "num_tokens": candidate.num_tokens,
                    "sum_logprob": candidate.sum_logprob,
                    "mean_logprob": candidate.mean_logprob,
                    "correct": bool(correct),
                    "vote_key": answer_key(problem, candidate.text),
                })
            instructions.append(result.instruction_features)
            responses.append(result.response_features)
        if progress:
            progress(min(first + prompts_per_call, len(problems)), len(problems))
    layers_recorded = results[0].layers
    return FeatureStore(
        problems=list(problems),
        candidates=pd.DataFrame(rows),
        instruction=torch.stack(instructions),
        responses=torch.stack(responses),
        layers=layers_recorded,
        model=base.fingerprint,
        sampling=sampling,
        info={"build_seconds": round(time.perf_counter() - start, 2), "generation_seconds": round(generation_seconds, 2)},
    )
