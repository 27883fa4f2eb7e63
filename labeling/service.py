"""`RankerService`: the application behind the app, the HTTP API and the tests, with one set of checks.

    service = RankerService(ServiceConfig.from_env(ROOT))      # opens the label store and registry
    service.start(load_base_model())                           # rankers, reward model, retrain worker, backup
    caller = service.identify(request)                         # who is asking (labeling.identity)
    generation = service.generate(caller, "What is 7 + 5?", n=8)
    service.label(caller, generation.request_id, "3", client_key="k1")

What it owns, and why here rather than in the UI:
- **Limits** (`labeling.limits`): every argument is checked, and the prompt's token count
  measured, before any model work.
- **Identity and roles** (`labeling.identity`): the annotator id comes from the request; admin
  actions call `Caller.require_admin`.
- **Rate limits** (`labeling.ratelimit`): labels and generations, per annotator and per client.
- **One model lane** (`labeling.lane`): user generations, the reward model's pass and the
  bootstrap's sampling all hold `self.lane` while they use the base model.
- **One retrain worker** (`labeling.retrain.RetrainWorker`) for every profile, with a queue.
- **The live rankers in memory**: each profile's current version is loaded once and swapped
  when a version is promoted or rolled back, never reloaded per request.
- **Trust** (`labeling.trust`): labels on task prompts are checked before a retrain uses them.
- **Backup** (`labeling.sync`): labels and ranker versions are restored at start and pushed.

Labels are idempotent by client key (`LabelStore.add_label`), and a request id is a capability:
anyone who was shown a request (its id is 128 random bits) may label it.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from labeling.agreement import pick_agreement
from labeling.identity import AccessConfig, Caller, Forbidden, identify
from labeling.label_store import DEFAULT_PROFILE, SKIP, STARS, THUMBS, LabelStore, grades_from_display, ranking_from_display
from labeling.lane import ModelLane
from labeling.limits import ServiceLimits, check_prompt, check_sampling, clean_text
from labeling.ratelimit import RateLimiter, RateLimits
from labeling.registry import RankerRegistry, check_profile
from labeling.retrain import RetrainConfig, RetrainJob, RetrainWorker, learning_curve
from labeling.trust import TaskVerifier, TrustConfig
from ranker.capture.base_model import BaseModel
from ranker.capture.feature_store import FeatureStore
from ranker.capture.sampling import SamplingConfig
from ranker.rankers.estimator import LanguageRanker
from ranker.rankers.shipped import load_compatible
from ranker.serving.best_of_n import RankedCandidates, rank_prompt, score_with_rm
from ranker.tasks.voting import response_keys

logger = logging.getLogger(__name__)

LATEST = "latest retrained"
LIST, POINT = "shipped ListRanker", "shipped PointRanker"
CHOICE_WORDS = ("tie", "all_bad", "skip")
REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
VERSION_CHOICE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})/(v\d{4,})$")
SHOWN_REQUESTS = 10_000  # display orders kept in memory (older requests fall back to the stored ranker order)
LOADED_VERSIONS = 8  # explicitly chosen registry versions kept loaded


@dataclass
class ServiceConfig:
    """Where everything lives and what is allowed; `from_env` reads the documented variables."""

    data_dir: Path
    shipped_rankers: dict[str, Path] = field(default_factory=dict)  # picker name -> checkpoint folder
    reward_model: Path | None = None  # the shipped RM (base) folder
    task_data: Path | None = None  # folder with train/ and val/ feature stores (retrain and trust)
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    rates: RateLimits = field(default_factory=RateLimits)
    access: AccessConfig = field(default_factory=AccessConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    max_profiles: int = 256  # profiles with a retrain job; free text must not mean unbounded state
    max_queued_retrains: int = 32
    hub_backup: bool = True  # restore from / push to LANGUAGE_RANKER_HUB_DATASET when configured
    review_overlap: int = 2  # "Label another's request" serves a request until this many annotators judged it
    review_by_anyone: bool = False  # False: only admins see other people's requests (their prompts) to label them

    def __post_init__(self) -> None:
        if isinstance(self.review_overlap, bool) or not isinstance(self.review_overlap, int) \
                or not 2 <= self.review_overlap <= 100:
            raise ValueError(f"LANGUAGE_RANKER_REVIEW_OVERLAP must be a whole number in 2..100, got {self.review_overlap!r}")

    @classmethod
    def from_env(cls, root: Path, environ: Mapping[str, str] | None = None, server_name: str = "127.0.0.1") -> "ServiceConfig":
        """The app's configuration: assets under `root`, the rest from the environment."""
        from labeling.sync import default_data_dir

        environ = os.environ if environ is None else environ
        assets = Path(root) / "assets"
        every = environ.get("LANGUAGE_RANKER_RETRAIN_EVERY", "20")
        try:
            retrain = RetrainConfig(every_k_labels=int(every))
        except ValueError:
            raise ValueError(f"LANGUAGE_RANKER_RETRAIN_EVERY must be a whole number >= 0, got {every!r}") from None
        overlap = environ.get("LANGUAGE_RANKER_REVIEW_OVERLAP", "2")
        if not overlap.strip().isdigit():
            raise ValueError(f"LANGUAGE_RANKER_REVIEW_OVERLAP must be a whole number in 2..100, got {overlap!r}")
        return cls(
            review_overlap=int(overlap),
            review_by_anyone=environ.get("LANGUAGE_RANKER_REVIEW_BY_ANYONE", "0").strip() == "1",
            data_dir=default_data_dir(environ),
            shipped_rankers={LIST: assets / "rankers" / "default-list", POINT: assets / "rankers" / "default-point"},
            reward_model=assets / "reward" / "rm-base",
            task_data=assets / "task_data",
            limits=ServiceLimits.from_env(environ),
            rates=RateLimits.from_env(environ),
            access=AccessConfig.from_env(environ, server_name),
            retrain=retrain,
        )


