"""Language Ranker: the Gradio app.

UI only: handlers call the library (`ranker/`), and the base model is loaded once, read-only,
and shared by every session. Start it with `bash scripts/run_app.sh`, or `python app.py`
inside the virtual environment. `LANGUAGE_RANKER_MODEL` picks another base model.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from ranker.base_model import BaseModel, load_base_model
from ranker.checkpoint import read_card
from ranker.estimator import LanguageRanker
from ranker.fingerprint import FeatureFingerprint
from ranker.pipeline import probabilities
from ranker.sampling import SamplingConfig, sample_candidates

MAX_CANDIDATES = 64
DEFAULT_RANKER = Path(__file__).resolve().parent / "assets" / "rankers" / "default-list"
CANDIDATE_COLUMNS = ["rank", "#", "candidate", "ranker score", "P(correct)", "finish", "tokens", "mean log-prob"]

_base: BaseModel | None = None
_base_lock = threading.Lock()
_ranker: LanguageRanker | None = None
_ranker_note = ""


def get_base_model() -> BaseModel:
    """The shared base model, loaded on first use (from `LANGUAGE_RANKER_MODEL`, else the embedded one)."""
    global _base
    with _base_lock:
        if _base is None:
            _base = load_base_model()
            load_default_ranker(_base)
        return _base


def set_base_model(base: BaseModel) -> None:
    """Use an already loaded model (tests load the embedded model once per session)."""
    global _base
    with _base_lock:
        _base = base
    load_default_ranker(base)


def load_default_ranker(base: BaseModel, path: Path = DEFAULT_RANKER) -> None:
    """Load the shipped ranker if it was trained on this base model's features; else explain why not."""
    global _ranker, _ranker_note
    try:
        card = read_card(path)
        card_layer = card.fingerprint.layer if card.fingerprint is not None else -1
        _ranker = LanguageRanker.load(path, expected_fingerprint=FeatureFingerprint(base.fingerprint, card_layer))
        _ranker_note = f"ranked by the shipped ListRanker (layer {card_layer})"
    except ValueError as error:
        _ranker, _ranker_note = None, f"unranked: {error}"


def sampling_config(n, temperature, top_p, max_new_tokens, seed) -> SamplingConfig:
    """Build and validate a SamplingConfig from UI values; bad values raise gr.Error naming them."""
    try:
        config = SamplingConfig(
            num_candidates=int(n),
            temperature=float(temperature),
            top_p=float(top_p),
            max_new_tokens=int(max_new_tokens),
            seed=None if seed is None or int(seed) < 0 else int(seed),
        )
        if config.num_candidates > MAX_CANDIDATES:
            raise ValueError(f"N must be at most {MAX_CANDIDATES}, got {config.num_candidates}")
        return config.validate()
    except (TypeError, ValueError) as error:
        raise gr.Error(str(error)) from error


def generate(prompt: str, n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int = -1):
    """Sample N candidates and rank them with the shipped ranker. Returns (ranked table, status line)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise gr.Error("Type a prompt first.")
    config = sampling_config(n, temperature, top_p, max_new_tokens, seed)
    base = get_base_model()
    ranker = _ranker
    layer = ranker.fingerprint_.layer if ranker is not None else 0.6
    result = sample_candidates(base, prompt, config, layers=layer)
    rows = [[None, c.index + 1, c.text, None, None, c.finish_reason, c.num_tokens, round(c.mean_logprob, 3)] for c in result.candidates]
    ranker_seconds = 0.0
    if ranker is not None:
        start = time.perf_counter()
        scores = ranker.score(*result.features())
        probs = probabilities(ranker, scores)
        ranker_seconds = time.perf_counter() - start
        for row, score, prob in zip(rows, scores.tolist(), probs.tolist()):
            row[3], row[4] = round(score, 3), round(prob, 3)
        rows.sort(key=lambda row: row[3], reverse=True)
    for rank, row in enumerate(rows, start=1):
        row[0] = rank if ranker is not None else None
    status = (
        f"{config.num_candidates} candidates from {base.fingerprint.model_id}: generation {result.generation_seconds:.2f} s "
        f"(features captured at layer {result.layers[0]} during generation), ranker {1000 * ranker_seconds:.1f} ms; {_ranker_note}."
    )
    return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS), status


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Language Ranker") as demo:
        gr.Markdown(
            "# Language Ranker\n"
            "Sample several answers from the base model; a tiny ranker on the model's own hidden states picks the best."
        )
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", placeholder="What is 47 + 38? Answer with just the number.", scale=4, elem_id="prompt")
            n = gr.Slider(1, MAX_CANDIDATES, value=8, step=1, label="N candidates", scale=1)
        with gr.Accordion("Advanced sampling", open=False):
            temperature = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="temperature")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top_p")
            max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="max new tokens")
            seed = gr.Number(value=-1, precision=0, label="seed (-1 = random)")
        run = gr.Button("Generate", variant="primary", elem_id="generate")
        status = gr.Markdown(elem_id="status")
        candidates = gr.Dataframe(headers=CANDIDATE_COLUMNS, label="Candidates", wrap=True, interactive=False, elem_id="candidates")
        inputs = [prompt, n, temperature, top_p, max_new_tokens, seed]
        run.click(generate, inputs, [candidates, status], api_name="generate")
        prompt.submit(generate, inputs, [candidates, status], api_name="generate_on_submit", api_visibility="private")
    # One generation at a time on 2 CPU cores; others wait in a bounded queue instead of starving it.
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo


demo = build_demo()

def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Serve the Language Ranker app.")
    parser.add_argument("--model", help="hub id, local folder or .gguf file (default: $LANGUAGE_RANKER_MODEL, else the embedded model)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args()
    try:
        set_base_model(load_base_model(args.model))  # before serving, so the first user does not wait; loads the ranker too
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), server_port=args.port)


if __name__ == "__main__":
    main()
