"""Command line: `python -m ranker VERB ...`; `python -m ranker VERB --help` explains each verb.

- build: sample N candidates per prompt, label them with the checker, store their features;
- train: train a ListRanker or PointRanker on a feature store;
- eval:  compare rankers with the baselines on held-out candidates (a store, or your JSONL file);
- experiment: the paper's analyses (scaling law, layer and block ablations, transfer, robustness, timing).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

DEFAULT_FAMILIES = ("arithmetic,word_problem,function_call,code,comparison,unit_conversion,table_lookup,counting,list_position,weekday,"
                    "phrased_arithmetic")
# Families that the embedded SmolLM2-135M-Instruct sometimes gets right at their default
# difficulty (calibration: see the README's results section). function_call and unit_conversion
# never did there, so they add no positive example to train on and no room for ranking.
EXPERIMENT_FAMILIES = "arithmetic,word_problem,code,comparison,table_lookup,counting,list_position,weekday,phrased_arithmetic"
REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_layers(text: str) -> list[int | float]:
    """"0.6" -> [0.6]; "18" -> [18]; "0.1,0.5,1.0" -> fractions; ints are indices."""
    values: list[int | float] = []
    for item in text.split(","):
        item = item.strip()
        try:
            values.append(float(item) if "." in item else int(item))
        except ValueError:
            raise argparse.ArgumentTypeError(f"layers must be ints (indices) or decimals (fractions), got {item!r}") from None
    return values


def print_progress(label: str):
    """A progress callback (done, total) that prints elapsed and remaining time to stderr.

    `report.shown` is the last (done, total) printed (None before the first), so that a caller
    can end an unfinished line.
    """
    start = time.perf_counter()

    def report(done: int, total: int) -> None:
        report.shown = (done, total)
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (total - done) if done else 0.0
        print(f"\r{label}: {done}/{total} prompts, {elapsed:.0f} s elapsed, ~{eta:.0f} s left", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)

    report.shown = None
    return report


# --- build ------------------------------------------------------------------------------------


def parse_benchmark(text: str) -> tuple[str, str | None]:
    """"gsm8k" -> ("gsm8k", None), None meaning the benchmark's default split; "mbpp:train" -> ("mbpp", "train")."""
    from ranker.tasks import BENCHMARKS

    name, _, split_name = text.partition(":")
    if name not in BENCHMARKS:
        raise argparse.ArgumentTypeError(f"unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}, "
                                         "optionally with :SPLIT (e.g. gsm8k:train)")
    return name, split_name or None


def load_problems(args) -> tuple[list, list]:
    """(train, test) problems from --tasks-file, --benchmark or the --tasks families."""
    from ranker.tasks import (
        VERIFIABLE_CHECKERS,
        load_benchmark,
        load_tasks_file,
        split,
        split_problems,
    )

    benchmark = getattr(args, "benchmark", None)
    if args.tasks_file or benchmark:
        if args.tasks_file:
            problems = load_tasks_file(args.tasks_file)
        else:
            name, split_name = benchmark
            # The whole split, so that split_problems draws a random sample (the first rows of
            # MATH are all algebra, for example).
            problems = load_benchmark(name, split=split_name, data_files=args.benchmark_file)
            if not problems:
                raise ValueError(f"benchmark {name!r} gave no problems")
            unlabelled = sorted({p.checker for p in problems} - set(VERIFIABLE_CHECKERS))
            if unlabelled:
                raise ValueError(f"benchmark {name!r} has no automatic checker (checker {unlabelled}), so build cannot "
                                 "label its candidates; use it with preference or real-valued labels instead")
        n_test = min(args.n_test, len(problems))
        n_train = min(args.n_train, len(problems) - n_test)
        data = split_problems(problems, n_train, n_test, seed=args.seed)
        return data.train, data.test
    train, test = [], []
    for name in [n.strip() for n in args.tasks.split(",") if n.strip()]:
        data = split(name, args.n_train, args.n_test, seed=args.seed)
        train += data.train
        test += data.test
    return train, test


