"""Language Ranker: the Gradio app. UI and event wiring only; every action is a `RankerService` call.

Tabs: Generate & rank, Label (blind), Retrain, Plots. Importing this module has no side effects:
`main()` builds the service from the environment (`labeling.service.ServiceConfig.from_env`),
loads the base model, starts the service and serves `build_demo(service)`.

Start it with `bash scripts/run_app.sh` (or `python app.py` in the virtual environment). The
environment variables (model, data folder, limits, rate limits, admins, Hub backup, OAuth) are
listed in the README's "Reliability and security" section.
"""

from __future__ import annotations

import html
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from labeling.http_api import label_router
from labeling.label_store import DEFAULT_PROFILE
from labeling.openai_api import openai_router
from labeling.service import CHOICE_WORDS, LATEST, Generation, RankerService, ServiceConfig, stored_rows
from ranker.capture.base_model import load_base_model
from ranker.experiments.plots import learning_curve_figure, load_figures
from ranker.serving.best_of_n import RankedCandidates

logger = logging.getLogger(__name__)

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else
    import spaces

    gpu = spaces.GPU
except ImportError:
    spaces = None
    gpu = None

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "assets" / "results"
RESULT_PLOTS = {"scaling": "scaling law: accuracy vs N", "layers": "layer ablation", "blocks": "block ablation",
                "transfer": "cross-task transfer", "lofo": "leave one family out",
                "calibration": "reliability of P(correct) on unseen prompts"}  # figure name -> label, in tab order
SHORTCUT_PICKS = 9
GENERATION = {"concurrency_limit": 1, "concurrency_id": "generation"}  # every event that samples from the base model
LABELS = {"concurrency_limit": 16, "concurrency_id": "labels"}  # quick SQLite writes: many at once
BROWSER_ID_KEY = "language-ranker-anonymous-id"  # localStorage key of the anonymous id (a random token per browser)

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
LAUNCH_KWARGS = {"head": SHORTCUTS_JS, "css": CSS}

def _ui_errors(fn, *args, **kwargs):
    """Call a service method; its ValueErrors (bad input, rate limits, refusals) become gr.Error."""
    try:
        return fn(*args, **kwargs)
    except ValueError as error:
        raise gr.Error(str(error)) from error


# --- rendering -------------------------------------------------------------------------------


def timing_line(result: RankedCandidates, ranker_choice: str, ranker, rm_note: str) -> str:
    """rm_note: what to say in place of the RM's time when it has not scored (yet)."""
    t = result.timings
    parts = [f"generation {t['generate_s']:.2f} s (features captured at layer {result.layer})"]
    parts.append(f"ranker {1000 * t['ranker_s']:.1f} ms" if "ranker_s" in t
                 else "no ranker fits this base model: bootstrap one in the Retrain tab")
    parts.append(f"RM {1000 * t['rm_s']:.0f} ms" if "rm_s" in t else rm_note)
    who = ranker_choice or LATEST
    if ranker is not None and ranker.fused:
        names = {"mean_logprob": "mean log-prob", "vote_share": "vote share", "weighted_vote": "log-prob-weighted vote"}
        fused = [names[name] for name in ranker.fusion_weights if name != "ranker"]
        who += f" (hidden states + {' + '.join(fused)})" if fused else " (hidden states)"
        if ranker.fusion.fallback is not None:
            who += ", free signals for prompts unlike its training data"
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


def _disagree(rows: list[dict]) -> bool:
    top = [r["candidate"] for r in rows if r["rank"] == 1]
    rm_top = [r["candidate"] for r in rows if r["rm_rank"] == 1]
    return bool(top and rm_top and top != rm_top)


