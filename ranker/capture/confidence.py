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

    Cost: with `eos_token_ids`, a row whose settled token is an EOS is skipped from then on
    (generate keeps computing padded logits for it, which no candidate reads); positions after
    a row's EOS stay 0. The (rows, V) temporaries (the selected rows, exp(z - max)) live in two
    buffers allocated on the first call and reused: a fresh (rows, V) allocation every step
    costs more than the arithmetic on CPU. The top-k values come from `top_k_values`, and the
    log normaliser takes its max from them (torch.logsumexp would scan again, on one CPU thread).
    """

    # Set to a dict (bench/capture_overhead.py --breakdown) to add up the seconds of each signal's work.
    timings: dict[str, float] | None = None

    def __init__(self, prompt_length: int, rows: int, capacity: int, device: torch.device, top_k: int = 20,
                 eos_token_ids: Sequence[int] = ()):
        self.prompt_length = prompt_length
        self.top_k = top_k
        self.log_probs = torch.zeros(rows, capacity, device=device)
        self.certainty = torch.zeros(rows, capacity, device=device)
        self.confidence = torch.zeros(rows, capacity, device=device)
        self._eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
        self._finished = torch.zeros(rows, dtype=torch.bool, device=device)
        # (logits of the rows computed, their log normalisers, those rows or None for all) of the last call
        self._previous: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        self._selected: torch.Tensor | None = None  # (rows, V) buffer for the unfinished rows' logits
        self._exp: torch.Tensor | None = None  # (rows, V) buffer for exp(z - max)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        position = input_ids.shape[1] - self.prompt_length  # the generated position these logits choose
        clock = _Clock(self.timings, scores.device)
        if self._previous is not None:
            self._settle(input_ids[:, -1], position - 1)
        rows = self._unfinished_rows()
        if rows is None:
            logits = scores  # (A, V), A = rows still generating
        else:
            self._selected = _reusable(self._selected, scores)
            logits = torch.index_select(scores, 0, rows, out=self._selected[: rows.numel()])
        clock.lap("row selection")
        top = top_k_values(logits, self.top_k)
        clock.lap("token confidence")
        self._exp = _reusable(self._exp, scores)
        log_normaliser = _log_normaliser(logits, top.amax(dim=-1), self._exp[: logits.shape[0]])  # (A,), shared by all three
        clock.lap("log-probs")
        mean_logit = logits.mean(dim=-1)
        if not bool(torch.isfinite(mean_logit).all()):
            mean_logit, width = _finite_mean(logits)
        else:
            width = torch.full_like(mean_logit, logits.shape[-1])
        self._write(self.certainty, rows, position, log_normaliser - mean_logit - torch.log(width))
        clock.lap("self-certainty")
        self._write(self.confidence, rows, position, log_normaliser - top.mean(dim=-1))
        clock.lap("token confidence")
        self._previous = (logits, log_normaliser, rows)
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
        """tokens: (rows,) the tokens sampled at `position`, for every row."""
        logits, log_normaliser, rows = self._previous
        chosen = tokens if rows is None else tokens[rows]
        self._write(self.log_probs, rows, position, logits.gather(1, chosen[:, None]).squeeze(1) - log_normaliser)
        if self._eos.numel():
            self._finished |= torch.isin(tokens, self._eos)

    def _unfinished_rows(self) -> torch.Tensor | None:
        """Indices of the rows with no EOS yet, or None when that is every row (no copy needed)."""
        if not bool(self._finished.any()):
            return None
        return torch.nonzero(~self._finished).flatten()

    @staticmethod
    def _write(signal: torch.Tensor, rows: torch.Tensor | None, position: int, values: torch.Tensor) -> None:
        if rows is None:
            signal[:, position] = values
        else:
            signal[rows, position] = values


def top_k_values(logits: torch.Tensor, k: int, block: int = 128) -> torch.Tensor:
    """(A, min(k, V)) the k largest values of each row of `logits` (A, V), in no particular order.

    Exact, and cheaper than torch.topk over the whole row: split the row into blocks of
    `block` values, keep the k blocks with the largest maxima, and take the top k among their
    k x block values. Every value of the row's top k lies in one of those blocks (a block
    holding one has a maximum at least the k-th largest value, and fewer than k other blocks
    can beat it), and ties do not matter because only the values are returned. Falls back to
    torch.topk when V is not a multiple of `block` or has no more than k blocks.
    """
    rows, width = logits.shape
    k = min(k, width)
    blocks = width // block
    if width % block or blocks <= k or not logits.is_contiguous():
        return torch.topk(logits, k, dim=-1, sorted=False).values
    grouped = logits.view(rows, blocks, block)
    best_blocks = torch.topk(grouped.amax(dim=-1), k, dim=-1, sorted=False).indices  # (A, k)
    candidates = grouped.gather(1, best_blocks[:, :, None].expand(rows, k, block)).view(rows, k * block)
    return torch.topk(candidates, k, dim=-1, sorted=False).values


def _reusable(buffer: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """`buffer` when it has `like`'s shape, dtype and device, else a new empty one."""
    if buffer is None or buffer.shape != like.shape or buffer.dtype != like.dtype or buffer.device != like.device:
        return torch.empty_like(like)
    return buffer


def _log_normaliser(logits: torch.Tensor, largest: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
    """(A,) logsumexp of each row of `logits` (A, V): largest + log sum_j exp(z_j - largest).

    largest: (A,) each row's max logit; work: an (A, V) buffer, overwritten.
    """
    torch.sub(logits, largest[:, None], out=work)
    return largest + work.exp_().sum(dim=-1).log_()


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

