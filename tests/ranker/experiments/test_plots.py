"""Figures are built from tidy results with the right aggregates, titles and axes."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ranker.experiments.plots import (
    blocks_figure,
    layer_figure,
    learning_curve_figure,
    load_figures,
    scaling_figure,
    transfer_figure,
)

# Small results frames: rows out of order (the figures sort), and three seeds where the median differs from the mean.
SCALING = pd.DataFrame([
    {"n": n, "method": m, "seed": s, "accuracy": a}
    for n, m, s, a in [(4, "list_ranker", 0, 0.5), (1, "list_ranker", 1, 0.2), (1, "list_ranker", 0, 0.1), (4, "list_ranker", 1, 0.7),
                       (1, "list_ranker", 2, 0.6),
                       (4, "oracle", 0, 0.8), (1, "oracle", 0, 0.3), (4, "per_sample", 0, 0.1), (2, "mystery", 0, 0.9)]
])
LAYERS = pd.DataFrame({"layer": [18, 3, 3, 3, 3, 18], "fraction": [0.6, 0.1, 0.1, 0.1, 0.1, 0.6],
                       "kind": ["list", "list", "list", "list", "point", "point"], "seed": [0, 0, 1, 2, 0, 0],
                       "accuracy": [0.5, 0.1, 0.2, 0.6, 0.25, 0.45]})
BLOCKS = pd.DataFrame({"blocks": [2, 1, 1, 1], "seed": [0, 0, 1, 2], "accuracy": [0.6, 0.1, 0.2, 0.6], "parameters": [2, 1, 1, 1]})
TRANSFER = pd.DataFrame({"train_family": ["b", "a", "a", "b", "a"], "test_family": ["a", "a", "b", "b", "a"], "seed": [0, 0, 0, 0, 1],
                         "accuracy": [0.3, 0.9, 0.2, 0.8, 0.7]})
STD_3 = float(np.std([0.1, 0.2, 0.6], ddof=1))  # sample std over the three seeds, as pandas computes it


def _xy(trace) -> tuple[list, list]:
    return list(trace.x), pytest.approx(list(trace.y))


def test_scaling_figure_averages_seeds_per_method():
    figure = scaling_figure(SCALING)
    # one line per selection method, in METHOD_LABELS order; per_sample and unknown methods are not drawn
    assert [t.name for t in figure.data] == ["oracle (any correct)", "ListRanker"]
    oracle, ranker = figure.data
    assert _xy(ranker) == ([1, 4], [0.3, 0.6])
    assert list(ranker.error_y.array) == pytest.approx([STD_3, float(np.std([0.5, 0.7], ddof=1))])
    assert _xy(oracle) == ([1, 4], [0.3, 0.8]) and list(oracle.error_y.array) == [0.0, 0.0]  # one seed: no spread
    assert {t.mode for t in figure.data} == {"lines+markers"}
    layout = figure.layout
    assert layout.title.text == "Scaling law: best-of-N accuracy vs N"
    assert (layout.xaxis.title.text, layout.xaxis.type) == ("candidates N", "log")
    assert (layout.yaxis.title.text, layout.yaxis.tickformat) == ("accuracy", ".0%")


def test_layer_figure_one_line_per_kind():
    figure = layer_figure(LAYERS)
    assert [t.name for t in figure.data] == ["ListRanker", "PointRanker"]
    listwise, pointwise = figure.data
    assert _xy(listwise) == ([0.1, 0.6], [0.3, 0.5]) and list(listwise.error_y.array) == pytest.approx([STD_3, 0.0])
    assert _xy(pointwise) == ([0.1, 0.6], [0.25, 0.45])
    assert figure.layout.title.text == "Layer ablation: which hidden layer to read"
    assert (figure.layout.xaxis.title.text, figure.layout.yaxis.title.text) == ("layer / number of layers", "best-of-N accuracy")


def test_blocks_figure_bars_per_block_count():
    figure = blocks_figure(BLOCKS)
    (bars,) = figure.data
    assert (bars.type, bars.name) == ("bar", "ListRanker")
    assert _xy(bars) == ([1, 2], [0.3, 0.6])
    assert list(bars.error_y.array) == pytest.approx([STD_3, 0.0])
    assert figure.layout.title.text == "Transformer blocks in the ListRanker"
    assert (figure.layout.xaxis.title.text, figure.layout.yaxis.title.text) == ("blocks", "best-of-N accuracy")


def test_transfer_figure_heatmap_rows_train_columns_test():
    figure = transfer_figure(TRANSFER)
    (heatmap,) = figure.data
    assert heatmap.type == "heatmap"
    assert (list(heatmap.y), list(heatmap.x)) == (["a", "b"], ["a", "b"])  # rows: trained on; columns: evaluated on
    assert [list(row) for row in heatmap.z] == [pytest.approx([0.8, 0.2]), pytest.approx([0.3, 0.8])]  # a->a: mean of 0.9, 0.7
    assert [list(row) for row in heatmap.text] == [["80%", "20%"], ["30%", "80%"]]
    assert figure.layout.title.text == "Cross-task transfer (rows: trained on; columns: evaluated on)"
    assert (figure.layout.xaxis.title.text, figure.layout.yaxis.title.text) == ("evaluated on", "trained on")


def test_learning_curve_figure_and_its_empty_state():
    curve = pd.DataFrame({"version": ["v2", "v1", "v2", "v1"], "label_count": [40, 20, 40, 20],
                          "metric": ["auroc", "auroc", "accuracy", "accuracy"], "value": [0.7, 0.6, 0.5, 0.4]})
    figure = learning_curve_figure(curve)
    assert [t.name for t in figure.data] == ["accuracy", "auroc"]
    assert [(list(t.x), list(t.y), list(t.text)) for t in figure.data] == [([20, 40], [0.4, 0.5], ["v1", "v2"]),
                                                                          ([20, 40], [0.6, 0.7], ["v1", "v2"])]
    assert figure.layout.title.text == "Retrained ranker: validation vs labels"
    empty = learning_curve_figure(curve.iloc[:0])
    assert empty.data == () and empty.layout.title.text == "Retrained ranker: validation vs labels (no retrained versions yet)"


def _write_results(directory, names=("scaling", "layers", "blocks", "transfer")):
    frames = {"scaling": SCALING, "layers": LAYERS, "blocks": BLOCKS, "transfer": TRANSFER}
    for name in names:
        frames[name].to_csv(directory / f"{name}.csv", index=False)


def test_load_figures_builds_each_figure_from_its_file(tmp_path):
    _write_results(tmp_path)
    # the reward models' lines come from bench/ranker_vs_rm.py's curve; its other methods are not merged in
    pd.DataFrame({"n": [1, 4, 1], "method": ["rm_base", "rm_base", "list_ranker"], "seed": 0, "accuracy": [0.1, 0.35, 0.99]}).to_csv(
        tmp_path / "ranker_vs_rm_scaling.csv", index=False)
    figures = load_figures(tmp_path)
    assert list(figures) == ["scaling", "layers", "blocks", "transfer"]
    assert [t.name for t in figures["scaling"].data] == ["oracle (any correct)", "ListRanker", "RM (base, LoRA)"]
    assert _xy(figures["scaling"].data[1]) == ([1, 4], [0.3, 0.6])  # the RM file's list_ranker row is ignored
    assert _xy(figures["scaling"].data[2]) == ([1, 4], [0.1, 0.35])
    for name, build in (("layers", layer_figure), ("blocks", blocks_figure), ("transfer", transfer_figure)):
        assert figures[name].to_dict() == build(pd.read_csv(tmp_path / f"{name}.csv")).to_dict(), name


def test_load_figures_reads_only_existing_files(tmp_path):
    _write_results(tmp_path, names=("scaling", "blocks", "transfer"))
    figures = load_figures(tmp_path)
    assert list(figures) == ["scaling", "blocks", "transfer"]  # no layers.csv: no layer figure, the others intact
    assert _xy(figures["blocks"].data[0]) == ([1, 2], [0.3, 0.6])
    assert [t.name for t in figures["scaling"].data] == ["oracle (any correct)", "ListRanker"]


def test_plots_tab_shows_the_placeholder_only_for_a_missing_file(tmp_path, monkeypatch):
    import app

    _write_results(tmp_path, names=("scaling", "blocks", "transfer"))
    monkeypatch.setattr(app, "RESULTS", tmp_path)
    service = SimpleNamespace(learning_curve=lambda profile: pd.DataFrame(columns=["version", "label_count", "metric", "value", "status"]))
    scaling, layers, blocks, transfer, lofo, calibration, curve = app.Handlers(service).plots()
    placeholder = "no results yet: run `python -m ranker experiment`"
    assert (layers.data, layers.layout.title.text) == ((), placeholder)
    assert scaling.to_dict() == scaling_figure(SCALING).to_dict()
    assert blocks.to_dict() == blocks_figure(BLOCKS).to_dict()
    assert transfer.to_dict() == transfer_figure(TRANSFER).to_dict()
    assert curve.layout.title.text.endswith("(no retrained versions yet)")
    monkeypatch.setattr(app, "RESULTS", tmp_path / "missing")  # no results folder at all: four placeholders
    assert [f.layout.title.text for f in app.Handlers(service).plots()[:6]] == [placeholder] * 6
    assert lofo.layout.title.text == calibration.layout.title.text == placeholder


def test_png_export_through_chromium(tmp_path):
    from PIL import Image

    from ranker.experiments.plots import save_pngs

    figure = blocks_figure(BLOCKS)
    path, empty_path = save_pngs({"blocks": figure, "empty": blocks_figure(BLOCKS.iloc[:0])}, tmp_path, width=400, height=300)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 400 and int.from_bytes(data[20:24], "big") == 300  # IHDR width, height

    def bar_pixels(png) -> int:  # pixels in plotly's first trace colour, #636efa
        return int((np.asarray(Image.open(png).convert("RGB")) == (0x63, 0x6E, 0xFA)).all(axis=2).sum())

    # bars at 30% and 60% of a ~200 px plot area: thousands of pixels; the same figure without data has none
    assert bar_pixels(path) > 2000 and bar_pixels(empty_path) == 0


def test_reliability_figure_pools_seeds_by_count_and_names_the_ece():
    from ranker.experiments.plots import reliability_figure

    rows = pd.DataFrame([
        # seed 0: bin [0.1, 0.2): 2 candidates predicted 0.15, 1 right; seed 1: 6 candidates predicted 0.15 (mean), 0 right
        {"setting": "held_out", "kind": "list_ranker", "seed": 0, "ece": 0.04, "lower": 0.1, "upper": 0.2, "count": 2,
         "mean_probability": 0.15, "observed": 0.5},
        {"setting": "held_out", "kind": "list_ranker", "seed": 1, "ece": 0.02, "lower": 0.1, "upper": 0.2, "count": 6,
         "mean_probability": 0.15, "observed": 0.0},
        {"setting": "held_out", "kind": "list_ranker", "seed": 1, "ece": 0.02, "lower": 0.9, "upper": 1.0, "count": 4,
         "mean_probability": 0.95, "observed": 1.0},
    ])
    figure = reliability_figure(rows)
    assert [t.name for t in figure.data] == ["perfect", "ListRanker, held-out prompts (ECE 0.030)"]
    assert list(figure.data[1].x) == pytest.approx([0.15, 0.95])
    assert list(figure.data[1].y) == pytest.approx([1 / 8, 1.0])  # (1 + 0) / (2 + 6) in the first bin


def test_lofo_figure_has_one_bar_series_per_selector():
    from ranker.experiments.plots import lofo_figure

    rows = pd.DataFrame([{"family": f, "method": m, "seed": s, "accuracy": a, "prompts": 10}
                         for f in ("a", "b") for m, a in (("list_ranker", 0.5), ("max_logprob", 0.4), ("oracle", 0.9))
                         for s in (0, 1)])
    figure = lofo_figure(rows)
    assert [t.name for t in figure.data] == ["ListRanker", "max mean log-prob"]  # the oracle is no selector bar
    assert list(figure.data[0].x) == ["a", "b"] and list(figure.data[0].y) == [0.5, 0.5]
