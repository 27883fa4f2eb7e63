"""`LanguageRanker`: the scikit-learn-style front door to models, training and checkpoints.

    ranker = LanguageRanker(kind="list", epochs=5).fit(train_queries, val_queries, fingerprint=fp, calibrate=True)
    best = ranker.select(instruction, responses)          # index of the best candidate
    ranker.probability_correct(ranker.score(instruction, responses), instruction)   # calibrated P(correct) per candidate
    ranker.save("rankers/math")
    ranker = LanguageRanker.load("rankers/math", expected_fingerprint=fp)

Hyperparameters are the fields of `RankerConfig` (except `hidden_size`, read from the data) and of
`TrainConfig`, and the fusion settings (`FusionConfig`, under the names of
`ranker.rankers.fusion.FUSION_HYPERPARAMS`: fusion, fusion_folds, ...). `__init__` only stores them;
`fit` validates them (by building the configs) and sets the fitted attributes `model_`,
`ranker_config_`, `train_config_`, `fusion_config_`, `train_result_`, `fingerprint_`,
`n_features_in_`, `fusion_` (ranker.rankers.fusion.Fusion), `fusion_report_`, `calibration_`
(ranker.rankers.calibration.PlattCalibration, or None), `training_data_` and `metrics_` (what the
card will record), and `fit_seconds_`. Only the estimator writes them: callers add to the card
through `fit(..., training_data=...)` and `record_metrics(...)`.

Score fusion (`ranker.rankers.fusion`): when `fusion` is on (the default) and the training queries carry
`mean_logprob` and/or `vote_keys`, `fit` also cross-fits weights and every score becomes
a * s_k + b * mean_logprob_k + c * vote_share_k; scoring then needs what was fused (the
candidates' mean log-probs, their answer keys). The weights a, b, c depend on the instruction's
cluster (k-means on the training instructions, the number of clusters cross-validated; see
`ranker.rankers.fusion.Fusion`). With `fusion_cluster_rules` (on by default) a cluster may instead
score with a parameter-free rule (max mean log-prob, or the log-prob-weighted vote) where that picks
better on its out-of-fold scores, if cross-validation says rules help at all (`CLUSTER_RULES`).
`fused == False` is the hidden-state ranker alone (the paper's ranker; `fusion=False` forces it).

Fallback (`ranker.rankers.fallback`, `fusion_fallback`, on by default, with at least fusion_domains x
MIN_CLUSTER_QUERIES training queries): for instructions far from the training ones the weights move
towards free-signal weights g (ranker weight 0). g is chosen by the same cross-validation as the
distances (near, far): the candidates are the free-signal weights fitted on the fusion's signals
("fitted") and the fixed WEIGHTED_VOTE_RULE, 1 x weighted_vote + 1e-3 x mean_logprob ("weighted_vote",
the log-prob-weighted majority vote; offered when every training query has mean log-probs and answer
keys and the fusion's signals may read both). Each candidate's best (near, far) is chosen on the
in-domain (cross-fitting folds) and out-of-domain (held-out instruction clusters, each scored by a
ranker trained once on the other clusters) examples. The fixed rule wins unless the "fitted"
weights' rule beats its pooled best-of-N by a significant paired margin (`choose_fallback_weights`).
The fusion report's "fallback" entry holds every candidate's pooled / in-domain / out-of-domain
best-of-N and paired z against the fixed rule ("fallback_candidates") and the winner
("fallback_choice"); a far instruction fused with the fixed rule needs both mean_logprob and
vote_keys at scoring.

Streaming: `fit` also takes a `StorePool` (ranker.rankers.training_groups) instead of queries, a
store's problems whose response features stay in the store. Training, the fusion's fold rankers
and the calibration's scoring then read the store prompt batch by prompt batch, and keep only
(P, N) scores and the (P, H) instructions in memory; the fitted ranker is the one that the store's
queries give (ranker.rankers.training, "Streaming").

Calibration (`ranker.rankers.calibration`): `fit(..., calibrate=True)` fits Platt scaling on the
(fused) scores from `calibration_source`; `probability_correct(scores, instructions)` applies it
(`probability_store(store)` for a store's candidates). With a fallback the out-of-fold calibration is
by regime: a second Platt pair is fitted on the fallback's in-domain and out-of-domain examples
(each with its share of the fallback), and an instruction's pair is blended by its share, as its
weights are; P(correct) then needs the instructions.

`predict_proba(instruction, responses) -> (K,)`:
- pointwise binary (kind="point", loss bce): sigmoid(s_k), each candidate's own probability of being
  correct. BCE is a proper scoring rule, so these are calibrated on the training distribution; check
  with `ranker.evaluation.metrics.expected_calibration_error` on held-out data before trusting them.
- listwise binary (loss kl): softmax(s) over the K candidates given. It sums to 1 and estimates how
  the correct answers share the probability mass among these candidates (the target pi_y of the KL).
  It is NOT a per-candidate probability of correctness and changes with the candidate set.
- bt: softmax(s), the Plackett-Luce probability that each candidate is the preferred one.
- mse (real labels): refused with ValueError; scores are predicted labels, not probabilities.
"""