class Handlers:
    """The event handlers, bound to one service (so two apps in one process never share state).

    Each method is what one event or API endpoint runs; they are plain methods, testable without a browser.
    """

    def __init__(self, app_service: RankerService):
        self.service = app_service

    def _caller(self, request: gr.Request | None, oauth: gr.OAuthProfile | None, browser_token: str | None = None,
                annotator: str | None = None, admin_token: str | None = None):
        if annotator and not self.service.config.access.local_mode:
            raise gr.Error("the annotator argument is accepted only in local mode (LANGUAGE_RANKER_LOCAL_MODE=1); "
                           "here your id comes from your login or your session")
        return _ui_errors(self.service.identify, request, getattr(oauth, "username", None), browser_token, annotator or None,
                          admin_token or None)

    def _generation_outputs(self, generation: Generation, rm_note: str | None = None):
        result = generation.result
        table = render_table(result.rows(generation.order), generation.blind, result.disagreement())
        timing = timing_line(result, generation.ranker_name, generation.ranker, rm_note or self.service.rm_note)
        return generation.request_id, generation.rows(), table, timing, generation.request_id

    # --- generation ---------------------------------------------------------------------------

    def _generate(self, prompt, n, temperature, top_p, max_new_tokens, seed, ranker_choice, profile, blind: bool,
                  request, oauth, browser_token, progress):
        """Yields the outputs twice: the ranked list as soon as the ranker has scored it, then with the RM's column.

        (Once only when no RM is loaded.) An RM failure keeps the ranked list and says so in the timing line.
        """
        caller = self._caller(request, oauth, browser_token)
        progress(0.05, desc="checking the request")
        generation = _ui_errors(self.service.generate, caller, prompt, n, temperature, top_p, max_new_tokens, seed,
                                ranker_choice, profile, blind, progress=lambda f, what: progress(f, desc=what),
                                with_rm=False)
        if self.service.rm is None:
            yield self._generation_outputs(generation)
            return
        yield self._generation_outputs(generation, rm_note="RM scoring…")
        progress(0.95, desc="scoring with the reward model")
        try:
            self.service.score_rm(generation)
        except Exception as error:  # the ranked list stays; the RM column stays empty
            logger.exception("reward model failed on request %s", generation.request_id)
            yield self._generation_outputs(generation, rm_note=f"RM failed ({type(error).__name__}); ranked list unaffected")
            return
        yield self._generation_outputs(generation)

    def generate(self, prompt: str, n: int = 8, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 64,
                 seed: int = -1, ranker_choice: str = LATEST, profile: str = DEFAULT_PROFILE, browser_token: str | None = None,
                 request: gr.Request = None, oauth: gr.OAuthProfile | None = None, progress=gr.Progress()):
        """Sample N candidates and rank them. Yields (request id, ranked candidates as JSON, table HTML, timing line):

        first as soon as the ranker has ranked them, then again with the reward model's scores (the
        API's last value). profile: the label line this request's labels count for (a user's or a
        task's own ranker).
        """
        yield from self._generate(prompt, n, temperature, top_p, max_new_tokens, seed, ranker_choice, profile, False,
                                  request, oauth, browser_token, progress)

    def generate_blind(self, prompt: str, n: int = 8, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 64,
                       seed: int = -1, ranker_choice: str = LATEST, profile: str = DEFAULT_PROFILE,
                       browser_token: str | None = None, request: gr.Request = None, oauth: gr.OAuthProfile | None = None,
                       progress=gr.Progress()):
        """As `generate`, but shuffled and with every score hidden until the label is given."""
        yield from self._generate(prompt, n, temperature, top_p, max_new_tokens, seed, ranker_choice, profile, True,
                                  request, oauth, browser_token, progress)

    # --- labels -------------------------------------------------------------------------------

    def label(self, request_id: str, choice: str, annotator: str = "", client_key: str = "", request: gr.Request = None,
              oauth: gr.OAuthProfile | None = None) -> str:
        """Store a label; returns its id. choice: a candidate index (as /generate returns it), "tie", "all_bad" or "skip".

        client_key: any id the client picks for this label (e.g. a uuid); a retry with the same key
        returns the same label id and stores nothing twice. annotator: only in local mode; elsewhere
        your id comes from your login or session.
        """
        caller = self._caller(request, oauth, annotator=annotator)
        return _ui_errors(self.service.label, caller, request_id, choice, client_key or None)

    def undo_label(self, annotator: str = "", request: gr.Request = None, oauth: gr.OAuthProfile | None = None) -> str:
        """Undo your latest label. Returns the undone label's id, or "" when there was nothing to undo."""
        return self.service.undo(self._caller(request, oauth, annotator=annotator)) or ""

    def count_line(self, caller) -> str:
        mine, total = self.service.counts(caller)
        return f"**{mine}** labels from you · {total} in total"

    def _after_label(self, caller, request_id: str, label_id: str, chosen: int | None, what: str):
        order, blind = self.service.shown(request_id, caller.annotator)
        rows = stored_rows(self.service.labels.get_request(request_id), order)
        status = f"Saved: {what} (label {label_id[:8]})." + (" Scores revealed below." if blind else "")
        return status, self.count_line(caller), render_table(rows, False, _disagree(rows), chosen)

    def pick_position(self, position, request_id, browser_token=None, request: gr.Request = None,
                      oauth: gr.OAuthProfile | None = None):
        """UI: the candidate at display position `position` (1-based) is the best. Returns (status, count, revealed table)."""
        if not request_id:
            raise gr.Error("Generate candidates first, then pick one.")
        caller = self._caller(request, oauth, browser_token)
        label_id, candidate = _ui_errors(self.service.pick_position, caller, request_id, position)
        return self._after_label(caller, request_id, label_id, candidate, f"candidate {int(position)}")

    def mark(self, choice: str, request_id, browser_token=None, request: gr.Request = None, oauth: gr.OAuthProfile | None = None):
        """UI: tie, all bad or skip."""
        if not request_id:
            raise gr.Error("Generate candidates first, then label them.")
        if choice not in CHOICE_WORDS:
            raise gr.Error(f"unknown choice {choice!r}; use one of {CHOICE_WORDS}")
        caller = self._caller(request, oauth, browser_token)
        label_id = _ui_errors(self.service.label, caller, request_id, choice)
        return self._after_label(caller, request_id, label_id, None, choice.replace("_", " "))

    def label_rich(self, ranking_text: str, grades_text: str, request_id, browser_token=None, request: gr.Request = None,
                   oauth: gr.OAuthProfile | None = None):
        """UI: a full ranking and/or grades typed by display position. Returns (status, count, revealed table)."""
        if not request_id:
            raise gr.Error("Generate candidates first, then rank or grade them.")
        caller = self._caller(request, oauth, browser_token)
        label_id, chosen = _ui_errors(self.service.label_display, caller, request_id, ranking_text, grades_text)
        what = " and ".join(w for w, text in (("ranking", ranking_text), ("grades", grades_text)) if text and text.strip())
        return self._after_label(caller, request_id, label_id, chosen, what)

    def review(self, browser_token=None, request: gr.Request = None, oauth: gr.OAuthProfile | None = None):
        """UI: show, blind, a request that other annotators judged (for their agreement). Returns the generate outputs."""
        caller = self._caller(request, oauth, browser_token)
        generation = _ui_errors(self.service.next_to_review, caller)
        if generation is None:
            raise gr.Error("No request is waiting for another annotator: every labelled request has "
                           f"{self.service.config.review_overlap} annotators, or you labelled it already.")
        table = render_table(generation.result.rows(generation.order), True, False)
        timing = f"**{generation.result.num_candidates} candidates** · a stored request that other annotators judged"
        return generation.request_id, generation.rows(), table, timing, generation.request_id

    def undo(self, browser_token=None, request: gr.Request = None, oauth: gr.OAuthProfile | None = None):
        """UI: undo your last label. Returns (status, count line)."""
        caller = self._caller(request, oauth, browser_token)
        undone = self.service.undo(caller)
        return (f"Undid label {undone[:8]}." if undone else "Nothing to undo."), self.count_line(caller)

    # --- identity, retraining, plots ----------------------------------------------------------

    def start_session(self, browser_id: str | None, request: gr.Request = None, oauth: gr.OAuthProfile | None = None):
        """On page load: keep (or create) this browser's anonymous id; show who the user is. Returns (id, id, markdown)."""
        if not isinstance(browser_id, str) or len(browser_id) != 32:
            browser_id = secrets.token_hex(16)
        caller = self._caller(request, oauth, browser_id)
        role = " · admin" if caller.is_admin else ""
        return browser_id, browser_id, f"You label as **{caller.annotator}**{role} · {self.count_line(caller)}"

    def retrain(self, profile: str = DEFAULT_PROFILE, admin_token: str = "", request: gr.Request = None,
                oauth: gr.OAuthProfile | None = None) -> str:
        """Admin: start a retrain of a profile now (background). Returns what happened."""
        caller = self._caller(request, oauth, admin_token=admin_token)
        started = _ui_errors(self.service.retrain, caller, (profile or DEFAULT_PROFILE).strip())
        return "Retraining queued; it runs in the background." if started else "A retrain of this profile is already queued or running."

    def rollback(self, profile: str = DEFAULT_PROFILE, version: str = "", admin_token: str = "", request: gr.Request = None,
                 oauth: gr.OAuthProfile | None = None) -> str:
        """Admin: make an earlier promoted version of a profile current again (default: the previous one)."""
        caller = self._caller(request, oauth, admin_token=admin_token)
        current = _ui_errors(self.service.rollback, caller, (profile or DEFAULT_PROFILE).strip(), version)
        return f"{profile or DEFAULT_PROFILE} now uses {current}."

    def bootstrap(self, admin_token: str = "", request: gr.Request = None, oauth: gr.OAuthProfile | None = None) -> str:
        """Admin: build a ranker for the loaded model from the task suite, in the background, and make it current."""
        caller = self._caller(request, oauth, admin_token=admin_token)
        return _ui_errors(self.service.bootstrap, caller)

    def retrain_status(self, profile: str = DEFAULT_PROFILE) -> dict:
        """State, label count, last metrics and the version history of a profile (polled by the UI)."""
        return _ui_errors(self.service.retrain_status, profile)

    def status_view(self, profile: str = DEFAULT_PROFILE):
        """UI: the status as markdown plus the history table and the ranker picker choices."""
        status = self.retrain_status(profile)
        lines = [f"**state:** {status.get('state')} · **labels:** {status.get('label_count', 0)}"]
        for key in ("labels_since_last_run", "last_reason", "last_error", "queued_profiles"):
            if status.get(key):
                lines.append(f"**{key.replace('_', ' ')}:** {status[key]}")
        if self.service.bootstrap_state:
            lines.append(f"**bootstrap:** {self.service.bootstrap_state}")
        unranked = self.service.unranked_reason()
        if unranked and not self.service.registry.current(DEFAULT_PROFILE):
            lines.append(f"**No ranker fits this base model** ({unranked}). An admin can *Bootstrap a ranker* from the task suite.")
        agreement = self.service.agreement(profile or None)
        if agreement["kappa"] is not None:
            lines.append(f"**annotator agreement:** Fleiss' kappa {agreement['kappa']:.2f} on {agreement['items']} requests "
                         f"judged by 2+ annotators ({agreement['ratings']} picks; observed {agreement['observed']:.2f}, "
                         f"chance {agreement['chance']:.2f})")
        else:
            lines.append(f"**annotator agreement:** no kappa yet ({agreement['items']} requests judged by 2+ annotators)")
        lines.append(f"**backup:** {self.service.backup_note}")
        rows = [[h.get("profile"), h.get("version"), h.get("status"), h.get("label_count"), _short(h.get("metrics")), h.get("reason")]
                for h in status.get("history") or []]
        choices = gr.update(choices=self.service.choices())
        return "\n\n".join(lines), rows, choices, choices

    def plots(self):
        """Scaling law, layer ablation, block ablation, transfer heatmap, leave-one-family-out accuracy,
        the reliability diagram of P(correct) and the retrained learning curve."""
        figures = load_figures(RESULTS) if RESULTS.is_dir() else {}
        curve = learning_curve_figure(self.service.learning_curve(DEFAULT_PROFILE))
        empty = go.Figure().update_layout(title="no results yet: run `python -m ranker experiment`")
        return tuple(figures.get(name, empty) for name in RESULT_PLOTS) + (curve,)


