"""Fall back from the fused ranker to the free signals for instructions unlike the training data.

A ranker's hidden-state score carries over to prompts like its training prompts, and much less
to other kinds: out of its training families the fused ranker can lose to plain max log-prob.
The free signals (mean log-prob, vote share, weighted vote) mean the same thing on every prompt.
So the fused weights w(i) of an instruction i move towards free-signal weights g (the ranker's
weight 0) as i gets farther from the training instructions:

    d(i)  = 1 - max_c cos(i - m, support_c)              m: (H,) mean of the training instructions;
                                                         support: (S, H) unit k-means centroids
                                                         of the centred training instructions
    share = 0 if d <= near, 1 if d >= far, linear between
    w'(i) = (1 - share) * w(i) + share * g

Why centred: the hidden states share a large common component, so raw cosines between any two
instructions are close to 1 and every distance is squeezed near 0 (at layer 18 of the embedded
model, about 0.001 within a task family and 0.02 to the other families, with the families
overlapping). Without the shared mean the same distances spread out (about 0.01-0.06 within a
family, 0.45-1.1 to a family left out) and a rule chosen on them carries over to new families.
A card saved before the centring has no mean (`center` None): it keeps its raw cosines.

Because fused scores are linear in the weights, the blended score is the same blend of the two
fused scores, which is what `choose_fallback` evaluates.

g is one of two candidates (`ranker.rankers.estimator`):
- "fitted": free-signal weights fitted like the fused ones but without the ranker
  (`ranker.rankers.fusion.fit_weights(..., use_ranker=False)`) on the fusion's signals;
- "weighted_vote": the fixed, parameter-free WEIGHTED_VOTE_RULE, 1 x weighted_vote + 1e-3 x
  mean_logprob (ranker.rankers.fusion): the log-prob-weighted majority vote, whose top candidate
  is the best-log-prob candidate of the answer with the largest total weight exp(mean_logprob)
  (the 1e-3 only breaks the tie within that answer). It reads the mean log-probs and the answer
  keys, so it is a candidate only when every training query has both and the fusion's signals
  may read both (the default ones do), whether or not "weighted_vote" is among them.

How g and (near, far) are chosen, on training data only (`ranker.rankers.estimator`): the
training queries are scored twice.
- In domain: by the cross-fitting rankers (random folds), with d measured to support centroids
  of the other folds.
- Out of domain: the training instructions are split into `domains` k-means clusters, and each
  cluster is scored by a ranker trained on the other clusters (and "fitted" weights fitted on
  them), with d measured to support centroids of the other clusters: a stand-in for a task
  family the ranker never saw.
For each candidate g, every (near, far) on a grid of quantiles of those distances, and "never
fall back", is scored by best-of-N over both sets pooled; the best wins, ties going to the later
fallback (`choose_fallback`). Then the candidates' chosen rules are compared on the same pooled
queries (`choose_fallback_weights`). The parameter-free "weighted_vote" wins unless "fitted" beats
it by a significant margin: a one-sided paired z-test on the per-query hits, at SIGNIFICANCE_Z.
Why: "fitted" is chosen on the queries it was fitted on, so a small pooled lead flatters it, and
far from the training data (where the fallback applies) its weights carry the training families'
balance of signals while the vote's meaning does not change (the README's leave-one-family-out
section has the fold where a one-query lead cost a left-out family). The per-domain rankers are
trained once and score every candidate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ranker.evaluation.metrics import best_candidates
from ranker.rankers.clustering import support_centroids

QUANTILES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)  # the grid of `near` and `far`, as quantiles of the distances
NEVER = float("inf")
# One-sided 5% z: another fallback candidate must beat the preferred one by this many standard errors of the
# paired per-query difference in hits (`choose_fallback_weights`).
SIGNIFICANCE_Z = 1.645
# The parameter-free fallback candidate (module docstring): the log-prob-weighted majority vote, its ties
# within the winning answer broken by the mean log-prob. Names are ranker.rankers.fusion.SIGNALS.
WEIGHTED_VOTE_RULE = {"ranker": 0.0, "weighted_vote": 1.0, "mean_logprob": 1e-3}


@dataclass
class DistanceFallback:
    """Free-signal weights and the distances over which an instruction's fused weights move to them."""

    weights: dict[str, float]  # the fallback's weights (ranker 0), absolute units
    support: Tensor  # (S, H) unit-norm centroids of the centred training instructions
    near: float  # cosine distance up to which the fused weights apply unchanged
    far: float  # cosine distance from which only the fallback weights apply (>= near)
    center: Tensor | None = None  # (H,) mean of the training instructions; None: raw cosines (older cards)

    def __post_init__(self) -> None:
        if self.support.dim() != 2 or self.support.shape[0] == 0:
            raise ValueError(f"fallback support must be (S, H) with S >= 1, got {tuple(self.support.shape)}")
        if self.center is not None and tuple(self.center.shape) != (self.support.shape[1],):
            raise ValueError(f"fallback center must be ({self.support.shape[1]},) like the support's features, "
                             f"got {tuple(self.center.shape)}")
        if not self.far >= self.near:
            raise ValueError(f"fallback far ({self.far}) must be >= near ({self.near})")

    def distance(self, instruction: Tensor) -> float:
        """1 - the largest cosine between the centred instruction (H,) and a support centroid."""
        if instruction.shape[-1] != self.support.shape[1]:
            raise ValueError(f"instruction has {instruction.shape[-1]} features, the fallback support {self.support.shape[1]}")
        return float(self.distances(instruction.reshape(1, -1))[0])

    def distances(self, instructions: Tensor) -> Tensor:
        """(M,) `distance` of each instruction (M, H)."""
        return support_distances(instructions.cpu(), self.support, self.center)

    def share(self, distance: float) -> float:
        """How much of the fallback's weights an instruction at `distance` gets, in [0, 1]."""
        return ramp(distance, self.near, self.far)

    def blend(self, weights: dict[str, float], instruction: Tensor) -> dict[str, float]:
        """`weights` moved towards the fallback's by the instruction's share."""
        share = self.share(self.distance(instruction))
        if share == 0.0:
            return weights
        names = list(dict.fromkeys([*weights, *self.weights]))
        return {name: (1 - share) * weights.get(name, 0.0) + share * self.weights.get(name, 0.0) for name in names}

    def to_dict(self) -> dict:
        """The card's part (the support centroids are a tensor: they go beside the card)."""
        return {"weights": dict(self.weights), "near": self.near, "far": self.far}

    @classmethod
    def from_dict(cls, data: dict, support: Tensor, center: Tensor | None = None) -> "DistanceFallback":
        return cls({str(k): float(v) for k, v in data["weights"].items()}, support, float(data["near"]), float(data["far"]),
                   center)


