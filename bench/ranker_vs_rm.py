"""What does a Language Ranker cost next to the reward-model baselines? (The paper's Tables 2 and 3, on CPU.)

Trains and scores every method on the same data in one run: the same training store (optionally
capped to the first K prompts of every family, the same prompts for every method) and the same
held-out store, evaluated at best-of-N on the same N-subsets (`evaluate_selection` with one n,
draws and seed for all). Methods:

- ListRanker, PointRanker: `ranker.rankers.store_training.train_on_store` on the features at one layer;
- RM (base): the base LLM + LoRA + a scalar head (`ranker.reward.BaseRewardModel`);
- RM (small): all-MiniLM-L6-v2 + a scalar head, fully fine-tuned (`ranker.reward.SmallRewardModel`);
- first sample, majority vote, max mean log-prob, and (on a store with the confidence signals)
  max self-certainty, its Borda vote, DeepConf's selection and votes, oracle: no training (accuracy only).

Per method it reports:
- trainable and loaded parameters. Ranker: its own weights (it reads hidden states the base
  model computed while generating; it runs no forward pass of its own). RM (base): LoRA + head
  trainable, the whole base LLM loaded. RM (small): encoder + head, all trainable;
- train_seconds: wall time of the library's fit with its defaults (fixed epochs, the paper's
  "1 epoch" for the RMs; the rankers' default 10 epochs). Ranker: `train_on_store` (feature
  gathering, training loop, with the library's default score fusion the cross-fitted rankers that
  choose the fusion weights, Platt calibration). RM: `fit` (building the network, for RM (small)
  loading the encoder from disk, and the training loop); loading the base LLM for RM (base) is
  not counted here (it is the generator, already loaded), but is counted in its memory;
- score_seconds_per_prompt: what the method adds on top of generation to score N candidates of
  one prompt. Ranker: `ranker.score(instruction, responses[, mean_logprob, vote_keys])` on features
  (and, for a fused ranker, mean log-probs) already captured during generation, plus extracting the
  answer keys from the texts for a fused ranker: projection + scoring. RM: `rm.score(prompt, candidate_texts)`, its tokenisation and its own
  forward passes over the N (prompt, candidate) texts. After one untimed warm-up per prompt, the
  median over --scoring-repeats repeats x --scoring-prompts held-out prompts (spread over the store);
- peak memory: every method runs in a fresh subprocess (this script with --method). After the
  stores are loaded, the process's peak-RSS counter is reset (/proc/self/clear_refs); rss_increase_mb
  is the peak during training + scoring minus the RSS at that reset (what the method itself added:
  RM (base) includes loading the base LLM), peak_rss_mb that peak itself (the whole process: the
  interpreter, torch, the stores cut to one layer, and the method). The transient peak of loading
  the stores (all their layers) comes before the reset and is only saved in the JSON, as is the
  RSS of an idle interpreter with torch imported (also printed);
- accuracy: held-out best-of-N.

Threads: each method keeps its library default; the rankers train on 1 thread (TrainConfig.num_threads),
the RMs on torch's setting (OMP_NUM_THREADS or all cores), which favours the RMs. Scoring runs on
torch's setting for all. Everything runs on CPU.

Prints the table (markdown) and the machine; the last line gives two ratios against the ListRanker:
    ratios: RM (base) scoring / ranker scoring = 1234x; RM (base) training / ranker training = 567x
Writes --out (CSV, one row per method) and a JSON beside it (machine, arguments, details per method).

The README run (the embedded model's experiment store; about an hour on 2 cores, most of it RM (base):
~20 min of training on 250 prompts, then scoring every held-out candidate for the accuracy):
    PYTHONPATH=. python bench/ranker_vs_rm.py --store data/suite --n 16 --train-prompts-per-family 50
Quick check (a few minutes):
    PYTHONPATH=. python bench/ranker_vs_rm.py --store data/suite-250 --train-prompts-per-family 2 \\
        --test-prompts-per-family 4 --rm-epochs 1 --rm-max-length 64 --scoring-repeats 2 --out /tmp/rvr.csv
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranker.capture.feature_store import FeatureStore  # noqa: E402
from ranker.capture.hidden_states import resolve_layer  # noqa: E402
from ranker.evaluation.methods import FREE_BASELINES, display_order, method_label  # noqa: E402
from ranker.evaluation.selection import evaluate_selection  # noqa: E402
from ranker.reward.reward_config import RewardModelConfig, RewardTrainConfig  # noqa: E402
from ranker.tasks.voting import key_for  # noqa: E402

SCALING_NS = (1, 2, 4, 8, 16, 32)  # the scaling law's N

# Trained methods (names and labels from ranker.evaluation.methods) -> the extra forward pass each needs per candidate.
REUSES_HIDDEN_STATES = "none (reuses generation's hidden states)"
METHODS = {
    "list_ranker": REUSES_HIDDEN_STATES,
    "point_ranker": REUSES_HIDDEN_STATES,
    "list_ranker_hidden": REUSES_HIDDEN_STATES,
    "point_ranker_hidden": REUSES_HIDDEN_STATES,
    "rm_base": "base LLM + LoRA over prompt + candidate",
    "rm_small": "MiniLM encoder over prompt + candidate",
}
RANKERS = ("list_ranker", "point_ranker", "list_ranker_hidden", "point_ranker_hidden")
# No-training baselines (names from ranker.evaluation.selection): accuracy only. The confidence ones
# (self-certainty, DeepConf) need a store built with the signals; with an older store they are left out.
BASELINES = ("first", "majority", *FREE_BASELINES, "oracle")
CSV_COLUMNS = ["method", "trainable_params", "loaded_params", "train_seconds", "score_seconds_per_prompt",
               "peak_rss_mb", "rss_increase_mb", "accuracy", "n", "train_prompts", "test_prompts", "machine"]


# --- memory -------------------------------------------------------------------------------------


def memory_mb() -> tuple[float, float]:
    """(current RSS, peak RSS since start or the last `reset_peak_rss`) of this process, in MB.

    Linux: VmRSS and VmHWM of /proc/self/status. Elsewhere: (nan, ru_maxrss), which cannot be reset.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return math.nan, peak / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS, KB on Linux


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0); False where impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --- data ---------------------------------------------------------------------------------------