@dataclass
class Generation:
    """One generate call's outcome: the stored request id, what was sampled, and the order shown."""

    request_id: str
    result: RankedCandidates
    order: list[int]  # candidate indices in display order
    blind: bool
    ranker_name: str
    ranker: LanguageRanker | None
    prompt_tokens: int

    def rows(self) -> list[dict]:
        """JSON rows in display order; blind rows carry only position, candidate index and text."""
        rows = self.result.rows(self.order)
        if self.blind:
            return [{"position": i + 1, "candidate": r["candidate"], "text": r["text"]} for i, r in enumerate(rows)]
        return rows


def parse_ranking(text, n: int) -> list[int] | None:
    """Display positions (1-based) typed best first, e.g. "3 1 2" or "3,1,2"; None when empty.

    ValueError unless every position 1..n appears exactly once.
    """
    if not isinstance(text, str) or len(text) > 8 * n + 64:
        raise ValueError(f"the ranking must be a short text of positions, got {str(text)[:40]!r}")
    marks = text.replace(",", " ").split()
    if not marks:
        return None
    if not all(m.isdigit() for m in marks):
        raise ValueError(f"the ranking must be positions separated by spaces, e.g. 3 1 2; got {text[:60]!r}")
    positions = [int(m) for m in marks]
    if sorted(positions) != list(range(1, n + 1)):
        raise ValueError(f"the ranking must list every position 1..{n} once, best first; got {text[:60]!r}")
    return positions


def parse_grades(text, n: int) -> tuple[dict[int, int] | None, str | None]:
    """One mark per display position, e.g. "5 3 . 1" (stars) or "+ - . +" (thumbs): ({position: grade}, scale).

    (None, None) when empty or all ".". ValueError for a wrong count, an unknown mark or mixed scales.
    """
    if not isinstance(text, str) or len(text) > 8 * n + 64:
        raise ValueError(f"the grades must be a short text, one mark per position; got {str(text)[:40]!r}")
    marks = text.replace(",", " ").split()
    if not marks:
        return None, None
    if len(marks) != n:
        raise ValueError(f"give one grade per position ({n}; \".\" for none), got {len(marks)}: {text[:60]!r}")
    stars = {p: int(m) for p, m in enumerate(marks, start=1) if m in ("1", "2", "3", "4", "5")}
    thumbs = {p: 1 if m == "+" else -1 for p, m in enumerate(marks, start=1) if m in ("+", "-")}
    unknown = [m for m in marks if m not in ("1", "2", "3", "4", "5", "+", "-", ".")]
    if unknown:
        raise ValueError(f"grades are 1-5 (stars), + or - (thumbs) or . (none); got {unknown[0][:20]!r}")
    if stars and thumbs:
        raise ValueError("grade with stars (1-5) or thumbs (+/-), not both in one label")
    if stars:
        return stars, STARS
    return (thumbs, THUMBS) if thumbs else (None, None)