def ramp(distance: float | Tensor, near: float, far: float) -> float | Tensor:
    """0 up to `near`, 1 from `far`, linear between (a step at near when far == near)."""
    if isinstance(distance, Tensor):
        if far == near:
            return (distance > near).double()
        return ((distance - near) / (far - near)).clamp(0.0, 1.0).double()
    if distance <= near:
        return 0.0
    if distance >= far:
        return 1.0
    return (distance - near) / (far - near)


def fit_support(instructions: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """(support (S, H), center (H,)): the training instructions' (M, H) mean, and unit k-means
    centroids of the instructions minus it (`support_centroids`), what `support_distances` measures against."""
    center = instructions.float().mean(dim=0)
    return support_centroids(instructions.float() - center, seed), center


def support_distances(instructions: Tensor, support: Tensor, center: Tensor | None = None) -> Tensor:
    """(M,) 1 - max cosine of each instruction (M, H), minus `center` (H,) when given, to the unit centroids (S, H)."""
    points = instructions.float() if center is None else instructions.float() - center.float()
    unit = torch.nn.functional.normalize(points, dim=1)
    return 1.0 - (unit @ support.T).max(dim=1).values


@dataclass
class FallbackExamples:
    """Training queries scored one way (in domain or out of domain), each with two fused scores."""

    fused: Sequence[Tensor]  # (K_q,) scores with the fused weights
    free: Sequence[Tensor]  # (K_q,) scores with the fallback (free-signal) weights
    distances: Tensor  # (Q,) each query's distance to the support it was scored against
    labels: Sequence[Tensor]  # (K_q,) labels


def _hits(examples: FallbackExamples, near: float, far: float) -> Tensor:
    """(Q,) 1.0 where the blended scores' top candidate has the query's best label, else 0.0."""
    shares = ramp(examples.distances.double(), near, far)
    scores = [(1 - s) * f.double() + s * g.double() for s, f, g in zip(shares.tolist(), examples.fused, examples.free)]
    return torch.tensor([float(y[int(best_candidates(x))] == y.max()) for x, y in zip(scores, examples.labels)],
                        dtype=torch.float64)


def _accuracy(examples: FallbackExamples, near: float, far: float) -> float:
    return float(_hits(examples, near, far).mean()) if len(examples.labels) else 0.0


def paired_z(challenger: Tensor, incumbent: Tensor) -> float:
    """z of the mean per-query difference challenger - incumbent, both (Q,) hits: mean / (std / sqrt(Q)).

    A zero spread (every query differs alike) gives 0 for no difference, else +inf or -inf by its sign.
    """
    difference = challenger.double() - incumbent.double()
    mean = float(difference.mean()) if len(difference) else 0.0
    spread = float(difference.std(unbiased=True)) if len(difference) > 1 else 0.0
    if spread == 0.0:
        return 0.0 if mean == 0.0 else float("inf") if mean > 0 else float("-inf")
    return mean / (spread / len(difference) ** 0.5)


def choose_fallback(in_domain: FallbackExamples, out_of_domain: FallbackExamples) -> tuple[float, float, dict]:
    """(near, far, report): the rule with the best pooled best-of-N (module docstring); (inf, inf) = never.

    The report holds each rule's in-domain and out-of-domain best-of-N.
    """
    pooled = torch.cat([in_domain.distances, out_of_domain.distances]).double()
    grid = sorted({float(torch.quantile(pooled, q)) for q in QUANTILES})
    rules = [(NEVER, NEVER)] + [(near, far) for i, near in enumerate(grid) for far in grid[i:]]
    size_in, size_out = len(in_domain.labels), len(out_of_domain.labels)
    results = []
    for near, far in rules:
        accuracy_in, accuracy_out = _accuracy(in_domain, near, far), _accuracy(out_of_domain, near, far)
        pooled_accuracy = (accuracy_in * size_in + accuracy_out * size_out) / max(1, size_in + size_out)
        results.append({"near": near, "far": far, "in_domain": accuracy_in, "out_of_domain": accuracy_out,
                        "pooled": pooled_accuracy})
    # Best pooled accuracy; ties go to the rule that falls back latest (never first, then the largest near and far).
    best = max(results, key=lambda r: (round(r["pooled"], 12), r["near"], r["far"]))
    report = {"near": best["near"], "far": best["far"], "never": results[0], "chosen": best,
              "distance_quantiles": {str(q): float(torch.quantile(pooled, q)) for q in QUANTILES}}
    return best["near"], best["far"], report


def choose_fallback_weights(candidates: Mapping[str, tuple[FallbackExamples, FallbackExamples]],
                            prefer: str | None = None, z: float = SIGNIFICANCE_Z) -> tuple[str, dict[str, dict]]:
    """(the winning candidate's name, each candidate's `choose_fallback` report).

    candidates: name -> (in-domain, out-of-domain) examples, the same queries and fused scores
    for every candidate, only the `free` scores differing. Without `prefer` the winner's chosen
    rule has the best pooled best-of-N, ties going to the candidate listed first. With `prefer`
    (a name of `candidates`), that candidate wins unless another one's chosen rule beats it on
    the pooled queries with a paired z (`paired_z`) above `z`; the best pooled of those that do
    wins. Each report gets "z_vs_preferred" (the preferred one's own: 0).
    """
    if not candidates:
        raise ValueError("choose_fallback_weights needs at least one candidate")
    if prefer is not None and prefer not in candidates:
        raise ValueError(f"the preferred fallback candidate {prefer!r} is not among {sorted(candidates)}")
    if not z >= 0:
        raise ValueError(f"the significance z must be >= 0, got {z!r}")
    reports = {name: choose_fallback(in_domain, out_of_domain)[2] for name, (in_domain, out_of_domain) in candidates.items()}
    order = list(candidates)
    pooled = lambda name: round(reports[name]["chosen"]["pooled"], 12)  # noqa: E731
    if prefer is None:
        return max(order, key=lambda name: (pooled(name), -order.index(name))), reports

    def hits(name: str) -> Tensor:
        chosen = reports[name]["chosen"]
        return torch.cat([_hits(examples, chosen["near"], chosen["far"]) for examples in candidates[name]])

    incumbent = hits(prefer)
    for name in order:
        reports[name]["z_vs_preferred"] = 0.0 if name == prefer else paired_z(hits(name), incumbent)
    challengers = [name for name in order if name != prefer and reports[name]["z_vs_preferred"] > z]
    best = max(challengers, key=lambda name: (pooled(name), -order.index(name))) if challengers else prefer
    return best, reports