def load_stores(args) -> tuple[FeatureStore, FeatureStore, int]:
    """(train, test, layer): both stores cut to the requested prompts and reduced to the ranker's layer."""
    folder = Path(args.store)
    for split in ("train", "test"):
        if not (folder / split / "card.json").is_file():
            raise ValueError(f"{folder / split} is not a feature store; --store must hold train/ and test/ (from `python -m ranker build`)")
    train, test = FeatureStore.load(folder / "train"), FeatureStore.load(folder / "test")
    if not train.model.matches(test.model):
        raise ValueError(f"train and test stores come from different models: {train.model.describe()} and {test.model.describe()}")
    layer = resolve_layer(args.layer, train.model.num_layers)
    for name, store in (("train", train), ("test", test)):
        if layer not in store.layers:
            raise ValueError(f"layer {layer} (fraction {args.layer}) is not in the {name} store; it has layers {list(store.layers)}")
    if not 1 <= args.n <= test.num_candidates:
        raise ValueError(f"--n must be in [1, {test.num_candidates}] for this held-out store, got {args.n}")
    train = train.first_per_family(args.train_prompts_per_family).select_layers([layer])
    test = test.first_per_family(args.test_prompts_per_family).select_layers([layer])
    # Every method scores exactly the candidates best-of-n picks from: the first n of each prompt.
    return train, test.first_candidates(args.n), layer


def scoring_prompts(test: FeatureStore, count: int) -> list[int]:
    """`count` held-out problem indices spread evenly over the store (stores are built family by family)."""
    return sorted(set(np.linspace(0, len(test.problems) - 1, min(count, len(test.problems))).round().astype(int).tolist()))


# --- one method, in its own process ----------------------------------------------------------------