def stored_result(request: dict) -> RankedCandidates:
    """A stored request as a `RankedCandidates` (for showing it again, e.g. to another annotator)."""
    sampling = {k: v for k, v in (request["sampling"] or {}).items() if k in SamplingConfig.__dataclass_fields__}
    as_tensor = lambda values: None if values is None else torch.tensor(values, dtype=torch.float32)  # noqa: E731
    return RankedCandidates(
        prompt=request["prompt"], texts=list(request["candidates"]), finish_reasons=list(request["finish_reasons"]),
        num_tokens=list(request["num_tokens"]), mean_logprob=as_tensor(request["mean_logprobs"]),
        vote_keys=response_keys(request["candidates"]), instruction=request["instruction"], responses=request["responses"],
        layer=request["layer"], sampling=SamplingConfig(**sampling), timings={},
        ranker_scores=as_tensor(request["ranker_scores"]), probabilities=as_tensor(request["probabilities"]),
        rm_scores=as_tensor(request["rm_scores"]),
    )


def stored_rows(request: dict, order: list[int]) -> list[dict]:
    """Table rows rebuilt from a stored request, in `order` (the scores revealed after a blind label)."""
    scores, rm, probs = request.get("ranker_scores"), request.get("rm_scores"), request.get("probabilities")
    n = len(request["candidates"])
    ranked = sorted(range(n), key=lambda i: -scores[i]) if scores else list(range(n))
    rm_ranked = sorted(range(n), key=lambda i: -rm[i]) if rm else None
    return [{"candidate": index, "rank": ranked.index(index) + 1 if scores else None, "text": request["candidates"][index],
             "ranker_score": scores[index] if scores else None, "p_correct": probs[index] if probs else None,
             "rm_score": rm[index] if rm else None, "rm_rank": rm_ranked.index(index) + 1 if rm_ranked else None,
             "mean_logprob": request["mean_logprobs"][index], "tokens": request["num_tokens"][index],
             "finish": request["finish_reasons"][index]} for index in order]


def load_reward_model(path: Path | None, base: BaseModel):
    """The shipped RM (base) if it was trained on this base model; else None and why."""
    if path is None:
        return None, "no reward model configured"
    from ranker.reward.reward_estimator import BaseRewardModel

    try:
        return BaseRewardModel.load(path, base), "RM (base): SmolLM2-135M + LoRA, trained on the task suite"
    except (ValueError, OSError) as error:
        return None, f"no reward model for this base model ({error})"


