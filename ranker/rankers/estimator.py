"""`LanguageRanker`: the scikit-learn-style front door to models, training and checkpoints.

    ranker = LanguageRanker(kind="list", epochs=5).fit(train_queries, val_queries, fingerprint=fp)
    best = ranker.select(instruction, responses)          # index of the best candidate
    ranker.save("rankers/math")
    ranker = LanguageRanker.load("rankers/math", expected_fingerprint=fp)

Hyperparameters are the fields of `RankerConfig` (except `hidden_size`, read from the data) and of
`TrainConfig`. `__init__` only stores them; `fit` validates them (by building both configs) and sets
the fitted attributes `model_`, `ranker_config_`, `train_config_`, `train_result_`, `fingerprint_`,
`n_features_in_`, `fusion_` (ranker.rankers.fusion.Fusion) and `fusion_report_`.

Score fusion (`ranker.rankers.fusion`): when `fusion` is on (the default) and the training queries carry
`mean_logprob` and/or `vote_keys`, `fit` also cross-fits weights and every score becomes
a * s_k + b * mean_logprob_k + c * vote_share_k; scoring then needs what was fused (the
candidates' mean log-probs, their answer keys). The weights a, b, c depend on the instruction's
cluster (k-means on the training instructions, the number of clusters cross-validated; see
`ranker.rankers.fusion.Fusion`). `fused == False` is the hidden-state ranker alone (the paper's ranker;
`fusion=False` forces it).

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
from typing import Callable, Sequence

import torch
from torch import Tensor

from ranker.capture.fingerprint import FeatureFingerprint
from ranker.evaluation.metrics import RankingMetrics, ranking_metrics
from ranker.rankers.checkpoint import load_checkpoint, load_extra_tensors, save_checkpoint
from ranker.rankers.fusion import RANKER_ONLY, Fusion, fit_fusion, fold_indices, fuse, query_signals
from ranker.rankers.networks import Ranker, RankerConfig, build_ranker
from ranker.rankers.training import (
    TrainConfig,
    TrainProgress,
    TrainResult,
    resolve_loss,
    score_queries,
    train_ranker,
)
from ranker.rankers.training_groups import QueryLike

RANKER_PARAMS = tuple(f.name for f in fields(RankerConfig) if f.name not in ("kind", "hidden_size"))
TRAIN_PARAMS = tuple(f.name for f in fields(TrainConfig))


class NotFittedError(ValueError, AttributeError):
    """Raised when a LanguageRanker is used before `fit` or `load` (as sklearn's NotFittedError)."""


class LanguageRanker:
    """Pick the best of K sampled responses from the base model's hidden states."""

    def __init__(self, kind: str = "list", **hyperparams):
        unknown = set(hyperparams) - set(RANKER_PARAMS) - set(TRAIN_PARAMS)
        if unknown:
            raise ValueError(
                f"unknown hyperparameters {sorted(unknown)}; accepted: kind, {', '.join(RANKER_PARAMS + TRAIN_PARAMS)}"
            )
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

    def _configs(self, hidden_size: int) -> tuple[RankerConfig, TrainConfig]:
        ranker_args = {k: v for k, v in self.hyperparams.items() if k in RANKER_PARAMS}
        train_args = {k: v for k, v in self.hyperparams.items() if k in TRAIN_PARAMS}
        return RankerConfig(kind=self.kind, hidden_size=hidden_size, **ranker_args), TrainConfig(**train_args)

    def _check_fitted(self) -> Ranker:
        if getattr(self, "model_", None) is None:
            raise NotFittedError(
                "This LanguageRanker is not fitted yet: call fit(queries) or LanguageRanker.load(path)"
            )
        return self.model_

    # --- training -----------------------------------------------------------------------------

    def fit(
        self,
        queries: Sequence[QueryLike],
        val_queries: Sequence[QueryLike] | None = None,
        fingerprint: FeatureFingerprint | None = None,
        progress: Callable[[TrainProgress], None] | str | None = None,
    ) -> "LanguageRanker":
        """Build a fresh ranker and train it on `queries`. Returns self.

        fingerprint: identifies the base model and layer the features came from; stored in
        checkpoints so that loading can refuse features from anything else.
        """
        if len(queries) == 0:
            raise ValueError("fit needs at least one query, got none")
        hidden_size = int(queries[0].instruction.shape[-1])
        if fingerprint is not None and fingerprint.model.hidden_size != hidden_size:
            raise ValueError(
                f"features have hidden size {hidden_size}, "
                f"but the fingerprint's model has {fingerprint.model.hidden_size}"
            )
        ranker_config, train_config = self._configs(hidden_size)
        # The model's initial weights come from torch's global RNG: seed it inside fork_rng so the
        # same seed gives the same ranker without disturbing the caller's random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train_config.seed)
            model = build_ranker(ranker_config)
        start = time.perf_counter()
        self.train_result_: TrainResult = train_ranker(model, queries, train_config, val_queries, progress)
        self.model_, self.ranker_config_, self.train_config_ = model, ranker_config, train_config
        self.fingerprint_ = fingerprint
        self.n_features_in_ = hidden_size
        self.fusion_, self.fusion_report_ = Fusion([dict(RANKER_ONLY)]), None
        signals = [{k: v for k, v in query_signals(q).items() if k in train_config.fusion_signals} for q in queries]
        if train_config.fusion and any(signals) and len(queries) >= 2 * train_config.fusion_folds:
            self.fusion_, self.fusion_report_ = self._cross_fit_fusion(queries, signals, ranker_config, train_config)
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _cross_fit_fusion(self, queries, signals, ranker_config: RankerConfig, train_config: TrainConfig):
        """Out-of-fold scores from `fusion_folds` rankers, then the fusion weights (ranker.rankers.fusion)."""
        oof: list[Tensor | None] = [None] * len(queries)
        for held in fold_indices(len(queries), train_config.fusion_folds, train_config.seed):
            held_set = set(held)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(train_config.seed)
                model = build_ranker(ranker_config)
            train_ranker(model, [q for i, q in enumerate(queries) if i not in held_set], train_config)
            for i, scores in zip(held, score_queries(model, [queries[i] for i in held])):
                oof[i] = scores
        labels = [q.labels.float().cpu() for q in queries]
        instructions = torch.stack([q.instruction.float().cpu() for q in queries])
        return fit_fusion(oof, signals, labels, instructions, l2=train_config.fusion_l2,
                          clusters=train_config.fusion_clusters, seed=train_config.seed)

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
        """True when scores mix in the mean log-prob or the vote share."""
        return any(weights != RANKER_ONLY for weights in self.fusion.weights)

    def select(self, instruction: Tensor, responses: Tensor, mean_logprob: Tensor | None = None,
               vote_keys: Sequence | None = None) -> int:
        """Index of the best candidate (the first one on ties)."""
        return int(torch.argmax(self.score(instruction, responses, mean_logprob, vote_keys)))

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

    def score_queries(self, queries: Sequence[QueryLike]) -> list[Tensor]:
        """`score` for many queries at once (batched): a list of (K_q,) tensors (fused, as `score`)."""
        raw = score_queries(self._check_fitted(), queries)
        fusion = self.fusion
        return [fuse(s, fusion.weights_for(q.instruction), getattr(q, "mean_logprob", None), getattr(q, "vote_keys", None))
                for s, q in zip(raw, queries)]

    def evaluate(self, queries: Sequence[QueryLike]) -> RankingMetrics:
        """Best-of-N, random and oracle accuracy, and AUROC on labelled `queries`."""
        self._check_fitted()
        return ranking_metrics(self.score_queries(queries), [q.labels.float().cpu() for q in queries])

    # --- persistence --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted ranker to the folder `path` (see `ranker.rankers.checkpoint`)."""
        model = self._check_fitted()
        # A freshly fitted ranker records its TrainResult; a loaded one passes on what its card held.
        result = getattr(self, "train_result_", None)
        training_data, metrics = dict(getattr(self, "training_data_", {})), dict(getattr(self, "metrics_", {}))
        if result is not None:
            training_data.update(result.data_summary)
            metrics.update(val=result.val_metrics, wall_time_s=getattr(self, "fit_seconds_", result.wall_time_s),
                           loss=result.loss_name, fusion=getattr(self, "fusion_report_", None))
        save_checkpoint(
            path,
            model,
            train_config=self.train_config_,
            fingerprint=self.fingerprint_,
            training_data=training_data,
            # Fitted or loaded, the weights come from self.fusion, so a card always holds the ones in use.
            metrics={**metrics, "fusion_weights": self.fusion_weights, "fusion_cluster_weights": self.fusion.weights},
            extra_tensors=None if self.fusion.centroids is None else {"fusion_centroids": self.fusion.centroids},
        )

    @classmethod
    def load(
        cls, path: str | os.PathLike, expected_fingerprint: FeatureFingerprint | None = None, device: str = "cpu"
    ) -> "LanguageRanker":
        """A fitted LanguageRanker from a checkpoint folder; refuses mismatched features (ValueError).

        `train_result_` is None after loading; the saved summaries are in `training_data_` and `metrics_`.
        """
        model, card = load_checkpoint(path, expected_fingerprint, device)
        train_config = card.train_config or TrainConfig()
        ranker_args = {k: v for k, v in card.ranker_config.to_dict().items() if k in RANKER_PARAMS}
        est = cls(kind=card.ranker_config.kind, **ranker_args, **train_config.to_dict())
        est.model_, est.ranker_config_, est.train_config_ = model, card.ranker_config, train_config
        est.train_result_ = None
        est.fingerprint_ = card.fingerprint
        est.n_features_in_ = card.ranker_config.hidden_size
        est.training_data_, est.metrics_ = card.training_data, card.metrics
        weights = card.metrics.get("fusion_weights")
        if weights is None:  # cards written before the vote share was fused
            weights = {"ranker": 1.0, "mean_logprob": float(card.metrics.get("logprob_weight", 0.0))}
        clean = lambda w: {name: float(value) for name, value in w.items() if value != 0.0 or name == "ranker"}  # noqa: E731
        per_cluster = [clean(w) for w in card.metrics.get("fusion_cluster_weights") or [weights]]
        centroids = load_extra_tensors(path).get("fusion_centroids")
        est.fusion_ = Fusion(per_cluster, centroids, clean(weights) if len(per_cluster) > 1 else None)
        est.fusion_report_ = card.metrics.get("fusion")
        return est