from __future__ import annotations

import os
import time
from dataclasses import fields
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor

from ranker.capture.fingerprint import FeatureFingerprint
from ranker.core.seeding import seeded
from ranker.core.training_loop import TrainProgress, TrainResult
from ranker.evaluation.metrics import RankingMetrics, best_candidates, ranking_metrics
from ranker.rankers.calibration import (
    CALIBRATION_SOURCES,
    MIN_REGIME_WEIGHT,
    PlattCalibration,
    fit_calibration,
    fit_calibration_by_regime,
)
from ranker.rankers.checkpoint import RankerCard, load_checkpoint, save_checkpoint
from ranker.rankers.clustering import kmeans
from ranker.rankers.fallback import (
    WEIGHTED_VOTE_RULE,
    DistanceFallback,
    FallbackExamples,
    choose_fallback_weights,
    fit_support,
    ramp,
    support_distances,
)
from ranker.rankers.fusion import (
    CLUSTER_RULES,
    FUSION_HYPERPARAMS,
    MIN_CLUSTER_QUERIES,
    RANKER_ONLY,
    Fusion,
    FusionConfig,
    combine,
    fit_fusion,
    fit_weights,
    fold_indices,
    fuse,
    pool_signals,
    query_signals,
    signal_inputs,
)
from ranker.rankers.networks import Ranker, RankerConfig, build_ranker
from ranker.rankers.train_config import TrainConfig
from ranker.rankers.training import resolve_loss, score_pool, score_queries, train_ranker
from ranker.rankers.training_groups import QueryLike, StorePool, store_queries

if TYPE_CHECKING:  # only a type here: importing the store would load the base-model code for every ranker user
    from ranker.capture.feature_store import FeatureStore

RANKER_PARAMS = tuple(f.name for f in fields(RankerConfig) if f.name not in ("kind", "hidden_size"))
TRAIN_PARAMS = tuple(f.name for f in fields(TrainConfig))
FUSION_PARAMS = tuple(FUSION_HYPERPARAMS)


class NotFittedError(ValueError, AttributeError):
    """Raised when a LanguageRanker is used before `fit` or `load` (as sklearn's NotFittedError)."""


