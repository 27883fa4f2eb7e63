"""Figures are built from tidy results with the right aggregates."""

import pandas as pd
import pytest

from ranker.plots import blocks_figure, layer_figure, load_figures, scaling_figure, transfer_figure


def test_scaling_figure_averages_seeds_per_method():
    frame = pd.DataFrame([
        {"n": n, "method": m, "seed": s, "accuracy": a}
        for n, m, s, a in [(1, "list_ranker", 0, 0.2), (1, "list_ranker", 1, 0.4), (4, "list_ranker", 0, 0.5),
                           (4, "list_ranker", 1, 0.7), (1, "oracle", 0, 0.3), (4, "oracle", 0, 0.8), (4, "per_sample", 0, 0.1)]
    ])
    figure = scaling_figure(frame)
    traces = {t.name: t for t in figure.data}
    assert set(traces) == {"ListRanker", "oracle (any correct)"}  # per_sample is not a selection method
    assert list(traces["ListRanker"].x) == [1, 4]
    assert list(traces["ListRanker"].y) == pytest.approx([0.3, 0.6])


def test_layer_blocks_and_transfer_figures():
    layers = pd.DataFrame({"layer": [3, 3, 18], "fraction": [0.1, 0.1, 0.6], "kind": ["list"] * 3, "seed": [0, 1, 0], "accuracy": [0.1, 0.3, 0.5]})
    assert list(layer_figure(layers).data[0].y) == pytest.approx([0.2, 0.5])
    blocks = pd.DataFrame({"blocks": [1, 2], "seed": [0, 0], "accuracy": [0.4, 0.45], "parameters": [1, 2]})
    assert list(blocks_figure(blocks).data[0].y) == pytest.approx([0.4, 0.45])
    transfer = pd.DataFrame({"train_family": ["a", "a", "b", "b"], "test_family": ["a", "b", "a", "b"], "seed": 0, "accuracy": [0.9, 0.2, 0.3, 0.8]})
    heatmap = transfer_figure(transfer).data[0]
    assert [list(row) for row in heatmap.z] == [[0.9, 0.2], [0.3, 0.8]]


def test_load_figures_reads_only_existing_files(tmp_path):
    pd.DataFrame({"blocks": [1], "seed": [0], "accuracy": [0.4], "parameters": [5]}).to_csv(tmp_path / "blocks.csv", index=False)
    assert list(load_figures(tmp_path)) == ["blocks"]


def test_png_export_through_chromium(tmp_path):
    from ranker.plots import save_pngs

    figure = blocks_figure(pd.DataFrame({"blocks": [1, 2], "seed": [0, 0], "accuracy": [0.4, 0.45], "parameters": [1, 2]}))
    (path,) = save_pngs({"blocks": figure}, tmp_path, width=400, height=300)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 400 and int.from_bytes(data[20:24], "big") == 300  # IHDR width, height