def rm_hyperparams(args) -> dict:
    """The RM hyperparameters given on the command line; the rest keep the library defaults."""
    given = dict(epochs=args.rm_epochs, batch_size=args.rm_batch_size, max_length=args.rm_max_length)
    return {**{k: v for k, v in given.items() if v is not None}, "seed": args.seed, "device": "cpu"}


def fit_method(method: str, train: FeatureStore, layer: int, args, log: Callable[[str], None]):
    """Train one method; returns (fitted model, train seconds, details)."""
    if method in RANKERS:
        from ranker.rankers.store_training import train_on_store

        # *_hidden: the paper's rankers (hidden states only); *_ranker: the library default (fused with the
        # mean log-prob and the vote share)
        hidden_only = args.no_fusion or method.endswith("_hidden")
        fusion = {"fusion": False} if hidden_only else {}
        start = time.perf_counter()
        ranker = train_on_store(train, layer, kind=method.split("_")[0], seed=args.seed, **fusion)
        seconds = time.perf_counter() - start
        result = ranker.train_result_
        return ranker, seconds, {"train_loop_seconds": result.wall_time_s, "steps": result.num_steps,
                                 "first_loss": result.losses[0], "final_loss": result.losses[-1],
                                 "fusion_weights": ranker.fusion_weights}
    from ranker.reward.reward_estimator import BaseRewardModel, SmallRewardModel

    details = {}
    if method == "rm_base":
        from ranker.capture.base_model import load_base_model

        start = time.perf_counter()
        base = load_base_model(args.model, device="cpu")
        details["base_model_load_seconds"] = time.perf_counter() - start
        train.model.check_compatible(base.fingerprint, what="RM (base) on the training store")
        rm = BaseRewardModel(base, **rm_hyperparams(args))
    else:
        rm = SmallRewardModel(**rm_hyperparams(args))
    log(f"training on {len(train.problems)} prompts x N={train.num_candidates} ({rm!r})")
    start = time.perf_counter()
    rm.fit(train)
    seconds = time.perf_counter() - start
    details.update(train_loop_seconds=rm.train_result_.wall_time_s, steps=rm.metrics_["num_steps"],
                   first_loss=rm.metrics_["first_loss"], final_loss=rm.metrics_["final_loss"])
    return rm, seconds, details


