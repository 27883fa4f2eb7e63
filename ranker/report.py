"""Markdown tables for the README, computed from the results CSVs (never typed by hand)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ranker.plots import METHOD_LABELS

ORDER = ["oracle", "list_ranker", "point_ranker", "max_logprob", "majority", "first", "random"]


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def main_table(main: pd.DataFrame) -> str:
    """Method x family, mean over seeds (and +- std over seeds for the overall column)."""
    means = main.groupby(["method", "family"]).accuracy.mean().unstack()
    spread = main[main.family == "all"].groupby("method").accuracy.std().fillna(0.0)
    families = [f for f in means.columns if f != "all"]
    seeds = main.seed.nunique()
    lines = ["| method | " + " | ".join(families) + f" | all (mean ± std, {seeds} seeds) |",
             "|---" * (len(families) + 2) + "|"]
    for method in [m for m in ORDER if m in means.index]:
        row = [_percent(means.loc[method, f]) for f in families]
        lines.append(f"| {METHOD_LABELS.get(method, method)} | " + " | ".join(row)
                     + f" | {_percent(means.loc[method, 'all'])} ± {_percent(spread.get(method, 0.0))} |")
    return "\n".join(lines)


def timing_table(timing: pd.DataFrame) -> str:
    data = timing.groupby("kind").agg(seconds=("seconds", "median"), parameters=("parameters", "first"),
                                      prompts=("prompts", "first"), candidates=("candidates", "first"))
    lines = ["| ranker | parameters | training data | CPU training time (median) |", "|---|---|---|---|"]
    for kind, row in data.iterrows():
        lines.append(f"| {kind.capitalize()}Ranker | {int(row.parameters):,} | {int(row.prompts)} prompts, "
                     f"{int(row.candidates):,} candidates | {row.seconds:.1f} s |")
    return "\n".join(lines)


def blocks_table(blocks: pd.DataFrame) -> str:
    data = blocks.groupby("blocks").agg(accuracy=("accuracy", "mean"), parameters=("parameters", "first"))
    lines = ["| blocks | parameters | accuracy |", "|---|---|---|"]
    lines += [f"| {b} | {int(r.parameters):,} | {_percent(r.accuracy)} |" for b, r in data.iterrows()]
    return "\n".join(lines)


def robustness_line(robustness: pd.DataFrame) -> str:
    low, high = robustness.accuracy.min(), robustness.accuracy.max()
    return (f"{len(robustness)} settings of optimiser x learning rate x batch size span "
            f"{_percent(low)}-{_percent(high)}% (spread {_percent(high - low)} points).")


def family_table(families: pd.DataFrame) -> str:
    """Per family: the embedded model's per-sample accuracy and oracle@N, train and test pooled."""
    n = int(families.n.iloc[0])
    pooled = families.assign(correct=families.per_sample * families.prompts, solved=families.oracle * families.prompts)
    pooled = pooled.groupby("family", sort=False)[["prompts", "correct", "solved"]].sum()
    lines = [f"| family | prompts | per-sample accuracy | oracle@{n} |", "|---|---|---|---|"]
    for family, row in pooled.iterrows():
        lines.append(f"| {family} | {int(row.prompts)} | {_percent(row.correct / row.prompts)} | {_percent(row.solved / row.prompts)} |")
    return "\n".join(lines)


def report(results_dir: str | Path) -> str:
    results_dir = Path(results_dir)
    parts = []
    for name, render in (("families", family_table), ("main", main_table), ("timing", timing_table), ("blocks", blocks_table), ("robustness", robustness_line)):
        path = results_dir / f"{name}.csv"
        if path.is_file():
            parts.append(f"<!-- {name}.csv -->\n" + render(pd.read_csv(path)))
    return "\n\n".join(parts)
