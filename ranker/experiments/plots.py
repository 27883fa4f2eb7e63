"""Plotly figures of the experiment results (the CSV files under assets/results).

The same builders serve the app's plots tab and the static images in the README
(`python -m ranker plots`, which needs kaleido and a Chromium for PNG export).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from ranker.evaluation.methods import display_order, method_label


def _mean_std(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return frame.groupby(by, sort=True).accuracy.agg(["mean", "std"]).fillna(0.0).reset_index()


def scaling_figure(scaling: pd.DataFrame) -> go.Figure:
    """Accuracy vs number of candidates N, one line per method (mean +- std over seeds)."""
    methods = display_order(scaling.method, selectors_only=True)
    data = _mean_std(scaling[scaling.method.isin(methods)], ["method", "n"])
    figure = go.Figure()
    for method in methods:
        rows = data[data.method == method]
        figure.add_trace(go.Scatter(x=rows.n, y=rows["mean"], error_y=dict(array=rows["std"]), mode="lines+markers",
                                    name=method_label(method)))
    figure.update_layout(title="Scaling law: best-of-N accuracy vs N", xaxis=dict(title="candidates N", type="log", dtick=0.30103),
                         yaxis=dict(title="accuracy", tickformat=".0%"), template="plotly_white")
    return figure


def layer_figure(layers: pd.DataFrame) -> go.Figure:
    """Ranker accuracy vs layer depth fraction (mean +- std over seeds)."""
    figure = go.Figure()
    for kind, rows in layers.groupby("kind"):
        data = _mean_std(rows, ["fraction"])
        figure.add_trace(go.Scatter(x=data.fraction, y=data["mean"], error_y=dict(array=data["std"]), mode="lines+markers",
                                    name=f"{kind.capitalize()}Ranker"))
    figure.update_layout(title="Layer ablation: which hidden layer to read", xaxis=dict(title="layer / number of layers"),
                         yaxis=dict(title="best-of-N accuracy", tickformat=".0%"), template="plotly_white")
    return figure


def blocks_figure(blocks: pd.DataFrame) -> go.Figure:
    """ListRanker accuracy vs number of transformer blocks."""
    data = _mean_std(blocks, ["blocks"])
    figure = go.Figure(go.Bar(x=data.blocks, y=data["mean"], error_y=dict(array=data["std"]), name="ListRanker"))
    figure.update_layout(title="Transformer blocks in the ListRanker", xaxis=dict(title="blocks", dtick=1),
                         yaxis=dict(title="best-of-N accuracy", tickformat=".0%"), template="plotly_white")
    return figure


def transfer_figure(transfer: pd.DataFrame) -> go.Figure:
    """Heatmap: accuracy on each test family (columns) of a ranker trained on each family (rows)."""
    matrix = transfer.groupby(["train_family", "test_family"]).accuracy.mean().unstack()
    figure = go.Figure(go.Heatmap(z=matrix.values, x=list(matrix.columns), y=list(matrix.index), colorscale="Blues",
                                  text=[[f"{v:.0%}" for v in row] for row in matrix.values], texttemplate="%{text}"))
    figure.update_layout(title="Cross-task transfer (rows: trained on; columns: evaluated on)",
                         xaxis=dict(title="evaluated on"), yaxis=dict(title="trained on"), template="plotly_white")
    return figure


def reliability_figure(calibration: pd.DataFrame) -> go.Figure:
    """Reliability diagram of P(correct): observed accuracy vs mean predicted probability per bin.

    calibration: `ranker.experiments.runners.leave_one_family_out`'s "calibration" rows. One line per
    setting (held-out prompts, left-out families) and ranker, pooled over seeds; the diagonal is
    perfect calibration, and each legend entry gives the ECE (mean over seeds).
    """
    figure = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="gray"), name="perfect"))
    settings = {"held_out": "held-out prompts", "left_out": "left-out families"}
    for (setting, kind), rows in calibration.groupby(["setting", "kind"], sort=True):
        ece = rows.groupby("seed").ece.first().mean()
        pooled = rows.assign(predicted=rows.mean_probability * rows["count"], hits=rows.observed * rows["count"]) \
            .groupby("lower")[["count", "predicted", "hits"]].sum().reset_index()
        figure.add_trace(go.Scatter(x=pooled.predicted / pooled["count"], y=pooled.hits / pooled["count"],
                                    mode="lines+markers", text=pooled["count"], hovertemplate="%{text} candidates",
                                    name=f"{method_label(kind)}, {settings.get(setting, setting)} (ECE {ece:.3f})"))
    figure.update_layout(title="Reliability of P(correct) on prompts no ranker trained on",
                         xaxis=dict(title="predicted P(correct)", range=[0, 1], tickformat=".0%"),
                         yaxis=dict(title="observed accuracy", range=[0, 1], tickformat=".0%"), template="plotly_white")
    return figure


def lofo_figure(lofo: pd.DataFrame) -> go.Figure:
    """Leave one family out: best-of-N accuracy on each family never trained on, per method (mean over seeds)."""
    methods = [m for m in display_order(lofo.method, selectors_only=True) if m not in ("oracle",)]
    data = _mean_std(lofo[lofo.method.isin(methods)], ["method", "family"])
    figure = go.Figure()
    for method in methods:
        rows = data[data.method == method]
        figure.add_trace(go.Bar(x=rows.family, y=rows["mean"], error_y=dict(array=rows["std"]), name=method_label(method)))
    figure.update_layout(title="Leave one family out: accuracy on a family never trained on", barmode="group",
                         xaxis=dict(title="left-out family"), yaxis=dict(title="best-of-16 accuracy", tickformat=".0%"),
                         template="plotly_white")
    return figure


def learning_curve_figure(curve: pd.DataFrame) -> go.Figure:
    """Validation metrics of each retrained version vs the number of labels it saw.

    curve: rows (version, label_count, metric, value), e.g. from labeling.retrain.learning_curve.
    """
    figure = go.Figure()
    if len(curve):
        for metric, rows in curve.sort_values("label_count").groupby("metric"):
            figure.add_trace(go.Scatter(x=rows.label_count, y=rows.value, mode="lines+markers", name=str(metric),
                                        text=rows.version, hovertemplate="%{text}: %{y:.3f}"))
    title = "Retrained ranker: validation vs labels" + ("" if len(curve) else " (no retrained versions yet)")
    figure.update_layout(title=title, xaxis=dict(title="labels used"), yaxis=dict(title="validation metric"),
                         template="plotly_white")
    return figure


FIGURES = {"scaling": scaling_figure, "layers": layer_figure, "blocks": blocks_figure, "transfer": transfer_figure,
           "lofo": lofo_figure, "calibration": reliability_figure}


def load_figures(results_dir: str | Path) -> dict[str, go.Figure]:
    """Every figure whose results file exists in `results_dir`.

    The scaling law also draws the reward models' lines from `ranker_vs_rm_scaling.csv`
    (bench/ranker_vs_rm.py), when that file exists.
    """
    results_dir = Path(results_dir)
    frames = {name: pd.read_csv(results_dir / f"{name}.csv") for name in FIGURES if (results_dir / f"{name}.csv").is_file()}
    rm_curve = results_dir / "ranker_vs_rm_scaling.csv"
    if "scaling" in frames and rm_curve.is_file():
        rm_rows = pd.read_csv(rm_curve)
        frames["scaling"] = pd.concat([frames["scaling"], rm_rows[rm_rows.method.isin(["rm_base", "rm_small"])]])
    return {name: FIGURES[name](frame) for name, frame in frames.items()}


def save_pngs(figures: dict[str, go.Figure], out_dir: str | Path, width: int = 800, height: int = 480) -> list[Path]:
    """Write each figure as PNG (kaleido; it drives a Chromium, Debian's /usr/bin/chromium if present)."""
    if "BROWSER_PATH" not in os.environ and shutil.which("chromium"):
        os.environ["BROWSER_PATH"] = shutil.which("chromium")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in figures.items():
        path = out_dir / f"{name}.png"
        figure.write_image(path, width=width, height=height)
        paths.append(path)
    return paths
