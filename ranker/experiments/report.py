"""Markdown tables for the README, computed from the results CSVs (never typed by hand)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ranker.evaluation.methods import DEEPCONF_VARIANTS, display_order, method_label


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def main_markdown(main: pd.DataFrame) -> str:
    """Method x family, mean over seeds (and +- std over seeds for the overall column)."""
    means = main.groupby(["method", "family"]).accuracy.mean().unstack()
    spread = main[main.family == "all"].groupby("method").accuracy.std().fillna(0.0)
    families = [f for f in means.columns if f != "all"]
    seeds = main.seed.nunique()
    lines = ["| method | " + " | ".join(families) + f" | all (mean ± std, {seeds} seeds) |",
             "|---" * (len(families) + 2) + "|"]
    for method in display_order(means.index, selectors_only=True):
        row = [_percent(means.loc[method, f]) for f in families]
        lines.append(f"| {method_label(method)} | " + " | ".join(row)
                     + f" | {_percent(means.loc[method, 'all'])} ± {_percent(spread.get(method, 0.0))} |")
    return "\n".join(lines)


def lofo_markdown(lofo: pd.DataFrame, main: pd.DataFrame | None = None) -> str:
    """Leave one family out: method x left-out family (mean over seeds), the mean over families, and
    each family's in-family ListRanker from the main table (trained with the family) for comparison."""
    means = lofo.groupby(["method", "family"]).accuracy.mean().unstack()
    families = list(means.columns)
    prompts = lofo.groupby("family").prompts.first()
    seeds = lofo.seed.nunique()
    lines = ["| method (left-out family: prompts) | " + " | ".join(f"{f}: {int(prompts[f])}" for f in families)
             + f" | mean over families ({seeds} seeds) |", "|---" * (len(families) + 2) + "|"]
    for method in display_order(means.index, selectors_only=True):
        row = [_percent(means.loc[method, f]) for f in families]
        lines.append(f"| {method_label(method)} | " + " | ".join(row) + f" | {_percent(means.loc[method].mean())} |")
    if main is not None:
        in_family = main.groupby(["method", "family"]).accuracy.mean().unstack()
        for method in ("list_ranker", "point_ranker"):
            if method in in_family.index:
                row = [_percent(in_family.loc[method, f]) if f in in_family.columns else "–" for f in families]
                lines.append(f"| {method_label(method)}, in family (main table) | " + " | ".join(row) + " | |")
    return "\n".join(lines)


def lofo_verdict_markdown(lofo: pd.DataFrame) -> str:
    """The generalisation claim, checked: each shipped ranker's margin over max log-prob, max
    self-certainty and DeepConf's best variant (the variant with the best mean), and over the
    log-prob-weighted majority vote when the run has it, averaged over the left-out families, and
    its worst family."""
    means = lofo.groupby(["method", "family"]).accuracy.mean().unstack()
    variants = [v for v in DEEPCONF_VARIANTS if v in means.index]
    if not variants or "max_self_certainty" not in means.index:
        return "(this leave-one-family-out run has no confidence signals: rebuild the store)"
    deepconf = max(variants, key=lambda v: means.loc[v].mean())
    baselines = {"max_logprob": "max mean log-prob", "max_self_certainty": "max self-certainty",
                 deepconf: f"DeepConf's best variant ({method_label(deepconf)})"}
    if "logprob_vote" in means.index:  # not in the claim, but the strongest free selector out of family
        baselines["logprob_vote"] = method_label("logprob_vote")
    lines = ["| ranker | baseline | mean margin (points) | worst family: margin | families lost by > 2 points |",
             "|---|---|---|---|---|"]
    for method in ("list_ranker", "point_ranker"):
        if method not in means.index:
            continue
        for baseline, label in baselines.items():
            margin = means.loc[method] - means.loc[baseline]
            worst = margin.idxmin()
            lost = [f for f in margin.index if margin[f] < -0.02]
            lines.append(f"| {method_label(method)} | {label} | {100 * margin.mean():+.1f} | {worst}: {100 * margin[worst]:+.1f} "
                         f"| {', '.join(lost) or 'none'} |")
    return "\n".join(lines)


def calibration_markdown(calibration: pd.DataFrame) -> str:
    """ECE of P(correct) per setting and ranker: mean, min and max over seeds."""
    ece = calibration.groupby(["setting", "kind", "seed"]).ece.first().groupby(["setting", "kind"]).agg(["mean", "min", "max"])
    settings = {"held_out": "held-out prompts (test store)", "left_out": "left-out families"}
    lines = ["| ranker | prompts | ECE (mean over seeds) | range |", "|---|---|---|---|"]
    for (setting, kind), row in ece.iterrows():
        lines.append(f"| {method_label(kind)} | {settings.get(setting, setting)} | {row['mean']:.3f} | {row['min']:.3f}–{row['max']:.3f} |")
    return "\n".join(lines)


