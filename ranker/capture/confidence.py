"""Training-free confidence signals, computed from the logits that generation already produces.

Two published best-of-N selectors need more than the sampled token's log-prob: they read the
whole next-token distribution at every step. Keeping those (V,) distributions would cost
V floats per token, so the per-step reductions are taken inside the sampling pass instead
(`StepSignals`, a logits processor) and only one float per token and signal is kept.

Per step, from the raw (untempered) logits z of one row, V = the logits' width:
- **self-certainty** (Kang et al., 2025, "Scalable Best-of-N Selection for Large Language
  Models via Self-Certainty"): KL(U || p) = (1/V) sum_j log((1/V) / p_j)
  = logsumexp(z) - mean(z) - log V, >= 0, higher = more confident. A candidate's
  self-certainty is its mean over the candidate's tokens.
- **token confidence** (Fu et al., 2025, "Deep Think with Confidence", DeepConf):
  C = -(1/k) sum_{j in top-k} log p_j = logsumexp(z) - mean(top-k z), higher = more confident.

Per candidate, DeepConf reduces its token confidences C_1..C_T (`trace_confidences`):
- group confidences: the means of C over every window of `group_window` consecutive tokens
  (stride 1); a candidate shorter than the window is one group, the mean of all its tokens;
- `lowest_group_confidence`: the smallest group confidence;
- `bottom_group_confidence`: the mean of the lowest `bottom_fraction` of the groups
  (at least one group);
- `tail_confidence`: the mean of C over the last `tail_tokens` tokens.

The defaults are the papers': k = 20, windows and tail of 2048 tokens, bottom 10%. With the
embedded model's short answers (at most a few dozen tokens) every candidate is shorter than
2048, so the three reductions coincide with the mean token confidence; `ConfidenceConfig`
sets shorter windows for such tasks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

TRACE_SIGNALS = ("lowest_group_confidence", "bottom_group_confidence", "tail_confidence")


@dataclass(frozen=True)
class ConfidenceConfig:
    """How DeepConf's token confidences are reduced to one number per candidate."""

    group_window: int = 2048  # tokens per sliding group (DeepConf: 2048)
    tail_tokens: int = 2048  # tokens at the end that tail confidence averages (DeepConf: 2048)
    bottom_fraction: float = 0.1  # share of the lowest groups that bottom-group confidence averages (DeepConf: 10%)

    def __post_init__(self) -> None:
        for name in ("group_window", "tail_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
                raise ValueError(f"{name} must be an integer in [1, 1000000], got {value!r}")
        fraction = self.bottom_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < float(fraction) <= 1.0:
            raise ValueError(f"bottom_fraction must be in (0, 1], got {fraction!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def group_confidences(token_confidences: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """(G,) means of every `window` consecutive token confidences; one group for a shorter candidate."""
    values = np.asarray(token_confidences, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"token confidences must be a non-empty 1-d sequence, got shape {values.shape}")
    if values.size <= window:
        return np.array([values.mean()])
    sums = np.cumsum(np.concatenate([[0.0], values]))
    return (sums[window:] - sums[:-window]) / window


def trace_confidences(token_confidences: Sequence[float] | np.ndarray, config: ConfidenceConfig | None = None) -> dict[str, float]:
    """DeepConf's reductions of one candidate's token confidences: the three `TRACE_SIGNALS`."""
    config = config or ConfidenceConfig()
    values = np.asarray(token_confidences, dtype=np.float64)
    groups = group_confidences(values, config.group_window)
    bottom = max(1, int(len(groups) * config.bottom_fraction))
    return {
        "lowest_group_confidence": float(groups.min()),
        "bottom_group_confidence": float(np.sort(groups)[:bottom].mean()),
        "tail_confidence": float(values[-config.tail_tokens:].mean()),
    }


class StepSignals:
    """A logits processor that records, per row and generated position, three floats from the raw logits.

    - `log_probs`: log p(sampled token); the token chosen at step t is only known at step t+1
      (as the last column of input_ids), so each call settles the previous step's token;
    - `certainty`: the self-certainty term KL(U || p) of the step's distribution;
    - `confidence`: DeepConf's token confidence over the top `top_k` tokens.

    Custom processors run before generate's temperature / top-k / top-p warpers, so the logits
    seen here are the model's raw ones: the signals do not depend on the sampling settings.
    Non-finite logits (a model that masks tokens) are left out of the certainty's mean and V.
    """

    # Set to a dict (bench/capture_overhead.py --breakdown) to add up the seconds of each signal's work.
    timings: dict[str, float] | None = None

    def __init__(self, prompt_length: int, rows: int, capacity: int, device: torch.device, top_k: int = 20):
        self.prompt_length = prompt_length
        self.top_k = top_k
        self.log_probs = torch.zeros(rows, capacity, device=device)
        self.certainty = torch.zeros(rows, capacity, device=device)
        self.confidence = torch.zeros(rows, capacity, device=device)
        self._previous: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        position = input_ids.shape[1] - self.prompt_length  # the generated position these logits choose
        clock = _Clock(self.timings, scores.device)
        if self._previous is not None:
            self._settle(input_ids[:, -1], position - 1)
        log_normaliser = torch.logsumexp(scores, dim=-1)  # (rows,), shared by all three signals
        clock.lap("log-probs")
        mean_logit = scores.mean(dim=-1)
        if not bool(torch.isfinite(mean_logit).all()):
            mean_logit, width = _finite_mean(scores)
        else:
            width = torch.full_like(mean_logit, scores.shape[-1])
        self.certainty[:, position] = log_normaliser - mean_logit - torch.log(width)
        clock.lap("self-certainty")
        top = torch.topk(scores, min(self.top_k, scores.shape[-1]), dim=-1, sorted=False).values
        self.confidence[:, position] = log_normaliser - top.mean(dim=-1)
        clock.lap("token confidence")
        self._previous = (scores, log_normaliser)
        return scores

    def finish(self, sequences: torch.Tensor) -> dict[str, torch.Tensor]:
        """Settle the final step; returns each signal as (rows, generated_length)."""
        if self._previous is not None:
            self._settle(sequences[:, -1], sequences.shape[1] - self.prompt_length - 1)
            self._previous = None
        generated = sequences.shape[1] - self.prompt_length
        return {"log_probs": self.log_probs[:, :generated], "certainty": self.certainty[:, :generated],
                "confidence": self.confidence[:, :generated]}

    def _settle(self, tokens: torch.Tensor, position: int) -> None:
        logits, log_normaliser = self._previous
        self.log_probs[:, position] = logits.gather(1, tokens[:, None]).squeeze(1) - log_normaliser


class _Clock:
    """Adds the seconds since the last lap to `timings[name]`; does nothing when timings is None."""

    def __init__(self, timings: dict[str, float] | None, device: torch.device):
        self.timings, self.device = timings, device
        self.last = self._now() if timings is not None else 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self, name: str) -> None:
        if self.timings is not None:
            now = self._now()
            self.timings[name] = self.timings.get(name, 0.0) + now - self.last
            self.last = now


def _finite_mean(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows,) mean of the finite logits of each row, and how many there are."""
    finite = torch.isfinite(scores)
    width = finite.sum(dim=-1).clamp(min=1).to(scores.dtype)
    return torch.where(finite, scores, torch.zeros_like(scores)).sum(dim=-1) / width, width