def _short(metrics) -> str:
    if not isinstance(metrics, dict):
        return ""
    return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, (int, float)))


# --- UI --------------------------------------------------------------------------------------


def label_bar(prefix: str):
    """Pick buttons 1-9 (and any position), tie, all bad, skip, undo; wired to the label handlers."""
    with gr.Row():
        picks = [gr.Button(str(k), elem_id=f"{prefix}-pick-{k}", min_width=40, size="sm") for k in range(1, SHORTCUT_PICKS + 1)]
        tie = gr.Button("Tie", elem_id=f"{prefix}-tie", size="sm")
        bad = gr.Button("All bad", elem_id=f"{prefix}-allbad", size="sm")
        skip = gr.Button("Skip (S)", elem_id=f"{prefix}-skip", size="sm")
        undo_button = gr.Button("Undo (Z)", elem_id=f"{prefix}-undo", size="sm")
    with gr.Row():
        position = gr.Number(value=10, precision=0, minimum=1, label="pick position (for 10+)", scale=1)
        pick_any = gr.Button("Pick this position", scale=1, size="sm")
        label_status = gr.Markdown(elem_id=f"{prefix}-label-status")
        count = gr.Markdown(elem_id=f"{prefix}-count")
    with gr.Row():  # richer labels, typed (keyboard only); Enter in either box saves
        ranking = gr.Textbox(label="full ranking: positions, best first (e.g. 3 1 2 4)", max_lines=1, scale=2,
                             elem_id=f"{prefix}-ranking")
        grades = gr.Textbox(label="grades by position: 1-5 stars or +/- thumbs, . for none (e.g. 5 3 . 1)", max_lines=1,
                            scale=2, elem_id=f"{prefix}-grades")
        save_rich = gr.Button("Save ranking / grades", elem_id=f"{prefix}-save-rich", size="sm", scale=1)
    return picks, tie, bad, skip, undo_button, position, pick_any, label_status, count, ranking, grades, save_rich


