"""Can anything the base model computes beat max mean log-prob on one family? (Issue 3's arithmetic gap.)

On the suite's arithmetic the shipped rankers land level with max mean log-prob, not 8 points
above it. This script asks whether a different feature or signal would close that gap, using
only the stores already built (no new sampling): every stored candidate of the family is fed
once more through the base model (teacher forcing on its text), which gives

- hidden states pooled three ways at each --layers: `last` (the last token, as the store's
  capture does; a check on the re-run), `answer` (the last token of the answer, the last number
  in the response, `ranker.tasks.checkers.last_number_span`; the last token if it has none) and
  `mean` (the mean over the response's tokens);
- the answer tokens' summed log-prob;
- the log-prob of the bare answer as the whole response ("answer re-scoring": log P(answer | prompt)).

Then, trained on the family's own training prompts and evaluated on its held-out prompts at
N=--n (--seeds seeds x 5 draws of N, each draw scored on its own):
- ListRanker and PointRanker, hidden states only and fused (the library default), on the
  store's own features (`stored`) and on each pooling;
- selection by a signal alone: max mean log-prob, max answer log-prob, answer re-scoring, and
  mean log-prob + w * answer log-prob with w chosen on the training prompts.

Results: a printed table and a tidy CSV (--out).

    .venv/bin/python bench/arithmetic_ceiling.py --store data/suite     # about 15 min on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranker.capture.base_model import load_base_model  # noqa: E402
from ranker.capture.feature_store import FeatureStore  # noqa: E402
from ranker.capture.sampling import encode_prompts, eos_token_ids  # noqa: E402
from ranker.evaluation.selection import evaluate_selection  # noqa: E402
from ranker.evaluation.store_scores import subset_scorer
from ranker.rankers.store_training import train_on_store  # noqa: E402
from ranker.tasks.checkers import last_number_span  # noqa: E402

POOLINGS = ("last", "answer", "mean")
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)  # grid for mean log-prob + w * answer log-prob


@torch.no_grad()
def teacher_force(base, store: FeatureStore, layers: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Re-run every candidate of `store` through the base model.

    Returns pooled hidden states "last" / "answer" / "mean", each (P, N, len(layers), H), and
    per-candidate signals "mean_logprob", "answer_logprob", "answer_rescored", each (P, N).
    """
    eos = eos_token_ids(base)[0]
    tokenizer, model = base.tokenizer, base.model
    texts, finish = store.column("text"), store.column("finish_reason")
    pooled = {name: [] for name in POOLINGS}
    signals = {name: [] for name in ("mean_logprob", "answer_logprob", "answer_rescored")}
    for p, problem in enumerate(store.problems):
        prompt = encode_prompts(base, [problem.prompt])["input_ids"][0].tolist()
        rows, spans = [], []
        for text, reason in zip(texts[p], finish[p]):
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            span = last_number_span(text)
            answer_tokens = [] if span is None else [
                k for k, (a, b) in enumerate(encoded["offset_mapping"]) if a < span[1] and b > span[0]
            ]
            rows.append(encoded["input_ids"] + ([eos] if reason == "eos" else []))
            spans.append(answer_tokens)
        hidden, token_logprobs = _forward(model, prompt, rows, layers)
        for k, (row, answer_tokens) in enumerate(zip(rows, spans)):
            length = len(row)
            states = hidden[k, :, :length]  # (L, T_k, H) over the response's tokens
            answer_at = answer_tokens[-1] if answer_tokens else length - 1
            pooled["last"].append(states[:, length - 1])
            pooled["answer"].append(states[:, answer_at])
            pooled["mean"].append(states.mean(dim=1))
            logprobs = token_logprobs[k, :length]
            signals["mean_logprob"].append(logprobs.mean().item())
            signals["answer_logprob"].append(logprobs[answer_tokens].sum().item() if answer_tokens else float("nan"))
        signals["answer_rescored"].extend(_rescore_answers(model, tokenizer, prompt, texts[p], eos))
    shape = (len(store.problems), store.num_candidates)
    out = {name: torch.stack(values).view(*shape, len(layers), -1) for name, values in pooled.items()}
    out.update({name: torch.tensor(values, dtype=torch.float64).view(shape) for name, values in signals.items()})
    return out


def _forward(model, prompt: list[int], rows: list[list[int]], layers: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """prompt + each row, right-padded, in one pass.

    Returns hidden states over the rows' tokens (B, L, T, H) and each row token's log-prob (B, T).
    """
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), len(prompt) + width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for k, row in enumerate(rows):
        ids[k, : len(prompt) + len(row)] = torch.tensor(prompt + row)
        mask[k, : len(prompt) + len(row)] = 1
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    start = len(prompt)
    hidden = torch.stack([out.hidden_states[layer][:, start:] for layer in layers], dim=1).float()
    logprobs = torch.log_softmax(out.logits[:, start - 1 : -1].float(), dim=-1)
    token_logprobs = logprobs.gather(-1, ids[:, start:, None]).squeeze(-1)
    return hidden, token_logprobs


