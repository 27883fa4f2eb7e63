"""Retrain the ranker on collected human labels, and promote it only if validation does not get worse.

`retrain_once` (one synchronous retrain):
1. Human labels of the profile (not undone; skips only when graded) whose features match the
   training layer and base model are split by a hash of their request_id: `validation_fraction`
   of the requests are held out. (Hashing the request rather than the label keeps two annotators'
   labels of the same generation on the same side, so validation never sees training features.)
2. A new ranker is fit on the task store's queries (`base_train`, verifiable labels) plus the
   groups the training labels imply (`ranker.rankers.preferences.preferences_to_queries`: one-hot on
   the pick, all 0 for "all_bad", ties dropped; a full ranking as its Plackett-Luce groups; stars
   as (stars - 1) / 4 over the starred candidates; thumbs as 1 up / 0 down), seeded.
   The ranker's `label_type` (a hyperparameter, "binary" by default) chooses the loss, as in
   `LanguageRanker`: "binary" trains KL (list) or BCE (point), and the ranker is Platt-calibrated
   out of fold (`fit(..., calibrate=True)`, as `ranker.rankers.store_training.train_on_store` does),
   so `probability_correct` works; stars are then soft targets. `hyperparams={"label_type": "real"}`
   is the paper's real-valued setting: MSE on the targets (the grades, the tasks' 0/1, one-hot
   picks, a ranking as one group graded (K - 1 - i) / (K - 1) for its i-th best), and no
   calibration (a regressed score is not a probability; the app then shows no P(correct)).
3. The new and the current ranker are validated on
   - `store_accuracy`: best-of-N accuracy on `val_store` (verifiable labels; all candidates, so
     the pick is deterministic), when a val_store is given;
   - `label_agreement`: the fraction of held-out labels whose pick is the ranker's top-scored
     candidate (a ranked label's pick is its best). Labels without a pick ("tie", "all_bad", a
     graded skip) are excluded. Available when at least one held-out label has a pick.
4. Promotion rule: with no current ranker, promote. Otherwise compare on every metric available
   for both rankers, in the order store_accuracy, label_agreement; promote iff for each of them
   new >= current - tolerance. If no metric is available for both, refuse (a live ranker is never
   replaced without evidence). The reason names each deciding metric with both values.
5. The new ranker is registered either way (refused versions are kept, not current).
   With fewer than `min_labels` usable training labels (labels that imply at least one group)
   nothing is trained or registered.

Before step 1's split, labels on verifiable prompts are checked against the task checker and
distrusted annotators are dropped (`labeling.trust`), when a `verifier` is given.

`RetrainJob` holds one profile's retrain state and reports it through `status()`; its errors
never reach the caller. Its retrains run on a `RetrainWorker`: one daemon thread, at a lowered
CPU priority, that runs every profile's retrains one at a time in the order they were asked
for, from a bounded queue, so any number of profiles never means more than one training at once.
A job retrains after every `every_k_labels` new labels or on `trigger()`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from labeling.label_store import DEFAULT_PROFILE, LabeledPreference, LabelStore
from labeling.registry import RankerRegistry
from labeling.trust import TaskVerifier, TrustConfig, filter_trusted
from ranker.capture.feature_store import FeatureStore
from ranker.capture.fingerprint import FeatureFingerprint, ModelFingerprint
from ranker.core.seeding import seeded
from ranker.evaluation.metrics import best_candidates
from ranker.evaluation.selection import evaluate_selection
from ranker.evaluation.store_scores import subset_scorer
from ranker.rankers.estimator import TRAIN_PARAMS, LanguageRanker
from ranker.rankers.preferences import preference_to_queries, preference_to_query
from ranker.rankers.train_config import TrainConfig
from ranker.rankers.training import resolve_loss
from ranker.rankers.training_groups import store_queries

logger = logging.getLogger(__name__)

METRICS = ("store_accuracy", "label_agreement")  # the order in which the promotion rule reads them


@dataclass
class RetrainConfig:
    """When and how the background job retrains."""

    every_k_labels: int = 20  # retrain after this many new labels (0: only when triggered)
    kind: str = "list"  # "list" (ListRanker) or "point" (PointRanker)
    layer: int | None = None  # hidden_states index to train on; None: base_train's first layer, else the labels' most common
    validation_fraction: float = 0.25  # share of labelled requests held out for label_agreement (by request_id hash)
    tolerance: float = 0.0  # promote iff new >= current - tolerance on every available metric
    seed: int = 0  # seeds the ranker's weights, group sampling and batch order
    min_labels: int = 10  # fewer usable training labels than this: skip (nothing trained or registered)
    # Train at least this many optimizer steps unless `hyperparams` sets `steps`: a labelled request
    # gives one listwise group, so 10 epochs over 50 labels alone would be a handful of steps.
    min_steps: int = 100
    # Further LanguageRanker hyperparameters (epochs, lr, ...); {"label_type": "real"}: MSE on graded targets.
    hyperparams: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.every_k_labels, int) or self.every_k_labels < 0:
            raise ValueError(f"every_k_labels must be an int >= 0, got {self.every_k_labels!r}")
        if self.kind not in ("list", "point"):
            raise ValueError(f"kind must be 'list' or 'point', got {self.kind!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if not self.tolerance >= 0.0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance!r}")
        if not isinstance(self.min_labels, int) or self.min_labels < 0:
            raise ValueError(f"min_labels must be an int >= 0, got {self.min_labels!r}")
        if not isinstance(self.min_steps, int) or self.min_steps < 0:
            raise ValueError(f"min_steps must be an int >= 0, got {self.min_steps!r}")
        LanguageRanker(kind=self.kind, **self.hyperparams)  # unknown hyperparameter names fail here
        if self.label_type not in ("binary", "real"):
            raise ValueError(f"hyperparams label_type must be 'binary' or 'real', got {self.label_type!r}")
        TrainConfig(**{k: v for k, v in self.hyperparams.items() if k in TRAIN_PARAMS})  # e.g. an unknown loss

    @property
    def label_type(self) -> str:
        """The ranker's label type: "binary" (calibrated P(correct)) or "real" (regressed grades)."""
        return self.hyperparams.get("label_type", "binary")

    @property
    def targets(self) -> str:
        """How labels become group labels (`ranker.rankers.preferences.TARGETS`): "real" when the loss is MSE."""
        train = TrainConfig(**{k: v for k, v in self.hyperparams.items() if k in TRAIN_PARAMS})
        loss, _, _ = resolve_loss(train, self.kind, self.label_type)
        return "real" if loss == "mse" else "binary"