def cmd_build(args) -> None:
    """Build OUT/train and OUT/test through chunk folders, with every process of the job (see distributed_build)."""
    from ranker.capture.distributed_build import (
        load_rank_base_model,
        merge_when_complete,
        plan_parts,
        process_state,
        write_parts,
    )
    from ranker.capture.feature_store import FeatureStore
    from ranker.capture.sampling import SamplingConfig

    train, test = load_problems(args)
    sampling = SamplingConfig(
        num_candidates=args.n, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, seed=args.seed,
    ).validate()
    test_n = args.n if getattr(args, "test_n", None) is None else args.test_n
    if test_n < 1:
        raise ValueError(f"--test-n must be at least 1, got {test_n}")
    if args.prompts_per_call < 1:
        raise ValueError(f"--prompts-per-call must be at least 1, got {args.prompts_per_call}")
    state = process_state()
    base = load_rank_base_model(args.model, state)
    out = Path(args.out)
    where = f" on {state.num_processes} processes" if state.num_processes > 1 else ""
    jobs = []
    for name, problems, offset, n in (("train", train, 0, args.n), ("test", test, 1_000_000, test_n)):
        if not problems:
            continue
        # Different seeds for the two splits, so they share no sampling stream.
        config = SamplingConfig(**{**sampling.to_dict(), "seed": sampling.seed + offset, "num_candidates": n})
        # Keep the rows per generate call about constant when the held-out N differs.
        per_chunk = max(1, args.prompts_per_call * args.n // n)
        jobs.append((name, plan_parts(base, problems, config, args.layers, out / name, prompts_per_chunk=per_chunk, state=state)))
    state.wait_for_everyone()  # the one meeting: no chunk is written before every process has listed its own
    # Every process writes its chunks of both splits before the main process waits for the
    # others' chunks, so no process idles between the splits.
    for name, job in jobs:
        progress = print_progress(f"build {name}{where}") if state.is_main_process else None
        write_parts(base, job, progress)
        if progress and progress.shown and progress.shown[0] < progress.shown[1]:
            print(file=sys.stderr)  # end the line: the other processes finish the rest
    for name, job in jobs:
        if merge_when_complete(job, state=state) is None:
            continue  # not the main process: the main process merges and reports
        store = FeatureStore.load(job.out)
        labels = store.labels()
        print(f"{name}: {job.plan.num_problems} prompts x N={store.num_candidates} -> {job.out} "
              f"(per-sample accuracy {labels.mean():.1%}, oracle@{store.num_candidates} {labels.max(dim=1).values.mean():.1%}, "
              f"layers {list(store.layers)}, {store.info['build_seconds']:.0f} s of sampling{where})")
        print(store.family_summary().to_string(float_format=lambda v: f"{v:.1%}"))


def add_build(sub) -> None:
    parser = sub.add_parser(
        "build",
        help="sample N candidates per prompt, label them with the checker, and store their features",
        description="Sample N candidates for every prompt of a task set with the base model, capture the "
        "ranking features during generation, label each candidate with the task's checker, and write "
        "OUT/train and OUT/test feature stores. Runs as one process, or under torchrun (CPUs) or "
        "`accelerate launch --multi_gpu` (GPUs, nodes) with the prompts' chunks spread over the processes; "
        "the store is the same for any number of processes. Chunks are written to OUT/<split>.parts/ "
        "as they finish, so a rerun of the same command after a crash resumes where it stopped.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tasks", default=DEFAULT_FAMILIES, help=f"comma-separated task families (default: {DEFAULT_FAMILIES})")
    source.add_argument("--tasks-file", help="a JSONL file of your own problems: {prompt, answer, checker[, tests]} per line")
    source.add_argument("--benchmark", type=parse_benchmark, metavar="NAME[:SPLIT]",
                        help="a real benchmark through `datasets`: math, gsm8k, mbpp or xlam (dolly has no checker), "
                        "default split test (xlam: train)")
    parser.add_argument("--benchmark-file", help="with --benchmark: a local json/jsonl/parquet/csv file in the dataset's "
                        "own columns, read instead of the Hugging Face Hub (for offline use)")
    parser.add_argument("--n-train", type=int, default=200, help="training prompts per family, or from the file or benchmark (default 200)")
    parser.add_argument("--n-test", type=int, default=100, help="held-out prompts per family, or from the file or benchmark (default 100)")
    parser.add_argument("--n", type=int, default=16, help="candidates per prompt (default 16)")
    parser.add_argument("--test-n", type=int, help="candidates per held-out prompt (default: --n); more lets the scaling law go further")
    parser.add_argument("--layers", type=parse_layers, default=[0.6], help="layer indices or depth fractions, comma-separated (default 0.6)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prompts-per-call", type=int, default=8, help="prompts per generate call: one chunk, the unit that is sampled "
                        "with its own seed, spread over processes and resumed (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="base model: hub id, folder or .gguf (default: $LANGUAGE_RANKER_MODEL, else embedded)")
    parser.add_argument("--out", required=True, help="output folder; OUT/train and OUT/test are written (on a file "
                        "system that every node sees, for a multi-node build)")
    parser.set_defaults(func=cmd_build)


# --- train ------------------------------------------------------------------------------------


def fusion_text(weights: dict[str, float]) -> str:
    """E.g. "1.2 x ranker + 0.8 x mean_logprob + 3.1 x vote_share"."""
    return " + ".join(f"{value:.3g} x {name}" for name, value in weights.items())


def cmd_train(args) -> None:
    from ranker.capture.feature_store import FeatureStore
    from ranker.evaluation.selection import evaluate_selection
    from ranker.evaluation.store_scores import correctness_metrics, subset_scorer
    from ranker.rankers.store_training import train_on_store

    store = FeatureStore.load(args.store)
    val_store = FeatureStore.load(args.val_store) if args.val_store else None
    layer = store.layers[0] if args.layer is None else args.layer
    hyperparams = {k: v for k, v in dict(
        num_blocks=args.blocks, projection_dim=args.projection_dim, use_instruction=not args.no_instruction,
        epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, batch_size=args.batch_size, seed=args.seed,
        fusion=False if args.no_fusion else None,
    ).items() if v is not None}
    ranker = train_on_store(store, layer, kind=args.kind, val_store=val_store, **hyperparams)
    params = sum(p.numel() for p in ranker.model_.parameters())
    message = (f"trained {args.kind} ranker: {params:,} parameters, layer {layer}, "
               f"{len(store.problems)} prompts x N={store.num_candidates}, {ranker.fit_seconds_:.1f} s on CPU"
               + (f", fused: {fusion_text(ranker.fusion_weights)}" if ranker.fused else "")
               + (f" (pooled over {ranker.fusion.num_clusters} instruction clusters)" if ranker.fusion.num_clusters > 1 else ""))
    if val_store is not None:
        scores = ranker.score_store(val_store)
        accuracy = evaluate_selection(val_store, {"ranker": subset_scorer(ranker, val_store)})
        quality = correctness_metrics(ranker.probability_store(val_store, scores=scores), scores, val_store.labels())
        ranker.record_metrics(val_accuracy=accuracy, val_auroc=quality["auroc"], val_ece=quality["ece"])
        message += (f"; held-out best-of-{val_store.num_candidates} {accuracy['ranker']:.1%} (first sample "
                    f"{accuracy['first']:.1%}, oracle {accuracy['oracle']:.1%}), AUROC {quality['auroc']:.3f}")
    save_and_report(ranker, args.out, message)


def save_and_report(model, out: str, message: str) -> None:
    """Save a fitted ranker or reward model to `out`, then print what was trained and where it went."""
    model.save(out)
    print(message)
    print(f"saved to {out}")


def add_train(sub) -> None:
    parser = sub.add_parser("train", help="train a ListRanker or PointRanker on a feature store",
                            description="Train a ranker on a feature store built by `build`; save it as safetensors "
                            "plus a JSON card (config, base-model fingerprint, layer, data summary, metrics).")
    parser.add_argument("--store", required=True, help="training feature store (e.g. OUT/train from build)")
    parser.add_argument("--val-store", help="held-out store, for validation during training and the reported metrics")
    parser.add_argument("--kind", choices=["list", "point"], default="list")
    parser.add_argument("--layer", type=int, help="hidden_states index to train on (default: the store's first layer)")
    parser.add_argument("--blocks", type=int, help="transformer blocks (list) or MLP blocks (point); default 1")
    parser.add_argument("--projection-dim", type=int, help="projection width (default 64)")
    parser.add_argument("--no-instruction", action="store_true", help="ablation: ignore the instruction feature")
    parser.add_argument("--no-fusion", action="store_true",
                        help="hidden states only: do not fuse scores with the candidates' mean log-prob and vote share "
                        "(the paper's ranker)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--optimizer", choices=["adamw", "sgd"])
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.set_defaults(func=cmd_train)


# --- eval -------------------------------------------------------------------------------------


def load_rankers(paths: list[str] | None, model) -> dict:
    """Named rankers, each checked against the base model (a ModelFingerprint) at its own layer.

    Rankers named with --ranker must match (ValueError otherwise). The shipped rankers are used
    only when they were trained on this model; otherwise they are skipped with a note.
    """
    from ranker.rankers.shipped import existing_shipped, load_compatible, load_for_model

    if paths:
        return {Path(path).name: load_for_model(path, model) for path in paths}
    rankers, skipped = load_compatible(existing_shipped(), model)
    for name, reason in skipped.items():
        print(f"note: skipping the shipped {name}: {reason}", file=sys.stderr)
    return rankers


def load_reward_models(paths: list[str] | None, store, model_name: str | None) -> dict:
    """Named reward models from --rm folders; RM (base) needs the store's own base model."""
    from ranker.reward.reward_card import read_reward_card
    from ranker.reward.reward_estimator import BaseRewardModel, SmallRewardModel

    models, base = {}, None
    for path in paths or []:
        name = f"rm_{read_reward_card(path).model_config.kind}:{Path(path).name}"
        if read_reward_card(path).model_config.kind == "base":
            if base is None:
                from ranker.capture.base_model import load_base_model

                base = load_base_model(model_name)
            models[name] = BaseRewardModel.load(path, base)  # refuses another base model, naming both
        else:
            models[name] = SmallRewardModel.load(path)
    return models


def format_table(result: dict, n: int, prompts: int) -> str:
    import pandas as pd

    from ranker.evaluation.methods import display_order

    accuracy = result["accuracy"]
    rows = []
    for name in display_order(accuracy):
        quality = result["correctness"].get(name, {})
        rows.append({"method": name, "accuracy": f"{accuracy[name]:.1%}",
                     "AUROC": f"{quality['auroc']:.3f}" if quality else "",
                     "ECE": f"{quality['ece']:.3f}" if quality else ""})
    return f"best-of-{n} on {prompts} held-out prompts\n" + pd.DataFrame(rows).to_string(index=False)


def beam_accuracy(store, args) -> float:
    """Accuracy of the top beam (width --beam) on the store's prompts, with the store's own model."""
    from ranker.capture.base_model import load_base_model
    from ranker.capture.beam_search import beam_search
    from ranker.tasks import check

    base = load_base_model(args.model)
    store.model.check_compatible(base.fingerprint, what="beam search on this store (--beam)")
    texts = beam_search(base, [p.prompt for p in store.problems], num_beams=args.beam, max_new_tokens=store.sampling.max_new_tokens)
    return sum(check(problem, text) for problem, text in zip(store.problems, texts)) / len(texts)


def cmd_eval(args) -> None:
    from ranker.capture.feature_store import FeatureStore
    from ranker.evaluation.store_scores import evaluate_store

    if args.tasks_file:
        from ranker.capture.base_model import load_base_model
        from ranker.capture.sampling import SamplingConfig
        from ranker.capture.store_builder import build_store
        from ranker.tasks import load_tasks_file

        problems = load_tasks_file(args.tasks_file)
        config = SamplingConfig(num_candidates=args.n or 16, max_new_tokens=args.max_new_tokens, seed=args.seed).validate()
        base = load_base_model(args.model)
        rankers = load_rankers(args.ranker, base.fingerprint)
        # Record exactly the layers the rankers read (the paper's 0.6 when there is no ranker).
        layers = [ranker.fingerprint_.layer for ranker in rankers.values()] or [0.6]
        store = build_store(base, problems, config, layers, progress=print_progress("sample"))
    elif args.store:
        store = FeatureStore.load(args.store)
        rankers = load_rankers(args.ranker, store.model)
    else:
        raise ValueError("give --store (a built test store) or --tasks-file (a JSONL file to sample and evaluate)")
    n = args.n or store.num_candidates
    reward_models = load_reward_models(args.rm, store, args.model)
    if not rankers:
        print("note: no ranker given and no shipped default ranker found; evaluating the baselines only", file=sys.stderr)
    result = evaluate_store(store, rankers, n=n, draws=args.draws, seed=args.seed, reward_models=reward_models)
    if args.beam:
        result["accuracy"]["beam_search"] = beam_accuracy(store, args)
    print(format_table(result, n, len(store.problems)))
    if args.json:
        summary = {name: (None if math.isnan(v) else round(v, 4)) for name, v in result["accuracy"].items()}
        summary.update(n=n, prompts=len(store.problems))
        print(json.dumps(summary))


def add_eval(sub) -> None:
    parser = sub.add_parser("eval", help="compare rankers with the training-free selectors (max log-prob, self-certainty, "
                            "DeepConf, majority vote, ...) and the oracle",
                            description="Best-of-N accuracy of every method on the same held-out candidates: the rankers, "
                            "their confidence-weighted majority votes, reward models (--rm), max mean log-prob, max "
                            "self-certainty and its Borda vote (Kang et al. 2025), DeepConf's lowest-group-confidence "
                            "selection and its weighted and filtered votes (Fu et al. 2025), majority vote, first, random "
                            "and the oracle; with AUROC and ECE of each ranker's scores as a correctness predictor. "
                            "With --json the last line is one JSON object {method: accuracy, ..., n, prompts}.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--store", help="a held-out feature store (OUT/test from build)")
    source.add_argument("--tasks-file", help="a JSONL file of your own problems: sampled now, then evaluated")
    parser.add_argument("--ranker", action="append", help="ranker checkpoint folder (repeatable; default: the shipped rankers)")
    parser.add_argument("--n", type=int, default=None, help="candidates per prompt (default: all in the store; 16 when sampling)")
    parser.add_argument("--draws", type=int, default=5, help="random N-subsets averaged when N is below the store's")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="base model for --tasks-file (default: $LANGUAGE_RANKER_MODEL, else embedded)")
    parser.add_argument("--rm", action="append", help="reward model folder (ranker.reward; repeatable), scored on the same candidates")
    parser.add_argument("--beam", type=int, default=0, help="also run beam search of this width with the base model (slow)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(func=cmd_eval)


EXPERIMENTS = ("families", "main", "scaling", "lofo", "layers", "blocks", "transfer", "robustness", "timing", "ship")
ABLATION_LAYERS = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0"


def cmd_experiment(args) -> None:
    import pandas as pd

    from ranker.capture.feature_store import FeatureStore
    from ranker.capture.hidden_states import resolve_layer
    from ranker.experiments import runners as experiments

    store_dir = Path(args.store)
    if not (store_dir / "train" / "card.json").is_file() or not (store_dir / "test" / "card.json").is_file():
        print(f"no feature stores in {store_dir}: building them first", file=sys.stderr)
        build_args = argparse.Namespace(
            tasks=args.tasks, tasks_file=None, benchmark=None, benchmark_file=None, n_train=args.n_train, n_test=args.n_test, n=args.n, test_n=args.test_n,
            layers=parse_layers(ABLATION_LAYERS), temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens,
            prompts_per_call=max(1, 128 // args.n), seed=0, model=args.model, out=str(store_dir),
        )
        cmd_build(build_args)
    train, test = FeatureStore.load(store_dir / "train"), FeatureStore.load(store_dir / "test")
    layer = resolve_layer(args.layer, train.model.num_layers)
    if layer not in train.layers:
        raise ValueError(f"layer {layer} is not in the store (it has {list(train.layers)}); rebuild with it in --layers")
    seeds = args.seeds
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    which = EXPERIMENTS if args.which == "all" else tuple(args.which.split(","))
    unknown = set(which) - set(EXPERIMENTS)
    if unknown:
        raise ValueError(f"unknown experiments {sorted(unknown)}; choose from {', '.join(EXPERIMENTS)} or all")
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    runs = {
        "families": lambda: experiments.family_table(train, test),
        "main": lambda: experiments.main_table(train, test, layer, seeds, log, shipped=shipped_rankers(test, log) if args.shipped else None),
        "scaling": lambda: experiments.scaling_law(train, test, layer, seeds, log=log),
        "lofo": lambda: experiments.leave_one_family_out(train, test, layer, seeds, log=log, kinds=args.lofo_kinds.split(",")),
        "layers": lambda: experiments.layer_ablation(train, test, seeds, log=log),
        "blocks": lambda: experiments.block_ablation(train, test, layer, seeds, log=log),
        "transfer": lambda: experiments.transfer(train, test, layer, seeds[:1], log),
        "robustness": lambda: experiments.robustness(train, test, layer, log=log),
        "timing": lambda: experiments.training_time(train, layer, log=log),
        "ship": lambda: experiments.ship_default_rankers(train, test, layer, REPO_ROOT / "assets" / "rankers", log),
    }
    for name in which:
        start = time.perf_counter()
        result = runs[name]()
        tables = result if isinstance(result, dict) else {name: result}  # an experiment may write several files
        for table, rows in tables.items():
            frame = pd.DataFrame(rows)
            frame.to_csv(out / f"{table}.csv", index=False)
            print(f"{name}: {len(frame)} rows -> {out / table}.csv ({time.perf_counter() - start:.0f} s)")
        if name == "main":
            table = frame[frame.family == "all"].groupby("method").accuracy.agg(["mean", "std"]).sort_values("mean", ascending=False)
            print(table.to_string(float_format=lambda v: f"{v:.1%}"))
        if name == "timing":
            seconds = frame.groupby("kind").seconds.median()
            print("ranker training time on CPU (median): " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))


def shipped_rankers(store, log) -> dict:
    """The shipped rankers that can score `store`: trained on its base model, at a layer it recorded."""
    from ranker.rankers.shipped import existing_shipped, load_compatible

    rankers, skipped = load_compatible(existing_shipped(), store.model)
    for name, ranker in list(rankers.items()):
        if ranker.fingerprint_.layer not in store.layers:
            skipped[name] = f"it reads layer {ranker.fingerprint_.layer}, which the store did not record {list(store.layers)}"
            del rankers[name]
    for name, reason in skipped.items():
        log(f"note: the main table leaves out the shipped {name}: {reason}")
    return rankers


def parse_seeds(text: str) -> list[int]:
    """"3" -> [0, 1, 2]; "2,5" -> [2, 5]."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be a count or a comma-separated list of integers, got {text!r}") from None
    if "," not in text:
        if len(values) != 1 or values[0] < 1:
            raise argparse.ArgumentTypeError(f"a seed count must be at least 1, got {text!r}")
        return list(range(values[0]))
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"seeds must be distinct non-negative integers, got {text!r}")
    return values


def parse_layer(text: str) -> int | float:
    """One layer: "18" -> index 18, "0.6" -> fraction of depth 0.6."""
    values = parse_layers(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"one layer expected (an index or a fraction), got {text!r}")
    return values[0]


def add_experiment(sub) -> None:
    parser = sub.add_parser("experiment", help="reproduce the paper's analyses and write tidy results files",
                            description="Run the scaling law, layer and block ablations, cross-task transfer, "
                            "hyperparameter robustness and training time on STORE/train and STORE/test, and train the shipped "
                            "default rankers into assets/rankers "
                            "(built first if missing, with layers " + ABLATION_LAYERS + "). Writes one CSV "
                            "per experiment under --out.")
    parser.add_argument("--store", default="data/suite", help="folder holding train/ and test/ feature stores")
    parser.add_argument("--out", default="assets/results", help="where the CSV files go (default assets/results)")
    parser.add_argument("--which", default="all", help=f"comma-separated subset of {', '.join(EXPERIMENTS)} (default all)")
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2],
                        help="training seeds per setting: a count (3 = seeds 0, 1, 2, the default) or a comma-separated "
                        "list (2,3: to split one experiment's seeds over several runs)")
    parser.add_argument("--lofo-kinds", default="list,point", choices=["list,point", "list", "point"],
                        help="the shipped rankers that leave-one-family-out trains (one fit each per family and seed)")
    parser.add_argument("--layer", type=parse_layer, default=0.6,
                        help="main layer: a hidden_states index (18) or a depth fraction (0.6, the default)")
    parser.add_argument("--shipped", action="store_true",
                        help="main table: also score the shipped rankers (assets/rankers) on the same draws, "
                        "when they were trained on the store's base model at a layer it recorded")
    parser.add_argument("--tasks", default=EXPERIMENT_FAMILIES, help=f"families for the build, when it is needed (default {EXPERIMENT_FAMILIES})")
    parser.add_argument("--n-train", type=int, default=120, help="training prompts per family for the build (default 120)")
    parser.add_argument("--n-test", type=int, default=30, help="held-out prompts per family for the build (default 30)")
    parser.add_argument("--n", type=int, default=16, help="candidates per training prompt for the build (default 16)")
    parser.add_argument("--test-n", type=int, default=32, help="candidates per held-out prompt for the build (default 32, for the scaling law)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--model", help="base model for the build (default: $LANGUAGE_RANKER_MODEL, else embedded)")
    parser.set_defaults(func=cmd_experiment)


def require_results(found, results_dir):
    """`found` (figures or report text made from the results CSVs), or a ValueError when there were none."""
    if not found:
        raise ValueError(f"no results files in {results_dir}; run `python -m ranker experiment` first")
    return found


def cmd_plots(args) -> None:
    from ranker.experiments.plots import load_figures, save_pngs

    for path in save_pngs(require_results(load_figures(args.results), args.results), args.out):
        print(f"wrote {path}")


def add_plots(sub) -> None:
    parser = sub.add_parser("plots", help="render the experiment results as PNG figures (for the README)",
                            description="Render scaling, layer, block and transfer figures from the results CSVs. "
                            "Needs kaleido and a Chromium (Debian's chromium is found automatically).")
    parser.add_argument("--results", default="assets/results")
    parser.add_argument("--out", default="assets/plots")
    parser.set_defaults(func=cmd_plots)


def cmd_report(args) -> None:
    from ranker.experiments.report import report

    print(require_results(report(args.results), args.results))


def add_report(sub) -> None:
    parser = sub.add_parser("report", help="print the README's markdown tables from the results files")
    parser.add_argument("--results", default="assets/results")
    parser.set_defaults(func=cmd_report)


def cmd_train_rm(args) -> None:
    from ranker.capture.feature_store import FeatureStore
    from ranker.evaluation.selection import evaluate_selection
    from ranker.reward.reward_estimator import BaseRewardModel, SmallRewardModel

    store = FeatureStore.load(args.store)
    hyperparams = {k: v for k, v in dict(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                         max_length=args.max_length).items() if v is not None}
    if args.kind == "base":
        from ranker.capture.base_model import load_base_model

        base = load_base_model(args.model)
        store.model.check_compatible(base.fingerprint, what=f"RM (base) on the store {args.store}")
        rm = BaseRewardModel(base, **hyperparams)
    else:
        rm = SmallRewardModel(**({"encoder": args.encoder} if args.encoder else {}), **hyperparams)
    rm.fit(store, progress="tqdm")
    message = (f"trained RM ({args.kind}): {rm.n_trainable_parameters_:,} trainable of {rm.n_parameters_:,} loaded parameters, "
               f"{rm.train_result_.wall_time_s:.1f} s on {len(store.problems)} prompts x N={store.num_candidates}")
    if args.val_store:
        val = FeatureStore.load(args.val_store)
        accuracy = evaluate_selection(val, {"rm": rm.score_store(val)})
        rm.record_metrics(val_accuracy=accuracy)
        message += f"; held-out best-of-{val.num_candidates} {accuracy['rm']:.1%} (first sample {accuracy['first']:.1%})"
    save_and_report(rm, args.out, message)


def add_train_rm(sub) -> None:
    parser = sub.add_parser("train-rm", help="train a reward-model baseline (RM base: LoRA on the base LLM; RM small: an encoder)",
                            description="Train the paper's reward-model baselines on the same store (prompts, candidate "
                            "texts, labels) as the rankers, and save them with a card (config, base fingerprint, metrics).")
    parser.add_argument("--store", required=True)
    parser.add_argument("--val-store")
    parser.add_argument("--kind", choices=["base", "small"], required=True)
    parser.add_argument("--encoder", help="RM small: encoder id or folder (default: the shipped all-MiniLM-L6-v2)")
    parser.add_argument("--model", help="RM base: the base model (default: $LANGUAGE_RANKER_MODEL, else embedded)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", required=True)
    parser.set_defaults(func=cmd_train_rm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ranker" if Path(sys.argv[0]).name == "__main__.py" else "language-ranker",
        description="Language Ranker: rank sampled LLM answers with a tiny ranker on the base model's own hidden states.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    add_build(sub)
    add_train(sub)
    add_train_rm(sub)
    add_eval(sub)
    add_experiment(sub)
    add_plots(sub)
    add_report(sub)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # `torchrun ... -m ranker -- build --n 8`: the `--` keeps torchrun from reading --n
        argv = argv[1:]
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