class RankerService:
    """Shared, thread-safe application state and every action the app offers (module docstring)."""

    def __init__(self, config: ServiceConfig, run_on_device: Callable[[Callable], Callable] | None = None):
        """Opens (creating if needed) the label store and the ranker registry under `config.data_dir`.

        run_on_device: wraps the model calls, sampling and the RM (ZeroGPU's `spaces.GPU` on a Space); identity elsewhere.
        """
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.labels = LabelStore(self.data_dir)  # creates the folder; a read-only or full disk fails here, saying so
        try:  # owner only: sandboxed code runs as another user where it can (ranker.tasks.sandbox)
            os.chmod(self.data_dir, 0o700)
        except OSError as error:
            logger.warning("could not make %s private: %s", self.data_dir, error)
        self.registry = RankerRegistry(self.data_dir / "rankers")
        self.lane = ModelLane()
        self.worker = RetrainWorker(max_queued=config.max_queued_retrains)
        rates = config.rates
        self._label_rates = (RateLimiter(rates.labels_per_annotator, "labels"), RateLimiter(rates.labels_per_client, "labels"))
        self._generation_rates = (RateLimiter(rates.generations_per_annotator, "generations"),
                                  RateLimiter(rates.generations_per_client, "generations"))
        on_device = run_on_device or (lambda fn: fn)
        self._sample = on_device(self._sample_in_lane)
        self._score_rm = on_device(self._score_rm_in_lane)
        self._lock = threading.RLock()
        self.base: BaseModel | None = None
        self.rm = None
        self.rm_note = "no reward model"
        self.notes: dict[str, str] = {}
        self.shipped: dict[str, LanguageRanker] = {}
        self.jobs: dict[str, RetrainJob] = {}
        self._job_setup: dict = {}
        self._live: dict[str, tuple[str, LanguageRanker]] = {}  # profile -> (current version, its ranker)
        self._versions: OrderedDict[tuple[str, str], LanguageRanker] = OrderedDict()
        # request id (or (request id, reviewer)) -> (order, blind, profile)
        self._shown: OrderedDict[str | tuple[str, str], tuple[list[int], bool, str]] = OrderedDict()
        self.bootstrap_state = ""
        self._agreement: tuple | None = None  # ((profile, store revision), agreement dict)
        self.backup = None
        self.backup_note = "Hub backup not started"

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self, base: BaseModel, train_store: FeatureStore | None = None, val_store: FeatureStore | None = None,
              backup=None) -> "RankerService":
        """Use `base`: restore the backup, load the rankers and the RM that fit it, set up retraining.

        train_store/val_store: the task features the retrain trains and validates on (default:
        `config.task_data`, when it was captured with this model). backup: a `labeling.sync`
        backup object (default: from the environment when `config.hub_backup`).
        """
        with self._lock:
            self._start_backup(backup)
            self.base = base
            shipped, skipped = load_compatible(self.config.shipped_rankers, base.fingerprint)
            self.shipped.clear()
            self.shipped.update(shipped)
            self.notes = {name: f"{name} (layer {shipped[name].fingerprint_.layer})" if name in shipped
                          else f"{name} unavailable: {skipped[name]}" for name in self.config.shipped_rankers}
            self.rm, self.rm_note = load_reward_model(self.config.reward_model, base)
            task = self.config.task_data
            if train_store is None and task is not None and (task / "train" / "card.json").is_file():
                train_store, val_store = FeatureStore.load(task / "train"), FeatureStore.load(task / "val")
            if train_store is not None and not train_store.model.matches(base.fingerprint):
                train_store = val_store = None  # task features of another model cannot train this one
            problems = [p for store in (train_store, val_store) if store is not None for p in store.problems]
            self._job_setup = dict(config=self.config.retrain, base_train=train_store, val_store=val_store,
                                   current=self.shipped.get(LIST), worker=self.worker,
                                   verifier=TaskVerifier(problems), trust=self.config.trust)
            self.jobs.clear()
            self._live.clear()
            self._versions.clear()
        return self

    def _start_backup(self, backup) -> None:
        if backup is None and self.config.hub_backup:
            from labeling.sync import hub_backup_from_env

            backup, self.backup_note = hub_backup_from_env(self.labels, self.registry)
        if backup is None:
            return
        try:
            report = backup.restore()
            self.backup_note = f"restored from the Hub: {report}"
        except Exception as error:  # a broken backup must not stop the app from serving
            logger.exception("restore from the Hub backup failed")
            self.backup_note = f"restore failed: {type(error).__name__}: {error}"
        backup.start()
        self.backup = backup

    def close(self) -> None:
        """Stop the background work (the retrain worker, the backup thread after a last push)."""
        self.worker.stop(timeout=60)
        if self.backup is not None:
            self.backup.stop()

    def _require_base(self) -> BaseModel:
        if self.base is None:
            raise ValueError("the app has not loaded a base model yet")
        return self.base

    # --- identity ------------------------------------------------------------------------------

    def identify(self, request=None, oauth_username: str | None = None, browser_token: str | None = None,
                 annotator: str | None = None, admin_token: str | None = None) -> Caller:
        """The caller of one request (`labeling.identity.identify` with this service's access rules)."""
        return identify(self.config.access, request, oauth_username, browser_token, annotator, admin_token)

    # --- rankers -------------------------------------------------------------------------------

    def _on_promoted(self, profile: str, version: str, ranker: LanguageRanker) -> None:
        with self._lock:
            self._live[profile] = (version, ranker)
        if self.backup is not None:
            self.backup.push_soon()

    def live_ranker(self, profile: str) -> LanguageRanker | None:
        """The profile's current registry version, loaded once and kept; None when it has none."""
        with self._lock:
            version = self.registry.current(profile) if profile in self.registry.profiles() else None
            if version is None:
                return None
            cached = self._live.get(profile)
            if cached is None or cached[0] != version:
                self._live[profile] = (version, self.registry.load(version, profile))
            return self._live[profile][1]

    def ranker(self, choice: str | None) -> LanguageRanker | None:
        """The ranker a picker value names: a shipped one, "latest retrained" (the default profile's
        live version, else the shipped ListRanker), "profile:NAME" (that profile's live version,
        else the default's) or "PROFILE/vNNNN" (one registered version). ValueError otherwise."""
        choice = clean_text("ranker", choice or LATEST, self.config.limits.max_name_chars).strip()
        if choice in self.config.shipped_rankers:
            return self.shipped.get(choice)
        if choice == LATEST or choice.startswith("profile:"):
            profiles = [DEFAULT_PROFILE] if choice == LATEST else [check_profile(choice.removeprefix("profile:")), DEFAULT_PROFILE]
            for profile in profiles:
                live = self.live_ranker(profile)
                if live is not None:
                    return live
            return self.shipped.get(LIST)
        match = VERSION_CHOICE.match(choice)
        if match is None:
            raise ValueError(f"unknown ranker {choice!r}; choose one of {self.choices()[:12]}")
        key = (match.group(1), match.group(2))
        with self._lock:
            if key not in self._versions:
                self._versions[key] = self.registry.load(key[1], key[0])
                while len(self._versions) > LOADED_VERSIONS:
                    self._versions.popitem(last=False)
            return self._versions[key]

    def choices(self) -> list[str]:
        versions = [f"{row['profile']}/{row['version']}" for row in self.registry.history() if row.get("status") == "promoted"]
        profiles = [f"profile:{p}" for p in self.registry.profiles() if p != DEFAULT_PROFILE]
        return [LATEST, *self.config.shipped_rankers, *profiles, *versions]

    def unranked_reason(self) -> str | None:
        """Why no shipped ranker fits the loaded model (None when one does)."""
        if self.shipped:
            return None
        return "; ".join(self.notes.values()) or "no ranker loaded"

    # --- generation ----------------------------------------------------------------------------

    def _sample_in_lane(self, base, prompt, sampling, ranker, rm, on_step) -> RankedCandidates:
        with self.lane:
            return rank_prompt(base, prompt, sampling, ranker, rm, on_step=on_step)

    def _score_rm_in_lane(self, result: RankedCandidates) -> RankedCandidates:
        with self.lane:
            return score_with_rm(result, self.rm)

    def generate(self, caller: Caller, prompt, n=8, temperature=1.0, top_p=1.0, max_new_tokens=64, seed=-1,
                 ranker_choice: str | None = LATEST, profile: str | None = DEFAULT_PROFILE, blind: bool = False,
                 progress: Callable[[float, str], None] | None = None, with_rm: bool = True) -> Generation:
        """Check everything, then sample N candidates, rank them, score them with the RM, store the request.

        with_rm=False stores the ranked request without the RM's scores: the caller shows the
        ranked list at once and calls `score_rm` next (the RM runs its own passes, the ranker none).
        progress(fraction, what): moves once per decode step while sampling.
        ValueError (naming the bad value) before any model work for bad input; `RateLimited`
        when the caller generates too often.
        """
        limits = self.config.limits
        base = self._require_base()
        profile = check_profile(clean_text("profile", profile or DEFAULT_PROFILE, limits.max_name_chars).strip())
        sampling = check_sampling(limits, n, temperature, top_p, max_new_tokens, seed)
        ranker_name = clean_text("ranker", ranker_choice or LATEST, limits.max_name_chars).strip()
        ranker = self.ranker(ranker_name)
        prompt, tokens = check_prompt(limits, base, prompt, sampling.max_new_tokens)
        self._hit(self._generation_rates, caller)
        on_step = None
        if progress:
            what = f"sampling {sampling.num_candidates} candidates"
            progress(0.1, what)

            def on_step(step: int, steps: int) -> None:  # sampling is 0.1 .. 0.9 of the bar
                progress(0.1 + 0.8 * min(step, steps) / steps, f"{what}: token {step} of at most {steps}")

        result = self._sample(base, prompt, sampling, ranker, self.rm if with_rm else None, on_step)
        order = random.sample(range(result.num_candidates), result.num_candidates) if blind else result.ranker_order()
        request_id = self.labels.record_request(
            result.prompt, result.texts, result.instruction, result.responses, layer=result.layer,
            fingerprint=base.fingerprint.to_dict(), ranker_version=ranker_name,
            ranker_scores=None if result.ranker_scores is None else result.ranker_scores.tolist(),
            probabilities=None if result.probabilities is None else result.probabilities.tolist(),
            rm_scores=None if result.rm_scores is None else result.rm_scores.tolist(),
            mean_logprobs=result.mean_logprob.tolist(), num_tokens=result.num_tokens,
            finish_reasons=result.finish_reasons, sampling=result.sampling.to_dict(), profile=profile,
        )
        self._remember(request_id, order, blind, profile)
        return Generation(request_id, result, order, blind, ranker_name, ranker, tokens)

    def score_rm(self, generation: Generation) -> Generation:
        """Add the reward model's scores to a `generate(..., with_rm=False)` outcome and to its stored request.

        Runs in the model lane (the RM (base) shares the base model). Returns `generation`, its
        result's `rm_scores` filled; unchanged when no RM is loaded or it was already scored.
        """
        if self.rm is None or generation.result.rm_scores is not None:
            return generation
        self._score_rm(generation.result)
        self.labels.set_rm_scores(generation.request_id, generation.result.rm_scores.tolist())
        return generation

    def _remember(self, key: str | tuple[str, str], order: list[int], blind: bool, profile: str) -> None:
        """key: the request id (the order its generator was shown), or (request id, annotator) for a reviewer's own order."""
        with self._lock:
            self._shown[key] = (order, blind, profile)
            while len(self._shown) > SHOWN_REQUESTS:
                self._shown.popitem(last=False)

    def shown(self, request_id: str, annotator: str | None = None) -> tuple[list[int], bool]:
        """(display order, blind) of a request as `annotator` was shown it: a reviewer's own shuffle, else
        the order of the generation, or after a restart the stored ranker order."""
        return self._shown_request(self._check_request_id(request_id), annotator)[:2]

    def _shown_request(self, request_id: str, annotator: str | None = None) -> tuple[list[int], bool, str]:
        with self._lock:
            if annotator is not None and (request_id, annotator) in self._shown:
                return self._shown[(request_id, annotator)]
            if request_id in self._shown:
                return self._shown[request_id]
        stored = self.labels.get_request(request_id)  # ValueError for an unknown id
        scores = stored.get("ranker_scores") or [0.0] * len(stored["candidates"])
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        self._remember(request_id, order, False, stored.get("profile") or DEFAULT_PROFILE)
        return self._shown[request_id]

    @staticmethod
    def _check_request_id(request_id) -> str:
        if not isinstance(request_id, str) or not REQUEST_ID.match(request_id.strip()):
            raise ValueError(f"request id must be the 32 hex characters /generate returned, got {str(request_id)[:80]!r}")
        return request_id.strip()

    @staticmethod
    def _hit(limiters: tuple[RateLimiter, RateLimiter], caller: Caller) -> None:
        per_annotator, per_client = limiters
        per_annotator.hit(caller.annotator, who="you")
        per_client.hit(caller.client, who="your address")

    # --- labels --------------------------------------------------------------------------------

    def label(self, caller: Caller, request_id, choice, client_key: str | None = None, *, ranking=None, grades=None,
              grade_scale: str | None = None) -> str:
        """Store one judgement; returns its label id. A retry with the same client key returns the same id.

        choice: a candidate index (as /generate returns it; decimal string or int), "tie",
        "all_bad" or "skip". ranking: every candidate index, best first (choice must be its
        first); grades: {candidate index: 1..5 stars or -1/+1 thumbs} on `grade_scale`
        (`labeling.label_store.LabelStore.add_label`). Candidate indices, never display
        positions (`label_display` takes those). ValueError for bad input, `RateLimited` when
        labelling too fast.
        """
        request_id = self._check_request_id(request_id)
        if isinstance(choice, bool) or not isinstance(choice, (str, int)) or len(str(choice)) > 16:
            raise ValueError(f"choice must be a candidate index or one of {CHOICE_WORDS}, got {str(choice)[:40]!r}")
        order, blind, profile = self._shown_request(request_id, caller.annotator)
        if client_key is None or self.labels.label_for_key(caller.annotator, client_key) is None:
            self._hit(self._label_rates, caller)  # a retry of a stored label is not a new label
        label_id = self.labels.add_label(request_id, choice, caller.annotator, order_shown=order, blind=blind,
                                         client_key=client_key, grades=grades, ranking=ranking, grade_scale=grade_scale)
        if self.base is not None:
            try:
                self.job_for(profile).notify_labels()
            except ValueError as error:  # e.g. the profile limit: the label is stored, the retrain waits
                logger.warning("no retrain for profile %r: %s", profile, error)
        return label_id

    def pick_position(self, caller: Caller, request_id, position, client_key: str | None = None) -> tuple[str, int]:
        """The candidate at display position `position` (1-based) is the best: (label id, candidate index)."""
        order, _ = self.shown(request_id, caller.annotator)
        if isinstance(position, bool) or not isinstance(position, (int, float)) or not float(position).is_integer():
            raise ValueError(f"position must be a whole number, got {position!r}")
        if not 1 <= int(position) <= len(order):
            raise ValueError(f"there is no candidate {int(position)}: this request shows {len(order)}")
        candidate = order[int(position) - 1]
        return self.label(caller, request_id, str(candidate), client_key), candidate

    def label_display(self, caller: Caller, request_id, ranking_text: str = "", grades_text: str = "",
                      client_key: str | None = None) -> tuple[str, int | None]:
        """A full ranking and/or grades typed by display position (the UI's boxes): (label id, chosen candidate).

        ranking_text: display positions (1-based) best first, every one once, e.g. "3 1 2 4".
        grades_text: one mark per display position: 1-5 stars or +/- thumbs, "." for none, e.g.
        "5 3 . 1" or "+ - . +". Both are converted to candidate indices with the order this
        caller was shown. The pick is the ranking's best; without a ranking, the caller's live
        pick of this request is kept (a newer label replaces the older one), else it is a graded skip.
        """
        request_id = self._check_request_id(request_id)
        order, _ = self.shown(request_id, caller.annotator)
        ranking = parse_ranking(ranking_text, len(order))
        grades, scale = parse_grades(grades_text, len(order))
        if ranking is None and grades is None:
            raise ValueError("type a ranking (positions best first, e.g. 3 1 2) or grades (1-5 or +/- per position)")
        ranked = None if ranking is None else ranking_from_display([p - 1 for p in ranking], order)
        graded = None if grades is None else grades_from_display({p - 1: g for p, g in grades.items()}, order)
        if ranked is not None:
            choice = str(ranked[0])
        else:
            live = self.labels.live_choice(caller.annotator, request_id)
            choice = live if live is not None else SKIP
        label_id = self.label(caller, request_id, choice, client_key, ranking=ranked, grades=graded, grade_scale=scale)
        return label_id, (int(choice) if choice.isdigit() else None)

    def next_to_review(self, caller: Caller) -> Generation | None:
        """A request others judged, for this caller to judge blind too (`config.review_overlap` annotators
        per request at most); None when there is none. Shown shuffled, scores hidden until labelled.

        `Forbidden` unless the caller is an admin or `config.review_by_anyone`: the request's prompt
        was typed by someone else.
        """
        if not (caller.is_admin or self.config.review_by_anyone):  # it shows prompts other people typed
            raise Forbidden(f"labelling other people's requests is for admins only, since it shows their prompts "
                            f"(LANGUAGE_RANKER_REVIEW_BY_ANYONE=1 opens it to every annotator); you are {caller.annotator}")
        found = self.labels.requests_to_review(caller.annotator, self.config.review_overlap)
        if not found:
            return None
        stored = self.labels.get_request(found[0])
        result = stored_result(stored)
        order = random.sample(range(result.num_candidates), result.num_candidates)
        self._remember((found[0], caller.annotator), order, True, stored.get("profile") or DEFAULT_PROFILE)  # theirs alone
        return Generation(found[0], result, order, True, stored.get("ranker_version") or LATEST, None, 0)

    def agreement(self, profile: str | None = None) -> dict:
        """Fleiss' kappa between annotators where several judged one request (`labeling.agreement`).

        Recomputed only when the store has changed (the Retrain panel asks every 2 s).
        """
        key = (profile, self.labels.revision())
        with self._lock:
            if self._agreement is not None and self._agreement[0] == key:
                return self._agreement[1]
        value = pick_agreement(self.labels, profile).to_dict()
        with self._lock:
            self._agreement = (key, value)
        return value

    def undo(self, caller: Caller) -> str | None:
        """Undo the caller's latest label; its id, or None when there is nothing to undo."""
        return self.labels.undo_last(caller.annotator)

    def counts(self, caller: Caller) -> tuple[int, int]:
        """(the caller's labels, all labels), undone and skipped ones not counted."""
        return self.labels.count(annotator=caller.annotator), self.labels.count()

    # --- retraining (admin actions) ------------------------------------------------------------

    def job_for(self, profile: str) -> RetrainJob:
        """The retrain job of a profile, created on first use (at most `config.max_profiles`)."""
        profile = check_profile(profile)
        self._require_base()
        with self._lock:
            if profile not in self.jobs:
                if len(self.jobs) >= self.config.max_profiles:
                    raise ValueError(f"{len(self.jobs)} profiles are in use, the limit; use an existing profile")
                self.jobs[profile] = RetrainJob(
                    self.labels, self.registry, profile=profile,
                    on_promoted=lambda version, ranker, profile=profile: self._on_promoted(profile, version, ranker),
                    **self._job_setup)
            return self.jobs[profile]

    def retrain(self, caller: Caller, profile: str = DEFAULT_PROFILE) -> bool:
        """Admin: queue a retrain of `profile` now. False when one is queued or running already."""
        caller.require_admin("Retrain now")
        return self.job_for(profile or DEFAULT_PROFILE).trigger("button")

    def rollback(self, caller: Caller, profile: str = DEFAULT_PROFILE, version: str | None = None) -> str:
        """Admin: make an earlier promoted version of `profile` live again; returns it."""
        caller.require_admin("Roll back")
        if version is not None and not isinstance(version, str):
            raise ValueError(f"version must be text like 'v0002', got {version!r}")
        return self.job_for(profile or DEFAULT_PROFILE).rollback(to=(version or "").strip() or None)

    def bootstrap(self, caller: Caller, prompts_per_family: int = 16) -> str:
        """Admin: build a ranker for the loaded model from the task suite, in the background; it goes live."""
        from ranker.rankers.bootstrap import BootstrapConfig, bootstrap_ranker

        caller.require_admin("Bootstrap a ranker")
        base = self._require_base()
        if isinstance(prompts_per_family, bool) or not isinstance(prompts_per_family, int) or not 2 <= prompts_per_family <= 200:
            raise ValueError(f"prompts_per_family must be a whole number in [2, 200], got {prompts_per_family!r}")
        config = BootstrapConfig(prompts_per_family=prompts_per_family)
        with self._lock:
            if self.bootstrap_state.startswith("running"):
                return "A bootstrap is already running."
            self.bootstrap_state = "running: sampling the task suite"

        def progress(done: int, total: int) -> None:
            self.bootstrap_state = f"running: sampled {done}/{total} prompts"

        def work() -> None:
            try:
                ranker = bootstrap_ranker(base, config, progress, lane=self.lane)
                version = self.registry.add(ranker, {}, promoted=True, reason="bootstrapped from the task suite",
                                            label_count=0, info={"bootstrap": True})
                self._on_promoted(DEFAULT_PROFILE, version, ranker)
                self.bootstrap_state = f"done: {version} is now the latest ranker"
            except Exception as error:  # shown in the status panel; the app keeps serving
                logger.exception("bootstrap failed")
                self.bootstrap_state = f"failed: {type(error).__name__}: {error}"

        self._bootstrap_thread = threading.Thread(target=work, name="bootstrap", daemon=True)
        self._bootstrap_thread.start()
        return f"Bootstrapping a ranker on {len(config.families) * config.prompts_per_family} task prompts in the background."

    def retrain_status(self, profile: str = DEFAULT_PROFILE) -> dict:
        """State, label count, last metrics and version history of a profile (anyone may read it)."""
        if self.base is None:
            return {"state": "not started", "label_count": self.labels.count()}
        profile = check_profile(clean_text("profile", profile or DEFAULT_PROFILE, self.config.limits.max_name_chars).strip())
        with self._lock:
            job = self.jobs.get(profile)
        if job is None:  # reading a status never creates a job (or uses up a profile slot)
            return {"state": "idle", "profile": profile, "label_count": self.labels.count(profile=profile),
                    "current_version": self.registry.current(profile), "history": self.registry.history(profile),
                    "last_result": None, "queued_profiles": self.worker.queued()}
        return job.status()

    def learning_curve(self, profile: str = DEFAULT_PROFILE):
        return learning_curve(self.registry, profile)