def _pick_at(handlers: Handlers, position: int):
    """A click handler for the pick button of one display position."""
    def handler(request_id, browser_token, request: gr.Request = None, oauth: gr.OAuthProfile | None = None):
        return handlers.pick_position(position, request_id, browser_token, request, oauth)
    return handler


def _mark_as(handlers: Handlers, choice: str):
    """A click handler for the tie, all-bad or skip button."""
    def handler(request_id, browser_token, request: gr.Request = None, oauth: gr.OAuthProfile | None = None):
        return handlers.mark(choice, request_id, browser_token, request, oauth)
    return handler


def _wire_labels(handlers: Handlers, prefix, bar, request_state, browser_id, table):
    picks, tie, bad, skip, undo_button, position, pick_any, label_status, count, ranking, grades, save_rich = bar
    outputs = [label_status, count, table]
    private = {"api_visibility": "private", **LABELS}
    rich_inputs = [ranking, grades, request_state, browser_id]
    save_rich.click(handlers.label_rich, rich_inputs, outputs, api_name=f"{prefix}_rich", **private)
    for box, name in ((ranking, "ranking"), (grades, "grades")):
        box.submit(handlers.label_rich, rich_inputs, outputs, api_name=f"{prefix}_rich_{name}", **private)
    for k, button in enumerate(picks, start=1):
        button.click(_pick_at(handlers, k), [request_state, browser_id], outputs, api_name=f"{prefix}_pick_{k}", **private)
    pick_any.click(handlers.pick_position, [position, request_state, browser_id], outputs, api_name=f"{prefix}_pick", **private)
    for button, choice in ((tie, "tie"), (bad, "all_bad"), (skip, "skip")):
        button.click(_mark_as(handlers, choice), [request_state, browser_id], outputs, api_name=f"{prefix}_{choice}", **private)
    undo_button.click(handlers.undo, [browser_id], [label_status, count], api_name=f"{prefix}_undo", **private)


