"""One request of the app: sample N candidates, rank them, score them with a reward model, time each step.

    result = rank_prompt(base, "What is 7 + 5?", SamplingConfig(num_candidates=8), ranker, rm)
    result.rows()      # candidates in ranker order, as JSON-ready dicts
    result.timings     # {"generate_s", "ranker_s", "rm_s"}: what each method costs on top of sampling

The ranker reads features captured during generation, so its time is only the projection and
scoring; the reward model runs its own forward passes over every (prompt, candidate) text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ranker.capture.base_model import BaseModel
from ranker.capture.sampling import SamplingConfig, StepCallback, sample_candidates
from ranker.evaluation.metrics import best_candidates
from ranker.rankers.estimator import LanguageRanker
from ranker.tasks.voting import response_keys

DEFAULT_LAYER = 0.6  # depth fraction used when no ranker is loaded


@dataclass
class RankedCandidates:
    """Everything one request produced. K = number of candidates, H = hidden size."""

    prompt: str
    texts: list[str]
    finish_reasons: list[str]
    num_tokens: list[int]
    mean_logprob: Tensor  # (K,)
    vote_keys: list[str | None]  # K answer keys under the free-form rule (ranker.tasks.voting), for fusion
    instruction: Tensor  # (H,) features at the prompt's last token
    responses: Tensor  # (K, H) features at each candidate's last token
    layer: int  # hidden_states index of the features
    sampling: SamplingConfig
    ranker_scores: Tensor | None = None  # (K,), higher is better
    probabilities: Tensor | None = None  # (K,) calibrated P(correct), when the ranker has a calibration
    rm_scores: Tensor | None = None  # (K,)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_candidates(self) -> int:
        return len(self.texts)

    def ranker_order(self) -> list[int]:
        """Candidate indices, best first by the ranker (sampling order when there is no ranker)."""
        if self.ranker_scores is None:
            return list(range(self.num_candidates))
        return torch.argsort(self.ranker_scores, descending=True, stable=True).tolist()

    def rm_ranks(self) -> list[int] | None:
        """1-based rank of every candidate under the reward model (None without one)."""
        if self.rm_scores is None:
            return None
        ranks = [0] * self.num_candidates
        for rank, index in enumerate(torch.argsort(self.rm_scores, descending=True, stable=True).tolist(), start=1):
            ranks[index] = rank
        return ranks

    def rows(self, order: list[int] | None = None) -> list[dict]:
        """One dict per candidate, in `order` (default: ranker order), with rank numbers and scores."""
        order = self.ranker_order() if order is None else order
        ranker_rank = {index: rank for rank, index in enumerate(self.ranker_order(), start=1)}
        rm_ranks = self.rm_ranks()
        rows = []
        for index in order:
            rows.append({
                "candidate": index,
                "rank": ranker_rank[index] if self.ranker_scores is not None else None,
                "text": self.texts[index],
                "ranker_score": None if self.ranker_scores is None else round(float(self.ranker_scores[index]), 4),
                "p_correct": None if self.probabilities is None else round(float(self.probabilities[index]), 4),
                "rm_score": None if self.rm_scores is None else round(float(self.rm_scores[index]), 4),
                "rm_rank": None if rm_ranks is None else rm_ranks[index],
                "mean_logprob": round(float(self.mean_logprob[index]), 4),
                "tokens": int(self.num_tokens[index]),
                "finish": self.finish_reasons[index],
            })
        return rows

    def disagreement(self) -> bool:
        """True when the ranker's and the reward model's top candidates differ."""
        if self.ranker_scores is None or self.rm_scores is None:
            return False
        return int(best_candidates(self.ranker_scores)) != int(best_candidates(self.rm_scores))


def rank_prompt(base: BaseModel, prompt: str, sampling: SamplingConfig, ranker: LanguageRanker | None = None,
                rm=None, layer: int | float | None = None, on_step: StepCallback | None = None) -> RankedCandidates:
    """Sample, then score with `ranker` (features captured during sampling) and `rm` (its own passes).

    layer: where to capture features; defaults to the ranker's own layer, else `DEFAULT_LAYER`.
    rm: anything with `score(prompt, candidates) -> (K,)` (ranker.reward estimators); None leaves
    `rm_scores` empty, for `score_with_rm` to fill later (the ranked list need not wait for it).
    on_step: called once per decode step (`ranker.capture.sampling.sample_candidates`).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt is empty; type a question or an instruction")
    if layer is None:
        layer = ranker.fingerprint_.layer if ranker is not None and ranker.fingerprint_ is not None else DEFAULT_LAYER
    start = time.perf_counter()
    sample = sample_candidates(base, prompt, sampling, layers=layer, on_step=on_step)
    timings = {"generate_s": time.perf_counter() - start}
    instruction, responses = sample.features()
    result = RankedCandidates(
        prompt=prompt,
        texts=[c.text for c in sample.candidates],
        finish_reasons=[c.finish_reason for c in sample.candidates],
        num_tokens=[c.num_tokens for c in sample.candidates],
        mean_logprob=torch.tensor([c.mean_logprob for c in sample.candidates], dtype=torch.float32),
        vote_keys=response_keys([c.text for c in sample.candidates]),
        instruction=instruction.float(),
        responses=responses.float(),
        layer=int(sample.layers[0]),
        sampling=sampling,
        timings=timings,
    )
    if ranker is not None:
        start = time.perf_counter()
        result.ranker_scores = ranker.score(result.instruction, result.responses, result.mean_logprob, result.vote_keys)
        timings["ranker_s"] = time.perf_counter() - start
        if ranker.calibrated:
            result.probabilities = ranker.probability_correct(result.ranker_scores, result.instruction)
    if rm is not None:
        score_with_rm(result, rm)
    return result


def score_with_rm(result: RankedCandidates, rm) -> RankedCandidates:
    """Fill `result.rm_scores` (K,) with the reward model's scores of its candidates; returns `result`.

    The RM runs its own forward passes over prompt + candidate, so it costs far more than the
    ranker; calling it after the ranked list is shown keeps the user from waiting for it.
    """
    start = time.perf_counter()
    scores = torch.as_tensor(rm.score(result.prompt, result.texts), dtype=torch.float32).flatten()
    if scores.numel() != result.num_candidates:
        raise ValueError(f"the reward model returned {scores.numel()} scores for {result.num_candidates} candidates")
    result.rm_scores = scores
    result.timings["rm_s"] = time.perf_counter() - start
    return result