def timing_markdown(timing: pd.DataFrame) -> str:
    data = timing.groupby("kind").agg(seconds=("seconds", "median"), parameters=("parameters", "first"),
                                      prompts=("prompts", "first"), candidates=("candidates", "first"))
    lines = ["| ranker | parameters | training data | CPU training time (median) |", "|---|---|---|---|"]
    for kind, row in data.iterrows():
        lines.append(f"| {kind.capitalize()}Ranker | {int(row.parameters):,} | {int(row.prompts)} prompts, "
                     f"{int(row.candidates):,} candidates | {row.seconds:.1f} s |")
    return "\n".join(lines)


def blocks_markdown(blocks: pd.DataFrame) -> str:
    data = blocks.groupby("blocks").agg(accuracy=("accuracy", "mean"), parameters=("parameters", "first"))
    lines = ["| blocks | parameters | accuracy |", "|---|---|---|"]
    lines += [f"| {b} | {int(r.parameters):,} | {_percent(r.accuracy)} |" for b, r in data.iterrows()]
    return "\n".join(lines)


def robustness_markdown(robustness: pd.DataFrame) -> str:
    low, high = robustness.accuracy.min(), robustness.accuracy.max()
    return (f"{len(robustness)} settings of optimiser x learning rate x batch size span "
            f"{_percent(low)}-{_percent(high)}% (spread {_percent(high - low)} points).")


def family_markdown(families: pd.DataFrame) -> str:
    """Per family: the embedded model's per-sample accuracy (train and test pooled) and oracle@N per split."""
    pooled = families.assign(correct=families.per_sample * families.prompts)
    per_sample = pooled.groupby("family", sort=False)[["prompts", "correct"]].sum()
    splits = list(dict.fromkeys(families.split))
    n = {split: int(families[families.split == split].n.iloc[0]) for split in splits}
    lines = ["| family | prompts | per-sample accuracy | " + " | ".join(f"oracle@{n[s]} ({s})" for s in splits) + " |",
             "|---" * (3 + len(splits)) + "|"]
    for family, row in per_sample.iterrows():
        oracles = [_percent(families[(families.split == s) & (families.family == family)].oracle.iloc[0]) for s in splits]
        lines.append(f"| {family} | {int(row.prompts)} | {_percent(row.correct / row.prompts)} | " + " | ".join(oracles) + " |")
    return "\n".join(lines)


def rm_markdown(bench: pd.DataFrame) -> str:
    """bench/ranker_vs_rm.py's CSV in the shape of the paper's Tables 2 and 3."""
    n = int(bench.n.iloc[0])
    lines = [f"| method | trainable / loaded parameters | CPU training time | scoring time, 1 prompt x N={n} | "
             f"peak RSS (increase) | best-of-{n} accuracy |", "|---|---|---|---|---|---|"]
    for _, r in bench.iterrows():
        if r.trainable_params == 0:
            lines.append(f"| {r.method} | – | – | – | – | {_percent(r.accuracy)} |")
            continue
        seconds = f"{r.train_seconds:.1f} s" if r.train_seconds >= 1 else f"{1000 * r.train_seconds:.0f} ms"
        scoring = f"{r.score_seconds_per_prompt:.2f} s" if r.score_seconds_per_prompt >= 1 else f"{1000 * r.score_seconds_per_prompt:.2f} ms"
        lines.append(f"| {r.method} | {int(r.trainable_params):,} / {int(r.loaded_params):,} | {seconds} | {scoring} | "
                     f"{r.peak_rss_mb:.0f} MB ({r.rss_increase_mb:.0f} MB) | {_percent(r.accuracy)} |")
    return "\n".join(lines)


def report(results_dir: str | Path) -> str:
    results_dir = Path(results_dir)
    parts = []
    for name, render in (("families", family_markdown), ("main", main_markdown), ("timing", timing_markdown), ("blocks", blocks_markdown), ("robustness", robustness_markdown),
                         ("ranker_vs_rm", rm_markdown), ("lofo", lofo_verdict_markdown), ("calibration", calibration_markdown)):
        path = results_dir / f"{name}.csv"
        if path.is_file():
            parts.append(f"<!-- {name}.csv -->\n" + render(pd.read_csv(path)))
        if name == "lofo" and path.is_file():
            main = results_dir / "main.csv"
            parts.append("<!-- lofo.csv, main.csv -->\n" + lofo_markdown(pd.read_csv(path), pd.read_csv(main) if main.is_file() else None))
    return "\n\n".join(parts)
