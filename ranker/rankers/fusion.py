"""Fuse a ranker's scores with signals that sampling gives for free.

For the K candidates of one query:
- `mean_logprob` (K,): each candidate's mean token log-probability, captured while sampling,
  like the hidden states. On its own it is the "max mean log-prob" baseline.
- `vote_share` (K,): the share of the K candidates whose answer key (`ranker.tasks.voting`)
  equals the candidate's own; 0 for a candidate without a key. On its own it is majority vote
  (self-consistency). It is a property of the candidate set, so it is computed from the
  candidates actually being ranked, never from a larger pool.
- `weighted_vote` (K,): the log of the candidate's answer's share of a confidence-weighted vote
  (`weighted_vote_log_shares`). Candidate j votes with weight exp(beta * mean_logprob_j), its
  geometric-mean token probability (to the power beta), and

      weighted_vote_k = log( sum_{j: key_j == key_k} exp(beta * lp_j) / sum_j exp(beta * lp_j) )

  where a candidate without a key (None) is its own group (value beta * lp_k - logsumexp(beta * lp)).
  It is the self-consistency vote with DeepConf-style confidence weights (Fu et al., 2025), the
  confidence being the sampler's own log-probs. beta = WEIGHTED_VOTE_BETA = 1: one unit of mean
  log-prob counts e times as much, which was the best free selector out of family in our
  leave-one-family-out analysis (37.9% vs max mean log-prob 34.0 and DeepConf-high 34.4); with
  beta = 0 it is log(vote count / K), with beta -> inf max mean log-prob. It is computed from
  mean_logprob and vote_keys, so it needs nothing more at inference than the other two. With a
  tiny mean_logprob weight beside it ({"weighted_vote": 1, "mean_logprob": 1e-3}) the top
  candidate is the best-log-prob candidate of the heaviest answer: the fixed fallback rule of
  `ranker.rankers.fallback`, and the "logprob_vote" baseline of `ranker.evaluation.selection`.
  It is not fused by default (DEFAULT_SIGNALS), so the fused fit of existing configs is unchanged.

The hidden-state ranker sees different evidence from them. The fused score is

    fused_k = a * s_k + b * mean_logprob_k + c * vote_share_k (+ d * weighted_vote_k)   s: (K,) ranker scores

(a, b, c, d) are the `weights`, in absolute units, so that fusing does not depend on which other
candidates are in the list. They are fitted by cross-fitting, so that they are not fooled by a
ranker that has memorised its own training data:
1. split the training queries into `folds` parts (seeded);
2. train a ranker on all parts but one and score the held-out part, for every part, giving
   out-of-fold scores for every training query;
3. fit (a, b, c, ...) by listwise logistic regression on those out-of-fold scores: softmax over each
   query's candidates of the fused score, cross-entropy against a uniform distribution over the
   candidates with the query's best label (queries whose labels are all equal carry no signal
   and are left out), plus `l2` * |weights|^2 on features scaled to unit within-query spread;
4. keep the fit only if its out-of-fold best-of-N is at least the ranker's alone; otherwise the
   weights are {"ranker": 1.0} (fusion off).

Signals do not help every task alike, so the weights may depend on the instruction (`Fusion`,
`fit_fusion`): the training instructions are clustered, each cluster gets its own weights
(shrunk towards the global ones), and the number of clusters is chosen by cross-validation
over the training queries' out-of-fold scores. Step 4 then compares the cross-validated
best-of-N of the chosen weights with the ranker alone.

The logistic fit optimises a cross-entropy, not best-of-N, and its ridge pulls a cluster's
weights towards the global ones; on a cluster where one free signal alone picks best (max mean
log-prob on arithmetic, where the model often repeats one wrong answer) the fitted weights can
still lose to it. So with `cluster_rules` a cluster may instead use a parameter-free rule of
CLUSTER_RULES (ranker weight 0): the one among the fitted weights and the rules with the best
best-of-N on the cluster's own out-of-fold scores (ties: the fitted weights, which that
in-sample count already flatters). Whether rules are offered at all is cross-validated with the
number of clusters (ties: no rules).

A signal that some training query lacks (no log-probs, no answer keys) is not fused, and neither
is one that never varies within a query.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ranker.core.cards import CardEntry
from ranker.evaluation.metrics import best_of_n_accuracy
from ranker.evaluation.voting_rules import LOGPROB_VOTE_BETA
from ranker.rankers.clustering import kmeans
from ranker.rankers.fallback import WEIGHTED_VOTE_RULE, DistanceFallback
from ranker.rankers.training_groups import QueryLike, StorePool

SIGNALS = ("mean_logprob", "vote_share", "weighted_vote")  # every free signal a weight may name
DEFAULT_SIGNALS = ("mean_logprob", "vote_share")  # what FusionConfig fuses unless told otherwise
# The weighted_vote's confidence temperature, 1.0 (module docstring): the same beta as the "logprob_vote" baseline.
WEIGHTED_VOTE_BETA = LOGPROB_VOTE_BETA
# What each signal is computed from: the inputs `fuse` (and LanguageRanker.score) then needs.
SIGNAL_INPUTS = {"mean_logprob": ("mean_logprob",), "vote_share": ("vote_keys",), "weighted_vote": ("mean_logprob", "vote_keys")}
RANKER_ONLY = {"ranker": 1.0}
# The parameter-free rules a cluster may use instead of its fitted weights (module docstring): max mean
# log-prob, and the log-prob-weighted vote (its ties within the winning answer broken by the mean log-prob).
CLUSTER_RULES = {"max_logprob": {"ranker": 0.0, "mean_logprob": 1.0}, "weighted_vote": dict(WEIGHTED_VOTE_RULE)}
# LanguageRanker's hyperparameter names of the FusionConfig fields (they predate the config).
FUSION_HYPERPARAMS = {"fusion": "enabled", "fusion_folds": "folds", "fusion_l2": "l2", "fusion_signals": "signals",
                      "fusion_clusters": "clusters", "fusion_fallback": "fallback", "fusion_domains": "domains",
                      "fusion_cluster_rules": "cluster_rules"}


@dataclass
class FusionConfig(CardEntry):
    """Whether and how a ranker fuses its scores with the free signals. Stored in every checkpoint card.

    LanguageRanker takes these as the hyperparameters named in FUSION_HYPERPARAMS (`fusion=False`, ...).
    """

    # Fuse with the candidates' mean log-prob and vote share, weights cross-fitted, each signal only
    # when every training query carries it; False is the paper's hidden-state-only ranker.
    enabled: bool = True
    folds: int = 4  # cross-fitting folds: rankers trained to score the training queries out of fold
    l2: float = 0.01  # ridge penalty of the weights' logistic regression (on unit-spread signals)
    signals: tuple[str, ...] = DEFAULT_SIGNALS  # which free signals may be fused (any non-empty subset of SIGNALS)
    # Candidate numbers of instruction clusters, each with its own weights; the count is chosen by
    # cross-validation on the out-of-fold scores (`fit_fusion`). (1,): one global set of weights.
    clusters: tuple[int, ...] = (1, 2, 4, 8)
    # Fall back towards free-signal weights for instructions unlike the training ones, by a rule
    # chosen on `domains` held-out instruction clusters (ranker.rankers.fallback).
    fallback: bool = True
    domains: int = 4
    # Let a cluster use a parameter-free rule (CLUSTER_RULES) where that picks better than its
    # fitted weights, if cross-validation says rules help (`fit_fusion`). Cards saved before this
    # field existed were fitted without rules, and load with False.
    cluster_rules: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"fusion must be True or False, got {self.enabled!r}")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise ValueError(f"fusion_folds must be an int >= 2, got {self.folds!r}")
        if not self.l2 >= 0:
            raise ValueError(f"fusion_l2 must be >= 0, got {self.l2!r}")
        self.clusters = tuple(self.clusters)
        if not self.clusters or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.clusters):
            raise ValueError(f"fusion_clusters must be positive ints, got {self.clusters!r}")
        if not isinstance(self.fallback, bool):
            raise ValueError(f"fusion_fallback must be True or False, got {self.fallback!r}")
        if isinstance(self.domains, bool) or not isinstance(self.domains, int) or self.domains < 2:
            raise ValueError(f"fusion_domains must be an int >= 2, got {self.domains!r}")
        if not isinstance(self.cluster_rules, bool):
            raise ValueError(f"fusion_cluster_rules must be True or False, got {self.cluster_rules!r}")
        self.signals = tuple(self.signals)
        if not self.signals or any(name not in SIGNALS for name in self.signals):
            raise ValueError(f"fusion_signals must be a non-empty subset of {SIGNALS}, got {self.signals!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "FusionConfig":
        """The config of a card; a card without `cluster_rules` was fitted before rules existed (False)."""
        if isinstance(data, dict) and "cluster_rules" not in data:
            data = {**data, "cluster_rules": False}
        return super().from_dict(data)

    @classmethod
    def from_hyperparams(cls, hyperparams: Mapping) -> "FusionConfig":
        """The config from LanguageRanker hyperparameters (`fusion`, `fusion_folds`, ...); other keys are ignored."""
        return cls(**{field: hyperparams[name] for name, field in FUSION_HYPERPARAMS.items() if name in hyperparams})

    def to_hyperparams(self) -> dict:
        return {name: getattr(self, field) for name, field in FUSION_HYPERPARAMS.items()}


def signal_inputs(names: Sequence[str]) -> set[str]:
    """The inputs ("mean_logprob", "vote_keys") that fusing the named signals needs; "ranker" needs none."""
    return {item for name in names if name != "ranker" for item in SIGNAL_INPUTS[name]}


def vote_shares(vote_keys: Sequence[Hashable | None]) -> Tensor:
    """(K,) share of the K candidates that give each candidate's answer key; 0 where the key is None.

    E.g. ["7", "8", "7", None] -> [0.5, 0.25, 0.5, 0.0].
    """
    keys = list(vote_keys)
    if not keys:
        return torch.zeros(0)
    counts = Counter(key for key in keys if key is not None)
    return torch.tensor([counts[key] / len(keys) if key is not None else 0.0 for key in keys], dtype=torch.float32)


def weighted_vote_log_shares(mean_logprob: Tensor, vote_keys: Sequence[Hashable | None],
                             beta: float = WEIGHTED_VOTE_BETA) -> Tensor:
    """(K,) log share of each candidate's answer in the log-prob-weighted vote (module docstring).

    mean_logprob: (K,) mean token log-probs; vote_keys: K answer keys, None where a candidate has
    no answer (it is then a group of its own). Every value is <= 0; exp of the values of one
    candidate per group sums to 1. Computed in float64 with logsumexp, so that very negative
    log-probs do not underflow. E.g. lp = [-1, -2, -1, -3], keys ["7", "8", "7", None], beta 1:
    the weights e^-1, e^-2, e^-1, e^-3 sum to Z = 0.92088 (log Z = -0.08242); "7" holds 2 e^-1,
    "8" e^-2, the keyless candidate e^-3, so the result is
    [log 2 - 1, -2, log 2 - 1, -3] - log Z = [-0.2244, -1.9176, -0.2244, -2.9176].
    """
    logits = beta * torch.as_tensor(mean_logprob, dtype=torch.float64).flatten()  # (K,)
    if len(vote_keys) != logits.shape[0]:
        raise ValueError(f"got {len(vote_keys)} vote_keys for {logits.shape[0]} mean log-probs")
    if logits.numel() == 0:
        return torch.zeros(0)
    groups: dict = {}
    group_of = [groups.setdefault(key, len(groups)) if key is not None else None for key in vote_keys]
    singles = iter(range(len(groups), len(groups) + group_of.count(None)))
    index = torch.tensor([g if g is not None else next(singles) for g in group_of], device=logits.device)  # (K,) group ids
    # (G,) logsumexp of each group, each shifted by its own max so that no group underflows to -inf
    num_groups = int(index.max()) + 1
    group_max = torch.full((num_groups,), float("-inf"), dtype=torch.float64, device=logits.device)
    group_max = group_max.scatter_reduce(0, index, logits, reduce="amax")
    totals = torch.zeros(num_groups, dtype=torch.float64, device=logits.device)
    log_totals = totals.index_add_(0, index, (logits - group_max[index]).exp()).log() + group_max
    return (log_totals[index] - torch.logsumexp(logits, dim=0)).float()


def query_signals(query: QueryLike) -> dict[str, Tensor]:
    """The free signals a query carries, each (K,): "mean_logprob" and/or "vote_share", and
    "weighted_vote" when it has both log-probs and answer keys."""
    signals = {}
    mean_logprob = getattr(query, "mean_logprob", None)
    if mean_logprob is not None:
        signals["mean_logprob"] = torch.as_tensor(mean_logprob, dtype=torch.float32).flatten()
    vote_keys = getattr(query, "vote_keys", None)
    if vote_keys is not None:
        signals["vote_share"] = vote_shares(vote_keys)
        if mean_logprob is not None:
            signals["weighted_vote"] = weighted_vote_log_shares(signals["mean_logprob"], vote_keys)
    return signals


def pool_signals(pool: StorePool) -> list[dict[str, Tensor]]:
    """`query_signals` of every query of a StorePool, from its metadata (no feature is read)."""
    return [{"mean_logprob": pool.mean_logprob[q], "vote_share": vote_shares(pool.vote_keys[q]),
             "weighted_vote": weighted_vote_log_shares(pool.mean_logprob[q], pool.vote_keys[q])}
            for q in range(pool.num_queries)]


def fold_indices(num_queries: int, folds: int, seed: int) -> list[list[int]]:
    """A seeded split of range(num_queries) into `folds` parts of near-equal size."""
    if folds < 2:
        raise ValueError(f"fusion needs at least 2 folds, got {folds}")
    if num_queries < folds:
        raise ValueError(f"cannot cross-fit {num_queries} queries in {folds} folds")
    order = torch.randperm(num_queries, generator=torch.Generator().manual_seed(seed)).tolist()
    return [sorted(order[f::folds]) for f in range(folds)]


def fuse(scores: Tensor, weights: Mapping[str, float], mean_logprob: Tensor | None = None,
         vote_keys: Sequence[Hashable | None] | None = None) -> Tensor:
    """The fused (K,) scores from ranker scores (K,); `scores` itself when the weights are ranker-only.

    mean_logprob (K,) is required when weights["mean_logprob"] != 0, vote_keys (K answer keys,
    None for "no answer") when weights["vote_share"] != 0, and both when weights["weighted_vote"]
    != 0; ValueError otherwise.
    """
    weights = dict(weights) or RANKER_ONLY
    if all(weights.get(name, 0.0) == 0.0 for name in SIGNALS) and weights.get("ranker", 1.0) == 1.0:
        return scores
    terms, signals = {"ranker": weights.get("ranker", 1.0)}, {}
    # Which inputs each fused signal reads; the weighted vote reads both.
    needs_logprob = [name for name in ("mean_logprob", "weighted_vote") if weights.get(name, 0.0) != 0.0]
    needs_keys = [name for name in ("vote_share", "weighted_vote") if weights.get(name, 0.0) != 0.0]
    described = {"mean_logprob": "mean log-prob", "vote_share": "vote share", "weighted_vote": "log-prob-weighted vote"}
    uses = lambda names: ", ".join(f"{described[n]} (weight {weights[n]:.4g})" for n in names)  # noqa: E731
    if needs_logprob:
        if mean_logprob is None:
            raise ValueError(f"this ranker fuses its scores with the candidates' {uses(needs_logprob)}; "
                             "pass mean_logprob, a (K,) tensor")
        lp = torch.as_tensor(mean_logprob, dtype=scores.dtype, device=scores.device).flatten()
        if lp.shape != scores.shape:
            raise ValueError(f"mean_logprob has shape {tuple(lp.shape)}, expected {tuple(scores.shape)}")
        if "mean_logprob" in needs_logprob:
            signals["mean_logprob"] = lp
    if needs_keys:
        if vote_keys is None:
            raise ValueError(
                f"this ranker fuses its scores with the candidates' {uses(needs_keys)}; pass vote_keys, one answer key "
                "per candidate (ranker.tasks.voting; None where a candidate has no answer)"
            )
        if len(vote_keys) != scores.shape[0]:
            raise ValueError(f"got {len(vote_keys)} vote_keys for {scores.shape[0]} candidates")
        if "vote_share" in needs_keys:
            signals["vote_share"] = vote_shares(vote_keys).to(scores.device)
        if "weighted_vote" in needs_keys:
            signals["weighted_vote"] = weighted_vote_log_shares(lp, vote_keys).to(scores.device)
    terms.update({name: weights[name] for name in signals})
    return combine(terms, scores, signals).to(scores.dtype)


def _within_spread(values: Sequence[Tensor]) -> float:
    """Mean over queries of the within-query standard deviation (0 if nothing varies)."""
    stds = [v.double().std(unbiased=False) for v in values if v.numel() > 1]
    return float(torch.stack(stds).mean()) if stds else 0.0


def combine(weights: Mapping[str, float], scores: Tensor, signals: Mapping[str, Tensor]) -> Tensor:
    """sum over weights of weight x (the ranker's scores or the named signal), float64 (K,).

    scores: (K,) ranker scores; signals: name -> (K,), holding every signal `weights` names.
    """
    return sum(value * (scores if name == "ranker" else signals[name]).double() for name, value in weights.items())


def _best_of_n(scores: Sequence[Tensor], labels: Sequence[Tensor]) -> float:
    """Share of queries whose best-scored candidate has the query's best label (0 without queries)."""
    if not labels:
        return 0.0
    return best_of_n_accuracy(scores, [(y == y.max()).float() for y in labels])


def fit_weights(oof_scores: Sequence[Tensor], signals: Sequence[Mapping[str, Tensor]], labels: Sequence[Tensor],
                l2: float = 0.01, prior: Mapping[str, float] | None = None,
                check: bool = True, use_ranker: bool = True) -> tuple[dict[str, float], dict]:
    """One set of fusion weights from out-of-fold ranker scores (module docstring, steps 3 and 4).

    oof_scores, labels: one (K_q,) tensor per query; signals: one {name: (K_q,)} per query.
    prior: weights (absolute units) that the ridge penalty pulls towards instead of 0 (used to
    shrink a cluster's weights towards the global ones). check: apply step 4 (fall back to the
    ranker alone unless fusing wins out of fold). use_ranker=False: weights of the free signals
    alone, with "ranker" 0 (`ranker.rankers.fallback`); no check, and {} without a usable signal.
    Returns (weights, report). weights has "ranker" plus every fused signal, in absolute units;
    report has the signals used, the standardised weights and the out-of-fold best-of-N of the
    ranker alone and fused.
    """
    if not len(oof_scores) == len(signals) == len(labels):
        raise ValueError(f"got {len(oof_scores)} scores, {len(signals)} signal sets and {len(labels)} label sets")
    columns = {"ranker": list(oof_scores)} if use_ranker else {}
    for name in SIGNALS:
        if signals and all(name in s for s in signals):
            columns[name] = [s[name] for s in signals]
    spreads = {name: _within_spread(values) for name, values in columns.items()}
    used = [name for name in columns if spreads[name] > 0.0]
    ranker_alone = _best_of_n(oof_scores, labels)
    report = {"signals": [n for n in used if n != "ranker"], "l2": l2, "oof_best_of_n_ranker": ranker_alone}
    keep = [q for q, y in enumerate(labels) if y.numel() > 1 and bool((y != y.max()).any())]
    if not use_ranker:
        if not used or not keep:
            return {}, {**report, "kept": False}
        check = False
    elif "ranker" not in used or len(used) < 2 or not keep:
        report.update(oof_best_of_n_fused=ranker_alone, standardised={}, kept=False)
        return dict(prior) if prior is not None else dict(RANKER_ONLY), report

    # (Q, K_max, F) standardised features, padded; pad candidates get -inf logits.
    K_max = max(labels[q].numel() for q in keep)
    X = torch.zeros(len(keep), K_max, len(used), dtype=torch.float64)
    target = torch.zeros(len(keep), K_max, dtype=torch.float64)
    pad = torch.ones(len(keep), K_max, dtype=torch.bool)
    for row, q in enumerate(keep):
        K = labels[q].numel()
        for f, name in enumerate(used):
            X[row, :K, f] = columns[name][q].double() / spreads[name]
        best = (labels[q] == labels[q].max()).double()
        target[row, :K] = best / best.sum()
        pad[row, :K] = False
    center = torch.tensor([(prior or {}).get(name, 0.0) * spreads[name] for name in used], dtype=torch.float64)
    w = center.clone() if prior is not None else torch.zeros(len(used), dtype=torch.float64)
    if prior is None:
        w[0] = 1.0  # start from the ranker alone (or the first signal)
    w.requires_grad_(True)
    optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = (X @ w).masked_fill(pad, float("-inf"))
        log_p = torch.log_softmax(logits, dim=1).masked_fill(pad, 0.0)
        loss = -(target * log_p).sum(1).mean() + l2 * ((w - center) ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    standardised = {name: float(value) for name, value in zip(used, w.detach())}
    weights = {name: standardised[name] / spreads[name] for name in used}
    if not use_ranker:
        weights = {"ranker": 0.0, **weights}
    fused = [combine(weights, oof_scores[q], signals[q]) for q in range(len(labels))]
    fused_accuracy = _best_of_n(fused, labels)
    kept = fused_accuracy >= ranker_alone or not check
    report.update(oof_best_of_n_fused=fused_accuracy, standardised=standardised, kept=kept)
    return (weights if kept else dict(RANKER_ONLY)), report


# --- weights that depend on the instruction -----------------------------------------------------


@dataclass
class Fusion:
    """Fitted fusion weights, one set per instruction cluster.

    Signals do not help every task alike: where the model repeats one wrong answer (arithmetic
    here) the vote share misleads, where answers rarely agree by chance (code) it is strong. So
    the training instructions are clustered (k-means on their unit-norm features) and every
    cluster gets its own weights, shrunk towards the global ones. A new instruction uses the
    weights of its nearest centroid (cosine). One cluster means one global set of weights.
    """

    weights: list[dict[str, float]]  # C sets of weights, absolute units
    centroids: Tensor | None = None  # (C, H) unit-norm instruction centroids; None when C == 1
    global_weights: dict[str, float] | None = None  # the weights of all clusters pooled (what they shrink to)
    # Moves the weights towards free-signal weights for instructions far from the training ones
    # (ranker.rankers.fallback); None: the cluster's weights everywhere.
    fallback: DistanceFallback | None = None

    @property
    def summary_weights(self) -> dict[str, float]:
        """The weights to show for the whole ranker: the global ones, or the only set."""
        return dict(self.global_weights if self.global_weights is not None else self.weights[0])

    def __post_init__(self) -> None:
        if self.centroids is not None and self.centroids.shape[0] != len(self.weights):
            raise ValueError(f"{self.centroids.shape[0]} centroids for {len(self.weights)} weight sets")

    @property
    def num_clusters(self) -> int:
        return len(self.weights)

    def cluster_of(self, instruction: Tensor) -> int:
        """Index of the nearest centroid to an instruction feature (H,)."""
        return int(self.clusters_of(instruction.reshape(1, -1))[0])

    def clusters_of(self, instructions: Tensor) -> Tensor:
        """(M,) int64 index of the nearest centroid (cosine) to each instruction feature (M, H)."""
        if self.centroids is None:
            return torch.zeros(instructions.shape[0], dtype=torch.long)
        if instructions.shape[-1] != self.centroids.shape[1]:
            raise ValueError(f"instruction has {instructions.shape[-1]} features, the fusion centroids {self.centroids.shape[1]}")
        unit = torch.nn.functional.normalize(instructions.float().cpu(), dim=1)
        return torch.argmax(unit @ self.centroids.T, dim=1)

    def weights_for(self, instruction: Tensor) -> dict[str, float]:
        """The weights that score the candidates of an instruction (H,): its cluster's, blended by the fallback."""
        weights = self.weights[self.cluster_of(instruction)]
        return weights if self.fallback is None else self.fallback.blend(weights, instruction)

    def tensors(self) -> dict[str, Tensor]:
        """The tensors a checkpoint keeps beside the card (`from_dict` takes them back)."""
        tensors = {} if self.centroids is None else {"fusion_centroids": self.centroids}
        if self.fallback is not None:
            tensors["fallback_support"] = self.fallback.support
            if self.fallback.center is not None:
                tensors["fallback_center"] = self.fallback.center
        return tensors

    def to_dict(self) -> dict:
        """The weights for a card (the tensors go to a safetensors file beside it: `tensors`)."""
        return {"weights": [dict(w) for w in self.weights], "global_weights": self.global_weights,
                "fallback": None if self.fallback is None else self.fallback.to_dict()}

    @classmethod
    def from_dict(cls, data: dict, tensors: Mapping[str, Tensor] | None = None) -> "Fusion":
        """The fusion of a card; ValueError for a weight named neither "ranker" nor one of SIGNALS."""
        tensors = tensors or {}
        weights = [_card_weights(w) for w in data["weights"]]
        global_weights = data.get("global_weights")
        if global_weights is not None:
            global_weights = _card_weights(global_weights)
        fallback = data.get("fallback")
        if fallback is not None:
            if "fallback_support" not in tensors:
                raise ValueError("the card has a fusion fallback but its support centroids are missing")
            _card_weights(fallback["weights"])
            fallback = DistanceFallback.from_dict(fallback, tensors["fallback_support"], tensors.get("fallback_center"))
        return cls(weights, tensors.get("fusion_centroids"), global_weights, fallback)


def _card_weights(weights: Mapping) -> dict[str, float]:
    """A card's weights as {name: float}, refusing names that `fuse` would not know (it would drop them)."""
    unknown = sorted(str(name) for name in weights if name != "ranker" and name not in SIGNALS)
    if unknown:
        raise ValueError(f"the card's fusion weights name {unknown}; known: ranker, {', '.join(SIGNALS)}")
    return {str(name): float(value) for name, value in weights.items()}


MIN_CLUSTER_QUERIES = 20  # a cluster with fewer training queries keeps the global weights


def _choose_rule(weights: dict[str, float], rules: Mapping[str, Mapping[str, float]], oof_scores, scoring, labels,
                 members: list[int]) -> tuple[str, dict[str, float]]:
    """(name, weights): the fitted `weights` ("fitted") or the rule of `rules` with the best best-of-N on the
    `members` queries (module docstring); ties go to the fitted weights, then to the rule listed first.

    scoring: per query, every signal that the weights and the rules read."""
    pick = lambda values: [values[i] for i in members]  # noqa: E731
    options = {"fitted": dict(weights), **{name: dict(rule) for name, rule in rules.items()}}
    accuracy = {name: _best_of_n([combine(w, oof_scores[i], scoring[i]) for i in members], pick(labels))
                for name, w in options.items()}
    best = max(options, key=lambda name: (round(accuracy[name], 12), name == "fitted"))  # max keeps the first of ties
    return best, options[best]


def _cluster_weights(oof_scores, signals, labels, assignment: Tensor, k: int, l2: float, index: list[int],
                     rules: Mapping[str, Mapping[str, float]] | None = None, scoring=None):
    """Global weights, one set per cluster and each set's source ("fitted" or a rule's name), fitted on the
    queries in `index`. With `rules` (and `scoring`: per query, every signal they read) each cluster of at
    least MIN_CLUSTER_QUERIES of them may take a rule instead (`_choose_rule`); smaller clusters keep the
    global weights."""
    pick = lambda values, members: [values[i] for i in members]  # noqa: E731
    global_weights, _ = fit_weights(pick(oof_scores, index), pick(signals, index), pick(labels, index), l2, check=False)
    clusters = [list(index)] if k == 1 else [[i for i in index if int(assignment[i]) == c] for c in range(k)]
    per_cluster, sources = [], []
    for members in clusters:
        if len(members) < MIN_CLUSTER_QUERIES and k > 1:
            per_cluster.append(dict(global_weights))
            sources.append("global")
            continue
        weights = global_weights if k == 1 else fit_weights(
            pick(oof_scores, members), pick(signals, members), pick(labels, members), l2, prior=global_weights,
            check=False)[0]
        source = "fitted"
        if rules:
            source, weights = _choose_rule(weights, rules, oof_scores, scoring, labels, members)
        per_cluster.append(weights)
        sources.append(source)
    return global_weights, per_cluster, sources


def fit_fusion(oof_scores: Sequence[Tensor], signals: Sequence[Mapping[str, Tensor]], labels: Sequence[Tensor],
               instructions: Tensor, l2: float = 0.01, clusters: Sequence[int] = (1, 2, 4, 8),
               folds: int = 5, seed: int = 0, rules: Mapping[str, Mapping[str, float]] | None = None,
               rule_signals: Sequence[Mapping[str, Tensor]] | None = None) -> tuple[Fusion, dict]:
    """Fusion weights per instruction cluster, with the number of clusters chosen by cross-validation.

    instructions: (Q, H) instruction features of the training queries. For every k in `clusters`
    the queries are clustered once (k-means needs no labels), then `folds`-fold cross-validation
    over the queries fits global + per-cluster weights on the other folds and counts best-of-N on
    the held-out one. The k with the most hits wins (ties: the smaller k); its weights are then
    fitted on every query. If the winner does not beat the ranker alone, fusion is off.

    rules: parameter-free weights (e.g. CLUSTER_RULES) a cluster may take instead of its fitted ones
    (module docstring); every k is then cross-validated with and without them, and without wins
    ties. rule_signals: per query, signals the rules read beyond `signals` (not fitted as weights).
    A rule that names a signal some query lacks is not offered.
    """
    Q = len(labels)
    scoring = [{**s, **r} for s, r in zip(signals, rule_signals)] if rule_signals is not None else list(signals)
    rules = {name: dict(rule) for name, rule in (rules or {}).items()
             if all(n == "ranker" or all(n in s for s in scoring) for n in rule)}
    if Q < 2 * folds:  # too few queries to cross-validate clusters: one set of weights, checked in sample
        weights, report = fit_weights(oof_scores, signals, labels, l2)
        return Fusion([weights]), {**report, "clusters": 1}
    ranker_alone = _best_of_n(oof_scores, labels)
    parts = fold_indices(Q, folds, seed)
    results, assignments = {}, {}
    options = [False, True] if rules else [False]
    for k in sorted(set(int(k) for k in clusters if 1 <= int(k) <= max(1, Q // MIN_CLUSTER_QUERIES))):
        centroids, assignment = kmeans(instructions, k, seed) if k > 1 else (None, torch.zeros(Q, dtype=torch.long))
        assignments[k] = (centroids, assignment)
        for use_rules in options:
            hits = 0.0
            for held in parts:
                rest = sorted(set(range(Q)) - set(held))
                _, per_cluster, _ = _cluster_weights(oof_scores, signals, labels, assignment, k, l2, rest,
                                                     rules if use_rules else None, scoring)
                fused = [combine(per_cluster[int(assignment[i])], oof_scores[i], scoring[i]) for i in held]
                hits += _best_of_n(fused, [labels[i] for i in held]) * len(held)
            results[k, use_rules] = hits / Q
    best_k, best_rules = max(results, key=lambda key: (results[key], -key[0], not key[1]))
    centroids, assignment = assignments[best_k]
    global_weights, per_cluster, sources = _cluster_weights(oof_scores, signals, labels, assignment, best_k, l2,
                                                            list(range(Q)), rules if best_rules else None, scoring)
    report = {"oof_best_of_n_ranker": ranker_alone,
              "cv_best_of_n_by_clusters": {str(k): v for (k, r), v in results.items() if not r},
              "clusters": best_k, "global_weights": global_weights, "l2": l2,
              "cluster_sizes": [int((assignment == c).sum()) for c in range(best_k)],
              "cluster_rules": best_rules, "cluster_sources": sources}
    if rules:
        report["cv_best_of_n_by_clusters_with_rules"] = {str(k): v for (k, r), v in results.items() if r}
    if results[best_k, best_rules] < ranker_alone:
        report["kept"] = False
        return Fusion([dict(RANKER_ONLY)]), report
    report["kept"] = True
    return Fusion(per_cluster, centroids, global_weights if best_k > 1 else None), report