def parameter_counts(method: str, model) -> tuple[int, int]:
    """(trainable, loaded) parameters of a fitted method."""
    if method in RANKERS:
        params = list(model.model_.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
    return model.n_trainable_parameters_, model.n_parameters_


def scoring_calls(method: str, model, test: FeatureStore, prompts: list[int], n: int) -> list[Callable[[], torch.Tensor]]:
    """One call per prompt that scores its first n candidates the way the method would at serving time."""
    if method in RANKERS:
        instruction, responses = test.features()  # (P, H), (P, N, H): captured during generation
        mean_logprob = torch.tensor(test.column("mean_logprob"), dtype=torch.float32)  # (P, N): captured too
        texts = test.column("text")
        # A fused ranker (ranker.rankers.fusion) also needs the answer keys: extracting them from the texts is timed.
        fused = model.fused
        return [lambda p=p: model.score(instruction[p], responses[p, :n], mean_logprob[p, :n] if fused else None,
                                        [key_for(test.problems[p].checker, t or "") for t in texts[p][:n]] if fused else None)
                for p in prompts]
    texts = test.column("text")
    calls = []
    for p in prompts:
        candidates = ["" if t is None else str(t) for t in texts[p][:n]]
        calls.append(lambda prompt=test.problems[p].prompt, candidates=candidates: model.score(prompt, candidates))
    return calls


def scoring_timings(calls: list[Callable[[], torch.Tensor]], repeats: int) -> list[float]:
    """Seconds of every call in every repeat, after one untimed warm-up of each call."""
    for call in calls:
        call()
    times = []
    for _ in range(repeats):
        for call in calls:
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return times


def run_method(args) -> None:
    """Child process: train one method, score the held-out store, time one prompt's scoring; write JSON."""
    log = lambda message: print(f"[{args.method}] {message}", file=sys.stderr, flush=True)  # noqa: E731
    if args.method == "idle":  # the reference: an interpreter with torch (and this script's imports) loaded
        current, peak = memory_mb()
        Path(args.result).write_text(json.dumps({"rss_mb": current, "peak_rss_mb": peak}))
        return
    train, test, layer = load_stores(args)
    gc.collect()
    _, data_peak = memory_mb()
    reset = reset_peak_rss()
    rss_start, _ = memory_mb()

    model, train_seconds, details = fit_method(args.method, train, layer, args, log)
    log(f"trained in {train_seconds:.1f} s; scoring {len(test.problems)} held-out prompts x N={test.num_candidates}")
    start = time.perf_counter()
    scores = model.score_store(test)  # rankers and reward models alike: (P, N)
    details["score_store_seconds"] = time.perf_counter() - start
    if args.method in RANKERS:
        from ranker.evaluation.store_scores import subset_scorer

        # A ranker's scores depend on the candidate set (ListRanker, vote share): each drawn subset is
        # scored on its own, so its accuracy is computed here, on the same subsets as in the parent.
        details["accuracy_by_n"] = {n: evaluate_selection(test, {"ranker": subset_scorer(model, test)}, n=n, draws=args.draws,
                                                          seed=args.seed)["ranker"] for n in SCALING_NS if n <= args.n}
    prompts = scoring_prompts(test, args.scoring_prompts)
    times = scoring_timings(scoring_calls(args.method, model, test, prompts, args.n), args.scoring_repeats)
    log(f"scoring one prompt x N={args.n}: median {statistics.median(times) * 1e3:.2f} ms over {len(times)} timings")

    _, method_peak = memory_mb()
    trainable, loaded = parameter_counts(args.method, model)
    result = {
        "method": args.method, "trainable_params": trainable, "loaded_params": loaded, "train_seconds": train_seconds,
        "score_seconds_per_prompt": statistics.median(times), "score_timings": times, "scoring_prompts": prompts,
        "peak_rss_mb": method_peak if reset else max(data_peak, method_peak),
        "rss_increase_mb": method_peak - rss_start if reset else math.nan,
        "rss_after_data_mb": rss_start, "data_load_peak_rss_mb": data_peak, "peak_reset": reset, "torch_threads": torch.get_num_threads(),
        "layer": layer, "scores": scores.tolist(), **details,
    }
    Path(args.result).write_text(json.dumps(result))


# --- the whole benchmark ---------------------------------------------------------------------------


def run_child(argv: list[str], method: str, folder: Path) -> dict:
    """Run this script for one method in a fresh interpreter; returns what it wrote."""
    result = folder / f"{method}.json"
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--method", method, "--result", str(result)]
    done = subprocess.run(command)
    if done.returncode != 0:
        raise ValueError(f"the {method} run failed with exit code {done.returncode}; its messages are above")
    return json.loads(result.read_text())


def machine_info() -> dict:
    return {
        "processor": platform.processor() or platform.machine(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(), "torch": torch.__version__,
    }


def human_count(value: float) -> str:
    if value == 0:
        return "0"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def human_seconds(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.1f} s"


def ratio_text(numerator: float, denominator: float) -> str:
    value = numerator / denominator
    return f"{value:.0f}x" if value >= 10 else f"{value:.1f}x"


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (tabulate, which DataFrame.to_markdown needs, is not a dependency)."""
    rows = [list(frame.columns)] + frame.astype(str).values.tolist()
    widths = [max(len(row[i]) for row in rows) for i in range(len(frame.columns))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def ratios_line(results: dict[str, dict]) -> str:
    """The last line: RM (base) against the ListRanker (RM (small) when RM (base) was skipped)."""
    ranker = results["list_ranker"]
    rm_name = "rm_base" if "rm_base" in results else "rm_small"
    rm, label = results[rm_name], method_label(rm_name)
    line = (f"ratios: {label} scoring / ranker scoring = {ratio_text(rm['score_seconds_per_prompt'], ranker['score_seconds_per_prompt'])}; "
            f"{label} training / ranker training = {ratio_text(rm['train_seconds'], ranker['train_seconds'])}")
    return line if rm_name == "rm_base" else line + " (RM (base) skipped)"


def run_benchmark(args, argv: list[str]) -> None:
    train, test, layer = load_stores(args)  # validates the arguments before any child starts
    methods = [m for m in METHODS if not (m == "rm_base" and args.skip_rm_base)]
    machine = machine_info()
    machine_text = f"{machine['processor']} CPU, {machine['cpu_count']} cores, {machine['torch_threads']} torch threads"
    print(f"data: {args.store}, layer {layer}, train {len(train.problems)} prompts x N={train.num_candidates}, "
          f"held-out {len(test.problems)} prompts, best-of-{args.n}"
          + (f" ({args.draws} draws of {args.n} of {test.num_candidates})" if args.n < test.num_candidates else ""), flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="ranker_vs_rm-") as scratch:
        idle = run_child(argv, "idle", Path(scratch))
        for method in methods:
            started = time.perf_counter()
            results[method] = run_child(argv, method, Path(scratch))
            print(f"{method_label(method)}: done in {time.perf_counter() - started:.0f} s", flush=True)
    scores = {method: torch.tensor(result["scores"]) for method, result in results.items() if "accuracy_by_n" not in result}
    accuracy = evaluate_selection(test, scores, n=args.n, draws=args.draws, seed=args.seed)
    for method, result in results.items():
        if "accuracy_by_n" in result:  # rankers: scored subset by subset in their own process
            accuracy[method] = result["accuracy_by_n"][str(args.n)]

    rows = []
    for method in display_order([*results, *(b for b in BASELINES if b in accuracy)]):
        if method in results:
            result = results[method]
            rows.append({"method": method_label(method), **{k: result[k] for k in CSV_COLUMNS[1:7]},
                         "accuracy": round(accuracy[method], 6)})
        else:
            rows.append({"method": method_label(method), "trainable_params": 0, "loaded_params": 0, "train_seconds": 0.0,
                         "score_seconds_per_prompt": 0.0, "peak_rss_mb": math.nan, "rss_increase_mb": math.nan,
                         "accuracy": round(accuracy[method], 6)})
    frame = pd.DataFrame(rows).assign(n=args.n, train_prompts=len(train.problems), test_prompts=len(test.problems), machine=machine_text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame[CSV_COLUMNS].to_csv(out, index=False)
    summary = {"machine": machine, "arguments": vars(args), "layer": layer, "idle_torch_rss_mb": idle["rss_mb"],
               "accuracy": accuracy, "ratios": ratios_line(results),
               "methods": {m: {k: v for k, v in r.items() if k != "scores"} for m, r in results.items()}}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    # Accuracy vs N for every method on these same candidates: the reward models' lines of the scaling law.
    curve = [{"n": n, "method": method, "seed": args.seed, "accuracy": value}
             for n in [n for n in SCALING_NS if n <= args.n]
             for method, value in evaluate_selection(test, scores, n=n, draws=args.draws, seed=args.seed).items()]
    curve += [{"n": int(n), "method": method, "seed": args.seed, "accuracy": value}
              for method, result in results.items() for n, value in result.get("accuracy_by_n", {}).items()]
    pd.DataFrame(curve).to_csv(out.with_name(out.stem + "_scaling.csv"), index=False)

    extra = {method_label(method): forward for method, forward in METHODS.items()}
    shown = pd.DataFrame({
        "method": frame.method,
        "trainable params": frame.trainable_params.map(human_count),
        "loaded params": [human_count(v) + (" *" if m.startswith(("ListRanker", "PointRanker")) else "") for m, v in zip(frame.method, frame.loaded_params)],
        "extra forward pass": frame.method.map(lambda m: extra.get(m, "none")),
        "train time": frame.train_seconds.map(human_seconds),
        f"scoring time, 1 prompt x N={args.n}": frame.score_seconds_per_prompt.map(human_seconds),
        "peak RSS": frame.peak_rss_mb.map(lambda v: "" if math.isnan(v) else f"{v:.0f} MB"),
        "RSS increase": frame.rss_increase_mb.map(lambda v: "" if math.isnan(v) else f"{v:.0f} MB"),
        f"best-of-{args.n} accuracy": frame.accuracy.map(lambda v: f"{v:.1%}"),
    })
    print()
    print(markdown_table(shown))
    print("\n* plus the base model, which is loaded anyway to generate the candidates; the rankers need no forward pass of it.")
    print(f"peak RSS: a fresh process per method, while it trains and scores; RSS increase: that peak minus the RSS "
          f"after loading the stores (RM (base) includes loading the base LLM). An idle interpreter with torch: {idle['rss_mb']:.0f} MB.")
    weights = {method_label(m): {k: round(v, 3) for k, v in r["fusion_weights"].items()} for m, r in results.items() if "fusion_weights" in r}
    print(f"rankers: {'hidden states only (--no-fusion)' if args.no_fusion else 'library default'}; "
          f"fusion weights {weights} ({{'ranker': 1.0}} = hidden states only)")
    print(f"train: {len(train.problems)} prompts x N={train.num_candidates}; held-out: {len(test.problems)} prompts; "
          f"scoring time: median of {args.scoring_repeats} repeats x {len(scoring_prompts(test, args.scoring_prompts))} prompts")
    print(f"machine: {machine_text}; {machine['platform']}; torch {machine['torch']}; load average at start {machine['load_average']}")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    print(ratios_line(results))


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    defaults = RewardTrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="data/suite", help="folder holding train/ and test/ feature stores (default data/suite)")
    parser.add_argument("--n", type=positive, default=16, help="evaluate best-of-n, and time scoring n candidates (default 16)")
    parser.add_argument("--draws", type=positive, default=5, help="random n-subsets averaged when n is below the held-out store's N")
    parser.add_argument("--layer", type=float, default=0.6, help="ranker layer as a depth fraction (default 0.6)")
    parser.add_argument("--train-prompts-per-family", type=positive, help="use only the first K training prompts of every family")
    parser.add_argument("--test-prompts-per-family", type=positive, help="use only the first K held-out prompts of every family")
    parser.add_argument("--skip-rm-base", action="store_true", help="leave out RM (base), the slow one")
    parser.add_argument("--no-fusion", action="store_true",
                        help="train the paper's hidden-state-only rankers (default: the library's default, which fuses "
                        "the scores with the mean log-prob and the vote share and cross-fits the weights; see ranker.rankers.fusion)")
    parser.add_argument("--rm-epochs", type=positive, help=f"RM epochs (default {defaults.epochs})")
    parser.add_argument("--rm-batch-size", type=positive, help=f"RM examples per step (default {defaults.batch_size})")
    parser.add_argument("--rm-max-length", type=positive, help=f"RM tokens of prompt + candidate (default {RewardModelConfig().max_length})")
    parser.add_argument("--model", help="base model of RM (base); must be the store's (default: $LANGUAGE_RANKER_MODEL, else embedded)")
    parser.add_argument("--seed", type=int, default=0, help="training seeds and the n-subsets (default 0)")
    parser.add_argument("--scoring-repeats", type=positive, default=5, help="timed repeats per scoring prompt (default 5)")
    parser.add_argument("--scoring-prompts", type=positive, default=5, help="held-out prompts whose scoring is timed (default 5)")
    parser.add_argument("--out", default="assets/results/ranker_vs_rm.csv", help="CSV to write; a .json with the details goes beside it")
    parser.add_argument("--method", choices=["idle", *METHODS], help=argparse.SUPPRESS)  # internal: one child process
    parser.add_argument("--result", help=argparse.SUPPRESS)  # internal: where the child writes its JSON
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.method and not args.result:
        raise SystemExit("error: --method is internal (one child run) and needs --result")
    try:
        if args.method:
            run_method(args)
        else:
            run_benchmark(args, argv)
    except ValueError as error:  # bad arguments or data: say what, without a traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