def sampling_inputs(limits):
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", placeholder="What is 47 + 38? Answer with just the number.", scale=4,
                            max_length=limits.max_prompt_chars)
        n = gr.Slider(1, limits.max_candidates, value=min(8, limits.max_candidates), step=1, label="N candidates", scale=1)
    with gr.Accordion("Advanced", open=False):
        temperature = gr.Slider(0.0, limits.max_temperature, value=1.0, step=0.05, label="temperature")
        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top_p")
        max_new_tokens = gr.Slider(1, limits.max_new_tokens, value=min(64, limits.max_new_tokens), step=1, label="max new tokens")
        seed = gr.Number(value=-1, precision=0, label="seed (-1 = random)")
        ranker_choice = gr.Dropdown([LATEST], value=LATEST, label="ranker", allow_custom_value=True)
        profile = gr.Textbox(value=DEFAULT_PROFILE, label="profile: labels train this ranker line (e.g. your name or a task)", max_lines=1)
    return prompt, n, temperature, top_p, max_new_tokens, seed, ranker_choice, profile


def build_demo(app_service: RankerService, oauth: bool | None = None) -> gr.Blocks:
    """The UI over `app_service`. oauth: show "Sign in with Hugging Face" (default: on a Space)."""
    handlers = Handlers(app_service)
    oauth = bool(os.environ.get("SPACE_ID")) if oauth is None else oauth
    limits = app_service.config.limits
    with gr.Blocks(title="Language Ranker") as demo:
        gr.Markdown("# Language Ranker\nSample several answers from the base model; a ranker of under 0.5M parameters, "
                    "reading the model's own hidden states, picks the best. Keys: **1-9** pick, **S** skip, **Z** undo.")
        with gr.Row():
            if oauth:
                gr.LoginButton()
            whoami = gr.Markdown(elem_id="whoami")
        browser_store = gr.BrowserState(None, storage_key=BROWSER_ID_KEY, secret=BROWSER_ID_KEY)
        browser_id = gr.State(None)  # this session's copy of the anonymous id
        with gr.Tabs():
            with gr.Tab("Generate & rank", id="generate"):
                inputs = sampling_inputs(limits)
                prompt, ranker_choice = inputs[0], inputs[-2]
                prompt.elem_id = "prompt"
                run = gr.Button("Generate", variant="primary", elem_id="generate")
                timing = gr.Markdown(elem_id="timing")
                table = gr.HTML(elem_id="candidates")
                bar = label_bar("rank")
                request_state = gr.State(None)
                with gr.Accordion("JSON", open=False):
                    request_id = gr.Textbox(label="request id", elem_id="request-id")
                    rows_json = gr.JSON(label="ranked candidates")
                outputs = [request_id, rows_json, table, timing, request_state]
                run.click(handlers.generate, [*inputs, browser_id], outputs, api_name="generate", **GENERATION)
                prompt.submit(handlers.generate, [*inputs, browser_id], outputs, api_name="generate_on_submit",
                              api_visibility="private", **GENERATION)
                _wire_labels(handlers, "rank", bar, request_state, browser_id, table)
            with gr.Tab("Label (blind)", id="label"):
                blind_inputs = sampling_inputs(limits)
                with gr.Row():
                    blind_run = gr.Button("Generate (blind)", variant="primary", elem_id="generate-blind")
                    review = gr.Button("Label another's request (blind)", elem_id="review")
                blind_timing = gr.Markdown()
                blind_table = gr.HTML(elem_id="blind-candidates")
                blind_bar = label_bar("blind")
                blind_request = gr.State(None)
                blind_id, blind_json = gr.Textbox(visible=False), gr.JSON(visible=False)
                blind_run.click(handlers.generate_blind, [*blind_inputs, browser_id],
                                [blind_id, blind_json, blind_table, blind_timing, blind_request],
                                api_name="generate_blind", **GENERATION)
                review.click(handlers.review, [browser_id], [blind_id, blind_json, blind_table, blind_timing, blind_request],
                             api_name="review", **LABELS)
                _wire_labels(handlers, "blind", blind_bar, blind_request, browser_id, blind_table)
            with gr.Tab("Retrain", id="retrain"):
                status_md = gr.Markdown(elem_id="retrain-status")
                with gr.Row():
                    retrain_profile = gr.Textbox(value=DEFAULT_PROFILE, label="profile", max_lines=1)
                    rollback_version = gr.Textbox(label="roll back to version (empty: previous)", max_lines=1)
                    admin_token = gr.Textbox(label="admin token (if not logged in as an admin)", type="password", max_lines=1)
                with gr.Row():
                    retrain_button = gr.Button("Retrain now", variant="primary")
                    rollback_button = gr.Button("Roll back")
                    bootstrap_button = gr.Button("Bootstrap a ranker")
                retrain_message = gr.Markdown(elem_id="retrain-message")
                history = gr.Dataframe(headers=["profile", "version", "status", "labels", "metrics", "reason"],
                                       interactive=False, wrap=True, label="versions")
                retrain_button.click(handlers.retrain, [retrain_profile, admin_token], retrain_message, api_name="retrain")
                rollback_button.click(handlers.rollback, [retrain_profile, rollback_version, admin_token], retrain_message,
                                      api_name="rollback")
                bootstrap_button.click(handlers.bootstrap, admin_token, retrain_message, api_name="bootstrap")
                gr.api(handlers.retrain_status, api_name="retrain_status")
                timer = gr.Timer(2.0)
                timer.tick(handlers.status_view, retrain_profile, [status_md, history, ranker_choice, blind_inputs[-2]],
                           api_name="status_view", api_visibility="private")
            with gr.Tab("Plots", id="plots"):
                refresh = gr.Button("Refresh plots", elem_id="refresh-plots")
                figures = [gr.Plot(label=label) for label in (*RESULT_PLOTS.values(), "retrained ranker: learning curve")]
                refresh.click(handlers.plots, None, figures, api_name="plots")
        gr.api(handlers.label, api_name="label", **LABELS)
        gr.api(handlers.undo_label, api_name="undo", **LABELS)
        demo.load(handlers.start_session, browser_store, [browser_store, browser_id, whoami], api_name="start_session",
                  api_visibility="private")
        demo.load(handlers.plots, None, figures, api_name="plots_on_load", api_visibility="private")
    # Generations share one slot (GENERATION): one at a time on a small CPU, the rest wait in a
    # bounded queue. Labels, status polls and plots are quick and must not wait behind a generation.
    demo.queue(default_concurrency_limit=8, max_size=64)
    demo.handlers = handlers  # for tests and scripts
    return demo


def launch(demo: gr.Blocks, app_service: RankerService, **kwargs):
    """Serve the UI and, on the same server, the JSON label routes (`labeling.http_api`) and the
    OpenAI-compatible routes (`labeling.openai_api`). Returns (app, url).

    Does not block (the caller blocks with `demo.block_thread()`); kwargs go to `demo.launch`.
    """
    server_app, local_url, _ = demo.launch(prevent_thread_lock=True, **LAUNCH_KWARGS, **kwargs)
    server_app.include_router(label_router(app_service))
    server_app.include_router(openai_router(app_service))
    return server_app, local_url


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Serve the Language Ranker app.")
    parser.add_argument("--model", help="hub id, local folder or .gguf file (default: $LANGUAGE_RANKER_MODEL, else the embedded model)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args()
    server_name = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    try:
        app_service = RankerService(ServiceConfig.from_env(ROOT, server_name=server_name), run_on_device=gpu)
        app_service.start(load_base_model(args.model))  # before serving, so the first user does not wait
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    demo = build_demo(app_service)
    launch(demo, app_service, server_name=server_name, server_port=args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a Space stops with SIGTERM: close (last Hub push) first
    try:
        demo.block_thread()
    finally:
        app_service.close()


if __name__ == "__main__":
    main()