@dataclass
class RetrainResult:
    """What one retrain did. `version` is None when it was skipped (too few labels)."""

    version: str | None
    promoted: bool
    reason: str
    metrics: dict[str, float]  # the new ranker's validation metrics
    current_metrics: dict[str, float]  # the current ranker's, on the same data ({} without a current ranker)
    label_count: int = 0  # usable labels (after profile/layer filtering), train + validation
    train_labels: int = 0  # training labels that imply at least one group
    train_groups: int = 0  # the groups they imply (a ranking of K gives K - 1 under binary targets)
    validation_labels: int = 0
    skipped_labels: int = 0  # labels whose features come from another layer or model
    distrusted_labels: int = 0  # dropped by labeling.trust (disagreeing with the checker, or distrusted annotators)
    distrusted_annotators: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ranker: LanguageRanker | None = field(default=None, repr=False)  # the new ranker (None when skipped)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "ranker"}


def is_validation(request_id: str, fraction: float) -> bool:
    """Deterministic held-out membership: the request's sha256 hash as a number in [0, 1) below `fraction`."""
    digest = hashlib.sha256(str(request_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def label_agreement(ranker: LanguageRanker, preferences: list[LabeledPreference]) -> float | None:
    """Fraction of preferences with a pick whose pick is the ranker's top candidate; None if none has a pick."""
    picks = [p for p in preferences if not isinstance(p.choice, str)]
    if not picks:
        return None
    scores = ranker.score_queries([preference_to_query(p) for p in picks])  # list of (K,)
    return sum(int(best_candidates(s)) == int(p.choice) for s, p in zip(scores, picks)) / len(picks)


def validation_metrics(ranker: LanguageRanker, val_store: FeatureStore | None,
                       held_out: list[LabeledPreference]) -> dict[str, float]:
    """{"store_accuracy", "label_agreement"}, each present only when its data is."""
    metrics = {}
    if val_store is not None:
        metrics["store_accuracy"] = evaluate_selection(val_store, {"ranker": subset_scorer(ranker, val_store)})["ranker"]
    agreement = label_agreement(ranker, held_out)
    if agreement is not None:
        metrics["label_agreement"] = agreement
    return metrics


def promotion_decision(new: dict[str, float], current: dict[str, float] | None, tolerance: float) -> tuple[bool, str]:
    """(promote?, reason) by the rule in the module docstring."""
    if current is None:
        shown = ", ".join(f"{name} {value:.3f}" for name, value in new.items()) or "no validation data"
        return True, f"promoted: no current ranker to compare with ({shown})"
    shared = [name for name in METRICS if name in new and name in current]
    if not shared:
        return False, f"refused: no validation metric available for both rankers (new {sorted(new)}, current {sorted(current)})"
    worse = [name for name in shared if new[name] < current[name] - tolerance]
    decided = worse or shared
    verb, sign = ("refused", "<") if worse else ("promoted", ">=")
    parts = [f"{name} {new[name]:.3f} {sign} current {current[name]:.3f} - tolerance {tolerance:g}" for name in decided]
    return not worse, f"{verb}: " + "; ".join(parts)


def _feature_fingerprint(base_train: FeatureStore | None, preferences: list[LabeledPreference], layer: int) -> FeatureFingerprint | None:
    if base_train is not None:
        return base_train.feature_fingerprint(layer)
    for p in preferences:
        model = _label_model(p)
        if model is not None:
            return FeatureFingerprint(model, layer)
    return None


def _label_model(p: LabeledPreference) -> ModelFingerprint | None:
    """The base model a label's features came from (its stored fingerprint), None when it records none readable."""
    model = p.fingerprint.get("model", p.fingerprint)
    try:
        return ModelFingerprint.from_dict(model)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _compatible(p: LabeledPreference, layer: int, fingerprint: FeatureFingerprint | None, hidden_size: int | None) -> bool:
    """Labels are usable only with features from the training layer and base model."""
    if p.layer != layer or (hidden_size is not None and p.instruction.shape[0] != hidden_size):
        return False
    if fingerprint is None:
        return True
    model = _label_model(p)
    return model is not None and fingerprint.model.matches(model)


def retrain_once(
    label_store: LabelStore,
    registry: RankerRegistry,
    base_train: FeatureStore | None,
    val_store: FeatureStore | None,
    current: LanguageRanker | None,
    config: RetrainConfig,
    profile: str = DEFAULT_PROFILE,
    verifier: TaskVerifier | None = None,
    trust: TrustConfig | None = None,
) -> RetrainResult:
    """Train, validate against `current`, register; see the module docstring for the rule.

    verifier: checks labels on task prompts (`labeling.trust`); None uses every label.
    """
    start = time.perf_counter()
    preferences, report = filter_trusted(label_store.preferences(profile=profile), label_store, verifier, trust)
    if config.layer is not None:
        layer = config.layer
    elif base_train is not None:
        layer = base_train.layers[0]
    elif preferences:
        layer = Counter(p.layer for p in preferences).most_common(1)[0][0]
    else:  # no task store and no usable label: nothing to train on (skipped below)
        layer = -1
    fingerprint = _feature_fingerprint(base_train, preferences, layer)
    hidden_size = base_train.instruction.shape[-1] if base_train is not None else None
    usable = [p for p in preferences if _compatible(p, layer, fingerprint, hidden_size)]
    held_out = [p for p in usable if is_validation(p.request_id, config.validation_fraction)]
    held_ids = {p.label_id for p in held_out}
    per_label = [preference_to_queries(p, config.targets) for p in usable if p.label_id not in held_ids]
    train_labels = [query for groups in per_label for query in groups]
    counts = dict(label_count=len(usable), train_labels=sum(1 for groups in per_label if groups),
                  train_groups=len(train_labels), validation_labels=len(held_out),
                  skipped_labels=len(preferences) - len(usable),
                  distrusted_labels=report.dropped_disagreeing + report.dropped_distrusted,
                  distrusted_annotators=report.distrusted)
    if counts["train_labels"] < config.min_labels:
        reason = f"skipped: {counts['train_labels']} usable training labels < min_labels {config.min_labels}"
        return RetrainResult(None, False, reason, {}, {}, **counts, seconds=time.perf_counter() - start)

    train_queries: list = (store_queries(base_train, layer) if base_train is not None else []) + train_labels
    # num_threads None: torch's thread count is process-wide, and the app generates on other threads meanwhile.
    hyperparams = {"num_threads": None, **config.hyperparams, "seed": config.seed}
    if "steps" not in hyperparams and planned_steps(train_queries, config.kind, hyperparams) < config.min_steps:
        hyperparams["steps"] = config.min_steps
    about = {"store_problems": len(base_train.problems) if base_train is not None else 0,
             "human_labels": counts["train_labels"], "human_groups": len(train_labels), "layer": layer, "profile": profile}
    with seeded(config.seed):
        ranker = LanguageRanker(kind=config.kind, **hyperparams).fit(
            train_queries, fingerprint=fingerprint, calibrate=config.label_type == "binary", training_data=about)

    metrics = validation_metrics(ranker, val_store, held_out)
    current_metrics = validation_metrics(current, val_store, held_out) if current is not None else None
    promoted, reason = promotion_decision(metrics, current_metrics, config.tolerance)
    version = registry.add(ranker, metrics, promoted, reason, profile, label_count=len(usable),
                           info={"current_metrics": current_metrics, **counts, "kind": config.kind, "seed": config.seed,
                                 "steps": ranker.train_result_.num_steps})
    logger.info("retrain %s/%s: %s", profile, version, reason)
    return RetrainResult(version, promoted, reason, metrics, current_metrics or {}, **counts,
                         seconds=time.perf_counter() - start, ranker=ranker)


def planned_steps(queries: list, kind: str, hyperparams: dict) -> int:
    """Optimizer steps `epochs` passes would take: groups per epoch (as `ranker.rankers.training_groups` draws them) / batch size."""
    train = TrainConfig(**{k: v for k, v in hyperparams.items() if k in TRAIN_PARAMS})
    if kind == "point":
        groups = sum(q.responses.shape[0] for q in queries)
    else:
        groups = sum(1 if q.responses.shape[0] <= train.group_size else train.groups_per_query for q in queries)
    return train.epochs * math.ceil(groups / train.batch_size)


class RetrainWorker:
    """One thread that runs every profile's retrains, one at a time, first asked first run.

    `max_queued` bounds the queue (a job is queued at most once); `nice` lowers the thread's CPU
    priority (Linux: per thread), so labels and page loads stay quick while it trains.
    """

    def __init__(self, max_queued: int = 32, nice: int = 10):
        if not isinstance(max_queued, int) or max_queued < 1:
            raise ValueError(f"max_queued must be an int >= 1, got {max_queued!r}")
        self.max_queued, self.nice = max_queued, nice
        self._queue: deque[RetrainJob] = deque()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.current: RetrainJob | None = None

    def submit(self, job: "RetrainJob") -> None:
        """Queue `job` (the caller makes sure it is not queued or running already); ValueError when full."""
        with self._condition:
            if self._stopped:
                raise ValueError("the retrain worker is stopped")
            if len(self._queue) >= self.max_queued:
                raise ValueError(f"{len(self._queue)} retrains are queued already (the limit); try again later")
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="retrain-worker", daemon=True)
                self._thread.start()
            self._condition.notify()

    def queued(self) -> list[str]:
        """Profiles waiting, in order (the running one not included)."""
        with self._condition:
            return [job.profile for job in self._queue]

    def stop(self, timeout: float | None = None) -> None:
        """Run nothing more; wait up to `timeout` for the retrain in progress."""
        with self._condition:
            self._stopped = True
            self._queue.clear()
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
            pass
        while True:
            with self._condition:
                while not self._queue and not self._stopped:
                    self._condition.wait()
                if self._stopped:
                    return
                self.current = self._queue.popleft()
            try:
                self.current._run()
            finally:
                self.current = None


class RetrainJob:
    """One profile's retrains: when to run, what the last one did, and the rollback.

    The current ranker is the registry's current version of the profile when it has one, else
    `current` (e.g. the shipped ranker). `on_promoted(version, ranker)` is called on the worker's
    thread whenever the live version changes (promotion, or `rollback`), so the app can swap it in.
    worker: shared by every profile's job (the app's one training lane); None gives this job its own.
    """

    def __init__(
        self,
        label_store: LabelStore,
        registry: RankerRegistry,
        config: RetrainConfig | None = None,
        *,
        base_train: FeatureStore | None = None,
        val_store: FeatureStore | None = None,
        current: LanguageRanker | None = None,
        profile: str = DEFAULT_PROFILE,
        on_promoted: Callable[[str, LanguageRanker], None] | None = None,
        worker: RetrainWorker | None = None,
        verifier: TaskVerifier | None = None,
        trust: TrustConfig | None = None,
    ):
        self.label_store, self.registry = label_store, registry
        self.config = config or RetrainConfig()
        self.base_train, self.val_store, self.profile = base_train, val_store, profile
        self.on_promoted = on_promoted
        self.worker = worker or RetrainWorker(max_queued=1)
        self.verifier, self.trust = verifier, trust
        self._fallback_current = current
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._done.set()
        self._state = "idle"
        self._labels_at_last_run = 0
        self._last_result: RetrainResult | None = None
        self._last_error: str | None = None
        self._last_trigger: str | None = None
        self._started: float | None = None
        self._finished: float | None = None

    def _current_ranker(self) -> LanguageRanker | None:
        version = self.registry.current(self.profile)
        return self.registry.load(version, self.profile) if version is not None else self._fallback_current

    def notify_labels(self) -> bool:
        """Call after each new label; queues a retrain once `every_k_labels` new labels have come in."""
        k = self.config.every_k_labels
        if k == 0 or self.label_store.count(profile=self.profile) - self._labels_at_last_run < k:
            return False
        try:
            return self.trigger(reason=f"{k} new labels")
        except ValueError:  # the queue is full: the next label tries again
            return False

    def trigger(self, reason: str = "button") -> bool:
        """Queue a retrain now; False (nothing queued) if one is queued or running. ValueError if the queue is full."""
        with self._lock:
            if self._state in ("queued", "running"):
                return False
            self.worker.submit(self)
            self._state, self._last_trigger, self._started, self._finished = "queued", reason, None, None
            self._labels_at_last_run = self.label_store.count(profile=self.profile)
            self._done.clear()
        return True

    def _run(self) -> None:
        with self._lock:
            self._state, self._started = "running", time.time()
        try:
            result = retrain_once(self.label_store, self.registry, self.base_train, self.val_store,
                                  self._current_ranker(), self.config, self.profile, self.verifier, self.trust)
            with self._lock:
                self._last_result = result
            if result.promoted and self.on_promoted is not None:
                self.on_promoted(result.version, result.ranker)
            with self._lock:
                self._last_error, self._state, self._finished = None, "idle", time.time()
        except Exception as error:  # shown in status(); the app must keep running
            logger.exception("retrain of profile %r failed", self.profile)
            with self._lock:
                self._last_error, self._state, self._finished = f"{type(error).__name__}: {error}", "failed", time.time()
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the queued or running retrain (if any) ends; True if none is pending afterwards."""
        return self._done.wait(timeout)

    def rollback(self, to: str | None = None) -> str:
        """`registry.rollback` for this profile, then `on_promoted` with the restored ranker; returns its version."""
        with self._lock:
            if self._state in ("queued", "running"):
                raise ValueError(f"a retrain of {self.profile!r} is {self._state}; roll back after it finishes")
            version = self.registry.rollback(self.profile, to=to)
        if self.on_promoted is not None:
            self.on_promoted(version, self.registry.load(version, self.profile))
        return version

    def status(self) -> dict:
        """State for the UI: idle/queued/running/failed, label counts, the last result or error, and the history."""
        with self._lock:
            count = self.label_store.count(profile=self.profile)
            result = self._last_result
            return {
                "state": self._state,
                "profile": self.profile,
                "label_count": count,
                "labels_since_last_run": count - self._labels_at_last_run,
                "every_k_labels": self.config.every_k_labels,
                "last_trigger": self._last_trigger,
                "started": self._started,
                "finished": self._finished,
                "queued_profiles": self.worker.queued(),
                "last_result": result.to_dict() if result else None,
                "last_reason": result.reason if result else None,
                "last_metrics": dict(result.metrics) if result else None,
                "last_error": self._last_error,
                "current_version": self.registry.current(self.profile),
                "history": self.registry.history(self.profile),
            }


def learning_curve(registry: RankerRegistry, profile: str = DEFAULT_PROFILE) -> pd.DataFrame:
    """Long table for a plot: one row per (version, metric) with columns version, label_count, metric, value, status."""
    rows = [
        {"version": entry["version"], "label_count": entry.get("label_count"), "metric": name, "value": value,
         "status": entry["status"]}
        for entry in registry.history(profile)
        for name, value in entry["metrics"].items()
        if isinstance(value, (int, float))
    ]
    return pd.DataFrame(rows, columns=["version", "label_count", "metric", "value", "status"])