class LanguageRanker:
    """Pick the best of K sampled responses from the base model's hidden states."""

    def __init__(self, kind: str = "list", **hyperparams):
        unknown = set(hyperparams) - set(RANKER_PARAMS) - set(TRAIN_PARAMS) - set(FUSION_PARAMS)
        if unknown:
            raise ValueError(f"unknown hyperparameters {sorted(unknown)}; accepted: kind, "
                             f"{', '.join(RANKER_PARAMS + TRAIN_PARAMS + FUSION_PARAMS)}")
        self.kind = kind
        self.hyperparams = dict(hyperparams)

    # --- scikit-learn conventions -------------------------------------------------------------

    def get_params(self, deep: bool = True) -> dict:
        return {"kind": self.kind, **self.hyperparams}

    def set_params(self, **params) -> "LanguageRanker":
        fresh = LanguageRanker(**{**self.get_params(), **params})  # validates names
        self.kind, self.hyperparams = fresh.kind, fresh.hyperparams
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"LanguageRanker({args})"

    def _configs(self, hidden_size: int) -> tuple[RankerConfig, TrainConfig, FusionConfig]:
        ranker_args = {k: v for k, v in self.hyperparams.items() if k in RANKER_PARAMS}
        train_args = {k: v for k, v in self.hyperparams.items() if k in TRAIN_PARAMS}
        return (RankerConfig(kind=self.kind, hidden_size=hidden_size, **ranker_args), TrainConfig(**train_args),
                FusionConfig.from_hyperparams(self.hyperparams))

    def _check_fitted(self) -> Ranker:
        if getattr(self, "model_", None) is None:
            raise NotFittedError(
                "This LanguageRanker is not fitted yet: call fit(queries) or LanguageRanker.load(path)"
            )
        return self.model_

    # --- training -----------------------------------------------------------------------------

    def fit(
        self,
        queries: Sequence[QueryLike] | StorePool,
        val_queries: Sequence[QueryLike] | StorePool | None = None,
        fingerprint: FeatureFingerprint | None = None,
        progress: Callable[[TrainProgress], None] | str | None = None,
        *,
        calibrate: bool = False,
        calibration_source: str = "out_of_fold",
        training_data: dict | None = None,
    ) -> "LanguageRanker":
        """Build a fresh ranker and train it on `queries` (then fusion, then calibration). Returns self.

        queries, val_queries: queries, or StorePools to stream from a store (module docstring).

        fingerprint: identifies the base model and layer the features came from; stored in
        checkpoints so that loading can refuse features from anything else.
        calibrate: also fit Platt scaling (binary labels only) on the scores from `calibration_source`
        (one of CALIBRATION_SOURCES). "out_of_fold" (the default): the cross-fitting rankers' scores
        of the queries they did not train on, fused like the final ranker's; with fewer than
        2 x fusion_folds queries there is nothing to cross-fit, and the calibration falls back to
        "training", the fitted ranker's scores on `queries` (optimistic; the card records the source).
        training_data: the caller's description of the data (e.g. the store and layer), recorded in
        the card beside the counts that training computes.
        """
        if len(queries) == 0:
            raise ValueError("fit needs at least one query, got none")
        streaming = isinstance(queries, StorePool)
        hidden_size = queries.hidden_size if streaming else int(queries[0].instruction.shape[-1])
        if fingerprint is not None and fingerprint.model.hidden_size != hidden_size:
            raise ValueError(
                f"features have hidden size {hidden_size}, "
                f"but the fingerprint's model has {fingerprint.model.hidden_size}"
            )
        if training_data is not None and not isinstance(training_data, dict):
            raise ValueError(f"training_data must be a dict, got {type(training_data).__name__}")
        ranker_config, train_config, fusion_config = self._configs(hidden_size)
        if calibrate and calibration_source not in CALIBRATION_SOURCES:
            raise ValueError(f"calibration_source must be one of {CALIBRATION_SOURCES}, got {calibration_source!r}")
        if calibrate and ranker_config.label_type != "binary":
            raise ValueError(f"calibrate=True needs binary labels (P(correct)), but label_type is {ranker_config.label_type!r}")
        # The model's initial weights come from torch's global RNG: seeded, without disturbing the caller's.
        with seeded(train_config.seed):
            model = build_ranker(ranker_config)
        start = time.perf_counter()
        self.train_result_: TrainResult = train_ranker(model, queries, train_config, val_queries, progress)
        self.model_, self.ranker_config_, self.train_config_ = model, ranker_config, train_config
        self.fusion_config_, self.fingerprint_, self.n_features_in_ = fusion_config, fingerprint, hidden_size
        self.fusion_, self.fusion_report_ = Fusion([dict(RANKER_ONLY)]), None
        # The per-query signals are built only for fusion: for a million-row store they are ~15,000
        # small dicts of tensors, which a calibration-only cross-fit does not need.
        signals, rule_signals = [{} for _ in range(len(queries))], None
        if fusion_config.enabled and fusion_config.signals:
            every = pool_signals(queries) if streaming else [query_signals(q) for q in queries]
            signals = [{k: v for k, v in s.items() if k in fusion_config.signals} for s in every]
            # The fallback's fixed rule and the clusters' rules read the weighted vote whether or not it is
            # fused (module docstring).
            rule_names = [name for name in WEIGHTED_VOTE_RULE if name != "ranker"]
            if ((fusion_config.fallback or fusion_config.cluster_rules)
                    and signal_inputs(rule_names) <= signal_inputs(fusion_config.signals)
                    and all(name in s for s in every for name in rule_names)):
                rule_signals = [{name: s[name] for name in rule_names} for s in every]
            del every
        fuse_signals = fusion_config.enabled and any(signals)
        out_of_fold, regimes = None, None
        if (fuse_signals or (calibrate and calibration_source == "out_of_fold")) and len(queries) >= 2 * fusion_config.folds:
            self.fusion_, self.fusion_report_, out_of_fold, regimes = self._cross_fit(
                queries, signals, ranker_config, train_config, fusion_config, fuse_signals, rule_signals)
        self.calibration_: PlattCalibration | None = None
        if calibrate:
            by_source = calibration_source == "out_of_fold"
            self.calibration_ = self._fit_calibration(queries, out_of_fold if by_source else None, regimes if by_source else None)
        self.fit_seconds_ = time.perf_counter() - start
        result = self.train_result_
        self.training_data_ = {**(training_data or {}), **result.data_summary}
        self.metrics_ = {"val": result.val_metrics, "wall_time_s": self.fit_seconds_, "loss": result.loss_name,
                         "fusion": self.fusion_report_}
        return self

    def _cross_fit(self, queries, signals, ranker_config: RankerConfig, train_config: TrainConfig,
                   fusion_config: FusionConfig, fuse_signals: bool,
                   rule_signals: list[dict[str, Tensor]] | None = None
                   ) -> tuple[Fusion, dict | None, list[Tensor], tuple[list[Tensor], Tensor, list[Tensor], Tensor] | None]:
        """Out-of-fold scores from `fusion_config.folds` rankers; from them the fusion weights (when
        `fuse_signals`) and its fallback (ranker.rankers.fusion, ranker.rankers.fallback).

        rule_signals: per query, the signals WEIGHTED_VOTE_RULE reads, or None when that fallback
        candidate is not offered. Returns (fusion, its report, the out-of-fold scores fused with the
        fitted fusion: one (K_q,) per query, the fallback's calibration examples or None: see
        `_regime_examples`, plus each example's fusion cluster, -1 out of domain).
        """
        parts = fold_indices(len(queries), fusion_config.folds, train_config.seed)
        oof: list[Tensor | None] = [None] * len(queries)
        for held in parts:
            for i, scores in zip(held, self._train_and_score(queries, _rest(len(queries), held), held, ranker_config, train_config)):
                oof[i] = scores
        labels, instructions = self._labels_and_instructions(queries)
        fusion, report, regimes = Fusion([dict(RANKER_ONLY)]), None, None
        if not fuse_signals:  # ranker-only: the raw scores are the fused ones (no float64 copy of every row)
            return fusion, report, oof, None
        fusion, report = fit_fusion(oof, signals, labels, instructions, l2=fusion_config.l2,
                                    clusters=fusion_config.clusters, seed=train_config.seed,
                                    rules=CLUSTER_RULES if fusion_config.cluster_rules else None,
                                    rule_signals=rule_signals)
        # What the fused weights may read: a cluster's rule or the fallback's may name the weighted vote.
        scoring = [{**s, **r} for s, r in zip(signals, rule_signals)] if rule_signals is not None else signals
        if fusion_config.fallback and len(queries) >= fusion_config.domains * MIN_CLUSTER_QUERIES:
            fusion.fallback, report["fallback"], regimes = self._fit_fallback(
                queries, signals, oof, parts, labels, instructions, fusion, ranker_config, train_config, fusion_config,
                rule_signals, scoring)
        fused = [combine(fusion.weights_for(instructions[i]), oof[i], scoring[i]).float() for i in range(len(queries))]
        return fusion, report, fused, regimes

    def _fit_fallback(self, queries, signals, oof, parts, labels, instructions, fusion: Fusion, ranker_config: RankerConfig,
                      train_config: TrainConfig, fusion_config: FusionConfig,
                      rule_signals: list[dict[str, Tensor]] | None = None, scoring: list[dict[str, Tensor]] | None = None
                      ) -> tuple[DistanceFallback | None, dict, tuple[list[Tensor], Tensor, list[Tensor], Tensor] | None]:
        """The free-signal fallback, its weights and its rule, chosen on held-out folds and held-out instruction
        clusters (ranker.rankers.fallback); None when the best rule never falls back or no candidate weights exist.

        The candidates are the free weights fitted on `signals` ("fitted") and, when `rule_signals` is given
        (per query, the signals it reads), WEIGHTED_VOTE_RULE ("weighted_vote"). The out-of-domain rankers are
        trained once and score every candidate. Returns (fallback, report, the kept fallback's calibration
        examples or None: `_regime_examples` plus each example's fusion cluster (E,), -1 out of domain). scoring: per query, what the fusion's weights read (`signals`, plus
        `rule_signals` when a cluster's rule may name them); default `signals`.
        """
        Q, seed, l2 = len(queries), train_config.seed, fusion_config.l2
        scoring = signals if scoring is None else scoring
        pick = lambda values, index: [values[i] for i in index]  # noqa: E731
        free, _ = fit_weights(oof, signals, labels, l2, use_ranker=False)
        if not free and rule_signals is None:
            return None, {"kept": False, "why": "no free signal varies within the training queries"}, None
        # In domain: the cross-fitting folds, each measured against support centroids of the other folds.
        in_distances = torch.zeros(Q)
        for held in parts:
            in_distances[held] = support_distances(instructions[held], *fit_support(instructions[_rest(Q, held)], seed))
        in_clusters = fusion.clusters_of(instructions).tolist()
        in_fused = [combine(fusion.weights[in_clusters[i]], oof[i], scoring[i]) for i in range(Q)]
        # Out of domain: each instruction cluster scored by a ranker, weights and support fitted without it.
        _, domain_of = kmeans(instructions, fusion_config.domains, seed)
        held_order, raw_scores, fused, fitted_free, distances = [], [], [], [], []
        for domain in range(fusion_config.domains):
            held = [i for i in range(Q) if int(domain_of[i]) == domain]
            rest = _rest(Q, held)
            if not held or len(rest) < MIN_CLUSTER_QUERIES:
                continue
            weights, _ = fit_weights(pick(oof, rest), pick(signals, rest), pick(labels, rest), l2, check=False)
            free_rest = {}
            if free:
                free_rest, _ = fit_weights(pick(oof, rest), pick(signals, rest), pick(labels, rest), l2, use_ranker=False)
            raw = self._train_and_score(queries, rest, held, ranker_config, train_config)  # the expensive part: once
            held_order += held
            raw_scores += raw
            fused += [combine(weights, scores, signals[i]) for i, scores in zip(held, raw)]
            fitted_free += [free_rest or free] * len(held)
            distances.append(support_distances(instructions[held], *fit_support(instructions[rest], seed)))
        if not distances:  # the instructions form one cluster (e.g. all alike): nothing to hold out
            return None, {"kept": False, "why": "the training instructions form a single cluster"}, None
        out_distances, out_labels = torch.cat(distances), pick(labels, held_order)
        out_rows = list(zip(held_order, raw_scores))  # (query, its out-of-domain raw scores)
        candidates, weights_of = {}, {}
        if free:
            weights_of["fitted"] = free
            candidates["fitted"] = (
                FallbackExamples(in_fused, [combine(free, oof[i], signals[i]) for i in range(Q)], in_distances, labels),
                FallbackExamples(fused, [combine(g, raw, signals[i]) for g, (i, raw) in zip(fitted_free, out_rows)],
                                 out_distances, out_labels))
        if rule_signals is not None:
            rule = weights_of["weighted_vote"] = dict(WEIGHTED_VOTE_RULE)
            candidates["weighted_vote"] = (
                FallbackExamples(in_fused, [combine(rule, oof[i], rule_signals[i]) for i in range(Q)], in_distances, labels),
                FallbackExamples(fused, [combine(rule, raw, rule_signals[i]) for i, raw in out_rows], out_distances, out_labels))
        choice, reports = choose_fallback_weights(
            candidates, prefer="weighted_vote" if "weighted_vote" in candidates else None)
        report = {**reports[choice], "weights": weights_of[choice], "fallback_choice": choice,
                  "fallback_candidates": {name: {"weights": weights_of[name], "near": r["near"], "far": r["far"],
                                                 **{k: r["chosen"][k] for k in ("pooled", "in_domain", "out_of_domain")},
                                                 **{k: r[k] for k in ("z_vs_preferred",) if k in r}}
                                          for name, r in reports.items()}}
        if report["near"] == float("inf"):
            return None, {**report, "kept": False}, None
        support, center = fit_support(instructions, seed)
        fallback = DistanceFallback(weights_of[choice], support, report["near"], report["far"], center)
        # Each calibration example's fusion cluster: the in-domain ones were scored with their cluster's weights,
        # the out-of-domain ones (-1) with weights fitted without them (ranker.rankers.calibration, "By cluster").
        clusters = torch.tensor(in_clusters + [-1] * len(out_labels), dtype=torch.long)
        return fallback, {**report, "kept": True}, (*_regime_examples(candidates[choice], fallback.near, fallback.far),
                                                    clusters)

    def _train_and_score(self, queries, train_index: list[int], score_index: list[int], ranker_config: RankerConfig,
                         train_config: TrainConfig) -> list[Tensor]:
        """Raw scores of the `score_index` queries by a fresh ranker trained on the `train_index` ones."""
        with seeded(train_config.seed):
            model = build_ranker(ranker_config)
        if isinstance(queries, StorePool):
            train_ranker(model, queries.subset(train_index), train_config)
            return score_pool(model, queries.subset(score_index))
        train_ranker(model, [queries[i] for i in train_index], train_config)
        return score_queries(model, [queries[i] for i in score_index])

    @staticmethod
    def _labels_and_instructions(queries) -> tuple[list[Tensor], Tensor]:
        """Each query's (K_q,) labels and the (Q, H) instruction features, on the CPU."""
        if isinstance(queries, StorePool):
            return queries.label_rows(), queries.instructions.float().cpu()
        return [q.labels.float().cpu() for q in queries], torch.stack([q.instruction.float().cpu() for q in queries])

    def _fit_calibration(self, queries: Sequence[QueryLike] | StorePool, out_of_fold: list[Tensor] | None,
                         regimes: tuple[list[Tensor], Tensor, list[Tensor], Tensor] | None = None) -> PlattCalibration:
        """Platt scaling by regime on the fallback's examples `regimes` (ranker.rankers.calibration) when
        both regimes have enough of them; else on `out_of_fold` (fused) scores; or, when that is None too
        (source "training" asked for, or too few queries to cross-fit), on the fitted ranker's own scores of
        its training candidates."""
        if regimes is not None:
            scores, shares, labels, clusters = regimes
            sizes = torch.tensor([len(s) for s in scores])
            weights = shares.double().repeat_interleave(sizes)
            if min(float(weights.sum()), float((1 - weights).sum())) >= MIN_REGIME_WEIGHT:
                return fit_calibration_by_regime(torch.cat(scores), weights, torch.cat(labels),
                                                 clusters.repeat_interleave(sizes), self.fusion_.num_clusters)
        labels = queries.labels if isinstance(queries, StorePool) else torch.cat([q.labels.float().cpu() for q in queries])
        if out_of_fold is not None:
            return fit_calibration(torch.cat(out_of_fold), labels, "out_of_fold")
        return fit_calibration(torch.cat(self.score_queries(queries)), labels, "training")

    def record_metrics(self, **metrics) -> "LanguageRanker":
        """Add evaluation results (e.g. held_out={...}) to `metrics_`, which `save` writes to the card. Returns self."""
        self._check_fitted()
        self.metrics_.update(metrics)
        return self

    # --- inference ----------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, instruction: Tensor, responses: Tensor, mean_logprob: Tensor | None = None,
              vote_keys: Sequence | None = None) -> Tensor:
        """Scores of K candidates: instruction (H,), responses (K, H) -> (K,) float32 on CPU. Higher is better.

        mean_logprob: (K,) mean token log-probs of the candidates; vote_keys: their K answer keys
        (`ranker.tasks.voting`, None where a candidate has no answer). Each is required when the
        ranker fuses it (see `fusion_weights`), ignored otherwise.
        """
        model = self._check_fitted()
        if instruction.dim() != 1 or responses.dim() != 2:
            raise ValueError(
                "expected instruction (H,) and responses (K, H), "
                f"got {tuple(instruction.shape)} and {tuple(responses.shape)}"
            )
        if responses.shape[0] == 0:
            raise ValueError("responses is empty: need at least one candidate (K >= 1)")
        device = next(model.parameters()).device
        scores = model(instruction[None].to(device), responses[None].to(device))  # (1, K)
        return fuse(scores[0].float().cpu(), self.fusion.weights_for(instruction), mean_logprob, vote_keys)

    @property
    def fusion(self) -> Fusion:
        """The fitted fusion (ranker.rankers.fusion.Fusion): weights per instruction cluster."""
        return getattr(self, "fusion_", None) or Fusion([dict(RANKER_ONLY)])

    @property
    def fusion_weights(self) -> dict[str, float]:
        """The fusion weights pooled over instruction clusters: "ranker" and each fused signal
        ({"ranker": 1.0}: hidden states only). Scoring uses the instruction's own cluster's weights."""
        return self.fusion.summary_weights

    @property
    def fused(self) -> bool:
        """True when scores mix in a free signal (for some instructions: the fallback's)."""
        return self.fusion.fallback is not None or any(weights != RANKER_ONLY for weights in self.fusion.weights)

    @property
    def calibrated(self) -> bool:
        """True when `probability_correct` can turn scores into P(correct) (fitted with calibrate=True)."""
        return getattr(self, "calibration_", None) is not None

    def select(self, instruction: Tensor, responses: Tensor, mean_logprob: Tensor | None = None,
               vote_keys: Sequence | None = None) -> int:
        """Index of the best candidate (the first one on ties)."""
        return int(best_candidates(self.score(instruction, responses, mean_logprob, vote_keys)))

    def rank(self, instruction: Tensor, responses: Tensor, mean_logprob: Tensor | None = None,
             vote_keys: Sequence | None = None) -> list[int]:
        """Candidate indices from best to worst (stable on ties)."""
        scores = self.score(instruction, responses, mean_logprob, vote_keys)
        return torch.argsort(scores, descending=True, stable=True).tolist()

    def predict_proba(self, instruction: Tensor, responses: Tensor, mean_logprob: Tensor | None = None,
                      vote_keys: Sequence | None = None) -> Tensor:
        """(K,) probabilities; which kind depends on the loss (see the module docstring)."""
        scores = self.score(instruction, responses, mean_logprob, vote_keys)
        loss, _, _ = resolve_loss(self.train_config_, self.ranker_config_.kind, self.ranker_config_.label_type)
        if loss == "bce":
            return torch.sigmoid(scores)
        if loss in ("kl", "bt"):
            return torch.softmax(scores, dim=0)
        raise ValueError(f"predict_proba is not meaningful for loss {loss!r}: scores are regressed labels; use score()")

    def probability_correct(self, scores: Tensor, instructions: Tensor | None = None) -> Tensor:
        """Calibrated P(correct) of this ranker's (fused) scores, the same shape.

        scores: (K,) candidates of one instruction (H,), or (P, n) of P instructions (P, H).
        instructions: the scores' instructions; needed when the calibration is by regime (a ranker with
        a fallback: P(correct) depends on how far the instruction is from the training data,
        ranker.rankers.calibration), ignored otherwise. Uses `calibration_`; ValueError for a ranker
        fitted without calibrate=True.
        """
        self._check_fitted()
        if not self.calibrated:
            raise ValueError("this ranker has no calibration: fit it with calibrate=True "
                             "(ranker.rankers.store_training.train_on_store does)")
        scores = torch.as_tensor(scores)
        if not self.calibration_.by_regime:
            return self.calibration_(scores)
        if instructions is None:
            raise ValueError("this ranker's P(correct) depends on each instruction's distance to its training data "
                             "(calibration by regime): pass the scores' instructions")
        instructions = torch.as_tensor(instructions)
        shares = self._fallback_shares(instructions, scores)
        if self.calibration_.cluster_a is None:
            return self.calibration_(scores, shares)
        if self.calibration_.num_clusters != self.fusion.num_clusters:
            raise ValueError(f"the calibration has offsets for {self.calibration_.num_clusters} clusters, "
                             f"the fusion {self.fusion.num_clusters}")
        flat = instructions.reshape(-1, instructions.shape[-1])
        clusters = self.fusion.clusters_of(flat).reshape(shares.shape)
        return self.calibration_(scores, shares, clusters)

    def _fallback_shares(self, instructions: Tensor, scores: Tensor) -> Tensor:
        """The fallback's share of each instruction ((H,) -> (), (P, H) -> (P, 1, ...)), broadcastable to `scores`."""
        fallback = self.fusion.fallback
        if instructions.dim() not in (1, 2) or instructions.shape[-1] != self.n_features_in_:
            raise ValueError(f"instructions must be (H,) or (P, H) with H = {self.n_features_in_}, "
                             f"got {tuple(instructions.shape)}")
        if instructions.dim() == 2 and (scores.dim() == 0 or scores.shape[0] != instructions.shape[0]):
            raise ValueError(f"{instructions.shape[0]} instructions for scores of shape {tuple(scores.shape)}: "
                             "need one instruction per row of scores")
        if fallback is None:  # a calibration by regime without its fallback: every instruction is near
            return torch.zeros(instructions.shape[:-1] + (1,) * (scores.dim() - instructions.dim() + 1))
        shares = ramp(fallback.distances(instructions.reshape(-1, instructions.shape[-1])), fallback.near, fallback.far).float()
        return shares.reshape(instructions.shape[:-1] + (1,) * (scores.dim() - instructions.dim() + 1))

    def probability_store(self, store: FeatureStore, index=None, scores: Tensor | None = None) -> Tensor:
        """(P, n) calibrated P(correct) of a store's candidates: `score_store(store, index)`, or the given
        (P, n) `scores` of them, with the store's instructions at the ranker's layer."""
        scores = self.score_store(store, index) if scores is None else torch.as_tensor(scores)
        layer = self.fingerprint_.layer if self.fingerprint_ is not None else None
        return self.probability_correct(scores, store.features(layer)[0].float())

    def score_queries(self, queries: Sequence[QueryLike] | StorePool) -> list[Tensor]:
        """`score` for many queries at once (batched): a list of (K_q,) tensors (fused, as `score`).

        queries may be a StorePool: its prompts are then read from the store a chunk at a time.
        """
        fusion = self.fusion
        if isinstance(queries, StorePool):
            raw = score_pool(self._check_fitted(), queries)
            return [fuse(s, fusion.weights_for(queries.instructions[q]), queries.mean_logprob[q], queries.vote_keys[q])
                    for q, s in enumerate(raw)]
        raw = score_queries(self._check_fitted(), queries)
        return [fuse(s, fusion.weights_for(q.instruction), getattr(q, "mean_logprob", None), getattr(q, "vote_keys", None))
                for s, q in zip(raw, queries)]

    def score_store(self, store: FeatureStore, index=None) -> Tensor:
        """(P, n) scores at the ranker's own layer: every candidate of the store, or the (P, n) `index` ones.

        Refuses (ValueError) a store of another base model. Scores depend on the candidate set (the
        ListRanker attends over it, the vote share counts it), so candidates scored as a subset are
        ranked among that subset only.
        """
        self._check_fitted()
        layer = self.fingerprint_.layer if self.fingerprint_ is not None else None
        if self.fingerprint_ is not None:
            self.fingerprint_.check_compatible(store.feature_fingerprint(layer), what="ranker")
        return torch.stack(self.score_queries(store_queries(store, layer, index)))

    def evaluate(self, queries: Sequence[QueryLike] | StorePool) -> RankingMetrics:
        """Best-of-N, random and oracle accuracy, and AUROC on labelled `queries` (or every query of a StorePool)."""
        self._check_fitted()
        labels = queries.label_rows() if isinstance(queries, StorePool) else [q.labels.float().cpu() for q in queries]
        return ranking_metrics(self.score_queries(queries), labels)

    # --- persistence --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted ranker to the folder `path` (see `ranker.rankers.checkpoint`)."""
        model = self._check_fitted()
        card = RankerCard(ranker_config=self.ranker_config_, train_config=self.train_config_,
                          fusion_config=self.fusion_config_, fingerprint=self.fingerprint_, fusion=self.fusion,
                          calibration=self.calibration_, training_data=self.training_data_, metrics=self.metrics_)
        save_checkpoint(path, model, card)

    @classmethod
    def load(
        cls, path: str | os.PathLike, expected_fingerprint: FeatureFingerprint | None = None, device: str = "cpu"
    ) -> "LanguageRanker":
        """A fitted LanguageRanker from a checkpoint folder; refuses mismatched features (ValueError).

        `train_result_` is None after loading; the saved summaries are in `training_data_` and `metrics_`.
        """
        model, card = load_checkpoint(path, expected_fingerprint, device)
        train_config, fusion_config = card.train_config or TrainConfig(), card.fusion_config or FusionConfig()
        ranker_args = {k: v for k, v in card.ranker_config.to_dict().items() if k in RANKER_PARAMS}
        est = cls(kind=card.ranker_config.kind, **ranker_args, **train_config.to_dict(), **fusion_config.to_hyperparams())
        est.model_, est.ranker_config_, est.train_config_ = model, card.ranker_config, train_config
        est.fusion_config_, est.train_result_ = fusion_config, None
        est.fingerprint_ = card.fingerprint
        est.n_features_in_ = card.ranker_config.hidden_size
        est.training_data_, est.metrics_ = card.training_data, card.metrics
        est.fusion_, est.fusion_report_ = card.fusion, card.metrics.get("fusion")
        est.calibration_ = card.calibration
        offsets = 0 if card.calibration is None else card.calibration.num_clusters
        if offsets and offsets != est.fusion.num_clusters:
            raise ValueError(f"{path}: the card's calibration has offsets for {offsets} clusters, "
                             f"its fusion {est.fusion.num_clusters}")
        return est


def _rest(count: int, held: Sequence[int]) -> list[int]:
    """range(count) without `held`, in order."""
    held = set(held)
    return [i for i in range(count) if i not in held]


def _regime_examples(examples: tuple[FallbackExamples, FallbackExamples], near: float,
                     far: float) -> tuple[list[Tensor], Tensor, list[Tensor]]:
    """What the calibration by regime is fitted on: the chosen candidate's in-domain and out-of-domain
    examples, each query scored as the fallback (near, far) would score it, with its share.

    Returns (scores: one (K_q,) per example, shares (E,), labels: one (K_q,) per example).
    """
    scores, shares, labels = [], [], []
    for part in examples:
        part_shares = ramp(part.distances.double(), near, far)
        scores += [((1 - s) * f.double() + s * g.double()).float() for s, f, g in zip(part_shares.tolist(), part.fused, part.free)]
        shares.append(part_shares)
        labels += [y.float() for y in part.labels]
    return scores, torch.cat(shares), labels