def _rescore_answers(model, tokenizer, prompt: list[int], texts: list[str], eos: int) -> list[float]:
    """log P(answer, EOS | prompt) for each text's last number as the whole response; NaN without one."""
    answers = {}
    for text in texts:
        span = last_number_span(text)
        if span is not None:
            answers.setdefault(text[span[0] : span[1]], None)
    if answers:
        rows = [tokenizer(a, add_special_tokens=False)["input_ids"] + [eos] for a in answers]
        _, token_logprobs = _forward(model, prompt, rows, (0,))
        for k, (answer, row) in enumerate(zip(list(answers), rows)):
            answers[answer] = token_logprobs[k, : len(row)].sum().item()
    out = []
    for text in texts:
        span = last_number_span(text)
        out.append(float("nan") if span is None else answers[text[span[0] : span[1]]])
    return out


def with_features(store: FeatureStore, responses: torch.Tensor, layers: tuple[int, ...]) -> FeatureStore:
    """The store with `responses` (P, N, L, H) at `layers`; instruction features from the store itself."""
    instruction = torch.stack([store.features(layer)[0] for layer in layers], dim=1)
    return dataclasses.replace(store, instruction=instruction, responses=responses, layers=layers)


def signal_scores(forced: dict[str, torch.Tensor], weight: float) -> torch.Tensor:
    """(P, N) mean log-prob + weight * answer log-prob; candidates without an answer rank last."""
    answer = torch.nan_to_num(forced["answer_logprob"], nan=-1e4)
    return forced["mean_logprob"] + weight * answer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="data/suite", help="folder with train/ and test/ feature stores")
    parser.add_argument("--family", default="arithmetic")
    parser.add_argument("--layers", type=int, nargs="+", default=[18, 30], help="hidden_states indices (18 = the shipped layer)")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="assets/results/arithmetic_ceiling.csv")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    layers = tuple(args.layers)

    started = time.perf_counter()
    stores, forced = {}, {}
    base = load_base_model()
    for split in ("train", "test"):
        store = FeatureStore.load(Path(args.store) / split)
        if store.model != base.fingerprint:
            raise ValueError(f"{args.store}/{split} was built with {store.model.model_id}, not the loaded base model")
        missing = [layer for layer in layers if layer not in store.layers]
        if missing:
            raise ValueError(f"layers {missing} are not in {args.store}/{split} (it has {store.layers})")
        index = [i for i, family in enumerate(store.families) if family == args.family]
        if not index:
            raise ValueError(f"family {args.family!r} is not in {args.store}/{split}")
        stores[split] = store.subset(index)
        forced[split] = teacher_force(base, stores[split], layers)
    forward_seconds = time.perf_counter() - started
    del base
    train, test = stores["train"], stores["test"]
    drift = (forced["test"]["mean_logprob"] - torch.tensor(test.column("mean_logprob"), dtype=torch.float64)).abs()
    print(f"teacher forcing: {forward_seconds:.0f} s; |re-run - stored| mean log-prob: median {drift.median():.4f}, "
          f"max {drift.max():.3f} (texts are re-tokenised, so a few candidates differ)")

    rows = []

    def record(kind: str, pooling: str, layer, fused, seed: int, accuracy: dict) -> None:
        for method, value in accuracy.items():
            rows.append({"kind": kind, "pooling": pooling, "layer": layer, "fused": fused, "seed": seed,
                         "method": method, "accuracy": value})

    # Signals alone. The weight of the answer log-prob is chosen on the training prompts.
    best_weight = max(WEIGHTS, key=lambda w: evaluate_selection(
        train, {"s": signal_scores(forced["train"], w)}, n=args.n, draws=5, seed=0)["s"])
    for seed in range(args.seeds):
        signals = {
            "answer_logprob": torch.nan_to_num(forced["test"]["answer_logprob"], nan=-1e4),
            "answer_rescored": torch.nan_to_num(forced["test"]["answer_rescored"], nan=-1e4),
            f"mean_logprob+{best_weight}*answer_logprob": signal_scores(forced["test"], best_weight),
        }
        record("signal", "", "", "", seed, evaluate_selection(test, signals, n=args.n, draws=5, seed=seed))

    # Rankers on each feature variant.
    variants = {"stored": (train, test)}
    for pooling in POOLINGS:
        variants[pooling] = (with_features(train, forced["train"][pooling], layers),
                             with_features(test, forced["test"][pooling], layers))
    for (pooling, (tr, te)), layer, kind, fused in (
        (v, layer, kind, fused) for v in variants.items() for layer in layers
        for kind in ("list", "point") for fused in (True, False)
    ):
        for seed in range(args.seeds):
            fitted = train_on_store(tr, layer, kind=kind, seed=seed, fusion=fused)
            accuracy = evaluate_selection(te, {"ranker": subset_scorer(fitted, te)}, n=args.n, draws=5, seed=seed)
            record(kind, pooling, layer, fused, seed, {"ranker": accuracy["ranker"]})
        print(f"  {pooling:6s} layer {layer} {kind:5s} {'fused ' if fused else 'hidden'}: "
              f"{np.mean([r['accuracy'] for r in rows[-args.seeds:]]):.3f}", flush=True)

    table = pd.DataFrame(rows)
    table["family"], table["n"], table["train_prompts"], table["test_prompts"] = (
        args.family, args.n, len(train.problems), len(test.problems))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    summary = table.groupby(["kind", "pooling", "layer", "fused", "method"], dropna=False)["accuracy"].mean()
    print(f"\n{args.family}: best-of-{args.n} on {len(test.problems)} held-out prompts, "
          f"trained on {len(train.problems)}, mean of {args.seeds} seeds x 5 draws")
    print((100 * summary).round(1).to_string())
    print(f"\nwrote {args.out} ({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
